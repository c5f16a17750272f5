package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/ration/ration/internal/backoff"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/raftfsm"
)

type opKind uint8

const (
	opGrant opKind = iota
	opDeduct
	opBalance
	opHistory
	opBatch
)

type request struct {
	ctx         context.Context
	kind        opKind
	grant       ledger.Grant
	deduction   ledger.Deduction
	at          int64
	stale       bool
	from, to    int64
	skip, limit int
	batch       []BatchOp // opBatch: the user's ops, in order
	member      *member   // opBatch: its place in the shard's gather

	// done takes the one reply (Directory.call): the actor answers on it
	// directly, and the directory's dead-letter watch answers for an actor
	// that had stopped. This spares every local request a protoactor
	// future: a PID registered in the process registry and a timer, 14%
	// of a node's CPU under read load (docs/profiles/).
	done chan *reply
}

// IgnoreDeadLetterLogging: a request that reaches a stopped actor is
// answered by the dead-letter watch and sent again, not a problem to log.
func (*request) IgnoreDeadLetterLogging() {}

// answer delivers r to whoever waits for req. Never blocks: done has room
// for the one reply, and a second (impossible: an actor either takes a
// request or it goes to dead letters) is dropped.
func (req *request) answer(r *reply) {
	select {
	case req.done <- r:
	default:
	}
}

type reply struct {
	err       error
	duplicate bool
	version   uint64
	allocs    []ledger.Allocation
	balance   int64
	grants    []ledger.GrantBalance
	events    []ledger.Event
	next      int64
	nextSkip  int
	more      bool
	batch     []BatchResult
}

// maxWriteAttempts bounds the retries of one write after version
// mismatches, which only happen while another activation of the user
// writes: during a leadership change.
const maxWriteAttempts = 16

// userActor serves one user. Its ledger caches the first version
// operations of the user's replicated log, nothing else: an operation
// applied to it optimistically and not committed is dropped with the cache.
type userActor struct {
	dir     *Directory
	user    string
	shard   uint32
	act     *activation
	l       *ledger.Ledger
	version uint64
	// reported is the memory bound last reported to the directory.
	reported int64

	// self and stopped are for leftovers: set in the actor's turns, read
	// by its mailbox after them.
	self    *actor.PID
	stopped bool
}

func (a *userActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.self = ctx.Self()
		ctx.SetReceiveTimeout(a.dir.opts.IdleTimeout)
	case *actor.Stopped:
		// Whatever is still queued is never served: leftovers passes it on.
		a.stopped = true
	case *actor.ReceiveTimeout:
		// Unregister first so that no new request is routed here, then
		// poison: requests already queued are served before the stop.
		a.dir.forget(a.act)
		a.dir.met.passivations.Inc()
		ctx.CancelReceiveTimeout()
		ctx.Poison(ctx.Self())
	case *request:
		r := a.handle(m)
		if m.done != nil {
			m.answer(r)
		} else {
			ctx.Respond(r)
		}
		a.report()
	case actor.SystemMessage, actor.AutoReceiveMessage:
		// Stopping, Restarting: nothing to do.
	default:
		if a.dir.opts.Remote == nil || ctx.Sender() == nil {
			return
		}
		if rep := a.dir.opts.Remote.ServeRemote(a.user, m, inline{a}); rep != nil {
			ctx.Respond(rep)
		}
		a.report()
	}
}

// report tells the directory the actor was used and what its cache may
// now hold in memory: after the answer, so a reply never waits for it.
func (a *userActor) report() {
	var n int64
	if a.l != nil {
		n = a.l.MemoryBound()
	}
	a.dir.used(a.act, n, n != a.reported)
	a.reported = n
}

// inline runs the user's operations in the actor's current turn.
type inline struct{ a *userActor }

func (i inline) Grant(ctx context.Context, g ledger.Grant) (WriteResult, error) {
	r := i.a.handle(&request{ctx: ctx, kind: opGrant, grant: g})
	return WriteResult{Duplicate: r.duplicate, Version: r.version}, r.err
}

func (i inline) Deduct(ctx context.Context, d ledger.Deduction) (WriteResult, error) {
	r := i.a.handle(&request{ctx: ctx, kind: opDeduct, deduction: d})
	return WriteResult{Duplicate: r.duplicate, Version: r.version, Allocations: r.allocs}, r.err
}

func (i inline) Balance(ctx context.Context, at int64, stale bool) (BalanceResult, error) {
	r := i.a.handle(&request{ctx: ctx, kind: opBalance, at: at, stale: stale})
	return BalanceResult{Balance: r.balance, Grants: r.grants, Version: r.version}, r.err
}

func (i inline) History(ctx context.Context, from, to int64, skip, limit int, stale bool) (Page, error) {
	r := i.a.handle(&request{ctx: ctx, kind: opHistory, from: from, to: to, skip: skip, limit: limit, stale: stale})
	return Page{Events: r.events, Next: r.next, NextSkip: r.nextSkip, More: r.more, Version: r.version}, r.err
}

func (a *userActor) handle(req *request) *reply {
	switch req.kind {
	case opGrant, opDeduct:
		return a.write(req, false)
	case opBatch:
		return a.batch(req)
	case opBalance:
		if err := a.sync(req.ctx, !req.stale); err != nil {
			return &reply{err: err}
		}
		r := &reply{version: a.version, balance: a.l.Balance(req.at), grants: a.l.Breakdown(req.at)}
		return r
	case opHistory:
		if err := a.sync(req.ctx, !req.stale); err != nil {
			return &reply{err: err}
		}
		evs, next, nextSkip, more := a.l.History(req.from, req.to, req.skip, req.limit)
		return &reply{version: a.version, events: evs, next: next, nextSkip: nextSkip, more: more}
	}
	return &reply{err: fmt.Errorf("actors: unknown request kind %d", req.kind)}
}

// write runs one grant or deduction. proposed says an earlier attempt of
// this request proposed it with an unknown outcome: found applied, it is
// reported as this request's, not as a duplicate.
func (a *userActor) write(req *request, proposed bool) *reply {
	ctx := req.ctx
	var lastErr error
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		if attempt > 0 {
			if err := writeBackoff.Wait(ctx, attempt, time.Time{}); err != nil {
				return &reply{err: fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)}
			}
		}
		// A fresh activation reads behind a barrier: after a leadership
		// change the local log must hold every acknowledged write before
		// the cache decides anything.
		if err := a.sync(ctx, a.l == nil); err != nil {
			if proposed {
				return &reply{err: fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)}
			}
			return &reply{err: err}
		}
		before := a.version
		var res ledger.Result
		var err error
		if req.kind == opGrant {
			res, err = a.l.Grant(req.grant)
		} else {
			res, err = a.l.Deduct(req.deduction)
		}
		if err != nil {
			// A refusal is an answer too and must be linearizable: refuse
			// only on a cache known to be current.
			changed, serr := a.syncChanged(ctx, true)
			if serr != nil {
				return &reply{err: serr}
			}
			if changed {
				continue
			}
			return &reply{err: err, version: a.version}
		}
		allocs := slices.Clone(res.Allocations)
		if res.Duplicate {
			// The cache holds committed operations only, so the operation
			// is in the log: applied by an earlier request, or by this one
			// if an earlier attempt's outcome was unknown.
			return &reply{duplicate: !proposed, version: a.version, allocs: allocs}
		}
		op := raftfsm.Op{User: a.user, ExpectedVersion: before}
		if req.kind == opGrant {
			g := req.grant
			op.Grant = &g
		} else {
			d := req.deduction
			op.Deduction = &d
		}
		out, err := a.dir.rep.Propose(ctx, op)
		switch {
		case err == nil && out.Applied:
			a.version = out.Version
			return &reply{version: a.version, allocs: allocs}
		case err == nil && out.Err != nil:
			a.drop("invalid")
			return &reply{err: fmt.Errorf("actors: replica refused a validated op: %w", out.Err)}
		case err == nil:
			// Another activation wrote first: catch up and decide again.
			a.drop("version-mismatch")
		default:
			a.drop("propose-failed")
			proposed = true
			lastErr = err
			if ctx.Err() != nil {
				return &reply{err: fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)}
			}
			// The next attempt reloads behind a barrier; the log then
			// tells whether this op landed (it comes back as a duplicate).
		}
	}
	if lastErr != nil {
		return &reply{err: fmt.Errorf("%w: %v", ErrOutcomeUnknown, lastErr)}
	}
	return &reply{err: fmt.Errorf("actors: user %s: version kept changing over %d attempts: %w", a.user, maxWriteAttempts, ErrOutcomeUnknown)}
}

// drop forgets the cache; the next sync rebuilds it from the log.
func (a *userActor) drop(reason string) {
	a.l, a.version = nil, 0
	a.dir.met.reloads.WithLabelValues(reason).Inc()
}

func (a *userActor) sync(ctx context.Context, barrier bool) error {
	_, err := a.syncChanged(ctx, barrier)
	return err
}

// syncChanged brings the cache up to the local replica's log of the user,
// after a read barrier if asked, and says whether anything was added.
func (a *userActor) syncChanged(ctx context.Context, barrier bool) (bool, error) {
	if barrier {
		if err := a.dir.rep.ReadBarrier(ctx, a.shard); err != nil {
			return false, err
		}
	}
	if a.l == nil {
		a.l, a.version = ledger.New(), 0
	}
	v, ops := a.dir.rep.LogSince(a.shard, a.user, a.version)
	if v < a.version {
		// The replica holds less than the cache: only a restore from an
		// older snapshot can do that. Start over from the replica.
		a.drop("replica-behind")
		a.l = ledger.New()
		v, ops = a.dir.rep.LogSince(a.shard, a.user, 0)
	}
	if len(ops) == 0 {
		return false, nil
	}
	if err := replay(a.l, ops); err != nil {
		at := a.version
		a.drop("replay-failed")
		return false, fmt.Errorf("actors: user %s: at version %d: %w", a.user, at, err)
	}
	a.version = v
	return true, nil
}

var errReplay = errors.New("replicated log does not replay")

// writeBackoff spaces a write's attempts: full jitter over an exponential
// window from 1 ms to 256 ms, so that two activations of one user racing
// each other stop colliding.
var writeBackoff = backoff.Policy{Base: time.Millisecond, Cap: 256 * time.Millisecond}
