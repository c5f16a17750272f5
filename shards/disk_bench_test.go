package shards

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkDiskCeiling measures what the disk alone allows a node with one
// bolt file per raft group, with no raft, no API and no CPU spent on
// anything else: closed-loop clients each wait for their operation's
// "entry" to be durable; each group writes whatever operations are queued
// as one entry and pays what a bolt commit pays, two fdatasyncs (data
// pages, then the meta page). Operations per second is the best any node
// on this disk could acknowledge with that many groups and clients.
//
//	go test ./shards -run XXX -bench DiskCeiling -benchtime 3s
func BenchmarkDiskCeiling(b *testing.B) {
	for _, tc := range []struct{ groups, clients int }{{32, 64}, {8, 64}, {4, 64}, {1, 64}} {
		b.Run(fmt.Sprintf("groups=%d/clients=%d", tc.groups, tc.clients), func(b *testing.B) {
			diskCeiling(b, tc.groups, tc.clients)
		})
	}
}

func diskCeiling(b *testing.B, groups, clients int) {
	dir := b.TempDir()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	gs := make([]*syncWriter, groups)
	for i := range gs {
		gs[i] = startWriter(b, dir, fmt.Sprintf("g%d", i), 2, stop, &wg)
	}
	elapsed := closedLoop(b, clients, func(rng *rand.Rand) {
		done := make(chan struct{})
		gs[rng.IntN(groups)].submit(func() { close(done) })
		<-done
	})
	close(stop)
	wg.Wait()
	entries, ops := totals(gs)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	if entries > 0 {
		b.ReportMetric(float64(ops)/float64(entries), "ops/entry")
		b.ReportMetric(float64(2*entries)/elapsed.Seconds(), "fsyncs/s")
	}
}

// startWriter opens a file in dir and runs a syncWriter on it until stop.
func startWriter(b *testing.B, dir, name string, syncs int, stop <-chan struct{}, wg *sync.WaitGroup) *syncWriter {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(4 << 20); err != nil {
		b.Fatal(err)
	}
	w := &syncWriter{kick: make(chan struct{}, 1), syncs: syncs}
	commit := fileCommit(f, syncs)
	wg.Go(func() { defer f.Close(); w.run(commit, stop) })
	return w
}

// closedLoop runs b.N operations from that many clients, each waiting for
// its operation before the next, and returns how long they took.
func closedLoop(b *testing.B, clients int, op func(*rand.Rand)) time.Duration {
	var remaining atomic.Int64
	remaining.Store(int64(b.N))
	b.ResetTimer()
	start := time.Now()
	var cwg sync.WaitGroup
	for c := range clients {
		cwg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for remaining.Add(-1) >= 0 {
				op(rng)
			}
		})
	}
	cwg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	return elapsed
}

func totals(ws []*syncWriter) (commits, items int64) {
	for _, w := range ws {
		commits += w.commits.Load()
		items += w.items.Load()
	}
	return commits, items
}
