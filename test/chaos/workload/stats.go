package workload

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ration/ration/test/chaos/history"
)

// Stats counts a run's calls by kind and outcome.
type Stats struct {
	Ops    int
	Counts map[history.Kind]map[history.Outcome]int
	// Resends counts writes sent again with their id (Op.Resend).
	Resends int
}

// StatsOf counts ops.
func StatsOf(ops []history.Op) Stats {
	s := Stats{Ops: len(ops), Counts: map[history.Kind]map[history.Outcome]int{}}
	for _, op := range ops {
		if s.Counts[op.Kind] == nil {
			s.Counts[op.Kind] = map[history.Outcome]int{}
		}
		s.Counts[op.Kind][op.Outcome]++
		if op.Resend {
			s.Resends++
		}
	}
	return s
}

// Count is the number of calls of kind with outcome.
func (s Stats) Count(kind history.Kind, o history.Outcome) int { return s.Counts[kind][o] }

// Kind is the number of calls of kind.
func (s Stats) Kind(kind history.Kind) int {
	n := 0
	for _, c := range s.Counts[kind] {
		n += c
	}
	return n
}

// OKWrites is the number of grants and deductions acknowledged.
func (s Stats) OKWrites() int {
	return s.Count(history.Grant, history.OK) + s.Count(history.Deduct, history.OK)
}

// String is e.g. "ops=120 grant[ok=30 unknown=1] deduct[ok=30 refused=9] balance[failed=2 ok=48] resends=3".
func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ops=%d", s.Ops)
	for _, k := range []history.Kind{history.Grant, history.Deduct, history.Balance} {
		var parts []string
		for o, n := range s.Counts[k] {
			parts = append(parts, fmt.Sprintf("%s=%d", o, n))
		}
		slices.Sort(parts)
		fmt.Fprintf(&b, " %s[%s]", k, strings.Join(parts, " "))
	}
	fmt.Fprintf(&b, " resends=%d", s.Resends)
	return b.String()
}
