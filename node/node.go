// Package node assembles a Ration node: the raft transport mux, the shard
// host, the user actors, and the gRPC and HTTP servers. cmd/node is a thin
// main over it, and tests start nodes in-process with it.
package node

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ration/ration/actors"
	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/cluster/actorcluster"
	"github.com/ration/ration/cluster/membership"
	"github.com/ration/ration/cluster/rebalance"
	"github.com/ration/ration/config"
	"github.com/ration/ration/mux"
	"github.com/ration/ration/raftfsm"
	"github.com/ration/ration/service"
	"github.com/ration/ration/shards"
	"github.com/ration/ration/tlsfiles"
)

// Node is a running Ration node.
type Node struct {
	// cfg is the node's own copy, with the shard count it settled on;
	// shardSource says where that count came from.
	cfg         *config.Config
	shardSource shards.CountSource
	log         *slog.Logger
	reg         *prometheus.Registry
	mux         *mux.Mux
	host        *shards.Host
	dir         *actors.Directory
	members     *membership.Membership // nil on a single node
	// sys runs the user actors; actors is its place in the actor cluster
	// (nil on a single node), which reaches the actors of other nodes.
	sys    *actor.ActorSystem
	actors *actorcluster.Cluster
	// hostp and dirp publish host and dir to the actor cluster, which
	// starts before them and may be asked about shards meanwhile.
	hostp atomic.Pointer[shards.Host]
	dirp  atomic.Pointer[actors.Directory]
	// rebalancer moves replicas when membership changes; nil on a single
	// node.
	rebalancer *rebalance.Reconciler
	peers      peers
	// expired counts requests from other nodes that came too late.
	expired prometheus.Counter
	// tls is the node's TLS files; nil without --tls-cert.
	tls *tlsfiles.Files

	httpLn net.Listener
	grpcLn net.Listener

	// closers undo Start's steps, in reverse: Shutdown runs them.
	closers  closers
	draining atomic.Bool
	stopOnce sync.Once
	stopErr  error
	done     chan struct{}
}

// Start brings a node up: it returns once every listener is bound and the
// shard groups are open; Ready says when every shard has a leader.
//
// Each step builds one part of the node and hands back what undoes it (a
// closer). Shutdown runs the closers in reverse, so the node stops in the
// reverse of this order; a Start that fails part way undoes what it built
// the same way.
func Start(ctx context.Context, cfg *config.Config, logger *slog.Logger) (_ *Node, err error) {
	n, err := newNode(cfg, logger)
	if err != nil {
		return nil, err
	}
	if cfg.Insecure && !config.IsLoopback(cfg.BindHost) {
		n.log.Warn("serving without TLS beyond loopback (--insecure): anyone who reaches these ports can read and write every ledger and join the cluster",
			"bind_host", cfg.BindHost)
	}
	defer func() {
		if err != nil {
			_ = n.closers.close(context.Background())
		}
	}()
	// First, and so stopped last: the actor system's id goes into the
	// gossip metadata.
	sys, stopSys := newActorSystem(slog.New(actorcluster.RemoteLogHandler(n.log.Handler(), n.actorPeerDeparting)))
	n.sys = sys
	n.closers.push(stopSys)
	// The connections to other nodes' Admin service, which formation
	// and the rebalancer open as they need them.
	n.closers.push(quiet(n.peers.close))
	m, closeMux, err := newMux(n.cfg, n.tls, n.log)
	if err != nil {
		return nil, err
	}
	n.mux = m
	n.closers.push(closeMux)

	var hosted []uint32
	var peersOf func(uint32) []raft.Server
	if clustered(n) {
		if hosted, peersOf, err = n.joinCluster(ctx); err != nil {
			return nil, err
		}
	}
	host, closeHost, err := n.openShards(ctx, hosted, peersOf)
	if err != nil {
		return nil, err
	}
	n.host = host
	n.hostp.Store(host)
	n.closers.push(closeHost)
	dir, closeDir := n.newDirectory()
	n.dir = dir
	n.dirp.Store(dir)
	n.closers.push(closeDir)

	// Before the APIs serve, so status never reads the field while it is
	// being set.
	if clustered(n) {
		n.rebalancer = n.newRebalancer()
	}
	drain, err := n.serveAPIs(service.New(n.newRouter(), chaosClock()).WithDeadlines(n.cfg.RequestTimeout, n.cfg.MaxRequestTimeout))
	if err != nil {
		return nil, err
	}
	n.closers.push(drain)
	// Run before the APIs drain: the requests still in flight here, and
	// the ones other nodes forward, then reach the new leaders instead of
	// waiting out an election.
	n.closers.push(n.handOffLeadership)
	// Last, so that the actors hear of every leadership change it causes;
	// stopped first, so no replica moves while the node goes away.
	if clustered(n) {
		// Runs once the rebalancer has stopped and before the hand-off.
		n.closers.push(n.announceStopping)
		n.rebalancer.Start()
		n.closers.push(quiet(n.rebalancer.Stop))
	}
	n.logStarted()
	return n, nil
}

// Ready reports whether the node serves: not draining, and every shard has
// a leader.
func (n *Node) Ready() bool { return !n.draining.Load() && n.host.Ready() }

// HTTPAddr and GRPCAddr are the bound addresses.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// GRPCAddr is the bound gRPC address.
func (n *Node) GRPCAddr() string { return n.grpcLn.Addr().String() }

// Host is the node's shard host, for tests and status.
func (n *Node) Host() *shards.Host { return n.host }

// Done is closed when the node has shut down.
func (n *Node) Done() <-chan struct{} { return n.done }

// Shutdown stops the node gracefully, within ctx, undoing Start's steps in
// reverse: it stops the rebalancer, hands the shards it leads to other
// replicas, stops taking requests and finishes the ones in flight, stops
// the user actors, closes every raft group cleanly, leaves the actor
// cluster and gossip, and closes the raft transport and the actor system.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() {
		defer close(n.done)
		n.draining.Store(true)
		n.log.Info("shutting down")
		n.stopErr = n.closers.close(ctx)
		n.log.Info("shut down", "err", n.stopErr)
	})
	return n.stopErr
}

func (n *Node) status(ctx context.Context, req *rationv1.StatusRequest) (*rationv1.StatusResponse, error) {
	res := &rationv1.StatusResponse{NodeId: n.cfg.NodeID}
	if n.members == nil {
		res.Nodes = append(res.Nodes, &rationv1.Node{
			Id: n.cfg.NodeID, RaftAddr: n.cfg.AdvertiseRaftAddr(), GrpcAddr: n.cfg.AdvertiseGRPCAddr(),
			HttpAddr: n.cfg.AdvertiseHTTPAddr(), State: "alive",
		})
	} else {
		for _, m := range n.members.Members() {
			res.Nodes = append(res.Nodes, &rationv1.Node{
				Id: m.Meta.NodeID, RaftAddr: m.Meta.RaftAddr, GrpcAddr: m.Meta.GRPCAddr,
				HttpAddr: m.Meta.HTTPAddr, State: m.State.String(),
			})
		}
	}
	for _, s := range n.host.Status() {
		fsm := n.host.FSM(s.Shard)
		if fsm == nil { // removed since Status
			continue
		}
		var hash []byte
		if req.GetIncludeStateHash() {
			h := fsm.StateHash()
			hash = h[:]
		}
		state := s.State
		// A shard led here that rebalancing is moving says so; a replica
		// being added shows in Replicas and not yet in Voters.
		if n.rebalancer != nil && n.rebalancer.Moving(s.Shard) {
			state += " (moving)"
		}
		// Where placement wants the shard, as the rebalancer last computed
		// it; none on a single node, which places nothing.
		var target []string
		if n.rebalancer != nil {
			target = n.rebalancer.Target(s.Shard)
		}
		res.Shards = append(res.Shards, &rationv1.Shard{
			StateHash: hash,
			Id:        s.Shard, Leader: s.LeaderID, Replicas: s.Replicas, Voters: s.Voters,
			AppliedIndex: s.AppliedIndex, CommitIndex: s.CommitIndex, State: state, Users: uint64(s.Users),
			Target: target,
		})
	}
	return res, nil
}

// replica adapts the shard host to what the actors need.
type replica struct {
	h      *shards.Host
	shards int
}

func (r replica) ShardOf(user string) uint32 { return shards.ShardOf(user, r.shards) }

func (r replica) Propose(ctx context.Context, op raftfsm.Op) (raftfsm.OpResult, error) {
	return r.h.Propose(ctx, op)
}

func (r replica) ProposeBatch(ctx context.Context, ops []raftfsm.Op) ([]raftfsm.OpResult, error) {
	return r.h.ProposeBatch(ctx, ops)
}

func (r replica) ReadBarrier(ctx context.Context, shard uint32) error {
	return r.h.ReadBarrier(ctx, shard)
}

// Replica is this node's replica of shard if it serves reads: hosted, and
// a voter (shards.Host.IsVoter).
func (r replica) Replica(shard uint32) (actors.UserLogs, bool) {
	fsm := r.h.FSM(shard)
	if fsm == nil || !r.h.IsVoter(shard) {
		return nil, false
	}
	return fsm, true
}

func (r replica) Version(shard uint32, user string) (uint64, bool) {
	fsm := r.h.FSM(shard)
	if fsm == nil {
		return 0, false
	}
	return fsm.Version(user), true
}

func (r replica) LogSince(shard uint32, user string, from uint64) (uint64, []raftfsm.LoggedOp) {
	fsm := r.h.FSM(shard)
	if fsm == nil { // moved away meanwhile
		return 0, nil
	}
	return fsm.LogSince(user, from)
}
