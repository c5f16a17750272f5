package routing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/internal/backoff"
	"github.com/ration/ration/service"
)

// Batch splits ops by shard and sends each shard's part, as one call, to
// the shard's leader: this node's directory when it leads the shard, else
// the remote, which carries the part to the leader's node in one message.
// There the part is proposed as one raft entry (actors.Directory.Batch).
// Parts run in parallel. Ops whose attempt ended without an answer are
// tried again with the same ids, until the routing deadline, together
// with their users' later ops, so a user's ops still apply in order.
func (r *Router) Batch(ctx context.Context, ops []actors.BatchOp) []actors.BatchResult {
	out := make([]actors.BatchResult, len(ops))
	actors.EachPart(actors.Indexes(len(ops)), func(i int) uint32 { return r.loc.ShardOf(ops[i].User) }, func(s uint32, idx []int) {
		r.routePart(ctx, s, ops, idx, out)
	})
	return out
}

// routePart routes the ops idx of ops, all of shard, until each has an
// answer or the deadline passes. After an attempt that was sent and not
// answered (an OpenError), the next one waits until that attempt can no
// longer start (clockAllowance after its deadline): otherwise it could
// apply a user's op after a later op of the same user, or after a refusal
// of the retry had been passed on.
func (r *Router) routePart(ctx context.Context, shard uint32, ops []actors.BatchOp, idx []int, out []actors.BatchResult) {
	deadline, rctx, cancel := r.deadline(ctx)
	defer cancel()
	pending := idx
	var openUntil time.Time
	giveUp := func(format string, args ...any) {
		for _, i := range pending {
			out[i].Err = fmt.Errorf("%w: shard %d: %s (last: %v)", service.ErrUnavailable, shard, fmt.Sprintf(format, args...), out[i].Err)
		}
	}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			at := time.Now().Add(routeBackoff.Delay(attempt))
			if settled := openUntil.Add(clockAllowance); !openUntil.IsZero() && settled.After(at) {
				at = settled
			}
			if err := backoff.Sleep(ctx, time.Until(at), deadline); err != nil {
				giveUp("%v", err)
				return
			}
		}
		res := r.attemptPart(ctx, rctx, shard, ops, pending)
		var retry []int
		waiting := map[string]bool{} // users with an op to retry
		for k, i := range pending {
			err := res[k].Err
			var oa openAttempt
			if errors.As(err, &oa) && oa.OpenUntil().After(openUntil) {
				openUntil = oa.OpenUntil()
			}
			final := err == nil || (!retryable(err) && rctx.Err() == nil)
			if u := ops[i].User; waiting[u] || !final {
				waiting[u] = true
				out[i] = actors.BatchResult{Err: err}
				retry = append(retry, i)
				continue
			}
			out[i] = res[k]
		}
		if pending = retry; len(pending) == 0 {
			return
		}
		if err := ctx.Err(); err != nil {
			giveUp("%v", err)
			return
		}
		if rctx.Err() != nil {
			giveUp("no answer within %v", r.opts.Deadline)
			return
		}
	}
}

// attemptPart makes one attempt at the ops idx of ops, all of shard.
func (r *Router) attemptPart(ctx, rctx context.Context, shard uint32, ops []actors.BatchOp, idx []int) []actors.BatchResult {
	part := make([]actors.BatchOp, len(idx))
	for k, i := range idx {
		part[k] = ops[i]
	}
	switch {
	case r.loc.LocalLeader(shard):
		return r.local.Batch(ctx, part)
	case r.opts.Remote != nil:
		return r.opts.Remote.Batch(rctx, part)
	}
	res := make([]actors.BatchResult, len(part))
	for k := range res {
		res[k].Err = errNoRoute
	}
	return res
}
