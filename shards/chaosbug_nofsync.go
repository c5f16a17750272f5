//go:build chaos && chaosbug_nofsync

package shards

import (
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// A planted bug for the chaos harness (chaos/DESIGN.md): acknowledged
// writes are not durable. raft.db is opened without fsync (bolt layout),
// and the raft log goes into a write-behind buffer in process memory that
// reaches the log store only every flushEvery. A process killed with -9 keeps what the
// kernel's page cache holds, so the buffer stands for the page cache a
// power loss would take: kill every node within flushEvery of an
// acknowledgement and the write is gone.

const (
	plantedNoFsync = true
	chaosNoSync    = true
	flushEvery     = 2 * time.Second
)

func chaosStore(s raftStore) raftStore { return newWriteBehind(s, flushEvery) }

// writeBehind is a raft.LogStore over the group's store whose writes wait
// in memory. Every read sees the buffer. The stable store (terms and
// votes) is the store's own, unbuffered.
type writeBehind struct {
	raftStore

	mu  sync.Mutex
	buf map[uint64]*raft.Log

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func newWriteBehind(s raftStore, every time.Duration) *writeBehind {
	w := &writeBehind{raftStore: s, buf: map[uint64]*raft.Log{}, stop: make(chan struct{}), done: make(chan struct{})}
	go w.flushLoop(every)
	return w
}

func (w *writeBehind) flushLoop(every time.Duration) {
	defer close(w.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			// A failure keeps the buffer for the next tick.
			_ = w.flush()
		case <-w.stop:
			return
		}
	}
}

func (w *writeBehind) flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) == 0 {
		return nil
	}
	logs := make([]*raft.Log, 0, len(w.buf))
	for _, l := range w.buf {
		logs = append(logs, l)
	}
	slices.SortFunc(logs, func(a, b *raft.Log) int {
		switch {
		case a.Index < b.Index:
			return -1
		case a.Index > b.Index:
			return 1
		}
		return 0
	})
	if err := w.raftStore.StoreLogs(logs); err != nil {
		return err
	}
	clear(w.buf)
	return nil
}

// halt stops flushing and forgets the buffer, as kill -9 on a machine
// that then loses power would; tests use it.
func (w *writeBehind) halt() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
	w.mu.Lock()
	clear(w.buf)
	w.mu.Unlock()
}

// Close flushes, as a clean shutdown would, and closes the store.
func (w *writeBehind) Close() error {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
	ferr := w.flush()
	if err := w.raftStore.Close(); err != nil {
		return err
	}
	return ferr
}

func (w *writeBehind) FirstIndex() (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	first, err := w.raftStore.FirstIndex()
	if err != nil {
		return 0, err
	}
	for i := range w.buf {
		if first == 0 || i < first {
			first = i
		}
	}
	return first, nil
}

func (w *writeBehind) LastIndex() (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	last, err := w.raftStore.LastIndex()
	if err != nil {
		return 0, err
	}
	for i := range w.buf {
		last = max(last, i)
	}
	return last, nil
}

func (w *writeBehind) GetLog(index uint64, out *raft.Log) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if l, ok := w.buf[index]; ok {
		*out = *l
		return nil
	}
	return w.raftStore.GetLog(index, out)
}

func (w *writeBehind) StoreLog(l *raft.Log) error { return w.StoreLogs([]*raft.Log{l}) }

func (w *writeBehind) StoreLogs(logs []*raft.Log) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range logs {
		c := *l
		c.Data = slices.Clone(l.Data)
		c.Extensions = slices.Clone(l.Extensions)
		w.buf[l.Index] = &c
	}
	return nil
}

func (w *writeBehind) DeleteRange(lo, hi uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range w.buf {
		if i >= lo && i <= hi {
			delete(w.buf, i)
		}
	}
	return w.raftStore.DeleteRange(lo, hi)
}
