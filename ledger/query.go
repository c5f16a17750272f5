package ledger

import "sort"

// upperBound is the number of applied events with a timestamp <= t.
func (l *Ledger) upperBound(t int64) int {
	ts := l.evTs
	lo, hi := 0, len(ts)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ts[m] <= t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Balance is the credit usable at t: what remains of the grants usable at t
// after every event stamped <= t. Later timestamps include the scheduled
// expirations.
func (l *Ledger) Balance(t int64) int64 {
	if t >= l.frontier {
		b := l.balance
		for _, g := range l.pending[l.pendingHead:] {
			r := &l.grants[g]
			if r.exp > t {
				break
			}
			b -= r.remaining
		}
		return b
	}
	i := l.upperBound(t)
	if i == 0 {
		return 0
	}
	return l.evBal[i-1]
}

// GrantBalance is one grant's part of a balance.
type GrantBalance struct {
	ID        string
	Remaining int64
	Timestamp int64
	ExpiresAt int64
	Priority  int32
}

// Breakdown lists the grants usable at t with something left, in the order
// the next deduction would draw from them. Its Remaining values sum to
// Balance(t).
//
// At or after the latest event it reads the live set; before, it walks back
// from the end, so its cost grows with how far back t is.
func (l *Ledger) Breakdown(t int64) []GrantBalance {
	var gs []uint32
	add := map[uint32]int64{}
	if t >= l.frontier {
		for _, g := range l.live.h {
			if l.grants[g].exp > t {
				gs = append(gs, g)
			}
		}
	} else {
		i := l.upperBound(t)
		seen := map[uint32]bool{}
		consider := func(g uint32) {
			if !seen[g] {
				seen[g] = true
				gs = append(gs, g)
			}
		}
		for _, g := range l.live.h {
			consider(g)
		}
		for j := len(l.evTs) - 1; j >= i; j-- {
			r := l.evRef[j]
			switch refKind(r) {
			case KindExpiration:
				consider(refRec(r))
			case KindDeduction:
				for a := l.allocStart(j); a < l.evAllocEnd[j]; a++ {
					g := l.allocGrant[a]
					add[g] += l.allocAmt[a]
					consider(g)
				}
			}
		}
		kept := gs[:0]
		for _, g := range gs {
			r := &l.grants[g]
			if r.ts <= t && t < r.exp && r.remaining+add[g] > 0 {
				kept = append(kept, g)
			}
		}
		gs = kept
	}
	sort.Slice(gs, func(i, j int) bool { return l.drawsBefore(gs[i], gs[j]) })
	out := make([]GrantBalance, len(gs))
	for i, g := range gs {
		r := &l.grants[g]
		out[i] = GrantBalance{
			ID: string(l.grantID(g)), Remaining: r.remaining + add[g],
			Timestamp: r.ts, ExpiresAt: r.exp, Priority: r.prio,
		}
	}
	return out
}

// Event is one entry of a user's history.
type Event struct {
	Kind      EventKind
	ID        string // the grant's id for grants and expirations
	Timestamp int64
	// Amount is what was granted or deducted; for an expiration, what it
	// forfeited (for a scheduled one, what it would forfeit now).
	Amount       int64
	ExpiresAt    int64 // grants
	Priority     int32 // grants
	Allocations  []Allocation
	BalanceAfter int64
}

// History returns up to limit events with from <= timestamp < to, in
// history order, skipping the first skip events stamped exactly from. It
// also says where the next page starts: pass next and nextSkip back as from
// and skip. more is false on the last page.
//
// Allocations are those of the current history: a late event can change
// them.
func (l *Ledger) History(from, to int64, skip, limit int) (evs []Event, next int64, nextSkip int, more bool) {
	if limit <= 0 || from >= to {
		return nil, from, skip, false
	}
	origSkip := skip
	emit := func(e Event) bool {
		if len(evs) == limit {
			more = true
			return false
		}
		if e.Timestamp == from && skip > 0 {
			skip--
			return true
		}
		evs = append(evs, e)
		return true
	}
	i := l.upperBound(from - 1)
	if from <= 0 {
		i = 0
	}
	for ; i < len(l.evTs) && l.evTs[i] < to; i++ {
		if !emit(l.eventAt(i)) {
			break
		}
	}
	if !more && i == len(l.evTs) {
		b := l.balance
		for _, g := range l.pending[l.pendingHead:] {
			r := &l.grants[g]
			if r.exp >= to {
				break
			}
			b -= r.remaining
			if r.exp < from {
				continue
			}
			e := Event{Kind: KindExpiration, ID: string(l.grantID(g)), Timestamp: r.exp, Amount: r.remaining, BalanceAfter: b}
			if !emit(e) {
				break
			}
		}
	}
	next, nextSkip = from, origSkip
	if n := len(evs); n > 0 {
		next, nextSkip = evs[n-1].Timestamp, 0
		for j := n - 1; j >= 0 && evs[j].Timestamp == next; j-- {
			nextSkip++
		}
		if next == from {
			nextSkip += origSkip
		}
	}
	return evs, next, nextSkip, more
}

func (l *Ledger) eventAt(i int) Event {
	r := l.evRef[i]
	rec := refRec(r)
	e := Event{Kind: refKind(r), Timestamp: l.evTs[i], BalanceAfter: l.evBal[i]}
	switch e.Kind {
	case KindGrant:
		g := &l.grants[rec]
		e.ID, e.Amount, e.ExpiresAt, e.Priority = string(l.grantID(rec)), g.amount, g.exp, g.prio
	case KindExpiration:
		g := &l.grants[rec]
		e.ID, e.Amount = string(l.grantID(rec)), g.remaining
	case KindDeduction:
		d := &l.deds[rec]
		e.ID, e.Amount, e.Allocations = string(l.dedID(rec)), d.amount, l.allocationsAt(i)
	}
	return e
}

func (l *Ledger) allocationsAt(p int) []Allocation {
	s, e := l.allocStart(p), l.evAllocEnd[p]
	out := make([]Allocation, 0, e-s)
	for a := s; a < e; a++ {
		out = append(out, Allocation{GrantID: string(l.grantID(l.allocGrant[a])), Amount: l.allocAmt[a]})
	}
	return out
}

// allocationsOf finds deduction d in the timeline and returns its draws.
func (l *Ledger) allocationsOf(d uint32) []Allocation {
	want := ref(KindDeduction, d)
	for i := l.position(l.deds[d].ts, KindDeduction) - 1; i >= 0; i-- {
		if l.evRef[i] == want {
			return l.allocationsAt(i)
		}
	}
	return nil
}
