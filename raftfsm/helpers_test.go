package raftfsm

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/ration/ration/ledger"
)

func grantOp(user string, ver uint64, id string, amount, ts int64) Op {
	return Op{User: user, ExpectedVersion: ver, Grant: &ledger.Grant{ID: id, Amount: amount, Timestamp: ts, ExpiresAt: ledger.Never}}
}

func deductOp(user string, ver uint64, id string, amount, ts int64) Op {
	return Op{User: user, ExpectedVersion: ver, Deduction: &ledger.Deduction{ID: id, Amount: amount, Timestamp: ts}}
}

func mustBatch(t testing.TB, ops ...Op) []byte {
	t.Helper()
	b, err := EncodeBatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// applier feeds entries to an fsm with increasing indexes.
type applier struct {
	s     *Shard
	index uint64
}

func newApplier() *applier { return &applier{s: New(discardLogger())} }

func (a *applier) entry(data []byte) *raft.Log {
	a.index++
	return &raft.Log{Index: a.index, Term: 1, Type: raft.LogCommand, Data: data}
}

func (a *applier) apply(data []byte) any {
	return a.s.FSM().Apply(a.entry(data))
}

func (a *applier) results(t testing.TB, data []byte) []OpResult {
	t.Helper()
	resp := a.apply(data)
	res, ok := resp.([]OpResult)
	if !ok {
		t.Fatalf("response %T %v, want []OpResult", resp, resp)
	}
	return res
}

// randomEntries makes n batch entries of valid ops for users u0..u(users-1),
// with mostly matching expected versions, tracking versions as Apply will.
func randomEntries(rng *rand.Rand, n, users, maxOps int) [][]byte {
	ver := make([]uint64, users)
	var out [][]byte
	seq := 0
	for range n {
		k := 1 + rng.IntN(maxOps)
		ops := make([]Op, 0, k)
		for range k {
			u := rng.IntN(users)
			user := fmt.Sprintf("u%d", u)
			exp := ver[u]
			if rng.IntN(8) == 0 {
				exp += uint64(rng.IntN(3)) + 1 // stale or future: refused
			} else {
				ver[u]++
			}
			seq++
			ts := int64(1_700_000_000_000 + rng.IntN(1_000_000))
			if rng.IntN(3) == 0 {
				ops = append(ops, deductOp(user, exp, fmt.Sprintf("d%d", seq), 1+rng.Int64N(5), ts))
			} else {
				op := grantOp(user, exp, fmt.Sprintf("g%d", seq), 1+rng.Int64N(1000), ts)
				if rng.IntN(2) == 0 {
					op.Grant.ExpiresAt = ts + 1 + rng.Int64N(1<<40)
				}
				op.Grant.Priority = int32(rng.IntN(5)) - 2
				ops = append(ops, op)
			}
		}
		b, err := EncodeBatch(ops)
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	return out
}

// persist runs a snapshot's Persist into memory.
func persist(t testing.TB, snap raft.FSMSnapshot) []byte {
	t.Helper()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed {
		t.Fatal("Persist did not close the sink")
	}
	return sink.Bytes()
}

func restore(s *Shard, data []byte) error {
	return s.FSM().Restore(io.NopCloser(bytes.NewReader(data)))
}

type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Close() error  { m.closed = true; return nil }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }

// checkInvariants verifies that every user's log decodes to exactly its
// version in canonical, valid operations.
func checkInvariants(t testing.TB, s *Shard) {
	t.Helper()
	refs, _ := s.capture()
	for _, r := range refs {
		if !ledger.ValidID(r.id) || r.version == 0 {
			t.Fatalf("user %q version %d", r.id, r.version)
		}
		if err := checkLog(r.ops, r.version); err != nil {
			t.Fatalf("user %q: log of version %d: %v", r.id, r.version, err)
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
