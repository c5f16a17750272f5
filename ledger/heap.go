package ledger

import "bytes"

// liveHeap holds the live grants that have something left, ordered by draw
// order, with each grant's position stored in the grant so that expirations
// and undos remove it in O(log n).
type liveHeap struct {
	l *Ledger
	h []uint32
}

// drawsBefore is the draw order: lower priority, sooner expiry (Never is
// last by construction), earlier grant, then grant id.
func (l *Ledger) drawsBefore(a, b uint32) bool {
	ga, gb := l.grants.at(a), l.grants.at(b)
	if ga.prio != gb.prio {
		return ga.prio < gb.prio
	}
	if ga.exp != gb.exp {
		return ga.exp < gb.exp
	}
	if ga.ts != gb.ts {
		return ga.ts < gb.ts
	}
	return bytes.Compare(l.ids.bytes(ga.idOff, ga.idLen), l.ids.bytes(gb.idOff, gb.idLen)) < 0
}

func (h *liveHeap) set(i int, g uint32) {
	h.h[i] = g
	h.l.grants.at(g).heapPos = int32(i)
}

func (h *liveHeap) push(g uint32) {
	h.h = append(h.h, g)
	h.up(len(h.h)-1, g)
}

func (h *liveHeap) pop() { h.remove(0) }

func (h *liveHeap) remove(i int) {
	g := h.h[i]
	last := len(h.h) - 1
	x := h.h[last]
	h.h = h.h[:last]
	h.l.grants.at(g).heapPos = -1
	if i == last {
		return
	}
	if i > 0 && h.l.drawsBefore(x, h.h[(i-1)/2]) {
		h.up(i, x)
	} else {
		h.down(i, x)
	}
}

// up places g at i or above, moving parents down.
func (h *liveHeap) up(i int, g uint32) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.l.drawsBefore(g, h.h[p]) {
			break
		}
		h.set(i, h.h[p])
		i = p
	}
	h.set(i, g)
}

// down places g at i or below, moving children up.
func (h *liveHeap) down(i int, g uint32) {
	n := len(h.h)
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && h.l.drawsBefore(h.h[r], h.h[c]) {
			c = r
		}
		if !h.l.drawsBefore(h.h[c], g) {
			break
		}
		h.set(i, h.h[c])
		i = c
	}
	h.set(i, g)
}
