package ledger

import (
	"math"
	"slices"
	"strings"
)

// refLedger is the plain replay model of ../shared/reference-model.md: keep
// every accepted operation and replay them all from scratch for every
// answer. It is the oracle of the differential tests and the baseline of the
// benchmarks, so it is written for obviousness, not speed.
type refLedger struct {
	grants []Grant     // accepted, in acceptance order
	deds   []Deduction // accepted, in acceptance order
}

type refEvent struct {
	kind  EventKind
	ts    int64
	order int // acceptance order within its kind
}

type refReplay struct {
	events    []refEvent
	remaining map[int]int64 // grant index -> remaining, live or as expired
	live      map[int]bool
	balAfter  []int64
	allocs    map[int][]Allocation // deduction index -> draws
	failed    int                  // index of the first deduction not met, or -1
	shortfall int64
}

func (m *refLedger) replay(grants []Grant, deds []Deduction, stopAt int64) refReplay {
	var evs []refEvent
	for i, g := range grants {
		evs = append(evs, refEvent{KindGrant, g.Timestamp, i})
		if g.ExpiresAt != Never {
			evs = append(evs, refEvent{KindExpiration, g.ExpiresAt, i})
		}
	}
	for i, d := range deds {
		evs = append(evs, refEvent{KindDeduction, d.Timestamp, i})
	}
	slices.SortStableFunc(evs, func(a, b refEvent) int {
		if a.ts != b.ts {
			return cmp64(a.ts, b.ts)
		}
		if a.kind != b.kind {
			return int(a.kind) - int(b.kind)
		}
		return a.order - b.order
	})
	r := refReplay{remaining: map[int]int64{}, live: map[int]bool{}, allocs: map[int][]Allocation{}, failed: -1}
	for _, e := range evs {
		if e.ts > stopAt {
			break
		}
		r.events = append(r.events, e)
		switch e.kind {
		case KindGrant:
			r.remaining[e.order] = grants[e.order].Amount
			r.live[e.order] = true
		case KindExpiration:
			delete(r.live, e.order)
		case KindDeduction:
			need := deds[e.order].Amount
			var cands []int
			for g := range r.live {
				if r.remaining[g] > 0 {
					cands = append(cands, g)
				}
			}
			slices.SortFunc(cands, func(a, b int) int {
				ga, gb := grants[a], grants[b]
				switch {
				case ga.Priority != gb.Priority:
					return cmp64(int64(ga.Priority), int64(gb.Priority))
				case ga.ExpiresAt != gb.ExpiresAt:
					return cmp64(ga.ExpiresAt, gb.ExpiresAt)
				case ga.Timestamp != gb.Timestamp:
					return cmp64(ga.Timestamp, gb.Timestamp)
				}
				return strings.Compare(ga.ID, gb.ID)
			})
			for _, g := range cands {
				if need == 0 {
					break
				}
				take := min(need, r.remaining[g])
				r.remaining[g] -= take
				need -= take
				r.allocs[e.order] = append(r.allocs[e.order], Allocation{GrantID: grants[g].ID, Amount: take})
			}
			if need > 0 && r.failed < 0 {
				r.failed = e.order
				r.shortfall = need
			}
		}
		var b int64
		for g := range r.live {
			b += r.remaining[g]
		}
		r.balAfter = append(r.balAfter, b)
	}
	return r
}

func cmp64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (m *refLedger) grant(op Grant) (Result, error) {
	if err := validateGrant(op); err != nil {
		return Result{}, err
	}
	var total int64
	for _, g := range m.grants {
		if g.ID == op.ID {
			if g == op {
				return Result{Duplicate: true}, nil
			}
			return Result{}, &ConflictError{Kind: KindGrant, ID: op.ID}
		}
		total += g.Amount
	}
	if total > math.MaxInt64-op.Amount {
		return Result{}, invalid("amount", "total granted would overflow int64")
	}
	m.grants = append(m.grants, op)
	return Result{}, nil
}

func (m *refLedger) deduct(op Deduction) (Result, error) {
	if err := validateDeduction(op); err != nil {
		return Result{}, err
	}
	for i, d := range m.deds {
		if d.ID == op.ID {
			if d == op {
				r := m.replay(m.grants, m.deds, math.MaxInt64)
				return Result{Duplicate: true, Allocations: r.allocs[i]}, nil
			}
			return Result{}, &ConflictError{Kind: KindDeduction, ID: op.ID}
		}
	}
	deds := append(slices.Clone(m.deds), op)
	r := m.replay(m.grants, deds, math.MaxInt64)
	if r.failed >= 0 {
		f := deds[r.failed]
		return Result{}, &InsufficientCreditsError{DeductionID: f.ID, At: f.Timestamp, Shortfall: r.shortfall}
	}
	m.deds = deds
	return Result{Allocations: r.allocs[len(deds)-1]}, nil
}

func (m *refLedger) balance(t int64) int64 {
	r := m.replay(m.grants, m.deds, t)
	if len(r.balAfter) == 0 {
		return 0
	}
	return r.balAfter[len(r.balAfter)-1]
}

func (m *refLedger) breakdown(t int64) []GrantBalance {
	r := m.replay(m.grants, m.deds, t)
	var out []GrantBalance
	for g := range r.live {
		if rem := r.remaining[g]; rem > 0 {
			op := m.grants[g]
			out = append(out, GrantBalance{ID: op.ID, Remaining: rem, Timestamp: op.Timestamp, ExpiresAt: op.ExpiresAt, Priority: op.Priority})
		}
	}
	slices.SortFunc(out, func(a, b GrantBalance) int {
		switch {
		case a.Priority != b.Priority:
			return cmp64(int64(a.Priority), int64(b.Priority))
		case a.ExpiresAt != b.ExpiresAt:
			return cmp64(a.ExpiresAt, b.ExpiresAt)
		case a.Timestamp != b.Timestamp:
			return cmp64(a.Timestamp, b.Timestamp)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// history is every event in order, as the ledger's History reports it.
func (m *refLedger) history() []Event {
	r := m.replay(m.grants, m.deds, math.MaxInt64)
	var out []Event
	for i, e := range r.events {
		ev := Event{Kind: e.kind, Timestamp: e.ts, BalanceAfter: r.balAfter[i]}
		switch e.kind {
		case KindGrant:
			g := m.grants[e.order]
			ev.ID, ev.Amount, ev.ExpiresAt, ev.Priority = g.ID, g.Amount, g.ExpiresAt, g.Priority
		case KindExpiration:
			g := m.grants[e.order]
			ev.ID, ev.Amount = g.ID, r.remaining[e.order]
		case KindDeduction:
			d := m.deds[e.order]
			ev.ID, ev.Amount, ev.Allocations = d.ID, d.Amount, r.allocs[e.order]
			if ev.Allocations == nil {
				ev.Allocations = []Allocation{}
			}
		}
		out = append(out, ev)
	}
	return out
}
