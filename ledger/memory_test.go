package ledger

import (
	"runtime"
	"testing"
)

// The memory bound of a user's ledger (userBytes, eventBytes in
// ledger.go) holds at every history size of the benchmark workload.
func memoryBound(ops int) float64 { return userBytes + eventBytes*float64(ops) }

// userHistories is 64 histories of ops operations each, the benchmark
// workload's first ones under different seeds, for populations of users.
func userHistories(ops int) [][]any {
	histories := make([][]any, 64)
	for k := range histories {
		w := newWorkload(uint64(k))
		for range ops {
			histories[k] = append(histories[k], w.next())
		}
	}
	return histories
}

// buildUsers fills ledgers with new ledgers, user u having history
// u modulo len(histories).
func buildUsers(tb testing.TB, ledgers []*Ledger, histories [][]any) {
	for u := range ledgers {
		l := New()
		for _, op := range histories[u%len(histories)] {
			if err := apply(tb, l, op); err != nil {
				tb.Fatal(err)
			}
		}
		ledgers[u] = l
	}
}

// TestMemoryPerUser measures the heap of 10,000 ledgers of 1 and of 10
// operations, as a node holding many new users has.
func TestMemoryPerUser(t *testing.T) {
	for _, events := range []int{1, 10} {
		const users = 10_000
		histories := userHistories(events)
		ledgers := make([]*Ledger, users)
		before := heapInUse()
		buildUsers(t, ledgers, histories)
		perUser := float64(heapInUse()-before) / users
		runtime.KeepAlive(ledgers)
		t.Logf("%d operations: %.0f heap bytes per user", events, perUser)
		if perUser > memoryBound(events) {
			t.Errorf("%d operations: %.0f heap bytes per user, bound %.0f", events, perUser, memoryBound(events))
		}
	}
}

// TestMemoryGrowsWithHistory checks the bound as histories grow, every 5%
// from 20 operations on: where a growing array has just moved to a larger
// allocation is where it wastes the most. Several identical ledgers grow
// in step so that the heap's own noise is shared out.
func TestMemoryGrowsWithHistory(t *testing.T) {
	sweepMemory(t, 16, 20, 20_000)
	if !testing.Short() {
		sweepMemory(t, 1, 20_000, 1_000_000)
	}
}

func sweepMemory(t *testing.T, copies, from, to int) {
	ledgers := make([]*Ledger, copies)
	for k := range ledgers {
		ledgers[k] = New()
	}
	w := newWorkload(42)
	before := heapInUse()
	worst, worstAt := 0.0, 0
	for size := from; size <= to; size += max(1, size/20) {
		for ledgers[0].Len() < size {
			op := w.next()
			for _, l := range ledgers {
				if err := apply(t, l, op); err != nil {
					t.Fatal(err)
				}
			}
		}
		perLedger := float64(heapInUse()-before) / float64(copies)
		ops := ledgers[0].Len()
		if perLedger > memoryBound(ops) {
			t.Errorf("%d operations: %.0f heap bytes (%.1f per operation), bound %.0f",
				ops, perLedger, perLedger/float64(ops), memoryBound(ops))
		}
		if r := (perLedger - userBytes) / float64(ops); r > worst {
			worst, worstAt = r, ops
		}
	}
	runtime.KeepAlive(ledgers)
	t.Logf("%d to %d operations: at most %.1f bytes per operation above %d (at %d)", from, to, worst, userBytes, worstAt)
}
