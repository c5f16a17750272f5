// Package hist is a small HDR-style latency histogram: log-bucketed with a
// fixed number of sub-buckets per power of two, so every recorded value is
// kept within a relative error of 1/2^(subBits-1) (under 1%) at a fixed
// memory cost, whatever the range of values. Recording is lock-free, so
// many goroutines can share one Histogram.
package hist

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// subBits is the precision: values below 2^subBits are exact, larger ones
// land in one of 2^(subBits-1) sub-buckets of their power of two.
const subBits = 7

const (
	subCount = 1 << subBits
	half     = subCount / 2
	// buckets covers every non-negative int64: exact values below
	// subCount, then half sub-buckets for each shift 1..63-subBits+1.
	buckets = subCount + (64-subBits)*half
)

// Histogram counts non-negative int64 values (nanoseconds, say).
type Histogram struct {
	counts [buckets]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64
}

func index(v int64) int {
	u := uint64(v)
	if u < subCount {
		return int(u)
	}
	shift := bits.Len64(u) - subBits // >= 1
	return shift*half + int(u>>shift)
}

// highest is the largest value that falls in bucket i.
func highest(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := i/half - 1
	m := uint64(i - shift*half)
	hi := (m+1)<<shift - 1
	if hi > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(hi)
}

// Record adds one value; negative values count as 0.
func (h *Histogram) Record(v int64) {
	v = max(v, 0)
	h.counts[index(v)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Count is the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Max is the largest value recorded, exactly.
func (h *Histogram) Max() int64 { return h.max.Load() }

// Quantile returns the value at quantile q in [0, 1]: the highest value of
// the bucket holding the ceil(q*n)-th smallest value, capped by Max, so it
// errs on the high side (as latency reports should) by under 1%. It is 0
// for an empty histogram.
func (h *Histogram) Quantile(q float64) int64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return min(highest(i), h.Max())
		}
	}
	return h.Max()
}

// Merge adds o's values to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	for {
		m, om := h.max.Load(), o.max.Load()
		if om <= m || h.max.CompareAndSwap(m, om) {
			return
		}
	}
}
