package shards

import (
	"errors"
	"fmt"
)

// Errors of Propose and ReadBarrier. Every error they return wraps at most
// one of ErrNotLeader, ErrNoLeader and ErrShuttingDown, and says with
// ErrOutcomeUnknown whether the write may have happened.
var (
	// ErrNotLeader means this node does not lead the shard; a
	// *NotLeaderError carries the leader to retry at. Nothing was written.
	ErrNotLeader = errors.New("shards: not the leader")
	// ErrNoLeader means the shard has no leader this node knows of (an
	// election is under way or a leadership transfer is in progress), or
	// this node was just elected and has not yet caught up. Nothing was
	// written; retry after a short delay.
	ErrNoLeader = errors.New("shards: no leader")
	// ErrOutcomeUnknown means the op may or may not commit: it was handed
	// to raft, then leadership was lost, the node shut down, or the
	// caller's context ended before the result came. The caller must read
	// the user's version before retrying, or it may apply the op twice.
	ErrOutcomeUnknown = errors.New("shards: outcome unknown")
	// ErrShuttingDown means the Host is shutting down.
	ErrShuttingDown = errors.New("shards: shutting down")
	// ErrNotHosted means this node does not host the shard at all.
	ErrNotHosted = errors.New("shards: shard not hosted on this node")
)

// NotLeaderError names the shard's leader as this node last heard of it.
type NotLeaderError struct {
	Shard      uint32
	LeaderID   string
	LeaderAddr string // the leader's raft (mux) address
}

func (e *NotLeaderError) Error() string {
	return fmt.Sprintf("shards: shard %d: not the leader; leader is %s at %s", e.Shard, e.LeaderID, e.LeaderAddr)
}

func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// outcomeUnknown wraps cause (a context error, ErrShuttingDown, a raft
// error) as an ErrOutcomeUnknown that still matches cause with errors.Is.
func outcomeUnknown(shard uint32, cause error) error {
	return fmt.Errorf("shards: shard %d: op may still commit: %w: %w", shard, ErrOutcomeUnknown, cause)
}
