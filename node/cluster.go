package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/raft"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/cluster/actorcluster"
	"github.com/ration/ration/cluster/membership"
	"github.com/ration/ration/cluster/placement"
	"github.com/ration/ration/service"
	"github.com/ration/ration/shards"
	"github.com/ration/ration/tlsfiles"
)

// clustered reports whether the node forms or joins a cluster rather than
// running every shard alone.
func clustered(n *Node) bool { return len(n.cfg.Join) > 0 || n.cfg.BootstrapExpect > 1 }

// joinCluster is Start's part for a clustered node: it joins the gossip
// cluster, settles the shard count with it, joins the actor cluster and
// decides which shards to open (formation). It pushes the closers of what
// it starts.
func (n *Node) joinCluster(ctx context.Context) (hosted []uint32, peersOf func(uint32) []raft.Server, err error) {
	members, leave, err := n.newMembership(ctx)
	if err != nil {
		return nil, nil, err
	}
	n.members = members
	n.closers.push(leave)
	if err := n.settleShards(ctx); err != nil {
		return nil, nil, err
	}
	// Before anything else uses gRPC in this process: protoactor's
	// remote replaces gRPC's global logger when it starts.
	c, closeActors, err := n.newActorCluster()
	if err != nil {
		return nil, nil, err
	}
	n.actors = c
	n.closers.push(closeActors)
	return n.formation(ctx)
}

// newMembership joins the gossip cluster with this node's addresses. Its
// closer leaves it.
func (n *Node) newMembership(ctx context.Context) (*membership.Membership, closer, error) {
	cfg := n.cfg
	m, err := membership.Start(ctx, membership.Config{
		NodeID:        cfg.NodeID,
		BindHost:      cfg.BindHost,
		BindPort:      cfg.GossipPort,
		AdvertiseHost: cfg.AdvertiseHost,
		AdvertisePort: cfg.GossipPort,
		Join:          cfg.JoinAddrs(),
		SecretKey:     cfg.GossipKey,
		Meta: membership.Meta{
			NodeID:          cfg.NodeID,
			RaftAddr:        cfg.AdvertiseRaftAddr(),
			GRPCAddr:        cfg.AdvertiseGRPCAddr(),
			HTTPAddr:        cfg.AdvertiseHTTPAddr(),
			ActorAddr:       cfg.AdvertiseActorAddr(),
			ActorID:         n.sys.ID,
			Version:         protocolVersion,
			Shards:          cfg.Shards,
			ShardsTentative: !n.shardSource.Settled(),
		},
		Logger: n.log.With("component", "membership"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("membership: %w", err)
	}
	return m, m.Leave, nil
}

// protocolVersion is what this release announces in gossip (Meta.Version).
// 1: it applies raftfsm batch format 2 (chained ops). Earlier releases
// announce 0.
const protocolVersion = 1

// chainable reports whether a user's ops of a Batch on shard may be
// chained into one raft entry (raftfsm batch format 2), which a replica of
// an earlier release would stop on: only when chainableAmong the gossip
// view and the shard's raft configuration. During a rolling upgrade from
// such a release, batches therefore propose each user's ops one entry at a
// time until the last old node is gone from the view and from the shard.
func (n *Node) chainable(shard uint32) bool {
	if n.members == nil {
		return true
	}
	conf, err := n.host.Configuration(shard)
	if err != nil {
		return false
	}
	return chainableAmong(n.members.Members(), conf.Servers)
}

// chainableAmong reports whether every member of the view, whatever its
// state, announces protocolVersion or later, and every server of a shard's
// configuration is such a member. The view is not the whole cluster: a
// node that started while another was down never learns of it
// (cluster/membership/DESIGN.md), and a replica missing from the view may
// be of an earlier release, back any time, replaying the shard's log.
func chainableAmong(members []membership.Member, servers []raft.Server) bool {
	known := make(map[string]bool, len(members))
	for _, m := range members {
		if m.Meta.Version < protocolVersion {
			return false
		}
		known[m.NodeID] = true
	}
	for _, s := range servers {
		if !known[string(s.ID)] {
			return false
		}
	}
	return true
}

// newActorCluster joins the actor cluster: protoactor remote on the actor
// port, its topology fed by the gossip view.
func (n *Node) newActorCluster() (*actorcluster.Cluster, closer, error) {
	c, err := actorcluster.Start(actorcluster.Config{
		NodeID:        n.cfg.NodeID,
		System:        n.sys,
		BindHost:      n.cfg.BindHost,
		Port:          n.cfg.ActorPort(),
		AdvertiseAddr: n.cfg.AdvertiseActorAddr(),
		Members:       n.members,
		Locator:       locator{n},
		Directory:     activator{n},
		Expired:       n.expired,
		Logger:        n.log.With("component", "actorcluster"),
		TLS:           actorTLS(n.tls),
	})
	if err != nil {
		return nil, nil, err
	}
	return c, quiet(c.Shutdown), nil
}

// activator hands the actor cluster this node's directory, once it exists.
type activator struct{ n *Node }

// errNoDirectory: the node is still starting.
var errNoDirectory = fmt.Errorf("node: the actor directory is not open yet: %w", service.ErrUnavailable)

func (a activator) Activate(user string) (*actor.PID, error) {
	d := a.n.dirp.Load()
	if d == nil {
		return nil, errNoDirectory
	}
	return d.Activate(user)
}

func (a activator) Batch(ctx context.Context, ops []actors.BatchOp) []actors.BatchResult {
	d := a.n.dirp.Load()
	if d == nil {
		out := make([]actors.BatchResult, len(ops))
		for i := range out {
			out[i].Err = errNoDirectory
		}
		return out
	}
	return d.Batch(ctx, ops)
}

// formation decides which shards this node hosts and, on a first start,
// each shard's initial voters. It waits until --bootstrap-expect members
// are alive. Every node computes the same replica sets from the same
// member set, so every replica of a shard bootstraps it with the identical
// configuration.
func (n *Node) formation(ctx context.Context) (hosted []uint32, peersOf func(uint32) []raft.Server, err error) {
	if have := shards.ExistingShards(n.cfg.DataDir, n.cfg.Shards); len(have) > 0 {
		n.log.Info("restarting with existing shards", "shards", len(have))
		return have, nil, nil
	}
	expect := max(n.cfg.BootstrapExpect, 1)
	members, err := n.waitAlive(ctx, "waiting for members before forming shards",
		func(alive []membership.Member) bool { return len(alive) >= expect })
	if err != nil {
		return nil, nil, err
	}
	// The expected members, chosen the same way on every node: the first
	// by id. A member that joins later gets shards by rebalancing.
	slices.SortFunc(members, func(a, b membership.Member) int { return strings.Compare(a.Meta.NodeID, b.Meta.NodeID) })
	all := members
	members = members[:expect]
	ids := make([]string, len(members))
	addr := map[string]string{}
	for i, m := range members {
		ids[i] = m.Meta.NodeID
		addr[m.Meta.NodeID] = m.Meta.RaftAddr
	}
	sets := make([][]string, n.cfg.Shards)
	for s := range sets {
		sets[s] = placement.ReplicaSet(uint32(s), ids, n.cfg.Replicas)
	}
	// Joining an existing cluster: a node with no shard data that finds
	// another member hosting a shard in a configuration other than the
	// one formation gives opens no group, and waits for the rebalancer,
	// on itself and on the shards' leaders, to add it. A node that is
	// merely late in a forming cluster finds the formation's own
	// configurations and bootstraps its groups with them like the others:
	// raft allows every member to bootstrap the identical configuration,
	// and a shard whose replicas are all late would otherwise have none.
	if n.othersMovedOn(ctx, all, sets) {
		n.log.Info("joining an existing cluster: shards come by rebalancing", "alive", len(all))
		return []uint32{}, nil, nil
	}
	if !slices.Contains(ids, n.cfg.NodeID) {
		n.log.Info("not among the first members by id: shards come by rebalancing", "expect", expect)
		return []uint32{}, nil, nil
	}
	for s := range sets {
		if slices.Contains(sets[s], n.cfg.NodeID) {
			hosted = append(hosted, uint32(s))
		}
	}
	if len(hosted) == 0 {
		// Possible with more members than replicas and few shards; the
		// rebalancer opens what placement gives this node later.
		n.log.Info("placement gives this node no shard at formation")
		return []uint32{}, nil, nil
	}
	n.log.Info("forming shards", "members", ids, "hosted", len(hosted))
	return hosted, func(shard uint32) []raft.Server {
		var servers []raft.Server
		for _, id := range sets[shard] {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr[id])})
		}
		return servers
	}, nil
}

// waitAlive waits until enough holds for the alive members of the view,
// and returns them. It logs msg at each new count, and fails as soon as a
// live member announces another shard count than this node's settled one:
// the view leaves such a member out, so formation would wait for ever.
func (n *Node) waitAlive(ctx context.Context, msg string, enough func(alive []membership.Member) bool) ([]membership.Member, error) {
	expect := max(n.cfg.BootstrapExpect, 1)
	logged := -1
	for {
		if err := n.checkShardConflicts(); err != nil {
			return nil, err
		}
		members := alive(n.members.Members())
		if enough(members) {
			return members, nil
		}
		if len(members) != logged {
			logged = len(members)
			n.log.Info(msg, "alive", len(members), "expect", expect)
		}
		ch, cancel := n.members.Subscribe()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
			cancel()
			return nil, fmt.Errorf("waiting for %d members: %w", expect, ctx.Err())
		}
		cancel()
	}
}

func alive(ms []membership.Member) []membership.Member {
	var out []membership.Member
	for _, m := range ms {
		if m.State == membership.Alive {
			out = append(out, m)
		}
	}
	return out
}

// locator tells the router and the actor cluster where shards are led,
// from this node's raft groups and the membership view. The actor cluster
// may ask before the shards are open: then nothing is led here.
type locator struct{ n *Node }

func (l locator) ShardOf(user string) uint32 { return shards.ShardOf(user, l.n.cfg.Shards) }

func (l locator) LocalLeader(shard uint32) bool {
	h := l.n.hostp.Load()
	return h != nil && h.IsLeader(shard)
}

func (l locator) LeaderHint(shard uint32) (string, bool) {
	h := l.n.hostp.Load()
	if h == nil {
		return "", false
	}
	id, _ := h.Leader(shard)
	return id, id != ""
}

func (l locator) Candidates(shard uint32) []string {
	if l.n.members == nil {
		return nil
	}
	var ids []string
	for _, m := range l.n.members.Members() {
		if m.State == membership.Alive || m.State == membership.Suspect {
			ids = append(ids, m.Meta.NodeID)
		}
	}
	return placement.ReplicaSet(shard, ids, l.n.cfg.Replicas)
}

// peerAddrs resolves a raft server id to the raft address its node
// announces in gossip now, so raft follows a peer that restarted at a new
// address (a rescheduled pod) although its configuration holds the old one.
type peerAddrs struct{ m *membership.Membership }

// resolver is nil on a single node, which has no peers to find.
func (n *Node) resolver() raft.ServerAddressProvider {
	if n.members == nil {
		return nil
	}
	return peerAddrs{n.members}
}

// errNoPeer makes raft fall back to the address in its configuration.
var errNoPeer = errors.New("node: peer not in the gossip view")

func (p peerAddrs) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	if m, ok := p.m.Member(string(id)); ok && m.Meta.RaftAddr != "" {
		return raft.ServerAddress(m.Meta.RaftAddr), nil
	}
	return "", errNoPeer
}

// actorTLS is the actor cluster's TLS: none without TLS files (a nil
// *tlsfiles.Files in the interface would read as set).
func actorTLS(f *tlsfiles.Files) actorcluster.TLSConfigs {
	if f == nil {
		return nil
	}
	return f
}
