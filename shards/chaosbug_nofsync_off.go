//go:build !(chaos && chaosbug_nofsync)

package shards

import "time"

// The hooks of a planted bug (chaosbug_nofsync.go); in every other build
// the raft log is synced and raft writes to it directly.

const (
	plantedNoFsync               = false
	chaosNoSync                  = false
	flushEvery     time.Duration = 0
)

func chaosStore(s raftStore) raftStore { return s }
