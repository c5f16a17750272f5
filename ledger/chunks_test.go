package ledger

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// chunks must behave exactly like a slice through growth of the first
// allocation, the first segments and large ones, including after reserve,
// truncate and pop.
func TestChunksMatchSlice(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var s chunks[uint64]
	var want []uint64
	check := func(step int) {
		t.Helper()
		if s.len() != len(want) {
			t.Fatalf("step %d: length %d, want %d", step, s.len(), len(want))
		}
		if s.capacity() < s.len() {
			t.Fatalf("step %d: capacity %d below length %d", step, s.capacity(), s.len())
		}
		for i, v := range want {
			if *s.at(uint32(i)) != v {
				t.Fatalf("step %d: element %d = %d, want %d", step, i, *s.at(uint32(i)), v)
			}
		}
	}
	// Past 32 leaves segments hold several leaves; past 1,024, segmentMax.
	for step := 0; len(want) < 1100*chunkLen; step++ {
		switch n := r.IntN(1000); {
		case n < 2 && len(want) > 0:
			k := len(want) - r.IntN(min(len(want), 2*chunkLen)) // a replay rewrites a suffix
			s.truncate(k)
			want = want[:k]
		case n < 100 && len(want) > 0:
			s.pop()
			want = want[:len(want)-1]
		case n < 110:
			s.reserve(len(want) + r.IntN(2*chunkLen))
		default:
			v := r.Uint64()
			if i := s.push(v); int(i) != len(want) {
				t.Fatalf("step %d: push returned %d, want %d", step, i, len(want))
			}
			want = append(want, v)
		}
		if step%20011 == 0 || len(want) < 2*firstLen && step%101 == 0 {
			check(step)
		}
	}
	check(-1)
}

// A reserved array holds what it was reserved for without moving, and
// wastes at most a leaf's worth of rounding.
func TestChunksReserve(t *testing.T) {
	for _, n := range []int{1, 7, chunkLen, firstLen - 1, firstLen, firstLen + 1, 5*firstLen + 3, 100_000} {
		var s chunks[event]
		s.reserve(n)
		c := s.capacity()
		if c < n {
			t.Fatalf("reserve(%d): capacity %d", n, c)
		}
		for i := 0; i < n; i++ {
			s.push(event{ts: int64(i)})
		}
		if s.capacity() != c {
			t.Fatalf("reserve(%d): pushing %d grew the capacity from %d to %d", n, n, c, s.capacity())
		}
		if n >= firstLen && c-n >= chunkLen {
			t.Fatalf("reserve(%d): capacity %d wastes more than a leaf", n, c)
		}
	}
}

// Ids handed out share the arena's memory, so the arena must never move
// or overwrite them, whatever is added or dropped after.
func TestArenaIdsNeverMove(t *testing.T) {
	var a arena
	var ids []string
	var want []string
	for i := 0; i < 200_000; i++ {
		id := "op-" + strconv.Itoa(i)
		if i%7 == 0 {
			id += "-with-a-longer-tail-to-cross-pieces-at-odd-places"
		}
		off, n := a.add(id)
		if i%5 == 4 {
			// A refused operation: its bytes are dropped and reused.
			a.truncate(off)
			continue
		}
		ids = append(ids, a.str(off, n))
		want = append(want, id)
	}
	for i := range ids {
		if ids[i] != want[i] {
			t.Fatalf("id %d changed: %q, want %q", i, ids[i], want[i])
		}
	}
	for _, p := range a.c {
		if cap(p) > arenaPieceMax {
			t.Fatalf("piece of %d bytes: offsets allow at most %d", cap(p), arenaPieceMax)
		}
	}
}
