package shards

import (
	"errors"
	"time"

	"github.com/hashicorp/raft"
)

// Raft snapshots a group when its log holds SnapshotThreshold entries
// beyond the last snapshot. An entry holds anything from one op to a
// chained Batch of hundreds, so at the end of a load of big batches the
// log could hold millions of ops that a restart replays one by one: 1M
// users x 20 ops took 9.7 s to restart, most of it replaying the tail
// (docs/BENCHMARKS.md, "Scale"). The host therefore also asks for a
// snapshot when the ops applied since the last one exceed the larger of
// Config.SnapshotOps and an eighth of the state. Measured (raftfsm
// BenchmarkApplyBatch, BenchmarkRestore): replaying costs ~0.63 us per
// op, restoring ~0.065 us per op of state, persisting ~0.05 us. An eighth
// keeps the replay about as long as the restore, and the snapshots cost
// ~0.4 us per op applied, a few percent of a write.
const (
	defaultSnapshotOps = 1 << 20
	snapshotCheck      = 2 * time.Second
)

// snapshotDue reports whether a group that applied since ops since its
// last snapshot, and holds state ops, should take one now.
func snapshotDue(since, state, min uint64) bool {
	return since > max(min, state/8)
}

// snapshotBySize runs until the host closes, snapshotting the groups whose
// replay on restart has grown too long, one at a time. The count restarts
// when raft captures the state, so a snapshot that then fails to persist
// leaves the next one to raft's own threshold or to SnapshotOps more ops.
func (h *Host) snapshotBySize() {
	defer close(h.snapLoopDone)
	t := time.NewTicker(snapshotCheck)
	defer t.Stop()
	for {
		select {
		case <-h.closing:
			return
		case <-t.C:
		}
		for _, g := range h.hostedGroups() {
			if since, state := g.fsm.OpsSinceSnapshot(); snapshotDue(since, state, h.cfg.SnapshotOps) {
				err := g.raft.Snapshot().Error()
				switch {
				case err == nil:
					h.log.Debug("snapshot by size", "shard", g.id, "ops_since", since, "state_ops", state)
				case errors.Is(err, raft.ErrNothingNewToSnapshot), errors.Is(err, raft.ErrRaftShutdown):
				default:
					h.log.Info("snapshot by size failed; raft's own threshold still applies", "shard", g.id, "err", err)
				}
			}
		}
	}
}
