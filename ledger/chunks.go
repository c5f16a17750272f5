package ledger

import (
	"math/bits"
	"slices"
	"unsafe"
)

const (
	chunkShift = 8
	chunkLen   = 1 << chunkShift // elements per leaf

	// firstLen elements live in one allocation that grows by an eighth,
	// copying; past it, storage comes in segments of a sixteenth of what
	// is there (at most segmentMax leaves), which are never copied.
	firstLen   = 16 * chunkLen
	segmentDiv = 16
	segmentMax = 64
)

// chunks is an append-only array addressed through a directory of leaves
// of chunkLen elements, so that reading element i is a shift, a mask and
// two loads whatever the size. The leaves are views of larger allocations:
// the first firstLen elements are one allocation that starts with room for
// one element and grows by an eighth (plus the allocator's rounding),
// copying at most firstLen elements, once per ledger; past it, each
// allocation is at most a sixteenth of the elements before it, cut into
// leaves, and is never copied. So a ledger of a few operations costs a few
// hundred bytes (a node holds millions of users, BenchmarkManyUsers), what
// is allocated and unused stays a small fraction at every size, and a
// large array grows without the copies and page faults of a growing slice.
// A pointer from at is valid only until the next push.
type chunks[T any] struct {
	c [][]T // leaves; only the last may be shorter than chunkLen
	n int
}

func (s *chunks[T]) len() int { return s.n }

func (s *chunks[T]) at(i uint32) *T { return &s.c[i>>chunkShift][i&(chunkLen-1)] }

func (s *chunks[T]) push(v T) uint32 {
	if s.n == s.capacity() {
		s.grow(s.n+1, segmentDiv)
	}
	i := uint32(s.n)
	*s.at(i) = v
	s.n++
	return i
}

func (s *chunks[T]) capacity() int {
	if len(s.c) == 0 {
		return 0
	}
	last := len(s.c) - 1
	return last<<chunkShift + len(s.c[last])
}

// grow makes room for at least want elements in all, with new segments of
// at least 1/div of the leaves already there (0: just what want needs).
func (s *chunks[T]) grow(want, div int) {
	if c := s.capacity(); c < firstLen {
		s.growFirst(min(firstLen, max(want, c+c/8)))
	}
	for c := s.capacity(); c < want; c = s.capacity() {
		leaves := (want - c + chunkLen - 1) >> chunkShift
		if div > 0 {
			leaves = max(leaves, len(s.c)/div)
		}
		// A power of two of leaves is a whole number of pages for every
		// element size here, so a large segment wastes none to rounding.
		leaves = 1 << (bits.Len(uint(min(leaves, segmentMax))) - 1)
		seg := make([]T, leaves<<chunkShift)
		for k := 0; k < leaves; k++ {
			s.c = append(s.c, seg[k<<chunkShift:(k+1)<<chunkShift:(k+1)<<chunkShift])
		}
	}
}

// growFirst moves the first allocation to one of at least size elements.
func (s *chunks[T]) growFirst(size int) {
	// Grow rounds the capacity up to the allocator's size class: the
	// rounding is allocated either way, so it is used.
	first := slices.Grow([]T(nil), size)
	first = first[:min(cap(first), firstLen)]
	for k, leaf := range s.c {
		copy(first[k<<chunkShift:], leaf)
	}
	s.c = s.c[:0]
	for off := 0; off < len(first); off += chunkLen {
		end := min(off+chunkLen, len(first))
		s.c = append(s.c, first[off:end:end])
	}
}

// reserve makes room for n elements in all, so that a ledger whose size is
// known up front (a decoded one) is laid out without copying.
func (s *chunks[T]) reserve(n int) {
	if n > s.capacity() {
		s.grow(n, 0)
	}
}

// truncate forgets the elements from n on. The leaves stay allocated for
// the appends that follow, as they do after a replay rewrites a suffix.
func (s *chunks[T]) truncate(n int) { s.n = n }

// pop forgets the last element; used to drop a refused operation.
func (s *chunks[T]) pop() {
	s.n--
	var zero T
	*s.at(uint32(s.n)) = zero
}

const (
	arenaShift    = 12
	arenaPieceMax = 1 << arenaShift
	arenaPieceMin = 32
)

// arena stores ids back to back in pieces that never move, so the ids
// handed out are views of the arena, not copies: results cost no
// allocation per grant id. Each new piece is an eighth of the arena so far,
// from arenaPieceMin bytes up to arenaPieceMax, so a user with a few ids
// pays for a few dozen bytes and at most an eighth of a large arena (or
// one piece) is unused. Bytes of accepted operations are never written
// again; only the bytes of a refused operation, always the last ones, are
// reused.
//
// An offset is the piece number times arenaPieceMax plus the position in
// the piece: 2^20 pieces, 4 GiB of ids.
type arena struct {
	c [][]byte
}

func (a *arena) add(s string) (off uint32, n uint8) {
	last := len(a.c) - 1
	if last < 0 || len(a.c[last])+len(s) > cap(a.c[last]) {
		a.c = append(a.c, a.piece(len(s)))
		last++
	}
	b := a.c[last]
	off = uint32(last)<<arenaShift | uint32(len(b))
	a.c[last] = append(b, s...)
	return off, uint8(len(s))
}

// piece allocates the next piece, with room for at least need bytes.
func (a *arena) piece(need int) []byte {
	size := arenaPieceMax
	if n := len(a.c); n == 0 || cap(a.c[n-1]) < arenaPieceMax {
		total := 0
		for _, p := range a.c {
			total += cap(p)
		}
		size = min(arenaPieceMax, max(need, arenaPieceMin, total/8))
	}
	// Grow rounds up to the allocator's size class, which is allocated
	// either way.
	p := slices.Grow([]byte(nil), size)
	return p[:0:min(cap(p), arenaPieceMax)]
}

func (a *arena) bytes(off uint32, n uint8) []byte {
	c := a.c[off>>arenaShift]
	o := off & (arenaPieceMax - 1)
	return c[o : o+uint32(n) : o+uint32(n)]
}

// str is the id at off as a string sharing the arena's memory. Only for
// accepted operations, whose bytes never change.
func (a *arena) str(off uint32, n uint8) string {
	if n == 0 {
		return ""
	}
	b := a.bytes(off, n)
	return unsafe.String(&b[0], len(b))
}

// truncate drops everything from off on; used to forget a refused operation.
func (a *arena) truncate(off uint32) {
	i := int(off >> arenaShift)
	a.c[i] = a.c[i][:off&(arenaPieceMax-1)]
	if len(a.c[i]) == 0 && i == len(a.c)-1 {
		a.c = a.c[:i]
	}
}
