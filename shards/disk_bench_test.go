package shards

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
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
	type group struct {
		mu      sync.Mutex
		waiting []chan struct{}
		kick    chan struct{}
	}
	gs := make([]*group, groups)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var entries, ops int64
	var statMu sync.Mutex
	for i := range gs {
		g := &group{kick: make(chan struct{}, 1)}
		gs[i] = g
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("g%d", i)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Truncate(4 << 20); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer f.Close()
			page := make([]byte, 4096)
			var off int64
			for {
				select {
				case <-stop:
					return
				case <-g.kick:
				}
				g.mu.Lock()
				batch := g.waiting
				g.waiting = nil
				g.mu.Unlock()
				if len(batch) == 0 {
					continue
				}
				// Data pages, sync, meta page, sync: a bolt commit.
				if _, err := f.WriteAt(page, 4096+off%(2<<20)); err != nil {
					panic(err)
				}
				off += 4096
				_ = syscall.Fdatasync(int(f.Fd()))
				if _, err := f.WriteAt(page[:512], 0); err != nil {
					panic(err)
				}
				_ = syscall.Fdatasync(int(f.Fd()))
				statMu.Lock()
				entries++
				ops += int64(len(batch))
				statMu.Unlock()
				for _, c := range batch {
					close(c)
				}
				select {
				case g.kick <- struct{}{}:
				default:
				}
			}
		}()
	}
	var remaining = int64(b.N)
	var cmu sync.Mutex
	take := func() bool {
		cmu.Lock()
		defer cmu.Unlock()
		remaining--
		return remaining >= 0
	}
	b.ResetTimer()
	start := time.Now()
	var cwg sync.WaitGroup
	for c := range clients {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for take() {
				g := gs[rng.IntN(groups)]
				done := make(chan struct{})
				g.mu.Lock()
				g.waiting = append(g.waiting, done)
				g.mu.Unlock()
				select {
				case g.kick <- struct{}{}:
				default:
				}
				<-done
			}
		}()
	}
	cwg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	if entries > 0 {
		b.ReportMetric(float64(ops)/float64(entries), "ops/entry")
		b.ReportMetric(float64(2*entries)/elapsed.Seconds(), "fsyncs/s")
	}
}
