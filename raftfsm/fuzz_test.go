package raftfsm

import (
	"errors"
	"testing"
)

// fuzzBase is the state FuzzApply starts from, so that inputs can match
// versions (u1 is at 1, u2 at 2) and not only create users.
func fuzzBase(t testing.TB) *applier {
	a := newApplier()
	a.apply(mustBatch(t,
		grantOp("u1", 0, "g1", 10, 100),
		grantOp("u2", 0, "g1", 10, 100),
		deductOp("u2", 1, "d1", 5, 200),
	))
	return a
}

// applyRecovering applies data and reports whether it panicked with the
// deliberate *UnknownCommandError; any other panic propagates.
func applyRecovering(a *applier, data []byte) (resp any, unknown bool) {
	defer func() {
		if r := recover(); r != nil {
			var uc *UnknownCommandError
			if err, ok := r.(error); ok && errors.As(err, &uc) {
				unknown = true
				return
			}
			panic(r)
		}
	}()
	return a.apply(data), false
}

// FuzzApply feeds arbitrary entry data to Apply. Nothing may panic but an
// unknown command, the state must stay well formed, and only a Batch whose
// results say so may change it.
func FuzzApply(f *testing.F) {
	f.Add(mustBatch(f, grantOp("u1", 1, "g2", 1, 1), deductOp("u3", 0, "d", 1, 1)))
	f.Add(mustBatch(f, grantOp("u1", 1, "g2", 1, 1), chained(deductOp("u1", 2, "d", 1, 1)), grantOp("u2", 2, "g2", 1, 1), chained(grantOp("u2", 3, "g3", 1, 1))))
	f.Add(EncodeNoop())
	f.Add([]byte{IgnorableFlag | 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		a := fuzzBase(t)
		before := a.s.StateHash()
		versions := map[string]uint64{}
		for _, u := range []string{"u1", "u2"} {
			versions[u] = a.s.Version(u)
		}
		resp, unknown := applyRecovering(a, data)
		if unknown {
			if a.s.StateHash() != before {
				t.Fatal("an unknown command changed the state")
			}
			return
		}
		checkInvariants(t, a.s)
		switch r := resp.(type) {
		case nil:
			if a.s.StateHash() != before {
				t.Fatal("an entry with a nil response changed the state")
			}
		case error:
			if !errors.Is(r, ErrMalformedCommand) {
				t.Fatalf("unexpected error response %v", r)
			}
			if a.s.StateHash() != before {
				t.Fatal("a malformed entry changed the state")
			}
		case []OpResult:
			var applied uint64
			for _, res := range r {
				if res.Applied {
					applied++
				}
				if res.Applied && res.Err != nil {
					t.Fatalf("result %+v both applied and failed", res)
				}
			}
			var total uint64
			refs, _ := a.s.capture()
			for _, ref := range refs {
				total += ref.version - versions[ref.id]
			}
			if total != applied {
				t.Fatalf("%d ops applied, versions grew by %d", applied, total)
			}
			if (applied == 0) != (a.s.StateHash() == before) {
				t.Fatal("state changed without an applied op, or the reverse")
			}
		default:
			t.Fatalf("response of type %T", resp)
		}
		// Whatever was applied must survive a snapshot.
		snap, _ := a.s.FSM().Snapshot()
		fresh := New(discardLogger())
		if err := restore(fresh, persist(t, snap)); err != nil {
			t.Fatalf("snapshot of fuzzed state does not restore: %v", err)
		}
		if fresh.StateHash() != a.s.StateHash() {
			t.Fatal("snapshot round trip changed the state")
		}
	})
}

// FuzzRestore feeds arbitrary snapshots to Restore: no panic, and either an
// error with the state unchanged or a well-formed state that round-trips.
func FuzzRestore(f *testing.F) {
	a := fuzzBase(f)
	snap, _ := a.s.FSM().Snapshot()
	f.Add(persist(f, snap))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := fuzzBase(t).s
		before, index := s.StateHash(), s.AppliedIndex()
		if err := restore(s, data); err != nil {
			if s.StateHash() != before || s.AppliedIndex() != index {
				t.Fatal("a refused snapshot changed the state")
			}
			return
		}
		checkInvariants(t, s)
		again, _ := s.FSM().Snapshot()
		fresh := New(discardLogger())
		if err := restore(fresh, persist(t, again)); err != nil {
			t.Fatalf("re-persisted snapshot does not restore: %v", err)
		}
		if fresh.StateHash() != s.StateHash() || fresh.AppliedIndex() != s.AppliedIndex() {
			t.Fatal("snapshot round trip changed the state")
		}
	})
}
