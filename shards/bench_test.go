package shards

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkPropose runs 64 concurrent proposers, each writing its own user's
// next version, against one node hosting 32 shards, with fsync on (raft.db
// under the test's temp dir). It reports ops/s and the mean ops per raft
// entry.
func BenchmarkPropose(b *testing.B) {
	for _, shards := range []int{32, 4, 1} {
		inflight := 0
		name := fmt.Sprintf("shards=%d", shards)
		b.Run(name, func(b *testing.B) {
			m := &recMetrics{}
			cfg := fastConfig(shards)
			cfg.testSink = m
			cfg.MaxInflight = inflight
			n := singleNode(b, cfg)
			h := n.host
			var next atomic.Int64
			// RunParallel starts parallelism*GOMAXPROCS goroutines.
			b.SetParallelism(64 / maxProcs())
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				user := fmt.Sprintf("bench-%d", next.Add(1))
				var v uint64
				for pb.Next() {
					res, err := h.Propose(context.Background(), grant(user, v, fmt.Sprintf("g%d", v), 1))
					if err != nil || !res.Applied {
						b.Errorf("%s v%d: %+v %v", user, v, res, err)
						return
					}
					v++
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			m.mu.Lock()
			if len(m.batches) > 0 {
				b.ReportMetric(float64(b.N)/float64(len(m.batches)), "ops/entry")
			}
			m.mu.Unlock()
		})
	}
}
