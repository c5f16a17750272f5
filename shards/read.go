package shards

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// ReadBarrier returns nil once shard's local state machine (FSM(shard))
// reflects every write acknowledged anywhere before the call, so that a
// read of it that follows is linearizable. Only the leader can do that:
// elsewhere it returns ErrNotLeader (*NotLeaderError) or ErrNoLeader.
//
// It is the read-index protocol of the raft thesis (section 6.4): wait
// until this leader has applied an entry of its own term (the noop it
// appends on election), take the commit index, confirm with a quorum that
// this node still leads, check that its leadership did not change
// meanwhile, and wait for the state machine to reach the commit index. The
// cost is one heartbeat round trip and no log write.
func (h *Host) ReadBarrier(ctx context.Context, shard uint32) error {
	g, err := h.group(shard)
	if err != nil {
		return err
	}
	if h.isClosing() {
		return fmt.Errorf("shards: shard %d: %w", shard, ErrShuttingDown)
	}
	var gen uint64
	for {
		ch := g.changed.wait()
		g.mu.Lock()
		leader, ready := g.leader, g.ready
		gen = g.gen
		g.mu.Unlock()
		if !leader {
			return g.notLeader()
		}
		if ready {
			break
		}
		// Newly elected: the noop is on its way, so waiting beats
		// sending the caller elsewhere.
		select {
		case <-ch:
		case <-h.closing:
			return fmt.Errorf("shards: shard %d: %w", shard, ErrShuttingDown)
		case <-ctx.Done():
			return fmt.Errorf("shards: shard %d: read barrier: waiting for leadership noop: %w", shard, ctx.Err())
		}
	}

	readIndex := g.raft.CommitIndex()
	if err := g.verifyLeader(ctx); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
			return g.notLeader()
		case errors.Is(err, raft.ErrRaftShutdown):
			return fmt.Errorf("shards: shard %d: %w", shard, ErrShuttingDown)
		}
		return fmt.Errorf("shards: shard %d: read barrier: verify leadership: %w", shard, err)
	}
	// A leadership lost and regained since the commit index was read
	// would make that index possibly stale: it may predate entries
	// another leader committed in between. raft cannot start leading a
	// new term before watch has counted the loss (notifyCh is
	// unbuffered), so an unchanged generation rules that out.
	g.mu.Lock()
	same := g.gen == gen && g.leader && g.ready
	g.mu.Unlock()
	if !same {
		return g.notLeader()
	}
	if err := g.fsm.WaitApplied(ctx, readIndex); err != nil {
		return fmt.Errorf("shards: shard %d: read barrier: %w", shard, err)
	}
	return nil
}

// await waits for f within ctx. raft futures cannot be cancelled; an
// abandoned one is left to a goroutine that ends when raft answers it,
// which it does at the latest when leadership is lost or raft shuts down.
func await(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
