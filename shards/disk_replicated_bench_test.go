package shards

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// BenchmarkDiskCeilingReplicated is BenchmarkDiskCeiling for three nodes
// sharing this machine's disk, replication factor 3, as hashicorp/raft
// writes: the leader makes an entry durable, then sends it to its two
// followers, and the operation is acknowledged once one of them has it
// durable too (a majority). Two layouts:
//
//   - per-group: every replica of every group has its own file and pays a
//     bolt commit (two fdatasyncs) per entry: the decided design, 32
//     groups × 3 replicas = 96 files.
//   - shared: one log file per node, shared by all the groups it holds, as
//     a node-wide write-ahead log would be (dragonboat): one write and one
//     fdatasync per batch, whatever the groups in it.
//
// Operations per second is the best any 3-node cluster on this disk could
// acknowledge with that layout, before any CPU work.
//
//	go test ./shards -run XXX -bench DiskCeilingReplicated -benchtime 3s
func BenchmarkDiskCeilingReplicated(b *testing.B) {
	for _, tc := range []struct {
		layout  string
		groups  int
		clients int
	}{{"per-group", 32, 64}, {"per-group", 8, 64}, {"shared", 32, 64}} {
		b.Run(fmt.Sprintf("layout=%s/groups=%d/clients=%d", tc.layout, tc.groups, tc.clients), func(b *testing.B) {
			replicatedCeiling(b, tc.layout == "shared", tc.groups, tc.clients)
		})
	}
}

// replicate writes one op as raft does and returns once it is durable on
// a majority: on the leader ws[0], then on the first of the followers.
func replicate(ws []*syncWriter) {
	done := make(chan struct{})
	if len(ws) == 1 {
		ws[0].submit(func() { close(done) })
		<-done
		return
	}
	var once sync.Once
	ws[0].submit(func() {
		for _, f := range ws[1:] {
			f.submit(func() { once.Do(func() { close(done) }) })
		}
	})
	<-done
}

// syncWriter group-commits whatever is queued when it is free.
type syncWriter struct {
	mu      sync.Mutex
	waiting []func()
	kick    chan struct{}
	syncs   int // fdatasyncs per commit
	commits atomic.Int64
	items   atomic.Int64
}

func (w *syncWriter) submit(done func()) {
	w.mu.Lock()
	w.waiting = append(w.waiting, done)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// run commits whatever is queued each time it is free, until stop.
func (w *syncWriter) run(commit func(items int), stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-w.kick:
		}
		w.mu.Lock()
		batch := w.waiting
		w.waiting = nil
		w.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		commit(len(batch))
		w.commits.Add(1)
		w.items.Add(int64(len(batch)))
		for _, d := range batch {
			d()
		}
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// fileCommit writes a page to f and fdatasyncs it; with syncs == 2 it
// then writes and syncs a meta page too, as a bolt commit does.
func fileCommit(f *os.File, syncs int) func(int) {
	page := make([]byte, 4096)
	var off int64
	return func(int) {
		if _, err := f.WriteAt(page, 4096+off%(2<<20)); err != nil {
			panic(err)
		}
		off += 4096
		_ = syscall.Fdatasync(int(f.Fd()))
		if syncs == 2 {
			if _, err := f.WriteAt(page[:512], 0); err != nil {
				panic(err)
			}
			_ = syscall.Fdatasync(int(f.Fd()))
		}
	}
}

func replicatedCeiling(b *testing.B, shared bool, groups, clients int) {
	const nodes, replicas = 3, 3
	dir := b.TempDir()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// writers[g][r] is replica r of group g; replica 0 leads. Leaders are
	// spread over the nodes as elections spread them.
	writers := make([][]*syncWriter, groups)
	var all []*syncWriter
	if shared {
		for n := range nodes {
			all = append(all, startWriter(b, dir, fmt.Sprintf("node%d.wal", n), 1, stop, &wg))
		}
	}
	for g := range writers {
		for r := range replicas {
			if shared {
				writers[g] = append(writers[g], all[(g+r)%nodes])
				continue
			}
			w := startWriter(b, dir, fmt.Sprintf("g%d-r%d", g, r), 2, stop, &wg)
			writers[g] = append(writers[g], w)
			all = append(all, w)
		}
	}
	elapsed := closedLoop(b, clients, func(rng *rand.Rand) {
		replicate(writers[rng.IntN(groups)])
	})
	close(stop)
	wg.Wait()
	commits, items := totals(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	if commits > 0 {
		b.ReportMetric(float64(items)/float64(commits), "items/commit")
		b.ReportMetric(float64(commits*int64(all[0].syncs))/elapsed.Seconds(), "fsyncs/s")
	}
}
