// Package actors serves each user through a virtual actor: activated on
// first use on this node, serialising the user's requests, keeping the
// user's ledger as a cache of the replicated log, and passivated when idle.
//
// Correctness never rests on an actor being the only one: writes are
// proposed with the version the actor validated against, and the
// replicated state machine refuses a stale version (see DESIGN.md).
package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ration/ration/ledger"
	"github.com/ration/ration/raftfsm"
)

// Replica is the replicated state the actors write through and read from.
type Replica interface {
	// ShardOf is the shard that owns a user.
	ShardOf(user string) uint32
	// Propose replicates op and returns Apply's verdict.
	Propose(ctx context.Context, op raftfsm.Op) (raftfsm.OpResult, error)
	// ReadBarrier returns once the local state reflects every write
	// acknowledged before the call, or fails if this node cannot know that.
	ReadBarrier(ctx context.Context, shard uint32) error
	// ProposeBatch replicates ops, all of one shard, in one entry, and
	// returns Apply's verdict on each (shards.Host.ProposeBatch).
	ProposeBatch(ctx context.Context, ops []raftfsm.Op) ([]raftfsm.OpResult, error)
	// LogSince returns the user's version and its operations after from.
	LogSince(shard uint32, user string, from uint64) (uint64, []raftfsm.LoggedOp)
	// Version is the number of the user's operations in the local
	// replica; ok is false when this node holds no replica of the shard.
	Version(shard uint32, user string) (v uint64, ok bool)
}

// ErrOutcomeUnknown reports a write that may or may not have been applied:
// retrying it with the same id is safe and tells which.
var ErrOutcomeUnknown = errors.New("outcome unknown: retry with the same id")

// ErrStopped is returned once the directory is shutting down.
var ErrStopped = errors.New("actors: directory stopped")

// Options tune a Directory.
type Options struct {
	// IdleTimeout passivates an actor that received nothing for this long.
	IdleTimeout time.Duration
	// CacheBytes bounds what the actors' ledgers may hold in memory
	// (ledger.MemoryBound): beyond it the least recently used actors are
	// passivated, before their idle timeout. 0 or less: no bound.
	CacheBytes int64
	// RequestTimeout bounds a request whose context has no deadline.
	RequestTimeout time.Duration
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
	// System is the actor system the user actors run in: the node's, which
	// protoactor remote serves, so that other nodes can reach them. Nil
	// starts a private one, which Shutdown stops; a given one is the
	// caller's to stop.
	System *actor.ActorSystem
	// Remote answers the messages from other nodes that reach a user's
	// actor. Nil: such messages are dropped.
	Remote RemoteHandler
	// Chain reports whether a user's ops of a batch on shard may be
	// chained into one raft entry: whether every replica of the shard
	// applies raftfsm batch format 2, so that none stops on such an entry
	// during a rolling upgrade. Asked once per shard's part of a batch.
	// When it says no, each op of a user goes into an entry of its own.
	// Nil: always.
	Chain func(shard uint32) bool
}

// RemoteHandler serves a message that reached a user's actor from another
// node (the cluster layer's request envelope). The actor calls it in its
// own turn, so the request is serialised with the user's other requests,
// and responds to the sender with what it returns. l runs the user's
// operations right there, without another trip through the mailbox.
type RemoteHandler interface {
	ServeRemote(user string, msg any, l Local) (reply any)
}

// Local is one user's operations, run inside the user's actor.
type Local interface {
	Grant(ctx context.Context, g ledger.Grant) (WriteResult, error)
	Deduct(ctx context.Context, d ledger.Deduction) (WriteResult, error)
	Balance(ctx context.Context, at int64, stale bool) (BalanceResult, error)
	History(ctx context.Context, from, to int64, skip, limit int, stale bool) (Page, error)
}

// Directory activates user actors on demand and routes requests to them.
// It is this node's identity lookup: the cluster layer sends a user's
// requests to the node that leads the user's shard, and there the
// directory holds at most one activation per user.
type Directory struct {
	sys  *actor.ActorSystem
	rep  Replica
	opts Options
	log  *slog.Logger
	met  *metrics

	dispatcher actor.Dispatcher // shared by every actor
	ownSystem  bool             // sys was started here, and is stopped here
	// deadLetters answers requests that reached a stopped actor.
	deadLetters *eventstream.Subscription

	mu     sync.Mutex
	acts   *activations
	closed bool
	// gathers is, per shard, the batch gather open for members, or the
	// last one, sealed (see enter).
	gathersMu sync.Mutex
	gathers   map[uint32]*gather
}

// New starts a directory over rep.
func New(rep Replica, opts Options) *Directory {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 2 * time.Minute
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	sys, own := opts.System, false
	if sys == nil {
		sys, own = NewSystem(opts.Logger), true
	}
	d := &Directory{
		sys: sys, ownSystem: own, rep: rep, opts: opts, log: opts.Logger,
		met:        newMetrics(opts.Registerer),
		acts:       newActivations(),
		gathers:    map[uint32]*gather{},
		dispatcher: newPooledDispatcher(300),
	}
	d.deadLetters = d.watchDeadLetters()
	return d
}

// NewSystem starts an actor system configured for the user actors:
// protoactor's own logs go to logger, and a request that reaches a
// stopped actor is not logged (the directory sends it again).
func NewSystem(logger *slog.Logger) *actor.ActorSystem {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	quiet := logger.With("component", "protoactor")
	return actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }),
		actor.WithDeadLetterRequestLogging(false),
	)
}

// Activate returns the user's actor on this node, spawning it if needed.
// The cluster layer calls it when this node leads the user's shard, to
// hand the actor's PID to another node.
func (d *Directory) Activate(user string) (*actor.PID, error) {
	if !ledger.ValidID(user) {
		return nil, invalidUser()
	}
	return d.activate(user)
}

func invalidUser() error {
	return &ledger.InvalidArgumentError{Field: "user", Reason: "must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ -"}
}

// activate returns the user's actor, spawning it if needed.
func (d *Directory) activate(user string) (*actor.PID, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrStopped
	}
	if act, ok := d.acts.get(user); ok {
		d.met.hits.Inc()
		return act.pid, nil
	}
	act := &activation{user: user, shard: d.rep.ShardOf(user)}
	a := &userActor{dir: d, user: user, shard: act.shard, act: act}
	// Spawned unnamed: a name would collide with a passivating activation
	// that has not yet been removed from the process registry.
	props := actor.PropsFromProducer(func() actor.Actor { return a },
		actor.WithDispatcher(d.dispatcher), actor.WithMailbox(actor.Unbounded(leftovers{a})))
	act.pid = d.sys.Root.Spawn(props)
	d.acts.add(act)
	d.met.activations.Inc()
	d.met.active.Inc()
	return act.pid, nil
}

// forget removes the user's activation if it is still act. The actor calls
// it before it stops, so no new request is routed to a stopping actor.
func (d *Directory) forget(act *activation) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.acts.remove(act) {
		d.met.active.Dec()
		d.met.cacheBytes.Set(float64(d.acts.bytes))
	}
}

// used records that an actor just served a request, local or from
// another node (which sends to the actor directly, never through
// activate), and the memory its ledger may now hold; then it passivates
// the least recently used actors while the cache is over
// Options.CacheBytes. Their queued requests are still served, and the
// next request for one of their users activates it afresh. Without a
// bound the order does not matter, and only a change of size is worth
// the lock.
func (d *Directory) used(act *activation, bytes int64, changed bool) {
	if d.opts.CacheBytes <= 0 && !changed {
		return
	}
	d.mu.Lock()
	d.acts.touch(act)
	d.acts.resize(act, bytes)
	out := d.acts.evict(d.opts.CacheBytes, act)
	d.met.cacheBytes.Set(float64(d.acts.bytes))
	d.met.active.Sub(float64(len(out)))
	d.mu.Unlock()
	for _, old := range out {
		d.met.evictions.Inc()
		d.sys.Root.Poison(old.pid)
	}
}

// call sends req to the user's actor and waits for its reply. A request
// that reaches an actor which stopped in the meantime is sent again to a
// fresh activation: requests are idempotent by id.
func (d *Directory) call(ctx context.Context, user string, req *request) (*reply, error) {
	if !ledger.ValidID(user) {
		return nil, invalidUser()
	}
	req.ctx = ctx
	timeout := d.opts.RequestTimeout
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		pid, err := d.activate(user)
		if err != nil {
			return nil, err
		}
		rep, err := d.send(ctx, pid, req, timeout)
		switch {
		case errors.Is(err, errDeadLetter) && attempt < 5:
			continue
		case err != nil:
			return nil, fmt.Errorf("user %s: %w", user, err)
		}
		return rep, rep.err
	}
}

// errDeadLetter: the request reached an actor that had stopped.
var errDeadLetter = errors.New("actors: the user's actor had stopped")

// send delivers req to pid and waits for its reply, until ctx ends or,
// for a ctx without a deadline, timeout passes.
func (d *Directory) send(ctx context.Context, pid *actor.PID, req *request, timeout time.Duration) (*reply, error) {
	done := make(chan *reply, 1)
	req.done = done
	d.sys.Root.Send(pid, req)
	var expired <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case rep := <-done:
		if rep == deadLetterReply {
			return nil, errDeadLetter
		}
		return rep, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-expired:
		return nil, context.DeadlineExceeded
	}
}

// deadLetterReply is what the dead-letter watch answers with.
var deadLetterReply = &reply{err: errDeadLetter}

// watchDeadLetters answers requests that reached a stopped actor, as a
// protoactor future would have been answered, so that call sends them
// again to a fresh activation at once instead of waiting out its timeout.
func (d *Directory) watchDeadLetters() *eventstream.Subscription {
	return d.sys.EventStream.Subscribe(func(msg any) {
		if dl, ok := msg.(*actor.DeadLetterEvent); ok {
			if req, ok := dl.Message.(*request); ok && req.done != nil {
				req.answer(deadLetterReply)
			}
		}
	})
}

// PassivateShard stops the actors of a shard, for instance when this node
// stops leading it: their caches would go stale as another leader writes.
func (d *Directory) PassivateShard(shard uint32) {
	d.mu.Lock()
	var pids []*actor.PID
	for _, act := range d.acts.byUser {
		if act.shard == shard {
			pids = append(pids, act.pid)
			d.acts.remove(act)
			d.met.active.Dec()
		}
	}
	d.met.cacheBytes.Set(float64(d.acts.bytes))
	d.mu.Unlock()
	for _, pid := range pids {
		d.sys.Root.Poison(pid)
	}
}

// Active is the number of activated users.
func (d *Directory) Active() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.acts.len()
}

// Shutdown stops taking requests and stops every actor, letting each
// finish the requests already in its mailbox, until ctx ends.
func (d *Directory) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	pids := make([]*actor.PID, 0, d.acts.len())
	for _, act := range d.acts.byUser {
		pids = append(pids, act.pid)
	}
	d.acts = newActivations()
	d.mu.Unlock()
	var futures []*actor.Future
	for _, pid := range pids {
		futures = append(futures, d.sys.Root.PoisonFuture(pid))
	}
	for _, f := range futures {
		if err := ctx.Err(); err != nil {
			return err
		}
		_ = f.Wait()
	}
	d.sys.EventStream.Unsubscribe(d.deadLetters)
	if d.ownSystem {
		d.sys.Shutdown()
	}
	return nil
}

type metrics struct {
	activations  prometheus.Counter // the cache's misses
	hits         prometheus.Counter
	passivations prometheus.Counter
	evictions    prometheus.Counter
	active       prometheus.Gauge
	cacheBytes   prometheus.Gauge
	reloads      *prometheus.CounterVec
	absent       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		activations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ration_actor_activations_total", Help: "User actors activated: requests that found no actor of their user (the actor cache's misses).",
		}),
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ration_actor_cache_hits_total", Help: "Requests that found their user's actor activated.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ration_actor_evictions_total", Help: "User actors passivated before their idle timeout to keep the actor cache within its memory bound.",
		}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ration_actor_cache_bytes", Help: "Memory the activated actors' ledgers may hold, by the ledger's per-user and per-operation bound.",
		}),
		absent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ration_reads_of_absent_users_total", Help: "Reads of users with no operations, answered without activating an actor.",
		}),
		passivations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ration_actor_passivations_total", Help: "User actors passivated after being idle.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ration_actors_active", Help: "User actors currently activated.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ration_actor_reloads_total", Help: "Ledger caches rebuilt from the replicated log, by reason.",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.activations, m.hits, m.passivations, m.evictions, m.active, m.cacheBytes, m.reloads, m.absent)
	}
	return m
}
