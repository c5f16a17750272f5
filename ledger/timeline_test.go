package ledger

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The chunked timeline must behave exactly like a slice under inserts and
// removes at any position, including across chunk boundaries.
func TestTimelineMatchesSlice(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var tl timeline
	var want []event
	for step := 0; step < 30000; step++ {
		switch {
		case len(want) > 0 && r.IntN(3) == 0:
			p := r.IntN(len(want))
			if r.IntN(2) == 0 {
				p = len(want) - 1 - r.IntN(min(len(want), 3))
			}
			tl.remove(p)
			want = slices.Delete(want, p, p+1)
		default:
			p := r.IntN(len(want) + 1)
			if r.IntN(2) == 0 {
				p = len(want)
			}
			e := event{ts: int64(step), ref: uint32(step)}
			tl.insert(p, e)
			want = slices.Insert(want, p, e)
		}
		if tl.n != len(want) {
			t.Fatalf("step %d: length %d, want %d", step, tl.n, len(want))
		}
		if step%997 == 0 || step > 29000 {
			for i := range want {
				if *tl.at(i) != want[i] {
					t.Fatalf("step %d: element %d = %+v, want %+v", step, i, *tl.at(i), want[i])
				}
			}
		}
	}
}
