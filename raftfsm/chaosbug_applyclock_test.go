package raftfsm

import (
	"testing"
	"time"

	"github.com/ration/ration/chaos/skew"
)

// The planted apply-clock bug makes Apply depend on the replica's clock:
// the same entries applied by a replica whose clock jumped an hour, either
// way, leave another state. Run with -tags chaos,chaosbug_applyclock to see
// the bug; without, the same test shows that Apply reads no clock.
func TestBugApplyClock(t *testing.T) {
	t.Cleanup(func() { skew.Set(0) })
	now := time.Now()
	ms := func(d time.Duration) int64 { return now.Add(d).UnixMilli() }
	entries := [][]byte{
		mustBatch(t, grantOp("u", 0, "g1", 100, ms(0))),
		// Late by a few minutes, as clients may send: fine on any clock.
		mustBatch(t, deductOp("u", 1, "d1", 10, ms(-5*time.Minute))),
		mustBatch(t, grantOp("v", 0, "g2", 5, ms(time.Second))),
	}
	replay := func(offset time.Duration) (*applier, []OpResult) {
		skew.Set(offset)
		defer skew.Set(0)
		a := newApplier()
		var out []OpResult
		for _, e := range entries {
			out = append(out, a.results(t, e)...)
		}
		return a, out
	}
	ref, res := replay(0)
	for i, r := range res {
		if !r.Applied {
			t.Fatalf("op %d not applied on a replica with the right clock: %+v", i, r)
		}
	}
	for _, offset := range []time.Duration{-time.Hour, time.Hour} {
		jumped, res := replay(offset)
		same := jumped.s.StateHash() == ref.s.StateHash()
		if same == plantedApplyClock {
			t.Errorf("clock %v: state hash equal to the reference replica's: %v, want %v", offset, same, !plantedApplyClock)
		}
		if plantedApplyClock && res[0].Applied {
			t.Errorf("clock %v: an op an hour off this replica's clock was applied", offset)
		}
		if !plantedApplyClock && jumped.s.Version("u") != 2 {
			t.Errorf("clock %v: version %d, want 2", offset, jumped.s.Version("u"))
		}
	}
}
