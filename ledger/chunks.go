package ledger

import "unsafe"

const (
	chunkShift = 12
	chunkLen   = 1 << chunkShift
)

// chunks is an append-only array in fixed-size pieces. Appending never
// copies what is stored and wastes at most one piece, where a growing slice
// would copy everything on each growth and leave up to a quarter unused.
type chunks[T any] struct {
	c [][]T
	n int
}

func (s *chunks[T]) len() int { return s.n }

func (s *chunks[T]) at(i uint32) *T { return &s.c[i>>chunkShift][i&(chunkLen-1)] }

func (s *chunks[T]) push(v T) uint32 {
	if s.n == len(s.c)*chunkLen {
		s.c = append(s.c, make([]T, chunkLen))
	}
	i := uint32(s.n)
	*s.at(i) = v
	s.n++
	return i
}

// truncate forgets the elements from n on. The pieces stay allocated for
// the appends that follow, as they do after a replay rewrites a suffix.
func (s *chunks[T]) truncate(n int) { s.n = n }

// pop forgets the last element; used to drop a refused operation.
func (s *chunks[T]) pop() {
	s.n--
	var zero T
	*s.at(uint32(s.n)) = zero
}

const arenaChunk = 1 << 16

// arena stores ids back to back in 64 KiB pieces that never move, so the
// ids handed out are views of the arena, not copies: results cost no
// allocation per grant id. Bytes of accepted operations are never written
// again; only the bytes of a refused operation, always the last ones, are
// reused.
type arena struct {
	c [][]byte
}

func (a *arena) add(s string) (off uint32, n uint8) {
	last := len(a.c) - 1
	if last < 0 || len(a.c[last])+len(s) > arenaChunk {
		a.c = append(a.c, make([]byte, 0, arenaChunk))
		last++
	}
	b := a.c[last]
	off = uint32(last)<<16 | uint32(len(b))
	a.c[last] = append(b, s...)
	return off, uint8(len(s))
}

func (a *arena) bytes(off uint32, n uint8) []byte {
	c := a.c[off>>16]
	o := off & (arenaChunk - 1)
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
	i := int(off >> 16)
	a.c[i] = a.c[i][:off&(arenaChunk-1)]
	if len(a.c[i]) == 0 && i == len(a.c)-1 {
		a.c = a.c[:i]
	}
}
