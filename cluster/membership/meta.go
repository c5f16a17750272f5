package membership

import (
	"encoding/binary"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// Meta is what a node tells the cluster about itself through gossip: its
// identity and where to reach its services. It travels in memberlist's node
// metadata, which is capped at memberlist.MetaMaxSize (512) bytes.
type Meta struct {
	NodeID   string
	RaftAddr string
	GRPCAddr string
	HTTPAddr string
	// Version is the node's software or protocol version, so peers can
	// hold back features a node does not understand yet during a rolling
	// upgrade.
	Version int
	// ActorAddr is where the node's protoactor remote listens (host:port),
	// and ActorID its actor system's id, which protoactor uses as the
	// member id: a fresh one every process start (cluster/actorcluster).
	// Both are empty on a node that runs no actor cluster.
	ActorAddr string
	ActorID   string
	// Shards is the node's shard count (shards.ShardOf maps users by it),
	// so that nodes of different counts never serve one cluster: see
	// Conflicting. 0 means unknown: a release from before it was
	// announced.
	Shards int
	// ShardsTentative marks Shards as the node's proposal only: it has a
	// new data dir and no explicit --shards, and takes the cluster's
	// count if it finds one (node/). A tentative count conflicts with
	// nothing.
	ShardsTentative bool
}

// settledShards is the count m announces for good, 0 if none.
func (m Meta) settledShards() int {
	if m.ShardsTentative {
		return 0
	}
	return m.Shards
}

// metaFormat is the first byte of the encoding. Fields may only ever be
// appended to format 1 (decoders ignore what follows the fields they know),
// so old and new nodes can share a cluster; a layout that old nodes cannot
// read must take a new format byte, which they refuse.
const metaFormat byte = 1

// flagLeaving marks a node that is leaving gracefully. It is set just
// before memberlist.Leave because memberlist's events do not say whether a
// node left or failed (see DESIGN.md).
const flagLeaving byte = 1 << 0

// flagStopping marks a node that has begun to shut down (AnnounceStopping):
// it still serves while it hands its work over, and then leaves or stops.
// Peers take their failures to reach it from then on as expected.
// Releases before it ignore the bit.
const flagStopping byte = 1 << 1

// encodeMeta lays out: format byte, flags byte, zigzag varint Version, then
// NodeID, RaftAddr, GRPCAddr, HTTPAddr, ActorAddr and ActorID, each as
// uvarint length and bytes, then the shard count as a uvarint of
// Shards<<1 | ShardsTentative. ActorAddr and ActorID were appended later,
// and the shard count after them: a decoder that stops before a field
// reads the rest as trailing bytes. A binary layout rather than JSON keeps
// the addresses, which carry most of the bytes, as far from the 512-byte
// cap as possible.
func encodeMeta(m Meta, flags byte) []byte {
	b := make([]byte, 0, 2+2*binary.MaxVarintLen64+6*binary.MaxVarintLen16+
		len(m.NodeID)+len(m.RaftAddr)+len(m.GRPCAddr)+len(m.HTTPAddr)+len(m.ActorAddr)+len(m.ActorID))
	b = append(b, metaFormat, flags)
	b = binary.AppendVarint(b, int64(m.Version))
	for _, s := range [...]string{m.NodeID, m.RaftAddr, m.GRPCAddr, m.HTTPAddr, m.ActorAddr, m.ActorID} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	shards := uint64(m.Shards) << 1
	if m.ShardsTentative {
		shards |= 1
	}
	return binary.AppendUvarint(b, shards)
}

// firstAppended is the index of the first field appended to format 1
// after its first release; metadata may end before it.
const firstAppended = 4

// maxShards bounds a decoded shard count, so that any count decodes into
// an int on every platform; config allows at most 4096.
const maxShards = 1 << 30

// decodeMeta is the inverse of encodeMeta. Bytes after the known fields
// are ignored: they are fields appended by a newer release.
func decodeMeta(b []byte) (Meta, byte, error) {
	var m Meta
	if len(b) < 2 {
		return m, 0, fmt.Errorf("%w: %d bytes", ErrBadMeta, len(b))
	}
	if b[0] != metaFormat {
		return m, 0, fmt.Errorf("%w: unknown format %d", ErrBadMeta, b[0])
	}
	flags := b[1]
	b = b[2:]
	v, n := binary.Varint(b)
	if n <= 0 {
		return m, 0, fmt.Errorf("%w: bad version field", ErrBadMeta)
	}
	b = b[n:]
	m.Version = int(v)
	if int64(m.Version) != v {
		return m, 0, fmt.Errorf("%w: version %d out of range", ErrBadMeta, v)
	}
	for i, dst := range [...]*string{&m.NodeID, &m.RaftAddr, &m.GRPCAddr, &m.HTTPAddr, &m.ActorAddr, &m.ActorID} {
		if i >= firstAppended && len(b) == 0 {
			break // an older node's metadata: these fields are empty
		}
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return Meta{}, 0, fmt.Errorf("%w: field %d truncated", ErrBadMeta, i)
		}
		*dst = string(b[n : n+int(l)])
		b = b[n+int(l):]
	}
	if len(b) == 0 {
		return m, flags, nil // a release before the shard count: unknown, 0
	}
	sv, n := binary.Uvarint(b)
	if n <= 0 || sv>>1 > maxShards {
		return Meta{}, 0, fmt.Errorf("%w: bad shard count field", ErrBadMeta)
	}
	m.Shards, m.ShardsTentative = int(sv>>1), sv&1 == 1
	return m, flags, nil
}

// checkMetaSize refuses metadata memberlist would not carry: it panics
// when a delegate returns more than MetaMaxSize bytes, so the limit is
// enforced here, at Start, where it can be an error. The flags do not
// change the size, so a Meta that fits now fits at Leave too.
func checkMetaSize(m Meta) error {
	if n := len(encodeMeta(m, flagLeaving|flagStopping)); n > memberlist.MetaMaxSize {
		return fmt.Errorf("%w: %d bytes encoded, limit %d", ErrMetaTooLarge, n, memberlist.MetaMaxSize)
	}
	return nil
}
