package check

import (
	"encoding/binary"
	"hash/maphash"
	"slices"
	"strings"

	"github.com/ration/ration/test/chaos/history"
)

// state is the accepted writes of one user in linearization order, as a
// persistent chain: each state adds one write to its parent. Porcupine
// keeps every state it reaches in its cache, so states must share their
// past instead of copying it.
//
// Two states that differ only in the order of grants, or of deductions at
// different timestamps, answer every question alike: they are equal. The
// model interns states, so equal states are one pointer.
type state struct {
	parent  *state
	w       wid   // the last write; noWrite for the empty state
	n       int   // writes in the chain
	granted int64 // total granted, for the overflow rule
	// sum is the sum of two independent 64-bit hashes of each write
	// (mixes). It is independent of the order of the writes except where
	// replay order depends on it (a deduction's rank among those stamped
	// alike), so equal states have equal sums, and two different states
	// have equal sums with probability about 2^-128.
	sum [2]uint64
}

var empty = &state{w: noWrite}

var mixSeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

// mix hashes one write of a state.
func mix(w *write) [2]uint64 {
	var b [1 + 8*5]byte
	if w.grant {
		b[0] = 1
	}
	binary.LittleEndian.PutUint64(b[1:], uint64(w.amount))
	binary.LittleEndian.PutUint64(b[9:], uint64(w.ts))
	binary.LittleEndian.PutUint64(b[17:], uint64(w.exp))
	binary.LittleEndian.PutUint64(b[25:], uint64(w.prio))
	binary.LittleEndian.PutUint64(b[33:], uint64(w.sameTsRank))
	var out [2]uint64
	for i, seed := range mixSeeds {
		var h maphash.Hash
		h.SetSeed(seed)
		h.Write(b[:])
		h.WriteString(w.id)
		out[i] = h.Sum64()
	}
	return out
}

// with returns s plus w, accepted now. pv is s's view.
func (m *model) with(s *state, w *write, pv *view) *state {
	nw := *w
	if !nw.grant {
		nw.sameTsRank = pv.deductionsAt(nw.ts)
	}
	h := mix(&nw)
	ns := &state{parent: s, w: m.t.add(&nw), n: s.n + 1, granted: s.granted, sum: [2]uint64{s.sum[0] + h[0], s.sum[1] + h[1]}}
	if nw.grant {
		ns.granted += nw.amount
	}
	return ns
}

func (s *state) equal(o *state) bool {
	return s == o || s.n == o.n && s.granted == o.granted && s.sum == o.sum
}

// snapEvery is the spacing of a view's replay snapshots, in events.
const snapEvery = 32

// view is a state materialized for lookups and replays. Views are derived
// on demand and kept in a bounded cache.
//
// snaps[i] is the replay after events[:i*snapEvery], recorded as replays
// pass by. A derived view shares its parent's snapshots up to the first
// event it inserts: writes mostly land near the end of the timeline, so a
// replay of a new state starts from a snapshot close to its new write
// instead of from the beginning.
type view struct {
	t      *table
	grants []wid   // by id
	deds   []wid   // by id
	events []event // replay order
	snaps  []*walker
}

// find returns the write of that kind and id, or nil, and its wid.
func (v *view) find(grant bool, id string) (*write, wid) {
	list := v.deds
	if grant {
		list = v.grants
	}
	i, ok := slices.BinarySearchFunc(list, id, func(w wid, id string) int { return strings.Compare(v.t.ws[w].id, id) })
	if !ok {
		return nil, noWrite
	}
	return v.t.ws[list[i]], list[i]
}

// deductionsAt counts the deductions stamped ts.
func (v *view) deductionsAt(ts int64) int {
	i := v.position(event{kind: evDeduct, ts: ts, w: noWrite})
	n := 0
	for ; i < len(v.events) && v.events[i].ts == ts && v.events[i].kind == evDeduct; i++ {
		n++
	}
	return n
}

// position is the index of e in the replay, or where it would go.
func (v *view) position(e event) int {
	i, _ := slices.BinarySearchFunc(v.events, e, v.t.replayBefore)
	return i
}

// walkTo returns a walker that has replayed events[:at], from the
// closest snapshot, recording snapshots on the way.
func (v *view) walkTo(at int) *walker {
	if len(v.snaps) == 0 {
		v.snaps = []*walker{{t: v.t}}
	}
	i := min(at/snapEvery, len(v.snaps)-1)
	wk := v.snaps[i].clone()
	for p := i * snapEvery; p < at; p++ {
		if _, short, _ := wk.step(v.events[p], false); short > 0 {
			// Only a candidate state that is about to be refused is
			// infeasible; its snapshots after this point do not matter.
			return wk
		}
		if (p+1)%snapEvery == 0 && (p+1)/snapEvery == len(v.snaps) {
			v.snaps = append(v.snaps, wk.clone())
		}
	}
	return wk
}

// balanceAt is the balance and breakdown at instant t: what is left after
// every event stamped at or before t.
func (v *view) balanceAt(t int64) (int64, []history.GrantBalance) {
	at, _ := slices.BinarySearchFunc(v.events, t, func(e event, t int64) int {
		if e.ts <= t {
			return -1
		}
		return 1
	})
	wk := v.walkTo(at)
	return wk.bal, wk.breakdown()
}

// allocations replays the history and returns the draws of deduction d,
// or the first deduction that cannot be met. With all set it checks the
// whole history; without, only up to d (for a state known feasible).
func (v *view) allocations(d wid, all bool) ([]history.Allocation, *shortage) {
	p := v.position(event{kind: evDeduct, ts: v.t.ws[d].ts, w: d})
	wk := v.walkTo(p)
	var got []history.Allocation
	for _, e := range v.events[p:] {
		a, short, _ := wk.step(e, e.w == d)
		if short > 0 {
			return nil, &shortage{id: v.t.ws[e.w].id, at: e.ts, shortfall: short}
		}
		if e.w == d {
			got = a
			if !all {
				break
			}
		}
	}
	return got, nil
}

// model is the porcupine model of one user: the step function, with the
// caches that make it fast. A model is used by one goroutine at a time.
type model struct {
	t     *table
	views map[*state]*view
	fifo  []*state

	// Porcupine steps the same op from equal states over and over: once
	// for every order of the concurrent ops that do not change the state
	// (reads, duplicates) or that commute. States are interned, one
	// pointer per class of equal states, so that step results can be
	// remembered by pointer.
	interned map[[2]uint64][]*state
	memo     map[memoKey]*state // nil: the step is refused
}

type memoKey struct {
	s *state
	c *call
}

// maxViews bounds the memory of a check: a view costs O(writes).
const maxViews = 256

func newModel() *model {
	return &model{t: &table{}, views: map[*state]*view{}, interned: map[[2]uint64][]*state{}, memo: map[memoKey]*state{}}
}

// next is step for porcupine: remembered, and with interned states.
func (m *model) next(s *state, c *call) *state {
	k := memoKey{s, c}
	if ns, ok := m.memo[k]; ok {
		return ns
	}
	ns, err := m.step(s, *c, false)
	switch {
	case err != nil:
		ns = nil
	case ns != s:
		ns = m.intern(ns)
	}
	m.memo[k] = ns
	return ns
}

func (m *model) intern(s *state) *state {
	for _, c := range m.interned[s.sum] {
		if c.equal(s) {
			return c
		}
	}
	m.interned[s.sum] = append(m.interned[s.sum], s)
	return s
}

// view returns s materialized: from the closest cached ancestor's view,
// one insertion per write since, or else from the whole chain.
func (m *model) view(s *state) *view {
	if v, ok := m.views[s]; ok {
		return v
	}
	if s.w == noWrite {
		return m.cache(s, &view{t: m.t})
	}
	var down []*state
	c := s
	for ; c.w != noWrite && len(down) < maxDerive; c = c.parent {
		if m.views[c] != nil {
			break
		}
		down = append(down, c)
	}
	pv := m.views[c]
	if pv == nil {
		if c.w != noWrite {
			return m.cache(s, m.materialize(s))
		}
		pv = m.cache(c, &view{t: m.t})
	}
	for i := len(down) - 1; i >= 0; i-- {
		pv = m.cache(down[i], derive(pv, down[i].w))
	}
	return pv
}

// maxDerive is how far up view looks for a cached ancestor: beyond, a
// sort of the whole chain is cheaper than the insertions.
const maxDerive = 16

func (m *model) cache(s *state, v *view) *view {
	if len(m.fifo) >= maxViews {
		delete(m.views, m.fifo[0])
		m.fifo = m.fifo[1:]
	}
	m.views[s] = v
	m.fifo = append(m.fifo, s)
	return v
}

func derive(pv *view, w wid) *view {
	t := pv.t
	v := &view{t: t, grants: pv.grants, deds: pv.deds, events: pv.events}
	byID := func(a, b wid) int { return strings.Compare(t.ws[a].id, t.ws[b].id) }
	if t.ws[w].grant {
		v.grants = insertSorted(pv.grants, w, byID)
	} else {
		v.deds = insertSorted(pv.deds, w, byID)
	}
	first := len(pv.events)
	for _, e := range t.eventsOf(w) {
		i, _ := slices.BinarySearchFunc(v.events, e, t.replayBefore)
		first = min(first, i)
		v.events = slices.Insert(slices.Clip(v.events), i, e)
	}
	// Snapshot k covers events[:k*snapEvery], unchanged if that is at or
	// before the first insertion. Clipped, so appends do not write into
	// the parent's list.
	keep := min(len(pv.snaps), first/snapEvery+1)
	v.snaps = slices.Clip(pv.snaps[:keep])
	return v
}

// insertSorted returns a new slice: s with x inserted in order.
func insertSorted[T any](s []T, x T, cmp func(a, b T) int) []T {
	i, _ := slices.BinarySearchFunc(s, x, cmp)
	return slices.Insert(slices.Clip(s), i, x)
}

func (m *model) materialize(s *state) *view {
	t := m.t
	v := &view{t: t}
	for c := s; c.w != noWrite; c = c.parent {
		if t.ws[c.w].grant {
			v.grants = append(v.grants, c.w)
		} else {
			v.deds = append(v.deds, c.w)
		}
		v.events = append(v.events, t.eventsOf(c.w)...)
	}
	byID := func(a, b wid) int { return strings.Compare(t.ws[a].id, t.ws[b].id) }
	slices.SortFunc(v.grants, byID)
	slices.SortFunc(v.deds, byID)
	slices.SortFunc(v.events, t.replayBefore)
	return v
}
