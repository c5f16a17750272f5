package shards

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/ration/ration/raftlog"
)

// BenchmarkDiskCeilingRaftlog is BenchmarkDiskCeiling and
// BenchmarkDiskCeilingReplicated with the shared store (raftlog: one
// Pebble engine per node) in place of the modelled files: each group has
// one writer, as raft's leader loop is, that appends whatever is queued as
// one StoreLogs of one entry per op, and the concurrent StoreLogs of every
// group share the engine's WAL fsyncs. appends/fsync is how many
// StoreLogs calls one fsync covered.
//
//	go test ./shards -run XXX -bench DiskCeilingRaftlog -benchtime 3s
func BenchmarkDiskCeilingRaftlog(b *testing.B) {
	for _, tc := range []struct{ nodes, groups, clients int }{{1, 32, 64}, {3, 32, 64}} {
		b.Run(fmt.Sprintf("nodes=%d/groups=%d/clients=%d", tc.nodes, tc.groups, tc.clients), func(b *testing.B) {
			raftlogCeiling(b, tc.nodes, tc.groups, tc.clients)
		})
	}
}

func raftlogCeiling(b *testing.B, nodes, groups, clients int) {
	replicas := min(nodes, 3)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stores := make([]*raftlog.Store, nodes)
	for n := range stores {
		s, err := raftlog.Open(raftlog.Options{Dir: filepath.Join(b.TempDir(), "raftlog")})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		stores[n] = s
	}
	// writers[g][r] is replica r of group g, on node (g+r) % nodes;
	// replica 0 leads.
	writers := make([][]*syncWriter, groups)
	var all []*syncWriter
	for g := range writers {
		for r := range replicas {
			lg, err := stores[(g+r)%nodes].Group(uint32(g))
			if err != nil {
				b.Fatal(err)
			}
			w := &syncWriter{kick: make(chan struct{}, 1), syncs: 1}
			wg.Go(func() { w.run(storeCommit(lg), stop) })
			writers[g] = append(writers[g], w)
			all = append(all, w)
		}
	}
	elapsed := closedLoop(b, clients, func(rng *rand.Rand) {
		replicate(writers[rng.IntN(groups)])
	})
	close(stop)
	wg.Wait()
	var fsyncs uint64
	for _, s := range stores {
		fsyncs += s.Fsyncs()
	}
	appends, ops := totals(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(fsyncs)/elapsed.Seconds(), "fsyncs/s")
	if fsyncs > 0 {
		b.ReportMetric(float64(appends)/float64(fsyncs), "appends/fsync")
	}
	if appends > 0 {
		b.ReportMetric(float64(ops)/float64(appends), "ops/append")
	}
}

// storeCommit appends one ~100-byte entry per item to lg, as raft's
// leader loop appends every entry waiting in its apply channel at once.
func storeCommit(lg *raftlog.Group) func(int) {
	next := uint64(1)
	data := make([]byte, 100)
	return func(items int) {
		logs := make([]*raft.Log, items)
		for i := range logs {
			logs[i] = &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: data}
			next++
		}
		if err := lg.StoreLogs(logs); err != nil {
			panic(err)
		}
	}
}
