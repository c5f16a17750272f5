//go:build !(chaos && chaosbug_nofsync)

package shards

import (
	"time"

	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// The hooks of a planted bug (chaosbug_nofsync.go); in every other build
// raft.db is synced and raft writes to it directly.

const (
	plantedNoFsync               = false
	chaosNoSync                  = false
	flushEvery     time.Duration = 0
)

func chaosStore(s *raftboltdb.BoltStore) raftStore { return s }
