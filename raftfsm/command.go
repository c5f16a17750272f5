package raftfsm

import (
	"fmt"
	"math"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/ration/ration/ledger"
	"github.com/ration/ration/raftfsm/raftpb"
)

// Command types: the first byte of every command entry. The rest is the
// protobuf message of that type (raftpb).
const (
	TypeBatch byte = 0x01 // raftpb.Batch
	TypeNoop  byte = 0x02 // raftpb.Noop

	// IgnorableFlag marks a type that replicas which do not know it may
	// skip: set it on commands that change nothing a reader of this state
	// can observe (hints, tracing), so that old replicas keep applying the
	// log during a rolling upgrade. Without it an unknown type stops the
	// replica (see UnknownCommandError).
	IgnorableFlag byte = 0x80
)

// BatchFormat is the newest Batch.format this code applies. It writes
// format 1, or 2 when the batch chains ops (Op.Chained): replicas that
// know only format 1 keep applying every batch that does not.
const BatchFormat = 2

// Batch formats: what each adds.
const (
	formatPlain   = 1 // ops checked against their users' versions
	formatChained = 2 // and Op.Chained
)

// MaxBatchOps bounds the ops of one Batch entry, so that one entry and its
// response stay small enough for raft's pipelines.
const MaxBatchOps = 4096

// UnknownCommandError is the value Apply panics with on an entry it cannot
// apply without risking divergence: a type it does not know without the
// ignorable flag, or a Batch of a newer format. The replica runs older code
// than the leader that wrote the entry and must be upgraded; applying the
// entry wrongly, or skipping it, would let replicas disagree for ever.
type UnknownCommandError struct {
	Index  uint64
	Type   byte
	Format uint32 // for a Batch of an unknown format
}

func (e *UnknownCommandError) Error() string {
	if e.Format != 0 {
		return fmt.Sprintf("raftfsm: entry %d: batch format %d is newer than %d; upgrade this node", e.Index, e.Format, BatchFormat)
	}
	return fmt.Sprintf("raftfsm: entry %d: unknown command type 0x%02x; upgrade this node", e.Index, e.Type)
}

// EncodeBatch returns the entry data for ops: the Batch type byte and the
// message. Every op must pass Validate; the error says which does not.
func EncodeBatch(ops []Op) ([]byte, error) {
	return AppendBatch(nil, ops)
}

// ValidateBatch checks ops as EncodeBatch does: 1 to MaxBatchOps ops, each
// valid (Validate), and each chained op right after an op of its user.
func ValidateBatch(ops []Op) error {
	if len(ops) == 0 || len(ops) > MaxBatchOps {
		return fmt.Errorf("%w: batch of %d ops, want 1 to %d", ErrInvalidOp, len(ops), MaxBatchOps)
	}
	for i := range ops {
		if err := Validate(ops[i]); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
		if ops[i].Chained && (i == 0 || ops[i-1].User != ops[i].User) {
			return fmt.Errorf("op %d: %w", i, invalidOp("chained", "must follow an op of the same user in the batch"))
		}
	}
	return nil
}

// AppendBatch is EncodeBatch appending to dst.
func AppendBatch(dst []byte, ops []Op) ([]byte, error) {
	if err := ValidateBatch(ops); err != nil {
		return nil, err
	}
	msg := &raftpb.Batch{Format: formatPlain, Ops: make([]*raftpb.Op, len(ops))}
	// One block for the messages rather than one allocation each.
	pbOps := make([]raftpb.Op, len(ops))
	for i := range ops {
		op := &ops[i]
		if op.Chained {
			msg.Format = formatChained
		}
		p := &pbOps[i]
		p.User = op.User
		p.ExpectedVersion = op.ExpectedVersion
		p.Chained = op.Chained
		if g := op.Grant; g != nil {
			pg := &raftpb.GrantOp{Id: g.ID, Amount: g.Amount, Timestamp: g.Timestamp, Priority: g.Priority}
			if g.ExpiresAt != ledger.Never {
				pg.ExpiresAt = proto.Int64(g.ExpiresAt)
			}
			p.Op = &raftpb.Op_Grant{Grant: pg}
		} else {
			d := op.Deduction
			p.Op = &raftpb.Op_Deduct{Deduct: &raftpb.DeductOp{Id: d.ID, Amount: d.Amount, Timestamp: d.Timestamp}}
		}
		msg.Ops[i] = p
	}
	dst = append(dst, TypeBatch)
	out, err := proto.MarshalOptions{}.MarshalAppend(dst, msg)
	if err != nil {
		return nil, fmt.Errorf("raftfsm: encode batch: %w", err)
	}
	return out, nil
}

// EncodeNoop returns the entry data of a Noop.
func EncodeNoop() []byte { return []byte{TypeNoop} }

// handler applies one command entry's payload under the write lock and
// returns the entry's response.
type handler func(s *Shard, index uint64, payload []byte) any

// handlers is the dispatch table, indexed by type byte. A nil slot is an
// unknown type.
var handlers = [256]handler{
	TypeBatch: applyBatch,
	TypeNoop:  applyNoop,
}

type fsm Shard

var _ raft.BatchingFSM = (*fsm)(nil)

// Apply applies one entry. raft uses ApplyBatch since fsm implements it;
// Apply exists for raft.FSM and for tests.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries under one acquisition of the write
// lock. The response of a Batch entry is a []OpResult with one result per
// op; of a malformed command an error wrapping ErrMalformedCommand; of
// anything else nil.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	s := (*Shard)(f)
	resps := make([]any, len(logs))
	if len(logs) == 0 {
		return resps
	}
	s.applyLocked(logs, resps)
	s.entries.Add(uint64(len(logs)))
	s.notifyApplied()
	return resps
}

func (s *Shard) applyLocked(logs []*raft.Log, resps []any) {
	s.mu.Lock()
	// Deferred so that the deliberate panic on an unknown command leaves
	// the Shard readable, for whoever recovers it (tests, a crash handler
	// that logs the state).
	defer s.mu.Unlock()
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			resps[i] = s.applyCommand(l.Index, l.Data)
		}
		// Configuration entries change no user but count as applied: a
		// reader waiting for the commit index must not wait for a
		// command that may never come.
		s.applied.Store(l.Index)
	}
}

func (s *Shard) applyCommand(index uint64, data []byte) any {
	if len(data) == 0 {
		s.malformed.Add(1)
		return fmt.Errorf("%w: entry %d is empty", ErrMalformedCommand, index)
	}
	typ := data[0]
	if h := handlers[typ]; h != nil {
		return h(s, index, data[1:])
	}
	if typ&IgnorableFlag != 0 {
		s.ignored.Add(1)
		s.log.Warn("skipping unknown ignorable command", "index", index, "type", typ)
		return nil
	}
	panic(&UnknownCommandError{Index: index, Type: typ})
}

func applyNoop(s *Shard, index uint64, payload []byte) any {
	// The payload is not inspected: a Noop is never given fields that
	// matter to the state, so any future content is safe to skip.
	return nil
}

func applyBatch(s *Shard, index uint64, payload []byte) any {
	var b raftpb.Batch
	if err := proto.Unmarshal(payload, &b); err != nil {
		s.malformed.Add(1)
		return fmt.Errorf("%w: entry %d: %v", ErrMalformedCommand, index, err)
	}
	if b.Format > BatchFormat {
		panic(&UnknownCommandError{Index: index, Type: TypeBatch, Format: b.Format})
	}
	if b.Format == 0 || len(b.Ops) > MaxBatchOps {
		s.malformed.Add(1)
		return fmt.Errorf("%w: entry %d: batch format %d with %d ops", ErrMalformedCommand, index, b.Format, len(b.Ops))
	}
	results := make([]OpResult, len(b.Ops))
	var applied, mismatched, invalid uint64
	for i, op := range b.Ops {
		var r OpResult
		if b.Format >= formatChained && op.GetChained() {
			r = s.applyChained(b.Ops, results, i)
		} else {
			r = s.applyOp(op)
		}
		switch {
		case r.Err != nil:
			invalid++
		case r.Applied:
			applied++
		default:
			mismatched++
		}
		results[i] = r
	}
	s.ops.Add(uint64(len(b.Ops)))
	s.appliedOps.Add(applied)
	s.stateOps.Add(applied)
	s.mismatches.Add(mismatched)
	s.invalid.Add(invalid)
	return results
}

// applyChained applies ops[i], which is chained: only if the op before it
// is the same user's and applied (results[i-1]). A chain whose first op
// was refused, because the user's log moved on since the actor validated
// it, is refused whole, even where a later op's expected version happens
// to match: that op was validated on top of the refused one.
func (s *Shard) applyChained(ops []*raftpb.Op, results []OpResult, i int) OpResult {
	op := ops[i]
	if i == 0 || ops[i-1].GetUser() != op.GetUser() {
		var cur uint64
		if u := s.users[op.GetUser()]; u != nil {
			cur = u.version
		}
		return OpResult{Version: cur, Err: invalidOp("chained", "op %d of the batch follows no op of its user", i)}
	}
	if !results[i-1].Applied {
		return OpResult{Version: results[i-1].Version}
	}
	return s.applyOp(op)
}

// applyOp checks and applies one op; the write lock is held.
func (s *Shard) applyOp(op *raftpb.Op) OpResult {
	u := s.users[op.GetUser()]
	var cur uint64
	if u != nil {
		cur = u.version
	}
	if err := validatePB(op); err != nil {
		return OpResult{Version: cur, Err: err}
	}
	if op.GetExpectedVersion() != cur || cur == math.MaxUint64 {
		return OpResult{Version: cur}
	}
	if u == nil {
		u = &userLog{}
		s.users[op.User] = u
	}
	// Appending never rewrites bytes below len(u.ops), which snapshots and
	// readers may be reading without the lock.
	if g := op.GetGrant(); g != nil {
		exp := ledger.Never
		if g.ExpiresAt != nil {
			exp = *g.ExpiresAt
		}
		u.ops = appendOp(u.ops, tagGrant, g.Id, g.Amount, g.Timestamp, exp, g.Priority)
	} else {
		d := op.GetDeduct()
		u.ops = appendOp(u.ops, tagDeduction, d.Id, d.Amount, d.Timestamp, 0, 0)
	}
	u.version++
	return OpResult{Applied: true, Version: u.version}
}

// validatePB is Validate for the wire form, without building ledger types.
func validatePB(op *raftpb.Op) error {
	if !ledger.ValidID(op.GetUser()) {
		return invalidOp("user", "not a valid id: %q", op.GetUser())
	}
	switch {
	case op.GetGrant() != nil:
		g := op.GetGrant()
		exp := ledger.Never
		if g.ExpiresAt != nil {
			exp = *g.ExpiresAt
		}
		return validateGrant(&ledger.Grant{ID: g.Id, Amount: g.Amount, Timestamp: g.Timestamp, ExpiresAt: exp, Priority: g.Priority})
	case op.GetDeduct() != nil:
		d := op.GetDeduct()
		return validateDeduction(&ledger.Deduction{ID: d.Id, Amount: d.Amount, Timestamp: d.Timestamp})
	}
	return invalidOp("op", "neither grant nor deduction set")
}
