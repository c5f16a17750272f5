package hist

import (
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
)

func TestBucketsCoverInt64(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 127, 128, 129, 191, 192, 255, 256, 1000, 1 << 40, math.MaxInt64 - 1, math.MaxInt64} {
		i := index(v)
		if i < prev || i >= buckets {
			t.Fatalf("index(%d) = %d, want monotonic and < %d", v, i, buckets)
		}
		prev = i
		if hi := highest(i); hi < v {
			t.Errorf("highest(index(%d)) = %d < value", v, hi)
		}
		if i > 0 && highest(i-1) >= v {
			t.Errorf("value %d also fits bucket %d (highest %d)", v, i-1, highest(i-1))
		}
	}
	// Contiguity: each bucket starts right after the previous one ends.
	for i := 1; i < buckets; i++ {
		lo := highest(i-1) + 1
		if lo <= 0 {
			break
		}
		if index(lo) != i {
			t.Fatalf("bucket %d starts at %d, but index(%d) = %d", i, lo, lo, index(lo))
		}
	}
}

func TestQuantilesWithinOnePercent(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]int64, 100000)
	for i := range vals {
		// Latency-like: log-normal-ish spread over several decades.
		vals[i] = int64(math.Exp(r.NormFloat64()*1.5 + 13))
		h.Record(vals[i])
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := max(int(math.Ceil(q*float64(len(vals)))), 1)
		exact := vals[rank-1]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > 0.016*float64(exact) {
			t.Errorf("Quantile(%v) = %d, exact %d: want at most 1.6%% above", q, got, exact)
		}
	}
	if h.Max() != vals[len(vals)-1] || h.Quantile(1) != h.Max() {
		t.Errorf("Max = %d, Quantile(1) = %d, want %d", h.Max(), h.Quantile(1), vals[len(vals)-1])
	}
	if h.Count() != uint64(len(vals)) {
		t.Errorf("Count = %d", h.Count())
	}
}

func TestSmallValuesExactAndEmpty(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Max() != 0 {
		t.Error("empty histogram not zero")
	}
	for v := int64(1); v <= 100; v++ {
		h.Record(v)
	}
	h.Record(-5) // clamps to 0
	if got := h.Quantile(0.5); got != 50 {
		t.Errorf("median of 0..100 = %d, want 50", got)
	}
}

func TestConcurrentRecordAndMerge(t *testing.T) {
	var a, b Histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				a.Record(int64(g*1000 + i))
			}
		})
	}
	wg.Wait()
	b.Record(1 << 50)
	b.Merge(&a)
	if b.Count() != 8001 || b.Max() != 1<<50 || a.Max() != 7999 {
		t.Errorf("count %d max %d (a max %d)", b.Count(), b.Max(), a.Max())
	}
}
