package raftlog

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// The engine's options, chosen for raft logs (short-lived, append-only,
// read back mostly while still recent) on a small node.
const (
	// cacheBytes: reads are mostly of entries still in the memtable
	// (replication right after append); the block cache only serves a
	// follower catching up from flushed entries, so it is kept small.
	cacheBytes = 16 << 20
	// memTableBytes: larger than Pebble's 4 MiB default, so that under a
	// sustained append rate flushes are rarer and an entry compacted away
	// soon after its snapshot often dies in the memtable, never written to
	// an sstable. Small enough that the worst case (stopWritesMemTables
	// full memtables) stays at 64 MiB.
	memTableBytes = 16 << 20
	// stopWritesMemTables: two is Pebble's default; four lets appends go
	// on into a fresh memtable while one is being flushed, instead of
	// stalling raft on the flush.
	stopWritesMemTables = 4
	// l0CompactionThreshold stays at Pebble's default; compactions run one
	// at a time (Pebble's default too), since a node has few cores and the
	// raft path needs them.
	l0CompactionThreshold = 4
)

// formatVersion pins the on-disk format by name, so that a newer Pebble
// never ratchets a data dir to a format an older release cannot open.
const formatVersion = pebble.FormatValueSeparation

func engineOptions(log *slog.Logger, ev *events) (*pebble.Options, func()) {
	cache := pebble.NewCache(cacheBytes)
	o := &pebble.Options{
		Cache:                       cache,
		MemTableSize:                memTableBytes,
		MemTableStopWritesThreshold: stopWritesMemTables,
		L0CompactionThreshold:       l0CompactionThreshold,
		FormatMajorVersion:          formatVersion,
		Logger:                      pebbleLogger{log},
		EventListener:               ev.listener(),
	}
	o.EnsureDefaults()
	// The options hold a reference to the cache; the DB takes its own.
	return o, cache.Unref
}

// events counts and logs what the engine reports in the background.
type events struct {
	log         *slog.Logger
	writeStalls atomic.Int64
	bgErrors    atomic.Int64
}

func (e *events) listener() *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			e.bgErrors.Add(1)
			e.log.Error("storage engine background error", "err", err)
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			e.writeStalls.Add(1)
			e.log.Warn("storage engine write stall", "reason", info.Reason)
		},
		WriteStallEnd: func() { e.log.Info("storage engine write stall ended") },
		DiskSlow: func(info pebble.DiskSlowInfo) {
			e.log.Warn("slow disk write", "path", info.Path, "op", info.OpType.String(), "duration", info.Duration)
		},
	}
}

// pebbleLogger sends Pebble's own messages to slog: its chatter at debug
// (a clean start logs nothing above INFO), its errors at error.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
}

// Fatalf is for states Pebble cannot go on from; it must not return.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg)
	panic("raftlog: " + msg)
}
