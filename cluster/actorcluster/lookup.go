package actorcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/cluster/actorcluster/actorpb"
	"github.com/ration/ration/service"
	"github.com/ration/ration/shards"
)

// DirectoryActor is the name of the actor every clustered node runs to
// activate users' actors for other nodes: a well-known name, so a node
// needs only another node's actor address to reach it.
const DirectoryActor = "ration-directory"

// Locator is this node's view of where shards are led.
type Locator interface {
	ShardOf(user string) uint32
	// LocalLeader reports whether this node leads the shard and may serve.
	LocalLeader(shard uint32) bool
	// LeaderHint is the node this node's raft believes leads the shard,
	// if it holds a replica and knows.
	LeaderHint(shard uint32) (nodeID string, ok bool)
	// Candidates are the nodes that may lead the shard: its replica set.
	Candidates(shard uint32) []string
}

// Directory activates users' actors on this node and runs the batches of
// shards it leads (*actors.Directory).
type Directory interface {
	Activate(user string) (*actor.PID, error)
	Batch(ctx context.Context, ops []actors.BatchOp) []actors.BatchResult
}

// Leadership tells of this node's shard leadership changes (*shards.Host).
type Leadership interface {
	Subscribe(fn func(shards.ShardLeadership)) (unsubscribe func())
}

// ErrNoLeader: no node was found to lead the user's shard just now (an
// election, a move, or every candidate unreachable). Retryable.
var ErrNoLeader = errors.New("actorcluster: no leader found for the shard")

// Lookup is a protoactor IdentityLookup: it resolves "user"/<user> to the
// user's actor on the node that currently leads the user's shard. On this
// node it activates the actor through the Directory; otherwise it asks the
// leader's directory actor, and caches the PID it returns, and which node
// leads the shard. Leadership changes on this node, not-leader replies,
// lost actors and departed members drop cached entries.
type Lookup struct {
	self    string
	loc     Locator
	members Membership
	dir     Directory
	log     *slog.Logger
	calls   *caller
	// askTimeout bounds one question to a directory actor; avoidFor is
	// how long a node that did not answer is passed over.
	askTimeout time.Duration
	avoidFor   time.Duration
	expired    prometheus.Counter // of Config

	cl      *cluster.Cluster // from Setup
	dirPID  *actor.PID
	subs    []*eventstream.Subscription
	onSetup func() // called at the end of Setup: the remote listens

	mu     sync.Mutex
	pids   map[string]entry     // by user
	leader map[uint32]string    // shard -> node believed to lead it
	gen    map[uint32]uint64    // bumped whenever a shard's entries are dropped
	avoid  map[string]time.Time // node -> until when it is passed over
}

type entry struct {
	pid   *actor.PID
	shard uint32
	node  string
}

var _ cluster.IdentityLookup = (*Lookup)(nil)

func newLookup(cfg *Config, calls *caller) *Lookup {
	return &Lookup{
		self: cfg.NodeID, loc: cfg.Locator, members: cfg.Members, dir: cfg.Directory,
		log: cfg.Logger, calls: calls, askTimeout: cfg.ActivateTimeout, avoidFor: cfg.AvoidFor, expired: cfg.Expired,
		pids: map[string]entry{}, leader: map[uint32]string{}, gen: map[uint32]uint64{}, avoid: map[string]time.Time{},
	}
}

// Setup starts the directory actor and follows lost endpoints and
// topology changes (and, through Cluster.FollowLeadership, this node's
// leadership changes). protoactor calls it once the remote
// listens, so the directory actor's PID carries the node's address.
func (l *Lookup) Setup(c *cluster.Cluster, _ []string, isClient bool) {
	l.cl = c
	sys := c.ActorSystem
	if !isClient {
		pid, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
			return &directoryActor{l: l}
		}), DirectoryActor)
		if err != nil {
			// Only a second Setup on one actor system gets here.
			panic(fmt.Errorf("actorcluster: directory actor: %w", err))
		}
		l.dirPID = pid
	}
	l.subs = append(l.subs, sys.EventStream.Subscribe(func(ev any) {
		switch e := ev.(type) {
		case *remote.EndpointTerminatedEvent:
			l.calls.terminated(e.Address)
			l.dropAddress(e.Address)
		case *cluster.ClusterTopology:
			for _, m := range e.Left {
				l.calls.terminated(m.Address())
				l.dropAddress(m.Address())
			}
		}
	}))
	if l.onSetup != nil {
		l.onSetup()
	}
}

// Shutdown stops the directory actor and the subscriptions.
func (l *Lookup) Shutdown() {
	if l.cl != nil {
		for _, s := range l.subs {
			l.cl.ActorSystem.EventStream.Unsubscribe(s)
		}
		l.subs = nil
		if l.dirPID != nil {
			_ = l.cl.ActorSystem.Root.StopFuture(l.dirPID).Wait()
			l.dirPID = nil
		}
	}
}

// Get resolves a user's actor for protoactor's own callers (cluster.Get,
// cluster.Request); nil when no leader was found within the attempt.
func (l *Lookup) Get(ci *cluster.ClusterIdentity) *actor.PID {
	if ci.Kind != Kind {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*l.askTimeout)
	defer cancel()
	pid, _, err := l.resolve(ctx, ci.Identity)
	if err != nil {
		l.log.Debug("no actor for identity", "identity", ci.Identity, "err", err)
		return nil
	}
	return pid
}

// RemovePid drops the user's cached actor if it is still pid.
func (l *Lookup) RemovePid(ci *cluster.ClusterIdentity, pid *actor.PID) {
	if ci.Kind != Kind {
		return
	}
	l.remove(ci.Identity, pid)
}

func (l *Lookup) remove(user string, pid *actor.PID) {
	l.mu.Lock()
	if e, ok := l.pids[user]; ok && (pid == nil || e.pid.Equal(pid)) {
		delete(l.pids, user)
	}
	l.mu.Unlock()
	switch {
	case l.cl == nil:
	case pid == nil:
		l.cl.PidCache.Remove(user, Kind)
	default:
		l.cl.PidCache.RemoveByValue(user, Kind, pid)
	}
}

// dropShard forgets what is cached for a shard whose leadership changed.
func (l *Lookup) dropShard(shard uint32) {
	var users []string
	l.mu.Lock()
	l.gen[shard]++
	delete(l.leader, shard)
	for u, e := range l.pids {
		if e.shard == shard {
			delete(l.pids, u)
			users = append(users, u)
		}
	}
	l.mu.Unlock()
	if l.cl != nil {
		for _, u := range users {
			l.cl.PidCache.Remove(u, Kind)
		}
	}
}

// dropAddress forgets the actors on a node whose endpoint is gone.
func (l *Lookup) dropAddress(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for u, e := range l.pids {
		if e.pid.Address == addr {
			delete(l.pids, u)
			l.gen[e.shard]++
		}
	}
}

// notLeader records a not-leader reply from node for the user's shard.
func (l *Lookup) notLeader(user string, pid *actor.PID, node, hint string) {
	shard := l.loc.ShardOf(user)
	l.remove(user, pid)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.leader[shard] == node {
		delete(l.leader, shard)
	}
	if hint != "" && hint != node {
		l.leader[shard] = hint
	}
}

// failed records that a request to the user's actor on node got no reply.
// A node whose connection is lost is passed over for a moment.
func (l *Lookup) failed(user string, pid *actor.PID, node string, err error) {
	shard := l.loc.ShardOf(user)
	l.remove(user, pid)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.leader[shard] == node && !errors.Is(err, ErrGone) {
		// A stopped actor says nothing about its node's leadership: it
		// passivated, and the node activates a fresh one when asked.
		delete(l.leader, shard)
	}
	if errors.Is(err, ErrUnreachable) && node != l.self {
		l.avoid[node] = time.Now().Add(l.avoidFor)
	}
}

// pass passes node over for avoidFor.
func (l *Lookup) pass(node string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if node != l.self {
		l.avoid[node] = time.Now().Add(l.avoidFor)
	}
}

// resolve returns the user's actor on its shard's leader and that node's
// id: this node's own actor when it leads the shard, else a cached PID,
// else the answer of the first node whose directory actor activates it.
// Nodes are asked in order: the one last known to lead the shard, the one
// a not-leader reply named, the local raft's hint, then every candidate;
// each at most once per call.
func (l *Lookup) resolve(ctx context.Context, user string) (*actor.PID, string, error) {
	shard := l.loc.ShardOf(user)
	if l.loc.LocalLeader(shard) {
		pid, err := l.dir.Activate(user)
		return pid, l.self, err
	}
	l.mu.Lock()
	if e, ok := l.pids[user]; ok {
		l.mu.Unlock()
		return e.pid, e.node, nil
	}
	gen := l.gen[shard]
	l.mu.Unlock()

	asked := map[string]bool{l.self: true} // this node does not lead it
	var hint string
	var trail []string // what each node said, for the error
	for {
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
		node := l.next(shard, hint, asked)
		if node == "" {
			if len(trail) == 0 {
				trail = append(trail, "no node to ask")
			}
			return nil, "", service.Unavailable(fmt.Errorf("%w %d (%s)", ErrNoLeader, shard, strings.Join(trail, "; ")))
		}
		asked[node] = true
		hint = ""
		rep, err := l.ask(ctx, node, user)
		if err != nil {
			// A node whose connection is lost, or that is stopping, is
			// passed over for a moment. One that is only slow is not: it
			// may be the leader, merely swamped, and the next attempt asks
			// it again.
			trail = append(trail, node+": "+err.Error())
			l.failed(user, nil, node, err)
			if errors.Is(err, ErrUnreachable) || errors.Is(err, ErrGone) {
				l.pass(node)
			}
			continue
		}
		if rep.GetError().GetCode() == actorpb.Code_CODE_NOT_LEADER {
			trail = append(trail, fmt.Sprintf("%s: not the leader (hint %q)", node, rep.GetLeaderHint()))
			l.notLeader(user, nil, node, rep.GetLeaderHint())
			hint = rep.GetLeaderHint()
			continue
		}
		if err := replyErr(rep); err != nil {
			// An answer about the user itself (an invalid id), or the
			// node cannot activate now: the router decides.
			return nil, node, err
		}
		if rep.GetPidAddress() == "" || rep.GetPidId() == "" {
			trail = append(trail, node+": activated without a PID")
			continue
		}
		pid := actor.NewPID(rep.GetPidAddress(), rep.GetPidId())
		l.mu.Lock()
		if l.gen[shard] == gen {
			l.pids[user] = entry{pid: pid, shard: shard, node: node}
			l.leader[shard] = node
		}
		l.mu.Unlock()
		return pid, node, nil
	}
}

// next is the next node to ask about a shard, or "" when none is left.
func (l *Lookup) next(shard uint32, hint string, asked map[string]bool) string {
	now := time.Now()
	l.mu.Lock()
	known := l.leader[shard]
	usable := func(n string) bool {
		if n == "" || asked[n] {
			return false
		}
		if until, ok := l.avoid[n]; ok {
			if now.Before(until) {
				return false
			}
			delete(l.avoid, n)
		}
		return true
	}
	defer l.mu.Unlock()
	if usable(hint) {
		return hint
	}
	if usable(known) {
		return known
	}
	if h, ok := l.loc.LeaderHint(shard); ok && usable(h) {
		return h
	}
	for _, c := range l.loc.Candidates(shard) {
		if usable(c) {
			return c
		}
	}
	return ""
}

// directoryOf is node's directory actor.
func (l *Lookup) directoryOf(node string) (*actor.PID, error) {
	m, ok := l.members.Member(node)
	if !ok || m.ActorAddr == "" {
		return nil, service.Unavailable(fmt.Errorf("%w: %s announces no actor address", ErrUnreachable, node))
	}
	return actor.NewPID(m.ActorAddr, DirectoryActor), nil
}

// ask asks node's directory actor to activate the user's actor. Any node
// with an actor address is asked, whatever this node's view says of its
// health: the candidates are live members already, and a node that others
// name as the leader is worth a question even if this view has it dead.
func (l *Lookup) ask(ctx context.Context, node, user string) (*actorpb.Reply, error) {
	pid, err := l.directoryOf(node)
	if err != nil {
		return nil, err
	}
	timeout := l.askTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	req := &actorpb.Request{Version: actorpb.Version_VERSION_1, Kind: actorpb.Kind_KIND_ACTIVATE, User: user, TimeoutMs: timeout.Milliseconds()}
	return l.calls.request(ctx, pid, req, timeout)
}

// directoryActor activates users' actors for other nodes, when this node
// leads their shard, and says who does otherwise.
type directoryActor struct{ l *Lookup }

func (d *directoryActor) Receive(ctx actor.Context) {
	req, ok := ctx.Message().(*actorpb.Request)
	if !ok || ctx.Sender() == nil {
		return
	}
	if req.GetVersion() == actorpb.Version_VERSION_1 && req.GetKind() == actorpb.Kind_KIND_BATCH {
		// A batch waits for raft: it must not hold up the activations
		// that every other node's requests need from this actor.
		sender, root := ctx.Sender(), ctx.ActorSystem().Root
		go func() { root.Send(sender, d.l.serveBatch(req)) }()
		return
	}
	ctx.Respond(d.activate(req))
}

func (d *directoryActor) activate(req *actorpb.Request) *actorpb.Reply {
	if req.GetVersion() != actorpb.Version_VERSION_1 {
		return codeReply(actorpb.Code_CODE_UNSUPPORTED, "envelope version %d unknown to this node", req.GetVersion())
	}
	if req.GetKind() != actorpb.Kind_KIND_ACTIVATE {
		return codeReply(actorpb.Code_CODE_UNSUPPORTED, "the directory actor serves activations only, not %s", req.GetKind())
	}
	l := d.l
	shard := l.loc.ShardOf(req.GetUser())
	if !l.loc.LocalLeader(shard) {
		return notLeaderReply(l.loc, shard)
	}
	pid, err := l.dir.Activate(req.GetUser())
	if err != nil {
		return errorReply(err)
	}
	return &actorpb.Reply{PidAddress: pid.Address, PidId: pid.Id}
}

func notLeaderReply(loc Locator, shard uint32) *actorpb.Reply {
	rep := codeReply(actorpb.Code_CODE_NOT_LEADER, "shard %d is not led here", shard)
	if h, ok := loc.LeaderHint(shard); ok {
		rep.LeaderHint = h
	}
	return rep
}
