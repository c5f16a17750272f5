// Package node assembles a Ration node: the raft transport mux, the shard
// host, the user actors, and the gRPC and HTTP servers. cmd/node is a thin
// main over it, and tests start nodes in-process with it.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/ration/ration/actors"
	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/cluster/actorcluster"
	"github.com/ration/ration/cluster/membership"
	"github.com/ration/ration/cluster/rebalance"
	"github.com/ration/ration/cluster/routing"
	"github.com/ration/ration/config"
	"github.com/ration/ration/grpcapi"
	"github.com/ration/ration/httpapi"
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
	router      *routing.Router
	// sys runs the user actors; actors is its place in the actor cluster
	// (nil on a single node), which reaches the actors of other nodes.
	sys     *actor.ActorSystem
	sysStop sync.Once
	actors  *actorcluster.Cluster
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

	httpSrv *http.Server
	httpLn  net.Listener
	grpcSrv *grpc.Server
	grpcLn  net.Listener

	draining atomic.Bool
	stopOnce sync.Once
	stopErr  error
	done     chan struct{}
}

// Start brings a node up: it returns once every listener is bound and the
// shard groups are open; Ready says when every shard has a leader.
func Start(ctx context.Context, cfg *config.Config, logger *slog.Logger) (_ *Node, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, shardSource, err := dataDirCount(cfg, logger)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, shardSource: shardSource, log: logger, reg: prometheus.NewRegistry(), done: make(chan struct{})}
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()

	if cfg.TLSCert != "" {
		n.tls, err = tlsfiles.Load(cfg.TLSCert, cfg.TLSKey, cfg.TLSCA, logger.With("component", "tls"))
		if err != nil {
			return nil, err
		}
	}

	raftLn, err := net.Listen("tcp", cfg.RaftAddr())
	if err != nil {
		return nil, fmt.Errorf("raft listener: %w", err)
	}
	muxOpts := []mux.Option{mux.WithLogger(logger.With("component", "mux"))}
	if n.tls != nil {
		// Raft between nodes: both ends present the node certificate.
		muxOpts = append(muxOpts, mux.WithTLS(n.tls.ServerConfig(tls.RequireAndVerifyClientCert), n.tls.PeerConfig()))
	}
	n.mux = mux.New(raftLn, muxOpts...)
	go func() { _ = n.mux.Serve() }()
	cleanup = append(cleanup, func() { _ = n.mux.Close() })

	// Counted by the actor cluster (batches) and the user actors (the
	// other requests from other nodes).
	n.expired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ration_forward_expired_total",
		Help: "Requests from other nodes that arrived after their sender's deadline and were not started. Expected after a partition heals; a steady rate otherwise means the nodes' clocks disagree.",
	})
	if err := n.reg.Register(n.expired); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}

	n.sys = actors.NewSystem(logger)
	cleanup = append(cleanup, n.stopSystem)

	var hosted []uint32
	var peersOf func(uint32) []raft.Server
	if clustered(n) {
		if hosted, peersOf, err = n.joinCluster(ctx, &cleanup); err != nil {
			return nil, err
		}
	}
	// A node joining an existing cluster opens no group at first: hosted
	// is then empty, not nil (which would mean every shard), and the
	// rebalancer opens the groups placement gives it.
	n.host, err = shards.Open(ctx, shards.Config{
		NodeID:             cfg.NodeID,
		DataDir:            cfg.DataDir,
		Mux:                n.mux,
		AdvertiseAddr:      cfg.AdvertiseRaftAddr(),
		Resolve:            n.resolver(),
		Shards:             cfg.Shards,
		Hosted:             hosted,
		Bootstrap:          !clustered(n) || peersOf != nil,
		PeersOf:            peersOf,
		HeartbeatTimeout:   cfg.RaftHeartbeatTimeout,
		ElectionTimeout:    cfg.RaftElectionTimeout,
		LeaderLeaseTimeout: cfg.RaftLeaderLeaseTimeout,
		SnapshotThreshold:  cfg.SnapshotThreshold,
		SnapshotInterval:   cfg.SnapshotInterval,
		TrailingLogs:       cfg.RaftTrailingLogs,
		LogStore:           shards.LogStore(cfg.RaftLogStore),
		Logger:             logger,
		Registerer:         n.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("shards: %w", err)
	}
	n.hostp.Store(n.host)
	cleanup = append(cleanup, func() { _ = n.host.Shutdown(context.Background()) })
	cleanup = append(cleanup, n.peers.close)

	n.dir = actors.New(replica{n.host, cfg.Shards}, actors.Options{
		IdleTimeout: cfg.IdlePassivation,
		Logger:      logger.With("component", "actors"),
		Registerer:  n.reg,
		System:      n.sys,
		Remote:      actorcluster.Server{Locator: locator{n}, Expired: n.expired},
		Chain:       n.chainable,
	})
	n.dirp.Store(n.dir)
	cleanup = append(cleanup, func() { _ = n.dir.Shutdown(context.Background()) })
	unsubscribe := n.host.Subscribe(func(ev shards.ShardLeadership) {
		if !ev.Leader {
			n.dir.PassivateShard(ev.Shard)
		}
	})
	cleanup = append(cleanup, unsubscribe)

	// Any node answers any request: the router serves the shards this node
	// leads, and reaches the users of the rest through the actor cluster.
	var remote service.Backend
	if n.actors != nil {
		cleanup = append(cleanup, n.actors.FollowLeadership(n.host))
		remote = n.actors
	}
	// Stale reads are answered from this node's own replica, follower or
	// leader, without asking the leader.
	views := actors.NewViews(replica{n.host, cfg.Shards}, 0, n.reg)
	n.router = routing.New(n.dir, locator{n}, routing.Options{Remote: remote, Replicas: views})
	svc := service.New(n.router, chaosClock())

	n.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr())
	if err != nil {
		return nil, fmt.Errorf("grpc listener: %w", err)
	}
	cleanup = append(cleanup, func() { _ = n.grpcLn.Close() })
	grpcOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(max(cfg.MaxRequestBytes, 4<<20))),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	routes, err := n.newRouteTable()
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	grpcOpts = append(grpcOpts, grpc.ChainUnaryInterceptor(routes.Hints))
	if n.tls != nil {
		// With a CA bundle every gRPC client, other nodes included, must
		// present a certificate it signed.
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(n.tls.ServerConfig(tls.RequireAndVerifyClientCert))))
		n.peers.creds = credentials.NewTLS(n.tls.PeerConfig())
	}
	n.grpcSrv = grpc.NewServer(grpcOpts...)
	grpcapi.Register(n.grpcSrv, svc, n.status, n.reg)
	rationv1.RegisterRoutingServer(n.grpcSrv, routes)

	n.httpLn, err = net.Listen("tcp", cfg.HTTPAddr())
	if err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	cleanup = append(cleanup, func() { _ = n.httpLn.Close() })
	n.httpSrv = &http.Server{
		Handler: httpapi.Handler(svc, httpapi.Options{
			MaxBodyBytes: cfg.MaxRequestBytes,
			Ready:        n.Ready,
			Gatherer:     n.reg,
			Registerer:   n.reg,
			Logger:       logger.With("component", "http"),
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	n.httpSrv.Handler = chaosRoutes(n.httpSrv.Handler)
	if n.tls != nil {
		// Kubelet probes and scrapers may come without a certificate:
		// the TLS layer verifies one if given, and the API paths require
		// it (requireClientCert).
		n.httpSrv.TLSConfig = n.tls.ServerConfig(tls.VerifyClientCertIfGiven)
		if n.tls.HasCA() {
			n.httpSrv.Handler = requireClientCert(n.httpSrv.Handler)
		}
	}

	if clustered(n) {
		n.newRebalancer()
	}
	go func() {
		if err := n.grpcSrv.Serve(n.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			logger.Error("grpc server", "err", err)
		}
	}()
	go func() {
		serve := n.httpSrv.Serve
		if n.httpSrv.TLSConfig != nil {
			serve = func(ln net.Listener) error { return n.httpSrv.ServeTLS(ln, "", "") }
		}
		if err := serve(n.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server", "err", err)
		}
	}()
	// Last, so that the actors hear of every leadership change it causes.
	if clustered(n) {
		n.startRebalancer()
	}
	actorAddr := ""
	if n.actors != nil {
		actorAddr = n.actors.Address()
	}
	logger.Info("node started", "node_id", cfg.NodeID, "http", n.httpLn.Addr().String(),
		"grpc", n.grpcLn.Addr().String(), "raft", raftLn.Addr().String(), "actors", actorAddr,
		"shards", cfg.Shards, "data_dir", cfg.DataDir)
	return n, nil
}

// stopSystem stops the actor system, once: protoactor panics on a second
// stop.
func (n *Node) stopSystem() { n.sysStop.Do(n.sys.Shutdown) }

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

// Shutdown stops the node gracefully: it stops taking requests, finishes
// the ones in flight, stops the actors, and closes every raft group
// cleanly, within ctx.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() {
		defer close(n.done)
		n.draining.Store(true)
		n.log.Info("shutting down")
		// No replica moves while the node goes away.
		if n.rebalancer != nil {
			n.rebalancer.Stop()
		}
		// Hand the shards this node leads to other replicas first: the
		// requests still in flight here, and the ones other nodes forward,
		// then reach the new leaders instead of waiting out an election.
		if err := n.host.TransferLeadership(ctx); err != nil {
			n.log.Warn("leadership transfer", "err", err)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := n.httpSrv.Shutdown(ctx); err != nil {
				n.log.Warn("http shutdown", "err", err)
			}
		}()
		go func() {
			defer wg.Done()
			stopped := make(chan struct{})
			go func() { n.grpcSrv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-ctx.Done():
				n.grpcSrv.Stop()
			}
		}()
		wg.Wait()
		errs := []error{n.dir.Shutdown(ctx), n.host.Shutdown(ctx)}
		if n.actors != nil {
			n.actors.Shutdown()
		}
		if n.members != nil {
			errs = append(errs, n.members.Leave(ctx))
		}
		errs = append(errs, n.mux.Close())
		n.peers.close()
		n.stopSystem()
		n.stopErr = errors.Join(errs...)
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

func (r replica) LogSince(shard uint32, user string, from uint64) (uint64, []raftfsm.LoggedOp) {
	fsm := r.h.FSM(shard)
	if fsm == nil { // moved away meanwhile
		return 0, nil
	}
	return fsm.LogSince(user, from)
}
