package ledger

import "sort"

// upperBound is the number of applied events with a timestamp <= t. It
// searches the checkpoints first (small enough to stay in cache), then one
// block of the timeline.
func (l *Ledger) upperBound(t int64) int {
	chk := l.evChk
	lo, hi := 0, len(chk)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if chk[m].ts <= t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	// Every event before block lo-1 is <= t, every event from block lo on
	// is > t.
	if lo == 0 {
		return 0
	}
	lo, hi = (lo-1)*chkEvery, min(lo*chkEvery, l.ev.n)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if l.ev.at(m).ts <= t {
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
			r := l.grants.at(g)
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
	return l.balanceAfter(i - 1)
}

// balanceAfter is the balance after applied event i, from the checkpoint
// before it and the deltas of the events between.
func (l *Ledger) balanceAfter(i int) int64 {
	b := l.evChk[i/chkEvery].bal
	for j := i &^ (chkEvery - 1); j <= i; j++ {
		b += l.delta(j)
	}
	return b
}

// delta is what event j did to the balance, in a consistent state.
func (l *Ledger) delta(j int) int64 {
	r := l.ev.at(j).ref
	switch refKind(r) {
	case KindGrant:
		return l.grants.at(refRec(r)).amount
	case KindDeduction:
		return -l.deds.at(refRec(r)).amount
	default:
		return -l.grants.at(refRec(r)).remaining
	}
}

// unexpiredAt says whether a grant expiring at exp is still usable at t.
// Never is later than every instant, MaxInt64 included, as Balance counts
// it: a grant without expiry is usable at MaxInt64 too.
func unexpiredAt(exp, t int64) bool { return t < exp || exp == Never }

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
			if unexpiredAt(l.grants.at(g).exp, t) {
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
		for j := l.ev.n - 1; j >= i; j-- {
			r := l.ev.at(j).ref
			switch refKind(r) {
			case KindExpiration:
				consider(refRec(r))
			case KindDeduction:
				for a := l.allocStart(j); a < l.ev.at(j).allocEnd; a++ {
					g := *l.allocGrant.at(a)
					add[g] += *l.allocAmt.at(a)
					consider(g)
				}
			}
		}
		kept := gs[:0]
		for _, g := range gs {
			r := l.grants.at(g)
			if r.ts <= t && unexpiredAt(r.exp, t) && r.remaining+add[g] > 0 {
				kept = append(kept, g)
			}
		}
		gs = kept
	}
	sort.Slice(gs, func(i, j int) bool { return l.drawsBefore(gs[i], gs[j]) })
	out := make([]GrantBalance, len(gs))
	for i, g := range gs {
		r := l.grants.at(g)
		out[i] = GrantBalance{
			ID: l.grantName(g), Remaining: r.remaining + add[g],
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
	var bal int64
	if i < l.ev.n {
		bal = l.evChk[i/chkEvery].bal
		for j := i &^ (chkEvery - 1); j < i; j++ {
			bal += l.delta(j)
		}
	}
	for ; i < l.ev.n && l.ev.at(i).ts < to; i++ {
		bal += l.delta(i)
		if !emit(l.eventAt(i, bal)) {
			break
		}
	}
	if !more && i == l.ev.n {
		b := l.balance
		for _, g := range l.pending[l.pendingHead:] {
			r := l.grants.at(g)
			if r.exp >= to {
				break
			}
			b -= r.remaining
			if r.exp < from {
				continue
			}
			e := Event{Kind: KindExpiration, ID: l.grantName(g), Timestamp: r.exp, Amount: r.remaining, BalanceAfter: b}
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

func (l *Ledger) eventAt(i int, balanceAfter int64) Event {
	r := l.ev.at(i).ref
	rec := refRec(r)
	e := Event{Kind: refKind(r), Timestamp: l.ev.at(i).ts, BalanceAfter: balanceAfter}
	switch e.Kind {
	case KindGrant:
		g := l.grants.at(rec)
		e.ID, e.Amount, e.ExpiresAt, e.Priority = l.grantName(rec), g.amount, g.exp, g.prio
	case KindExpiration:
		g := l.grants.at(rec)
		e.ID, e.Amount = l.grantName(rec), g.remaining
	case KindDeduction:
		d := l.deds.at(rec)
		e.ID, e.Amount, e.Allocations = l.dedName(rec), d.amount, l.appendAllocations(nil, i)
	}
	return e
}

func (l *Ledger) appendAllocations(out []Allocation, p int) []Allocation {
	s, e := l.allocStart(p), l.ev.at(p).allocEnd
	if out == nil {
		out = make([]Allocation, 0, e-s)
	}
	for a := s; a < e; a++ {
		out = append(out, Allocation{GrantID: l.grantName(*l.allocGrant.at(a)), Amount: *l.allocAmt.at(a)})
	}
	return out
}

// allocationsOf finds deduction d in the timeline and returns its draws.
func (l *Ledger) allocationsOf(d uint32) []Allocation {
	want := ref(KindDeduction, d)
	for i := l.position(l.deds.at(d).ts, KindDeduction) - 1; i >= 0; i-- {
		if l.ev.at(i).ref == want {
			l.scratch = l.appendAllocations(l.scratch[:0], i)
			return l.scratch
		}
	}
	return nil
}
