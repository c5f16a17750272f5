package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// errKeyNotFound is what raft expects from a StableStore for a missing
// key: it compares the message, "not found" (raft's api.go and raft.go).
var errKeyNotFound = errors.New("not found")

// Group is one raft group's raft.LogStore and raft.StableStore, a view
// over the shared engine.
type Group struct {
	s  *Store
	id uint32

	// wmu serializes this group's log writes and the index updates that
	// follow them: raft appends and truncates conflicts from its main
	// goroutine while its snapshot goroutine compacts the log.
	wmu sync.Mutex
	// first and last are the group's first and last log index (0, 0 when
	// empty), kept here so that no call seeks across deleted keys. They
	// move only after a commit has returned: Pebble makes a batch readable
	// before its fsync completes, and raft must not learn of an entry
	// that a crash could still take back.
	first, last atomic.Uint64
	closed      atomic.Bool // the view is released (Close)
}

var (
	_ raft.LogStore          = (*Group)(nil)
	_ raft.StableStore       = (*Group)(nil)
	_ raft.MonotonicLogStore = (*Group)(nil)
)

// ID is the group's id.
func (g *Group) ID() uint32 { return g.id }

// IsMonotonic tells raft to delete the whole log when it installs a
// snapshot, instead of leaving a gap before the entries that follow it:
// the log stays contiguous, so first and last bound every entry.
func (g *Group) IsMonotonic() bool { return true }

// Close releases the view; the group's data stays. It does not cut the
// view off from the engine: raft's transport runs heartbeat handlers on
// its own goroutines, which raft's Shutdown does not wait for, and one
// that passed raft's shutdown check may still persist a term or entries.
// Raft panics if that write fails, so it must not fail; and it must not
// be dropped, since the handler may still acknowledge it to the leader.
// Such a write is a genuine one from the group's leader, so letting it
// reach the engine (until the Store closes) is as safe as any other.
func (g *Group) Close() error {
	if g.closed.Swap(true) {
		return nil
	}
	g.s.mu.Lock()
	delete(g.s.groups, g.id)
	g.s.mu.Unlock()
	return nil
}

func (g *Group) enter() error { return g.s.enter() }

// FirstIndex is the first index in the log, 0 if it is empty.
func (g *Group) FirstIndex() (uint64, error) { return g.first.Load(), nil }

// LastIndex is the last index in the log, 0 if it is empty.
func (g *Group) LastIndex() (uint64, error) { return g.last.Load(), nil }

// GetLog reads one entry; raft.ErrLogNotFound if it is not in the log.
func (g *Group) GetLog(index uint64, out *raft.Log) error {
	if first := g.first.Load(); first == 0 || index < first || index > g.last.Load() {
		return raft.ErrLogNotFound
	}
	if err := g.enter(); err != nil {
		return err
	}
	defer g.s.leave()
	v, closer, err := g.s.db.Get(logKey(g.id, index))
	if errors.Is(err, pebble.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("raftlog: group %d: get %d: %w", g.id, index, err)
	}
	defer closer.Close()
	return decodeLog(index, v, out)
}

// StoreLog appends one entry.
func (g *Group) StoreLog(l *raft.Log) error { return g.StoreLogs([]*raft.Log{l}) }

// StoreLogs writes the entries in one batch, committed with sync: the
// engine's commit pipeline lets the concurrent commits of every group
// share one WAL fsync.
func (g *Group) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	if err := g.enter(); err != nil {
		return err
	}
	defer g.s.leave()
	b := g.s.db.NewBatch()
	defer b.Close()
	var buf []byte
	lo, hi := logs[0].Index, logs[0].Index
	for _, l := range logs {
		if l.Index == 0 {
			return fmt.Errorf("raftlog: group %d: log index 0", g.id)
		}
		buf = appendLog(buf[:0], l)
		if err := b.Set(logKey(g.id, l.Index), buf, nil); err != nil {
			return fmt.Errorf("raftlog: group %d: %w", g.id, err)
		}
		lo, hi = min(lo, l.Index), max(hi, l.Index)
	}
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("raftlog: group %d: append %d-%d: %w", g.id, lo, hi, err)
	}
	if hi > g.last.Load() {
		g.last.Store(hi)
	}
	if f := g.first.Load(); f == 0 || lo < f {
		g.first.Store(lo)
	}
	return nil
}

// DeleteRange deletes the entries from lo to hi inclusive with one range
// tombstone. Raft deletes either a prefix (compaction after a snapshot)
// or a suffix (a follower's conflicting entries). A suffix delete is
// synced, so that a crash cannot bring back entries that raft, having
// deleted them, may vote against; a prefix delete is not: losing it to a
// crash leaves entries raft no longer needs, and the next synced commit
// makes it durable anyway (the WAL is written in order).
func (g *Group) DeleteRange(lo, hi uint64) error {
	if lo > hi {
		return nil
	}
	if err := g.enter(); err != nil {
		return err
	}
	defer g.s.leave()
	g.wmu.Lock()
	defer g.wmu.Unlock()
	first, last := g.first.Load(), g.last.Load()
	opts := pebble.NoSync
	if hi >= last {
		opts = pebble.Sync
	}
	if err := g.s.db.DeleteRange(logKey(g.id, lo), logKeyAfter(g.id, hi), opts); err != nil {
		return fmt.Errorf("raftlog: group %d: delete %d-%d: %w", g.id, lo, hi, err)
	}
	if first == 0 || hi < first || lo > last || (lo > first && hi < last) {
		return nil // nothing at the ends changed
	}
	// Find the new ends by seeking only within what is left.
	from, to := first, last
	if lo <= first {
		from = hi + 1
	}
	if hi >= last {
		to = lo - 1
	}
	nf, nl, err := g.bounds(from, to)
	if err != nil {
		return err
	}
	// last first, then first: a reader that sees the new first with the
	// old last only finds fewer entries, never a deleted one.
	g.last.Store(nl)
	g.first.Store(nf)
	return nil
}

// bounds finds the first and last log index of the group within
// [from, to], or 0, 0 if there is none. The caller holds enter.
func (g *Group) bounds(from, to uint64) (first, last uint64, err error) {
	if from > to || to == 0 {
		return 0, 0, nil
	}
	it, err := g.s.db.NewIter(&pebble.IterOptions{LowerBound: logKey(g.id, from), UpperBound: logKeyAfter(g.id, to)})
	if err != nil {
		return 0, 0, fmt.Errorf("raftlog: group %d: %w", g.id, err)
	}
	if it.First() {
		first, _ = logKeyIndex(g.id, it.Key())
		if it.Last() {
			last, _ = logKeyIndex(g.id, it.Key())
		}
	}
	if err := it.Close(); err != nil {
		return 0, 0, fmt.Errorf("raftlog: group %d: %w", g.id, err)
	}
	return first, last, nil
}

// Set stores a stable value, synced: raft keeps its term and vote here.
func (g *Group) Set(key, val []byte) error {
	if err := g.enter(); err != nil {
		return err
	}
	defer g.s.leave()
	if err := g.s.db.Set(stableKey(g.id, key), val, pebble.Sync); err != nil {
		return fmt.Errorf("raftlog: group %d: set %q: %w", g.id, key, err)
	}
	return nil
}

// Get returns a stable value, or an error saying "not found".
func (g *Group) Get(key []byte) ([]byte, error) {
	if err := g.enter(); err != nil {
		return nil, err
	}
	defer g.s.leave()
	v, closer, err := g.s.db.Get(stableKey(g.id, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, errKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("raftlog: group %d: get %q: %w", g.id, key, err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// SetUint64 stores a stable uint64, big-endian.
func (g *Group) SetUint64(key []byte, val uint64) error {
	return g.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 reads a stable uint64; "not found" if it was never set.
func (g *Group) GetUint64(key []byte) (uint64, error) {
	v, err := g.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: group %d: stable key %q: %d bytes, want 8", ErrCorrupt, g.id, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
