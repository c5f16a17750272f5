// Package routing sends each request to the node that leads the user's
// shard: it serves locally when this node is the leader, and otherwise
// through the actor cluster to the user's actor on the leader, retrying
// with backoff while a shard moves or elects, within a bounded deadline.
// Writes keep their ids across every retry, so a write is applied once
// even when a reply is lost.
package routing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/internal/backoff"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/service"
)

// Locator is this node's view of where shards are led.
type Locator interface {
	ShardOf(user string) uint32
	// LocalLeader reports whether this node leads the shard and may serve.
	LocalLeader(shard uint32) bool
}

// Options tune a Router.
type Options struct {
	// Deadline bounds the retries of one request while its shard has no
	// reachable leader (default 10s); past it the caller gets unavailable.
	Deadline time.Duration
	// Remote serves users whose shards other nodes lead, one attempt per
	// call: the actor cluster (cluster/actorcluster), which finds the
	// leader and reaches the user's actor there. Its retryable failures
	// (not the leader, unreachable, no reply in time) wrap
	// service.ErrUnavailable. Nil on a single node.
	Remote service.Backend
	// Replicas answers stale reads from this node's own replica of the
	// user's shard when this node holds one and does not lead the shard,
	// without asking the leader, so even while the shard has none. Nil:
	// stale reads go to the leader like the others.
	Replicas Replicas
}

// Replicas answers reads from this node's own replicas (*actors.Views).
type Replicas interface {
	// Hosts reports whether this node holds a replica of the shard that
	// serves reads.
	Hosts(shard uint32) bool
	Balance(ctx context.Context, user string, at int64) (actors.BalanceResult, error)
	History(ctx context.Context, user string, from, to int64, skip, limit int) (actors.Page, error)
}

// Router is a service.Backend that routes by shard leadership.
type Router struct {
	local service.Backend
	loc   Locator
	opts  Options
}

// New routes over loc, serving locally through local.
func New(local service.Backend, loc Locator, opts Options) *Router {
	if opts.Deadline <= 0 {
		opts.Deadline = 10 * time.Second
	}
	return &Router{local: local, loc: loc, opts: opts}
}

// errNoRoute is a retryable failure to reach the shard's leader.
var errNoRoute = errors.New("no reachable leader")

// openAttempt is a failed attempt whose request another node may still
// start, up to OpenUntil by that node's clock: it was sent and never
// answered (actorcluster.OpenError).
type openAttempt interface{ OpenUntil() time.Time }

// clockAllowance is how far behind this node's clock another node's may
// be (docs/semantics.md): a request is not started past its deadline by
// the receiver's clock, so it is settled this long after that deadline by
// ours.
const clockAllowance = 250 * time.Millisecond

// route runs the request on this node's backend when this node leads the
// user's shard, else through the remote backend, until one answers with
// something other than "try again", or the deadline passes. Each attempt
// sends the same request, ids and all.
func route[T any](ctx context.Context, r *Router, user string, call func(context.Context, service.Backend) (T, error)) (T, error) {
	var zero T
	shard := r.loc.ShardOf(user)
	deadline, rctx, cancel := r.deadline(ctx)
	defer cancel()
	var lastErr error = errNoRoute
	// The latest deadline of the attempts sent and not answered: until it
	// passes, one of them may still be applied.
	var openUntil time.Time
	settled := false
	for attempt := 0; ; attempt++ {
		if attempt > 0 && !settled {
			if err := routeBackoff.Wait(ctx, attempt, deadline); err != nil {
				return zero, fmt.Errorf("%w: shard %d: %w (last: %v)", service.ErrUnavailable, shard, err, lastErr)
			}
		}
		var res T
		var err error
		switch {
		case r.loc.LocalLeader(shard):
			res, err = call(ctx, r.local)
		case r.opts.Remote != nil:
			res, err = call(rctx, r.opts.Remote)
		default:
			err = errNoRoute
		}
		settled = false
		var oa openAttempt
		if errors.As(err, &oa) && oa.OpenUntil().After(openUntil) {
			openUntil = oa.OpenUntil()
		}
		if service.ClassOf(err) == service.ClassInsufficient && !openUntil.IsZero() {
			// "Insufficient credits" is final only if no earlier attempt
			// can still apply the deduction after it (with credits
			// granted meanwhile): wait those out and ask again.
			if at := openUntil.Add(clockAllowance); time.Now().Before(at) {
				if err := backoff.Sleep(ctx, time.Until(at), deadline); err != nil {
					return zero, fmt.Errorf("%w: shard %d: refused while an earlier attempt may still apply, outcome unknown: %w", service.ErrUnavailable, shard, err)
				}
				lastErr, settled = err, true
				continue
			}
		}
		if err == nil || (!retryable(err) && rctx.Err() == nil) {
			return res, err
		}
		if cerr := ctx.Err(); cerr != nil {
			return zero, fmt.Errorf("%w: shard %d: %w (last: %v)", service.ErrUnavailable, shard, cerr, err)
		}
		if rctx.Err() != nil {
			// The routing deadline cut the attempt short, not the caller's.
			return zero, fmt.Errorf("%w: shard %d: no answer within %v (last: %v)", service.ErrUnavailable, shard, r.opts.Deadline, err)
		}
		lastErr = err
	}
}

// deadline is when a request's retries end: the routing deadline, or the
// caller's when that is sooner. rctx ends then too: the remote's attempts
// use it.
func (r *Router) deadline(ctx context.Context) (time.Time, context.Context, context.CancelFunc) {
	deadline := time.Now().Add(r.opts.Deadline)
	if d, ok := ctx.Deadline(); ok && !d.After(deadline) {
		return d, ctx, func() {}
	}
	rctx, cancel := context.WithDeadline(ctx, deadline)
	return deadline, rctx, cancel
}

// retryable reports whether another node, or a later try, may succeed:
// answers (invalid, conflict, insufficient) and the caller's own deadline
// are final.
func retryable(err error) bool {
	switch service.ClassOf(err) {
	case service.ClassInvalid, service.ClassConflict, service.ClassInsufficient, service.ClassCanceled, service.ClassDeadline:
		return false
	}
	return true
}

// routeBackoff spaces a request's attempts: full jitter over an
// exponential window from 20 ms to 500 ms. Retries stop once the next
// one could not start before the deadline.
var routeBackoff = backoff.Policy{Base: 20 * time.Millisecond, Cap: 500 * time.Millisecond}

// Grant routes a grant.
func (r *Router) Grant(ctx context.Context, user string, g ledger.Grant) (actors.WriteResult, error) {
	return route(ctx, r, user, func(ctx context.Context, b service.Backend) (actors.WriteResult, error) {
		return b.Grant(ctx, user, g)
	})
}

// Deduct routes a deduction.
func (r *Router) Deduct(ctx context.Context, user string, d ledger.Deduction) (actors.WriteResult, error) {
	return route(ctx, r, user, func(ctx context.Context, b service.Backend) (actors.WriteResult, error) {
		return b.Deduct(ctx, user, d)
	})
}

// Balance routes a balance read. A stale one is answered by this node's
// replica when it holds one (see replicaRead), else it goes to the leader
// like a linearizable one.
func (r *Router) Balance(ctx context.Context, user string, at int64, stale bool) (actors.BalanceResult, error) {
	if served, res, err := replicaRead(r, user, stale, func(rs Replicas) (actors.BalanceResult, error) {
		return rs.Balance(ctx, user, at)
	}); served {
		return res, err
	}
	return route(ctx, r, user, func(ctx context.Context, b service.Backend) (actors.BalanceResult, error) {
		return b.Balance(ctx, user, at, stale)
	})
}

// History routes a history page; a stale one as Balance does.
func (r *Router) History(ctx context.Context, user string, from, to int64, skip, limit int, stale bool) (actors.Page, error) {
	if served, res, err := replicaRead(r, user, stale, func(rs Replicas) (actors.Page, error) {
		return rs.History(ctx, user, from, to, skip, limit)
	}); served {
		return res, err
	}
	return route(ctx, r, user, func(ctx context.Context, b service.Backend) (actors.Page, error) {
		return b.History(ctx, user, from, to, skip, limit, stale)
	})
}

// replicaRead answers a stale read from this node's own replica of the
// user's shard, if it holds one and does not lead the shard: no leader is
// asked, so it answers while the shard has none. The leader answers its
// stale reads through the user's actor, whose cache is its replica's log
// too. served is false when the read must be routed instead.
func replicaRead[T any](r *Router, user string, stale bool, read func(Replicas) (T, error)) (served bool, res T, err error) {
	if !stale || r.opts.Replicas == nil {
		return false, res, nil
	}
	shard := r.loc.ShardOf(user)
	if r.loc.LocalLeader(shard) || !r.opts.Replicas.Hosts(shard) {
		return false, res, nil
	}
	res, err = read(r.opts.Replicas)
	if errors.Is(err, actors.ErrNoReplica) {
		// The replica moved away since Hosts: ask the leader.
		return false, res, nil
	}
	return true, res, err
}
