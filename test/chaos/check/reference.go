package check

import (
	"cmp"
	"math"
	"slices"

	"github.com/ration/ration/test/chaos/history"
)

// This file is the checker's own reference model of one user's ledger,
// written from the shared reference model (../shared/reference-model.md)
// and docs/semantics.md. It deliberately shares no code with package
// ledger: a checker that reused the implementation would agree with its
// bugs.

// never is the expiry of a grant that does not expire; it sorts after
// every real instant.
const never = math.MaxInt64

// write is one accepted grant or deduction.
type write struct {
	grant      bool
	id         string
	amount     int64
	ts         int64
	exp        int64 // grants; never when it does not expire
	prio       int32 // grants
	sameTsRank int   // deductions: how many deductions at ts were accepted before it
}

// sameFields reports whether w and v are the same operation (id aside).
func (w *write) sameFields(v *write) bool {
	return w.grant == v.grant && w.amount == v.amount && w.ts == v.ts && w.exp == v.exp && w.prio == v.prio
}

// wid names a write in a table.
type wid int32

// table holds the writes of one check. Events and walkers refer to writes
// by index, so that the slices the model copies and keeps by the thousand
// hold no pointers for the garbage collector to scan.
type table struct {
	ws []*write
}

func (t *table) add(w *write) wid {
	t.ws = append(t.ws, w)
	return wid(len(t.ws) - 1)
}

// drawBefore is the order deductions draw from grants: lowest priority,
// then soonest expiry, then earliest timestamp, then id.
func (t *table) drawBefore(i, j wid) bool {
	a, b := t.ws[i], t.ws[j]
	if a.prio != b.prio {
		return a.prio < b.prio
	}
	if a.exp != b.exp {
		return a.exp < b.exp
	}
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	return a.id < b.id
}

// Event kinds in the order they are taken at one timestamp.
const (
	evExpire = iota
	evGrant
	evDeduct
)

// event is one step of a replay.
type event struct {
	ts   int64
	w    wid
	kind int8
}

// replayBefore orders the events of a history: by timestamp, then
// expirations, grants, deductions; grants and expirations at one instant by
// id (their order there changes no answer), deductions in the order they
// were accepted.
func (t *table) replayBefore(a, b event) int {
	if c := cmp.Compare(a.ts, b.ts); c != 0 {
		return c
	}
	if c := cmp.Compare(a.kind, b.kind); c != 0 {
		return c
	}
	if a.kind == evDeduct {
		return cmp.Compare(t.rank(a.w), t.rank(b.w))
	}
	return cmp.Compare(t.ws[a.w].id, t.ws[b.w].id)
}

// rank is a deduction's place among those stamped alike; -1 (noWrite)
// sorts before them all.
func (t *table) rank(i wid) int {
	if i == noWrite {
		return -1
	}
	return t.ws[i].sameTsRank
}

// noWrite is a probe for searches.
const noWrite wid = -1

// eventsOf returns the events of a grant (its grant and, if it expires, its
// expiration) or of a deduction.
func (t *table) eventsOf(i wid) []event {
	w := t.ws[i]
	if !w.grant {
		return []event{{kind: evDeduct, ts: w.ts, w: i}}
	}
	if w.exp == never {
		return []event{{kind: evGrant, ts: w.ts, w: i}}
	}
	return []event{{kind: evGrant, ts: w.ts, w: i}, {kind: evExpire, ts: w.exp, w: i}}
}

// walker replays events one at a time. It keeps the usable grants with
// something left, in draw order: few at any instant, since deductions
// drain them from the front, so that a copy of the walker is cheap (see
// view snapshots).
type walker struct {
	t    *table
	live []liveGrant
	bal  int64
}

type liveGrant struct {
	w   wid
	rem int64
}

func (wk *walker) clone() *walker {
	return &walker{t: wk.t, live: slices.Clone(wk.live), bal: wk.bal}
}

// find is where grant g is, or would go, in the live list.
func (wk *walker) find(g wid) (int, bool) {
	return slices.BinarySearchFunc(wk.live, g, func(l liveGrant, g wid) int {
		switch {
		case l.w == g:
			return 0
		case wk.t.drawBefore(l.w, g):
			return -1
		}
		return 1
	})
}

// step applies e. For a deduction it returns what each grant paid (when
// alloc is set) and what could not be met; for an expiration, what was
// forfeited.
func (wk *walker) step(e event, alloc bool) (allocs []history.Allocation, short, forfeited int64) {
	w := wk.t.ws[e.w]
	switch e.kind {
	case evGrant:
		i, _ := wk.find(e.w)
		wk.live = slices.Insert(wk.live, i, liveGrant{w: e.w, rem: w.amount})
		wk.bal += w.amount
	case evExpire:
		if i, ok := wk.find(e.w); ok {
			forfeited = wk.live[i].rem
			wk.bal -= forfeited
			wk.live = slices.Delete(wk.live, i, i+1)
		}
	case evDeduct:
		need := w.amount
		k := 0
		for ; need > 0 && k < len(wk.live); k++ {
			g := &wk.live[k]
			take := min(g.rem, need)
			g.rem -= take
			wk.bal -= take
			need -= take
			if alloc {
				allocs = append(allocs, history.Allocation{GrantID: wk.t.ws[g.w].id, Amount: take})
			}
			if g.rem > 0 {
				break
			}
		}
		wk.live = wk.live[k:]
		if need > 0 {
			return nil, need, 0
		}
	}
	return allocs, 0, forfeited
}

// breakdown is the usable grants with something left, in draw order.
func (wk *walker) breakdown() []history.GrantBalance {
	out := make([]history.GrantBalance, len(wk.live))
	for i, l := range wk.live {
		g := wk.t.ws[l.w]
		out[i] = history.GrantBalance{ID: g.id, Remaining: l.rem, Priority: g.prio, Timestamp: g.ts}
		if g.exp != never {
			out[i].ExpiresAt = &g.exp
		}
	}
	return out
}

// shortage is the first deduction of a history that cannot be met.
type shortage struct {
	id        string
	at        int64
	shortfall int64
}

// validID is the API's id rule: 1 to 128 characters of A-Z a-z 0-9 . _ : @ -.
func validID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '@' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// invalid says why a write would be refused as invalid, or "".
// granted is the user's total granted so far, for the overflow rule.
func invalid(w *write, granted int64) string {
	switch {
	case !validID(w.id):
		return "malformed id"
	case w.amount <= 0:
		return "amount <= 0"
	case w.ts < 0:
		return "negative timestamp"
	case w.grant && w.exp <= w.ts:
		return "expires_at <= timestamp"
	case w.grant && granted > math.MaxInt64-w.amount:
		return "total granted would overflow"
	}
	return ""
}

// writeOf is the write an op asks for.
func writeOf(op *history.Op) *write {
	w := &write{grant: op.Kind == history.Grant, id: op.ID, amount: op.Amount, ts: op.Timestamp, exp: never}
	if w.grant {
		w.prio = op.Priority
		if op.ExpiresAt != nil {
			w.exp = *op.ExpiresAt
		}
	}
	return w
}
