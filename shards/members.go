package shards

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// Runtime group management, for rebalancing (cluster/rebalance): a node
// opens a group for a shard it is about to receive, the shard's leader adds
// it as a nonvoter, promotes it once it has caught up, and removes the
// replicas that must go; a replica that was removed closes its group.

// ErrAlreadyHosted is returned by AddGroup for a shard hosted already.
var ErrAlreadyHosted = errors.New("shards: shard already hosted")

// AddGroup opens and starts a group for shard, which this node does not
// host, without bootstrapping it: it has an empty configuration until the
// shard's leader adds this node and contacts it. Existing raft state in
// the shard's directory (a replica removed earlier whose files were not
// deleted) is kept; the leader's log or snapshot overrides what is stale.
func (h *Host) AddGroup(ctx context.Context, shard uint32) error {
	if int64(shard) >= int64(h.cfg.Shards) {
		return fmt.Errorf("shards: shard %d out of range [0, %d)", shard, h.cfg.Shards)
	}
	h.changeMu.Lock()
	defer h.changeMu.Unlock()
	if h.isClosing() {
		return ErrShuttingDown
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := h.group(shard); err == nil {
		return fmt.Errorf("%w: shard %d", ErrAlreadyHosted, shard)
	}
	g, err := h.openGroup(shard, false)
	if err != nil {
		return err
	}
	h.gmu.Lock()
	h.groups[shard] = g
	i, _ := slices.BinarySearchFunc(h.hosted, shard, func(g *group, s uint32) int { return cmpU32(g.id, s) })
	h.hosted = slices.Insert(h.hosted, i, g)
	h.gmu.Unlock()
	g.start()
	h.changed.notify()
	h.log.Info("added raft group", "shard", shard)
	return nil
}

// RemoveGroup stops shard's group and deletes its directory. Call it only
// once this node is no longer in the group's configuration: the data is
// gone afterwards. Queued proposals fail with ErrShuttingDown.
func (h *Host) RemoveGroup(ctx context.Context, shard uint32) error {
	h.changeMu.Lock()
	defer h.changeMu.Unlock()
	if h.isClosing() {
		return ErrShuttingDown
	}
	g, err := h.group(shard)
	if err != nil {
		return err
	}
	h.gmu.Lock()
	h.groups[shard] = nil
	h.hosted = slices.DeleteFunc(h.hosted, func(x *group) bool { return x == g })
	h.gmu.Unlock()
	// A Propose that looked the group up before it was unlisted either
	// queued its op already (the proposer's drain answers it) or sees
	// removed.
	h.mu.Lock()
	g.removed = true
	h.mu.Unlock()

	g.stopProposing()
	select {
	case <-g.pipelineDone:
	case <-ctx.Done():
	}
	errs := []error{g.close()}
	select {
	case <-g.pipelineDone:
	case <-time.After(stragglerGrace):
		// See Host.shutdown: raft may leave a future unanswered.
		h.log.Warn("remove group: raft left a future unanswered; abandoning the completer", "shard", shard)
	}
	g.mu.Lock()
	g.gen++ // ends a pending confirmLeadership
	if g.announced {
		g.announced = false
		h.events.publish(ShardLeadership{Shard: g.id, Leader: false})
	}
	g.leader, g.ready = false, false
	g.mu.Unlock()
	g.changed.notify()
	if h.logs != nil {
		if err := h.logs.DropGroup(shard); err != nil {
			errs = append(errs, fmt.Errorf("shards: shard %d: remove raft log: %w", shard, err))
		}
	}
	dir := filepath.Join(h.cfg.DataDir, "shards", strconv.FormatUint(uint64(shard), 10))
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("shards: shard %d: remove data: %w", shard, err))
	}
	h.changed.notify()
	err = errors.Join(errs...)
	h.log.Info("removed raft group", "shard", shard, "err", err)
	return err
}

// Configuration is shard's latest raft configuration as this node knows
// it (possibly not yet committed). It is empty for a group just added
// that no leader has contacted yet.
func (h *Host) Configuration(shard uint32) (raft.Configuration, error) {
	g, err := h.group(shard)
	if err != nil {
		return raft.Configuration{}, err
	}
	f := g.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, fmt.Errorf("shards: shard %d: configuration: %w", shard, err)
	}
	c := f.Configuration()
	return c.Clone(), nil
}

// IsReady reports whether this node leads shard and is ready on it (see
// Ready).
func (h *Host) IsReady(shard uint32) bool {
	g, err := h.group(shard)
	return err == nil && g.isReady()
}

// Indexes are shard's raft commit index and the state machine's applied
// index on this node.
func (h *Host) Indexes(shard uint32) (commit, applied uint64, err error) {
	g, err := h.group(shard)
	if err != nil {
		return 0, 0, err
	}
	return g.raft.CommitIndex(), g.fsm.AppliedIndex(), nil
}

// membershipTimeout bounds raft's wait to enqueue a configuration change.
const membershipTimeout = 5 * time.Second

// AddNonvoter adds id at addr to shard's group as a nonvoter: it receives
// the log but does not vote. This node must lead the shard.
func (h *Host) AddNonvoter(ctx context.Context, shard uint32, id, addr string) error {
	return h.changeConfig(ctx, shard, "add nonvoter", func(r *raft.Raft) raft.IndexFuture {
		return r.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, membershipTimeout)
	})
}

// PromoteVoter makes id, a nonvoter of shard's group, a voter. This node
// must lead the shard.
func (h *Host) PromoteVoter(ctx context.Context, shard uint32, id, addr string) error {
	return h.changeConfig(ctx, shard, "promote", func(r *raft.Raft) raft.IndexFuture {
		return r.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, membershipTimeout)
	})
}

// RemoveServer removes id from shard's group. This node must lead the
// shard; to remove itself, transfer the leadership first.
func (h *Host) RemoveServer(ctx context.Context, shard uint32, id string) error {
	if id == h.cfg.NodeID {
		return fmt.Errorf("shards: shard %d: a leader does not remove itself; transfer the leadership first", shard)
	}
	return h.changeConfig(ctx, shard, "remove server", func(r *raft.Raft) raft.IndexFuture {
		return r.RemoveServer(raft.ServerID(id), 0, membershipTimeout)
	})
}

// TransferLeadershipOf hands shard's leadership, held by this node, to
// the most up-to-date other voter.
func (h *Host) TransferLeadershipOf(ctx context.Context, shard uint32) error {
	g, err := h.group(shard)
	if err != nil {
		return err
	}
	if err := await(ctx, g.raft.LeadershipTransfer()); err != nil {
		return fmt.Errorf("shards: shard %d: leadership transfer: %w", shard, err)
	}
	return nil
}

// TransferLeadershipTo hands shard's leadership, led here, to the voter
// id at addr (its raft address): raft brings it up to date, then has it
// campaign at once. New proposals are refused (ErrNoLeader) while the
// transfer runs, which is why the rebalancer only asks for one when the
// target has caught up.
func (h *Host) TransferLeadershipTo(ctx context.Context, shard uint32, id, addr string) error {
	g, err := h.group(shard)
	if err != nil {
		return err
	}
	if g.raft.State() != raft.Leader {
		return g.notLeader()
	}
	if err := await(ctx, g.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))); err != nil {
		return fmt.Errorf("shards: shard %d: leadership transfer to %s: %w", shard, id, err)
	}
	return nil
}

func (h *Host) changeConfig(ctx context.Context, shard uint32, what string, do func(*raft.Raft) raft.IndexFuture) error {
	g, err := h.group(shard)
	if err != nil {
		return err
	}
	if g.raft.State() != raft.Leader {
		return g.notLeader()
	}
	if err := await(ctx, do(g.raft)); err != nil {
		return fmt.Errorf("shards: shard %d: %s: %w", shard, what, err)
	}
	return nil
}

func cmpU32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
