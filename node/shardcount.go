package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/ration/ration/cluster/membership"
	"github.com/ration/ration/config"
	"github.com/ration/ration/shards"
)

// The shard count is decided once, before anything maps a user to a shard:
// from the data dir and --shards (dataDirCount), then, for a new data dir
// without an explicit --shards, from the cluster the node joins
// (settleShards). Rules and reasons: architecture.md, "Shard count".

// ErrShardCountConflict means live members of the cluster announce
// another shard count than this node's settled one (membership
// Conflicting): serving with it would look for users in the wrong shards.
var ErrShardCountConflict = errors.New("node: members announce another shard count")

// dataDirCount makes the data dir and decides the shard count it allows
// (shards.ChooseCount). It returns a copy of cfg with that count, so the
// caller's config stays as given and the node reads one count everywhere.
func dataDirCount(cfg *config.Config, log *slog.Logger) (*config.Config, shards.CountSource, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, 0, fmt.Errorf("data dir: %w", err)
	}
	count, src, err := shards.ChooseCount(cfg.DataDir, cfg.Shards, cfg.Explicit("shards"))
	if err != nil {
		return nil, 0, err
	}
	if count != cfg.Shards {
		log.Info("shard count from the data dir; --shards is unset and its default gives way",
			"shards", count, "source", src.String(), "default", cfg.Shards)
	}
	c := *cfg
	c.Shards = count
	return &c, src, nil
}

// settleShards fixes a clustered node's shard count once it has joined
// the gossip cluster, before the actor cluster, formation or the shard
// host use it. A node whose count is not settled (a new data dir, --shards
// unset) takes the count its peers settled on (clusterShards) and
// announces it. Any node then refuses to start if live members announce
// another settled count.
func (n *Node) settleShards(ctx context.Context) error {
	if !n.shardSource.Settled() {
		count, err := n.clusterShards(ctx)
		if err != nil {
			return err
		}
		if count != n.cfg.Shards {
			n.log.Info("shard count taken from the cluster; --shards is unset and its default gives way",
				"shards", count, "default", n.cfg.Shards)
		}
		n.cfg.Shards = count
		if err := n.members.SettleShards(ctx, count); err != nil {
			// Gossip carries it all the same; only the wait ran out.
			n.log.Warn("announcing the shard count", "err", err)
		}
	}
	return n.checkShardConflicts()
}

// clusterShards waits, as formation does, until a live peer announces a
// settled count or --bootstrap-expect members are alive, and returns the
// count a node with a new data dir and no explicit --shards takes.
func (n *Node) clusterShards(ctx context.Context) (int, error) {
	expect := max(n.cfg.BootstrapExpect, 1)
	alive, err := n.waitAlive(ctx, "waiting for members to learn the cluster's shard count", func(alive []membership.Member) bool {
		return len(alive) >= expect || slices.ContainsFunc(alive, func(m membership.Member) bool {
			return m.NodeID != n.cfg.NodeID && m.Shards > 0 && !m.ShardsTentative
		})
	})
	if err != nil {
		return 0, err
	}
	peers := slices.DeleteFunc(alive, func(m membership.Member) bool { return m.NodeID == n.cfg.NodeID })
	return clusterCount(n.cfg.Shards, peers)
}

// clusterCount is the count a node proposing own takes among its live
// peers:
//
//   - the count they settled on, if any did; refused if they settled on
//     several, which only a cluster already in trouble can show;
//   - shards.PreRecordShards if a peer announces none (a release before
//     the announcement, whose count is that of every data dir of its
//     time, unless an operator set --shards there: then they set it here
//     too, and the count is settled);
//   - own if every peer proposes own too (a new cluster forming); refused
//     if they propose others, as nodes of releases with different
//     defaults would: which one wins must not depend on who started
//     first, so the operator sets --shards.
func clusterCount(own int, peers []membership.Member) (int, error) {
	settled := map[int][]string{}
	proposed := map[int][]string{own: {"this node"}}
	unannounced := false
	for _, p := range peers {
		switch {
		case p.Shards == 0:
			unannounced = true
		case p.ShardsTentative:
			proposed[p.Shards] = append(proposed[p.Shards], p.NodeID)
		default:
			settled[p.Shards] = append(settled[p.Shards], p.NodeID)
		}
	}
	switch {
	case len(settled) == 1:
		for count := range settled {
			return count, nil
		}
	case len(settled) > 1:
		return 0, fmt.Errorf("%w: live members announce %s; this node's data dir is new and --shards is unset, "+
			"so it cannot tell which cluster it joins: check --join", ErrShardCountConflict, describeCounts(settled))
	case unannounced:
		return shards.PreRecordShards, nil
	case len(proposed) > 1:
		return 0, fmt.Errorf("%w: the members of a new cluster propose %s, the defaults of different releases: "+
			"set --shards on every node of the new cluster", ErrShardCountConflict, describeCounts(proposed))
	}
	return own, nil
}

// describeCounts lists counts and who announces them: "8 (n1, n2) and 16
// (n3)".
func describeCounts(by map[int][]string) string {
	var parts []string
	for _, count := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, strconv.Itoa(count)+" ("+strings.Join(by[count], ", ")+")")
	}
	return strings.Join(parts, " and ")
}

// checkShardConflicts refuses to go on while live members announce
// another settled count than this node's; membership already leaves them
// out of the view and logs them. Dead ones are only left out.
func (n *Node) checkShardConflicts() error {
	theirs := map[int][]string{}
	for _, m := range n.members.Conflicting() {
		if m.State == membership.Alive || m.State == membership.Suspect {
			theirs[m.Shards] = append(theirs[m.Shards], m.NodeID)
		}
	}
	if len(theirs) == 0 {
		return nil
	}
	var ours, fix string
	switch n.shardSource {
	case shards.CountExplicit:
		ours = fmt.Sprintf("--shards is set to %d (by flag, RATION_SHARDS or the config file)", n.cfg.Shards)
		fix = "start this node with the cluster's count, or without --shards: a new data dir takes the cluster's count"
	case shards.CountDefault:
		ours = fmt.Sprintf("this node (a new data dir, --shards unset) settled on %d with the members it saw first", n.cfg.Shards)
		fix = "the cluster's members disagree: check every node's --join and --shards"
	default:
		ours = fmt.Sprintf("the data dir %s holds %d shards (%s)", n.cfg.DataDir, n.cfg.Shards, n.shardSource)
		fix = "this data dir is not of this cluster: check --join and --data-dir"
	}
	return fmt.Errorf("%w: %s, and live members announce %s: %s", ErrShardCountConflict, ours, describeCounts(theirs), fix)
}
