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
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/ration/ration/actors"
	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/cluster/actorcluster"
	"github.com/ration/ration/cluster/routing"
	"github.com/ration/ration/config"
	"github.com/ration/ration/grpcapi"
	"github.com/ration/ration/httpapi"
	"github.com/ration/ration/mux"
	"github.com/ration/ration/service"
	"github.com/ration/ration/shards"
	"github.com/ration/ration/tlsfiles"
)

// The parts of a node, each built by one step of Start that returns what
// it built and its closer.

// closer undoes one step of Start within ctx.
type closer func(context.Context) error

// closers are what undoes Start's steps, in the order of the steps.
type closers []closer

func (cs *closers) push(c closer) { *cs = append(*cs, c) }

// close runs every closer, the last pushed first, and joins their errors.
func (cs closers) close(ctx context.Context) error {
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		errs = append(errs, cs[i](ctx))
	}
	return errors.Join(errs...)
}

// quiet is the closer of a part whose stop neither fails nor waits on a
// context.
func quiet(stop func()) closer {
	return func(context.Context) error {
		stop()
		return nil
	}
}

// newNode is a node with what needs no undoing: its settled config (the
// data dir made, the shard count chosen), metrics registry and TLS files.
func newNode(cfg *config.Config, logger *slog.Logger) (*Node, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, shardSource, err := dataDirCount(cfg, logger)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, shardSource: shardSource, log: logger, reg: prometheus.NewRegistry(), done: make(chan struct{})}
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.TLSCert != "" {
		n.tls, err = tlsfiles.Load(cfg.TLSCert, cfg.TLSKey, cfg.TLSCA, logger.With("component", "tls"))
		if err != nil {
			return nil, err
		}
		// Before anything dials a peer: formation asks the others for
		// their status (othersMovedOn) long before the gRPC server is
		// built, and in plaintext a TLS cluster would answer nothing.
		n.peers.creds = credentials.NewTLS(n.tls.PeerConfig())
	}
	// Counted by the actor cluster (batches) and the user actors (the
	// other requests from other nodes).
	n.expired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ration_forward_expired_total",
		Help: "Requests from other nodes that arrived after their sender's deadline and were not started. Expected after a partition heals; a steady rate otherwise means the nodes' clocks disagree.",
	})
	if err := n.reg.Register(n.expired); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return n, nil
}

// newActorSystem is the actor system of the user actors.
func newActorSystem(logger *slog.Logger) (*actor.ActorSystem, closer) {
	sys := actors.NewSystem(logger)
	return sys, quiet(sys.Shutdown)
}

// newMux listens on the raft port and serves the raft transport mux.
func newMux(cfg *config.Config, files *tlsfiles.Files, logger *slog.Logger) (*mux.Mux, closer, error) {
	ln, err := net.Listen("tcp", cfg.RaftAddr())
	if err != nil {
		return nil, nil, fmt.Errorf("raft listener: %w", err)
	}
	opts := []mux.Option{mux.WithLogger(logger)} // the mux names its component
	if files != nil {
		// Raft between nodes: both ends present the node certificate.
		opts = append(opts, mux.WithTLS(files.ServerConfig(tls.RequireAndVerifyClientCert), files.PeerConfig()))
	}
	m := mux.New(ln, opts...)
	go func() { _ = m.Serve() }()
	return m, func(context.Context) error { return m.Close() }, nil
}

// openShards opens the shard host: the groups hosted (every shard if nil),
// bootstrapped with peersOf's voters when given. A node joining an
// existing cluster opens no group at first: hosted is then empty, not nil,
// and the rebalancer opens the groups placement gives it.
func (n *Node) openShards(ctx context.Context, hosted []uint32, peersOf func(uint32) []raft.Server) (*shards.Host, closer, error) {
	cfg := n.cfg
	h, err := shards.Open(ctx, shards.Config{
		NodeID:             cfg.NodeID,
		DataDir:            cfg.DataDir,
		Mux:                n.mux,
		AdvertiseAddr:      cfg.AdvertiseRaftAddr(),
		Resolve:            n.resolver(),
		Departing:          n.raftPeerDeparting,
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
		Logger:             n.log,
		Registerer:         n.reg,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("shards: %w", err)
	}
	return h, h.Shutdown, nil
}

// newDirectory is the directory of this node's user actors. A shard's
// actors passivate when this node stops leading it; the subscription, like
// every one, ends with the host (shards.Host.Shutdown).
func (n *Node) newDirectory() (*actors.Directory, closer) {
	d := actors.New(replica{n.host, n.cfg.Shards}, actors.Options{
		IdleTimeout: n.cfg.IdlePassivation,
		CacheBytes:  actorCacheBytes(n.cfg.MemoryLimit),
		Logger:      n.log.With("component", "actors"),
		Registerer:  n.reg,
		System:      n.sys,
		Remote:      actorcluster.Server{Locator: locator{n}, Expired: n.expired},
		Chain:       n.chainable,
	})
	n.host.Subscribe(func(ev shards.ShardLeadership) {
		if !ev.Leader {
			d.PassivateShard(ev.Shard)
		}
	})
	return d, d.Shutdown
}

// The caches of users' ledgers take fixed shares of --memory-limit: a
// quarter for the actors of the shards this node leads, an eighth for the
// ledgers kept for stale reads. The rest is for the replicas' state (in
// memory until it moves to disk), raft, gRPC and the runtime's headroom.
// 0 (no limit) leaves the actors bounded by their idle timeout alone and
// the views by their count.
func actorCacheBytes(limit int64) int64 { return limit / 4 }
func viewCacheBytes(limit int64) int64  { return limit / 8 }

// newRouter lets any node answer any request: it serves the shards this
// node leads, and reaches the users of the rest through the actor cluster
// (whose lookup follows this node's leadership changes until the host
// shuts down). Stale reads are answered from this node's own replica,
// follower or leader, without asking the leader.
func (n *Node) newRouter() *routing.Router {
	var remote service.Backend
	if n.actors != nil {
		n.actors.FollowLeadership(n.host)
		remote = n.actors
	}
	views := actors.NewViews(replica{n.host, n.cfg.Shards}, 0, viewCacheBytes(n.cfg.MemoryLimit), n.reg)
	return routing.New(n.dir, locator{n}, routing.Options{Remote: remote, Replicas: views})
}

// maxStreamsPerConn caps the concurrent gRPC calls of one connection.
const maxStreamsPerConn = 1024

// serveAPIs serves svc over gRPC and HTTP. Its closer drains both at once:
// they take no new request and finish those in flight, gRPC cut short if
// ctx ends first.
func (n *Node) serveAPIs(svc *service.Service) (closer, error) {
	grpcLn, err := net.Listen("tcp", n.cfg.GRPCAddr())
	if err != nil {
		return nil, fmt.Errorf("grpc listener: %w", err)
	}
	// Past the cap a connection waits in the kernel's backlog until one
	// closes: a flood of idle connections cannot exhaust the node's file
	// descriptors and memory.
	grpcLn = netutil.LimitListener(grpcLn, n.cfg.MaxConnections)
	grpcSrv, err := n.newGRPCServer(svc)
	if err != nil {
		_ = grpcLn.Close()
		return nil, err
	}
	httpLn, err := net.Listen("tcp", n.cfg.HTTPAddr())
	if err != nil {
		_ = grpcLn.Close()
		return nil, fmt.Errorf("http listener: %w", err)
	}
	httpLn = netutil.LimitListener(httpLn, n.cfg.MaxConnections)
	httpSrv := n.newHTTPServer(svc)
	n.grpcLn, n.httpLn = grpcLn, httpLn
	go func() {
		if err := grpcSrv.Serve(grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("grpc server", "err", err)
		}
	}()
	go func() {
		serve := httpSrv.Serve
		if httpSrv.TLSConfig != nil {
			serve = func(ln net.Listener) error { return httpSrv.ServeTLS(ln, "", "") }
		}
		if err := serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server", "err", err)
		}
	}()
	return func(ctx context.Context) error {
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := httpSrv.Shutdown(ctx); err != nil {
				n.log.Warn("http shutdown", "err", err)
			}
		})
		wg.Go(func() {
			stopped := make(chan struct{})
			go func() { grpcSrv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-ctx.Done():
				grpcSrv.Stop()
			}
		})
		wg.Wait()
		return nil
	}, nil
}

// newGRPCServer is the gRPC API: the ledger, admin and routing services.
func (n *Node) newGRPCServer(svc *service.Service) (*grpc.Server, error) {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(max(n.cfg.MaxRequestBytes, 4<<20))),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Every call is unary: a client with more than this many calls
		// in flight on one connection should open another (the Go
		// client's coalescing keeps it far below).
		grpc.MaxConcurrentStreams(maxStreamsPerConn),
	}
	routes, err := n.newRouteTable()
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	opts = append(opts, grpc.ChainUnaryInterceptor(routes.Hints))
	if n.tls != nil {
		// With a CA bundle every gRPC client, other nodes included, must
		// present a certificate it signed.
		opts = append(opts, grpc.Creds(credentials.NewTLS(n.tls.ServerConfig(tls.RequireAndVerifyClientCert))))
	}
	s := grpc.NewServer(opts...)
	grpcapi.Register(s, svc, n.status, n.reg)
	rationv1.RegisterRoutingServer(s, routes)
	return s, nil
}

// newHTTPServer is the HTTP API, with the probes and metrics.
func (n *Node) newHTTPServer(svc *service.Service) *http.Server {
	s := &http.Server{
		Handler: httpapi.Handler(svc, httpapi.Options{
			MaxBodyBytes: n.cfg.MaxRequestBytes,
			Ready:        n.Ready,
			Gatherer:     n.reg,
			Registerer:   n.reg,
			Logger:       n.log.With("component", "http"),
		}),
		// A request that stalls while sending its headers or its body (at
		// most 1 MiB) is dropped within seconds, not held open forever.
		// Replies may take longer: a request may run until its deadline
		// (--max-request-timeout), and pprof's CPU profile streams for up
		// to the seconds it was asked for (net/http/pprof refuses one
		// longer than WriteTimeout).
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      max(70*time.Second, n.cfg.MaxRequestTimeout+10*time.Second),
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	s.Handler = chaosRoutes(s.Handler)
	if n.tls != nil {
		// Kubelet probes and scrapers may come without a certificate:
		// the TLS layer verifies one if given, and the API paths require
		// it (requireClientCert).
		s.TLSConfig = n.tls.ServerConfig(tls.VerifyClientCertIfGiven)
		if n.tls.HasCA() {
			s.Handler = requireClientCert(s.Handler)
		}
	}
	return s
}

// handOffLeadership hands the shards this node leads to other replicas,
// within ctx; a shard that could not be handed over is left to an
// election.
func (n *Node) handOffLeadership(ctx context.Context) error {
	if err := n.host.TransferLeadership(ctx); err != nil {
		n.log.Warn("leadership transfer", "err", err)
	}
	return nil
}

func (n *Node) logStarted() {
	actorAddr := ""
	if n.actors != nil {
		actorAddr = n.actors.Address()
	}
	n.log.Info("node started", "node_id", n.cfg.NodeID, "http", n.httpLn.Addr().String(),
		"grpc", n.grpcLn.Addr().String(), "raft", n.mux.Addr().String(), "actors", actorAddr,
		"shards", n.cfg.Shards, "data_dir", n.cfg.DataDir)
}
