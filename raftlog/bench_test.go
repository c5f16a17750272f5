package raftlog

import (
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"
)

// BenchmarkStoreLogs is one group appending entries of 64 ~100-byte ops'
// worth of data, one synced commit per call: the single-group cost that
// the shared fsync amortizes across groups.
func BenchmarkStoreLogs(b *testing.B) {
	s := openStore(b, b.TempDir())
	defer s.Close()
	g := openGroup(b, s, 1)
	data := make([]byte, 64*100)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := range b.N {
		if err := g.StoreLog(&raft.Log{Index: uint64(i + 1), Term: 1, Data: data}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetLogAfterTruncations reads recent entries of a group whose
// log has been compacted many times (one range tombstone per compaction,
// as raft compacts after each snapshot), against the same log compacted
// with point deletes and a log never compacted. Raft reads recent entries
// (replication) and, rarely, the first one.
//
//	go test ./raftlog -run XXX -bench GetLogAfterTruncations
func BenchmarkGetLogAfterTruncations(b *testing.B) {
	const (
		total   = 200_000
		keep    = 10_000 // raft's default TrailingLogs
		perSnap = 190    // entries between compactions: 1000 compactions
	)
	for _, mode := range []string{"none", "range", "point"} {
		b.Run("deletes="+mode, func(b *testing.B) {
			s := openStore(b, b.TempDir())
			defer s.Close()
			g := openGroup(b, s, 1)
			data := make([]byte, 200)
			for lo := uint64(1); lo <= total; lo += perSnap {
				var logs []*raft.Log
				for i := lo; i < lo+perSnap && i <= total; i++ {
					logs = append(logs, &raft.Log{Index: i, Term: 1, Data: data})
				}
				if err := g.StoreLogs(logs); err != nil {
					b.Fatal(err)
				}
				last, _ := g.LastIndex()
				first, _ := g.FirstIndex()
				if last > keep && last-keep > first && mode != "none" {
					compact(b, g, mode, first, last-keep)
				}
			}
			first, _ := g.FirstIndex()
			last, _ := g.LastIndex()
			rng := rand.New(rand.NewPCG(1, 2))
			var l raft.Log
			b.ResetTimer()
			for i := range b.N {
				idx := last - rng.Uint64N(1000)
				if i%100 == 0 {
					idx = first
				}
				if err := g.GetLog(idx, &l); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(first), "first")
		})
	}
}

func compact(b *testing.B, g *Group, mode string, lo, hi uint64) {
	if mode == "range" {
		if err := g.DeleteRange(lo, hi); err != nil {
			b.Fatal(err)
		}
		return
	}
	batch := g.s.db.NewBatch()
	for i := lo; i <= hi; i++ {
		if err := batch.Delete(logKey(g.id, i), nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := batch.Commit(nil); err != nil {
		b.Fatal(err)
	}
	batch.Close()
	g.first.Store(hi + 1)
}
