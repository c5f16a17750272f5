package membership

import "errors"

var (
	// ErrInvalidConfig wraps every problem Start finds in a Config before
	// it binds anything.
	ErrInvalidConfig = errors.New("membership: invalid config")
	// ErrMetaTooLarge means the encoded Meta exceeds memberlist's 512-byte
	// metadata limit.
	ErrMetaTooLarge = errors.New("membership: metadata too large")
	// ErrBadMeta means a peer's metadata could not be decoded: it is not a
	// ration node, or runs a release whose format this one cannot read.
	ErrBadMeta = errors.New("membership: undecodable metadata")
	// ErrUnknownMember means Forget was given a node that is not in the
	// view.
	ErrUnknownMember = errors.New("membership: unknown member")
	// ErrMemberNotGone means Forget was given a member that is Alive or
	// Suspect, or this node itself: only Dead and Left members can be
	// forgotten, since a live one would reappear at its next message.
	ErrMemberNotGone = errors.New("membership: member is not dead or left")
	// ErrClosed means Leave or Shutdown already ran.
	ErrClosed = errors.New("membership: closed")
	// ErrNoPeers means a join attempt found no seed address other than
	// this node's own.
	ErrNoPeers = errors.New("membership: no seed other than this node")
	// ErrAddressConflict means a peer still holds this node's name at
	// another address, alive or suspect: the previous incarnation of a node
	// restarted on a new address (a rescheduled pod) has not been declared
	// dead yet, so the peer refuses the new one until it is.
	ErrAddressConflict = errors.New("membership: peer holds this node id at another address")
)
