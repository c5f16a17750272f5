// Package raftfsm is the replicated state of one shard: for every user of
// the shard, the operations its actor accepted, in order, and their count,
// the user's version.
//
// The state machine does not run the ledger. A user's actor validates each
// write against its own ledger.Ledger and proposes the accepted operation
// together with the version it validated against; Apply appends the
// operation only if the user's version is still that one. A stale actor (a
// second activation, a deposed leader's) therefore cannot corrupt a user's
// history: its proposal is refused, it reloads the log and tries again. See
// DESIGN.md.
package raftfsm

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/ration/ration/ledger"
)

// Op is one accepted operation of one user, as proposed by the user's
// actor. Exactly one of Grant and Deduction is set.
type Op struct {
	User string
	// ExpectedVersion is the number of operations in the user's log when the
	// actor validated the operation.
	ExpectedVersion uint64
	Grant           *ledger.Grant
	Deduction       *ledger.Deduction
	// Chained says the actor accepted the op on top of the op just before
	// it in the same batch, an op of the same user that is not committed
	// yet: it applies only if that op applies (see DESIGN.md, "Chains").
	Chained bool
}

// OpResult is the outcome of one Op in Apply.
type OpResult struct {
	// Applied is false when the user's version was not ExpectedVersion (or
	// Err is set): nothing changed.
	Applied bool
	// Version is the user's version after the op: ExpectedVersion+1 if
	// Applied, else the current version, which tells a stale actor how far
	// behind it is.
	Version uint64
	// Err is set, wrapping ErrInvalidOp, when the op failed the field checks.
	// That is a bug in the proposer, which must validate before proposing;
	// the op was not applied, on any replica.
	Err error
}

// LoggedOp is an operation of a user's log. Exactly one field is set.
type LoggedOp struct {
	Grant     *ledger.Grant
	Deduction *ledger.Deduction
}

// Stats are counters since the Shard was created. Restore does not reset
// them: they describe this process's work, not the replicated state.
type Stats struct {
	Entries    uint64 // raft entries applied, of every type
	Ops        uint64 // ops seen in batches
	Applied    uint64 // ops appended to a user's log
	Mismatches uint64 // ops refused for a version mismatch
	Invalid    uint64 // ops refused by the field checks (proposer bugs)
	Malformed  uint64 // command entries that did not decode (proposer bugs)
	Ignored    uint64 // unknown ignorable commands skipped
}

// Shard is the state of one shard. Reads are safe for concurrent use with
// each other and with raft applying entries.
type Shard struct {
	log *slog.Logger

	mu    sync.RWMutex
	users map[string]*userLog

	// applied is the index of the last raft entry applied. It is written
	// under mu but read without it, so that waiters and metrics never queue
	// behind a large batch.
	applied atomic.Uint64

	waitMu sync.Mutex
	// waitCh is closed, and cleared, by the next Apply; created on demand so
	// that Apply does no allocation when nobody waits.
	waitCh chan struct{}

	entries, ops, appliedOps, mismatches, invalid, malformed, ignored atomic.Uint64
	// stateOps is how many ops the state holds (every user's version,
	// summed); snapOps is appliedOps as of the last snapshot or restore.
	stateOps, snapOps atomic.Uint64
}

// userLog is a user's accepted operations, encoded back to back (see
// oplog.go). ops is append-only and its bytes are never modified in place:
// snapshots and readers keep slice headers of earlier lengths and read them
// without the lock.
type userLog struct {
	version uint64
	ops     []byte
}

// New returns an empty shard state. A nil logger means slog.Default().
func New(logger *slog.Logger) *Shard {
	if logger == nil {
		logger = slog.Default()
	}
	return &Shard{
		log:   logger.With("component", "raftfsm"),
		users: make(map[string]*userLog),
	}
}

// FSM returns the raft state machine backed by s. It is a separate type so
// that Apply, Snapshot and Restore, which only raft may call, are not
// methods of Shard.
func (s *Shard) FSM() raft.BatchingFSM { return (*fsm)(s) }

// Version is the number of operations in user's log.
func (s *Shard) Version(user string) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if u := s.users[user]; u != nil {
		return u.version
	}
	return 0
}

// Log returns the user's version and operations, in the order they were
// applied: replaying them into a fresh ledger.Ledger rebuilds the user's
// ledger at that version.
func (s *Shard) Log(user string) (uint64, []LoggedOp) {
	return s.LogSince(user, 0)
}

// LogSince is Log without the first from operations, for an actor that
// holds a ledger at version from and only needs to catch up. If from is
// beyond the current version no operations are returned.
func (s *Shard) LogSince(user string, from uint64) (uint64, []LoggedOp) {
	s.mu.RLock()
	u := s.users[user]
	var (
		version uint64
		data    []byte
	)
	if u != nil {
		version, data = u.version, u.ops
	}
	s.mu.RUnlock()
	if from >= version {
		return version, nil
	}
	// The captured prefix is immutable, so decoding needs no lock.
	ops, err := decodeLog(data, version, from)
	if err != nil {
		// Every log is encoded by Apply and checked by Restore.
		panic(fmt.Sprintf("raftfsm: log of user %q does not decode: %v", user, err))
	}
	return version, ops
}

// OpsSinceSnapshot is how many ops were applied since the last snapshot
// was taken (or restored), and how many the state holds: what a restart
// would replay from the raft log, and what it would restore from the
// snapshot. Raft's own threshold counts entries, which hold from one op to
// thousands; shards.Host snapshots by these instead.
func (s *Shard) OpsSinceSnapshot() (since, state uint64) {
	// snapOps first: it never exceeds appliedOps, which only grows, so
	// the difference cannot wrap if a snapshot lands between the loads.
	snap := s.snapOps.Load()
	return s.appliedOps.Load() - snap, s.stateOps.Load()
}

// Users is the number of users with at least one operation.
func (s *Shard) Users() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.users)
}

// AppliedIndex is the raft index of the last entry applied (or of the
// restored snapshot's last applied entry).
func (s *Shard) AppliedIndex() uint64 { return s.applied.Load() }

// WaitApplied blocks until AppliedIndex() >= index or ctx is done.
func (s *Shard) WaitApplied(ctx context.Context, index uint64) error {
	for s.applied.Load() < index {
		s.waitMu.Lock()
		if s.waitCh == nil {
			s.waitCh = make(chan struct{})
		}
		ch := s.waitCh
		s.waitMu.Unlock()
		// Apply may have advanced between the load and taking the
		// channel; it would then have closed an older channel, or none.
		if s.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("raftfsm: waiting for index %d (applied %d): %w", index, s.applied.Load(), ctx.Err())
		}
	}
	return nil
}

func (s *Shard) notifyApplied() {
	s.waitMu.Lock()
	if s.waitCh != nil {
		close(s.waitCh)
		s.waitCh = nil
	}
	s.waitMu.Unlock()
}

// Stats returns the counters.
func (s *Shard) Stats() Stats {
	return Stats{
		Entries:    s.entries.Load(),
		Ops:        s.ops.Load(),
		Applied:    s.appliedOps.Load(),
		Mismatches: s.mismatches.Load(),
		Invalid:    s.invalid.Load(),
		Malformed:  s.malformed.Load(),
		Ignored:    s.ignored.Load(),
	}
}

// userRef is a user's log as of one moment: an immutable prefix.
type userRef struct {
	id      string
	version uint64
	ops     []byte
}

// capture returns every user's log, unsorted, and the applied index, in
// O(users) under the read lock. The result stays valid without the lock.
func (s *Shard) capture() ([]userRef, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	refs := make([]userRef, 0, len(s.users))
	for id, u := range s.users {
		refs = append(refs, userRef{id: id, version: u.version, ops: u.ops})
	}
	return refs, s.applied.Load()
}

func sortRefs(refs []userRef) {
	slices.SortFunc(refs, func(a, b userRef) int { return strings.Compare(a.id, b.id) })
}

// StateHash is a SHA-256 digest of every user's id, version and log, in id
// order. Replicas that applied the same entries have equal hashes whatever
// their snapshot and restart history; the applied index is not included.
func (s *Shard) StateHash() [32]byte {
	refs, _ := s.capture()
	sortRefs(refs)
	h := sha256.New()
	var buf [3 * binary.MaxVarintLen64]byte
	for _, r := range refs {
		b := binary.AppendUvarint(buf[:0], uint64(len(r.id)))
		h.Write(b)
		h.Write([]byte(r.id))
		b = binary.AppendUvarint(buf[:0], r.version)
		b = binary.AppendUvarint(b, uint64(len(r.ops)))
		h.Write(b)
		h.Write(r.ops)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// Errors.
var (
	// ErrInvalidOp is wrapped by the errors of ops that fail the field
	// checks, both from Validate and in OpResult.Err.
	ErrInvalidOp = errors.New("raftfsm: invalid op")
	// ErrMalformedCommand is returned, as an entry's response, for a
	// command entry of a known type whose payload does not decode.
	ErrMalformedCommand = errors.New("raftfsm: malformed command")
	// ErrCorruptSnapshot is wrapped by Restore's errors for snapshots that
	// fail validation.
	ErrCorruptSnapshot = errors.New("raftfsm: corrupt snapshot")
)

// InvalidOpError names the field of an op that was refused.
type InvalidOpError struct {
	Field  string
	Reason string
}

func (e *InvalidOpError) Error() string {
	return fmt.Sprintf("raftfsm: invalid op: %s: %s", e.Field, e.Reason)
}

func (e *InvalidOpError) Unwrap() error { return ErrInvalidOp }

func invalidOp(field, format string, args ...any) error {
	return &InvalidOpError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks op's fields the way the ledger does (ids, positive
// amounts, non-negative timestamps, expiry after timestamp). It does not
// check anything that depends on the user's history; that is the actor's
// job.
func Validate(op Op) error {
	if !ledger.ValidID(op.User) {
		return invalidOp("user", "not a valid id: %q", op.User)
	}
	switch {
	case op.Grant != nil && op.Deduction != nil:
		return invalidOp("op", "both grant and deduction set")
	case op.Grant != nil:
		return validateGrant(op.Grant)
	case op.Deduction != nil:
		return validateDeduction(op.Deduction)
	}
	return invalidOp("op", "neither grant nor deduction set")
}

func validateGrant(g *ledger.Grant) error {
	if !ledger.ValidID(g.ID) {
		return invalidOp("grant.id", "not a valid id: %q", g.ID)
	}
	if g.Amount <= 0 {
		return invalidOp("grant.amount", "must be positive, got %d", g.Amount)
	}
	if g.Timestamp < 0 {
		return invalidOp("grant.timestamp", "must not be negative, got %d", g.Timestamp)
	}
	if g.ExpiresAt <= g.Timestamp {
		return invalidOp("grant.expires_at", "must be later than timestamp %d, got %d", g.Timestamp, g.ExpiresAt)
	}
	return nil
}

func validateDeduction(d *ledger.Deduction) error {
	if !ledger.ValidID(d.ID) {
		return invalidOp("deduction.id", "not a valid id: %q", d.ID)
	}
	if d.Amount <= 0 {
		return invalidOp("deduction.amount", "must be positive, got %d", d.Amount)
	}
	if d.Timestamp < 0 {
		return invalidOp("deduction.timestamp", "must not be negative, got %d", d.Timestamp)
	}
	return nil
}
