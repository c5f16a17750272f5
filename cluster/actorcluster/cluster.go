// Package actorcluster runs the nodes' user actors as one protoactor
// cluster: protoactor remote on every clustered node, a ClusterProvider
// fed by our memberlist view (cluster/membership), and an IdentityLookup
// that activates a user's actor on the current leader of the user's shard.
// Requests cross nodes as one versioned envelope type (actorpb), served by
// the user's actor itself. See DESIGN.md.
package actorcluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/cluster/actorcluster/actorpb"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/service"
	"github.com/ration/ration/shards"
)

// Config describes a node's place in the actor cluster.
type Config struct {
	NodeID string
	// System is the node's actor system, the one its user actors run in.
	System *actor.ActorSystem
	// BindHost and Port are where protoactor remote listens; AdvertiseAddr
	// (host:port) is where other nodes reach it, as announced in gossip.
	BindHost      string
	Port          int
	AdvertiseAddr string

	Members   Membership
	Locator   Locator
	Directory Directory
	Logger    *slog.Logger

	// AttemptTimeout bounds one request to a user's actor on another node
	// (default 5s); the router retries within its own deadline. A lost
	// connection ends the attempt at once; this is for a node that holds
	// its connections but does not answer.
	AttemptTimeout time.Duration
	// ActivateTimeout bounds one question to a directory actor (default
	// 2s). A healthy node answers in milliseconds; a starved one (under
	// the race detector, on a shared machine) can take a second.
	ActivateTimeout time.Duration
	// AvoidFor is how long a node whose connection was lost is passed over
	// when looking for a shard's leader (default 1s).
	AvoidFor time.Duration
	// TLS, when set, carries actor traffic over TLS both ways, each node
	// presenting its certificate. Nil: plaintext.
	TLS TLSConfigs
	// Expired counts batches from other nodes that arrived after their
	// sender's deadline and were not started (Server.Expired counts the
	// other requests). Optional.
	Expired prometheus.Counter
}

// TLSConfigs hands out the TLS configurations of a node's listeners and of
// its calls to other nodes (tlsfiles.Files).
type TLSConfigs interface {
	ServerConfig(tls.ClientAuthType) *tls.Config
	PeerConfig() *tls.Config
}

// HeartbeatExpiration is protoactor's gossip heartbeat expiry: never, in
// effect. protoactor blocks a member whose heartbeat is older, for good,
// and its default (20s) blocks healthy nodes that are merely slow.
// Liveness is memberlist's business here (cluster/membership), which
// feeds the topology through the Provider.
const HeartbeatExpiration = time.Duration(math.MaxInt64)

// gossipInterval paces protoactor's own gossip loop (default 300ms): its
// heartbeats, its blocking of expired and departed members, and its state
// exchange. A day, in effect never. Nothing here reads that gossip, its
// heartbeat expiry would block slow members, and it is racy: it mutates
// state that the remote is still serialising from the previous round.
// cluster/membership is the one failure detector.
const gossipInterval = 24 * time.Hour

// Cluster is a node's member of the actor cluster.
type Cluster struct {
	cfg      Config
	pc       *cluster.Cluster
	lookup   *Lookup
	provider *Provider
	calls    *caller
	// startDone is closed when protoactor's StartMember has returned.
	startDone chan struct{}
}

// Start joins the actor cluster: protoactor remote listens, the provider
// publishes the membership view, and the directory actor serves.
func Start(cfg Config) (*Cluster, error) {
	if cfg.System == nil || cfg.Members == nil || cfg.Locator == nil || cfg.Directory == nil {
		return nil, errors.New("actorcluster: System, Members, Locator and Directory are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 5 * time.Second
	}
	if cfg.ActivateTimeout <= 0 {
		cfg.ActivateTimeout = 2 * time.Second
	}
	if cfg.AvoidFor <= 0 {
		cfg.AvoidFor = time.Second
	}
	c := &Cluster{cfg: cfg, calls: newCaller(cfg.System)}
	c.provider = NewProvider(cfg.Members, cfg.Logger)
	c.lookup = newLookup(&c.cfg, c.calls)

	host := cfg.BindHost
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // remote joins host and port with a bare colon
	}
	ropts := []remote.ConfigOption{remote.WithAdvertisedHost(cfg.AdvertiseAddr)}
	if cfg.TLS != nil {
		ropts = append(ropts,
			remote.WithServerOptions(grpc.Creds(credentials.NewTLS(cfg.TLS.ServerConfig(tls.RequireAndVerifyClientCert)))),
			remote.WithDialOptions(grpc.WithTransportCredentials(credentials.NewTLS(cfg.TLS.PeerConfig()))))
	}
	rc := remote.Configure(host, cfg.Port, ropts...)
	// An endpoint that cannot connect gives up after one try (and a 2s
	// pause) instead of five: requests to a dead node are failed by the
	// caller's attempt timeout anyway, and the lookup moves on.
	rc.MaxRetryCount = 1
	cc := cluster.Configure("ration", c.provider, c.lookup, rc, cluster.WithHeartbeatExpiration(HeartbeatExpiration))
	cc.GossipInterval = gossipInterval

	// protoactor's StartMember starts the remote, sets up the lookup,
	// starts gossip and the provider, and then sleeps a fixed second. Only
	// the first two matter before the node goes on: the lookup's Setup
	// says when they are done, and the rest, sleep included, finishes in
	// the background. A node that waited out the sleep before forming its
	// shards would reach formation after its peers had formed them, and
	// join by rebalancing instead. protoactor reports failures to start (a
	// port in use) by panicking.
	c.pc = cluster.New(cfg.System, cc)
	ready := make(chan error, 1)
	var setUp atomic.Bool
	c.lookup.onSetup = func() {
		setUp.Store(true)
		ready <- nil
	}
	c.startDone = make(chan struct{})
	go func() {
		defer close(c.startDone)
		defer func() {
			if r := recover(); r != nil {
				err := fmt.Errorf("actorcluster: start on %s: %v", net.JoinHostPort(cfg.BindHost, fmt.Sprint(cfg.Port)), r)
				if setUp.Load() {
					// The remote serves; one of protoactor's extras failed.
					cfg.Logger.Error("actor cluster start", "err", err)
					return
				}
				ready <- err
			}
		}()
		c.pc.StartMember()
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	cfg.Logger.Info("actor cluster started", "address", cfg.System.Address(), "member_id", cfg.System.ID)
	return c, nil
}

// FollowLeadership drops the lookup's cached actors of every shard whose
// leadership changes on this node, from now until the returned function
// is called. The node calls it once its shards are open.
func (c *Cluster) FollowLeadership(l Leadership) (unsubscribe func()) {
	return l.Subscribe(func(ev shards.ShardLeadership) { c.lookup.dropShard(ev.Shard) })
}

// Address is where this node's actors are reached.
func (c *Cluster) Address() string { return c.cfg.System.Address() }

// Protoactor is the protoactor cluster, for tests and diagnostics.
func (c *Cluster) Protoactor() *cluster.Cluster { return c.pc }

// Shutdown leaves the actor cluster: the directory actor stops, the
// topology is no longer followed, and the remote closes its listener and
// connections. Stop the user actors first (nothing is in flight then),
// and the actor system after. The remote's graceful shutdown is not used:
// it waits up to 10s for the peers' streams to end, and races with its
// own endpoint readers.
func (c *Cluster) Shutdown() {
	<-c.startDone
	c.lookup.Shutdown()
	_ = c.provider.Shutdown(false)
	c.pc.Gossip.Shutdown()
	c.pc.Remote.Shutdown(false)
}

// call makes one attempt to have the user's actor, on its shard's leader,
// serve req.
func (c *Cluster) call(ctx context.Context, user string, req *actorpb.Request) (*actorpb.Reply, error) {
	pid, node, err := c.lookup.resolve(ctx, user)
	if err != nil {
		return nil, err
	}
	return c.send(ctx, user, pid, node, req)
}

// send makes one attempt at req on pid, an actor on node serving user:
// within the attempt timeout and ctx, and recording in the lookup what the
// reply says of node's leadership.
func (c *Cluster) send(ctx context.Context, user string, pid *actor.PID, node string, req *actorpb.Request) (*actorpb.Reply, error) {
	timeout := c.cfg.AttemptTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	timeout = max(timeout, time.Millisecond)
	deadline := time.Now().Add(timeout)
	req.TimeoutMs = timeout.Milliseconds()
	req.DeadlineUnixMs = deadline.UnixMilli()
	rep, err := c.calls.request(ctx, pid, req, timeout)
	if err != nil {
		c.lookup.failed(user, pid, node, err)
		if !errors.Is(err, ErrGone) {
			// Sent and unanswered: the receiver may still take it up
			// until its deadline.
			err = &OpenError{Until: deadline, Err: err}
		}
		return nil, err
	}
	if rep.GetError().GetCode() == actorpb.Code_CODE_NOT_LEADER {
		c.lookup.notLeader(user, pid, node, rep.GetLeaderHint())
	}
	return rep, nil
}

// Grant, Deduct, Balance and History each make one attempt at the user's
// actor on its shard's leader, through the lookup: a service.Backend for
// the router, which retries what is retryable.

// Grant makes one attempt at a grant.
func (c *Cluster) Grant(ctx context.Context, user string, g ledger.Grant) (actors.WriteResult, error) {
	rep, err := c.call(ctx, user, grantRequest(user, g))
	if err != nil {
		return actors.WriteResult{}, err
	}
	return writeResult(rep, false)
}

// Deduct makes one attempt at a deduction.
func (c *Cluster) Deduct(ctx context.Context, user string, d ledger.Deduction) (actors.WriteResult, error) {
	rep, err := c.call(ctx, user, deductRequest(user, d))
	if err != nil {
		return actors.WriteResult{}, err
	}
	return writeResult(rep, true)
}

// Balance makes one attempt at a balance read.
func (c *Cluster) Balance(ctx context.Context, user string, at int64, stale bool) (actors.BalanceResult, error) {
	rep, err := c.call(ctx, user, balanceRequest(user, at, stale))
	if err != nil {
		return actors.BalanceResult{}, err
	}
	return balanceResult(rep)
}

// History makes one attempt at a history page.
func (c *Cluster) History(ctx context.Context, user string, from, to int64, skip, limit int, stale bool) (actors.Page, error) {
	rep, err := c.call(ctx, user, historyRequest(user, from, to, skip, limit, stale))
	if err != nil {
		return actors.Page{}, err
	}
	return pageResult(rep, user, from, to)
}

var _ service.Backend = (*Cluster)(nil)

// Server serves the request envelopes that reach a user's actor from
// other nodes: the actors.RemoteHandler of a clustered node's directory.
type Server struct {
	Locator Locator
	// Expired counts requests that arrived after their sender's deadline
	// and were not started. Optional.
	Expired prometheus.Counter
}

var _ actors.RemoteHandler = Server{}

// defaultServeTimeout bounds a request whose envelope names no timeout.
const defaultServeTimeout = 10 * time.Second

// ServeRemote answers an envelope: only while this node leads the user's
// shard (otherwise with a not-leader reply and a hint), only versions and
// kinds it knows (otherwise UNSUPPORTED, never a panic).
func (s Server) ServeRemote(user string, msg any, l actors.Local) any {
	req, ok := msg.(*actorpb.Request)
	if !ok {
		return nil
	}
	if req.GetVersion() != actorpb.Version_VERSION_1 {
		return codeReply(actorpb.Code_CODE_UNSUPPORTED, "envelope version %d unknown to this node", req.GetVersion())
	}
	if req.GetUser() != user {
		return codeReply(actorpb.Code_CODE_UNAVAILABLE, "request for %q reached the actor of %q", req.GetUser(), user)
	}
	shard := s.Locator.ShardOf(user)
	if !s.Locator.LocalLeader(shard) {
		return notLeaderReply(s.Locator, shard)
	}
	ctx, cancel, late := startContext(req, s.Expired)
	defer cancel()
	if late != nil {
		return late
	}
	return serve(ctx, req, l)
}

// startContext is the context to serve req in: it ends when the sender
// stops waiting. A request that arrived after its sender's deadline gets
// late, a refusal, instead, and expired (if not nil) counts it.
func startContext(req *actorpb.Request, expired prometheus.Counter) (_ context.Context, _ context.CancelFunc, late *actorpb.Reply) {
	timeout := defaultServeTimeout
	if req.GetTimeoutMs() > 0 {
		timeout = time.Duration(req.GetTimeoutMs()) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	ms := req.GetDeadlineUnixMs()
	if ms <= 0 {
		return ctx, cancel, nil
	}
	deadline := time.UnixMilli(ms)
	if by := time.Since(deadline); by >= 0 {
		if expired != nil {
			expired.Inc()
		}
		return ctx, cancel, codeReply(actorpb.Code_CODE_DEADLINE_EXCEEDED, "arrived %v after its sender's deadline; not started", by.Round(time.Millisecond))
	}
	ctx, cancelAt := context.WithDeadline(ctx, deadline)
	return ctx, func() { cancelAt(); cancel() }, nil
}

// OpenError is a failed attempt whose request was sent and not answered:
// its receiver may still start it, until Until by the receiver's clock
// (the envelope's deadline). A caller that gets a refusal from a later
// attempt waits that out before trusting it (cluster/routing).
type OpenError struct {
	Until time.Time
	Err   error
}

func (e *OpenError) Error() string { return e.Err.Error() }

func (e *OpenError) Unwrap() error { return e.Err }

// OpenUntil is when the request stops being startable.
func (e *OpenError) OpenUntil() time.Time { return e.Until }
