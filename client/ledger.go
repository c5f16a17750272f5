package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/ration/ration/api/rationv1"
)

// Grant adds credits to user's ledger. On a transient failure it re-sends
// the same grant until the retry budget runs out; Duplicate in the result
// tells that an earlier attempt had already applied it.
func (c *Client) Grant(ctx context.Context, user string, g Grant) (GrantResult, error) {
	req := g.proto(user)
	var resp *rationv1.GrantResponse
	err := c.do(ctx, call{method: "Grant", write: true, op: "grant", id: g.ID, user: user}, func(ctx context.Context, ep *endpoint, co []grpc.CallOption) error {
		res, err := ep.writes.call(ctx, &rationv1.Operation{Op: &rationv1.Operation_Grant{Grant: req}}, co)
		resp = res.GetGrant()
		return err
	})
	if err != nil {
		return GrantResult{}, err
	}
	return grantResult(resp), nil
}

// Deduct consumes credits from user's ledger, all or nothing. It fails with
// an *InsufficientCreditsError (ErrInsufficientCredits) when the history
// cannot pay for it. Retries are as for Grant.
func (c *Client) Deduct(ctx context.Context, user string, d Deduction) (DeductResult, error) {
	req := d.proto(user)
	var resp *rationv1.DeductResponse
	err := c.do(ctx, call{method: "Deduct", write: true, op: "deduct", id: d.ID, user: user}, func(ctx context.Context, ep *endpoint, co []grpc.CallOption) error {
		res, err := ep.writes.call(ctx, &rationv1.Operation{Op: &rationv1.Operation_Deduct{Deduct: req}}, co)
		resp = res.GetDeduct()
		return err
	})
	if err != nil {
		return DeductResult{}, err
	}
	return deductResult(resp), nil
}

// ReadOption tunes a read.
type ReadOption func(*readOptions)

type readOptions struct {
	consistency rationv1.ReadConsistency
}

// Stale lets any replica answer: cheaper, and it works while the user's
// shard has no leader, but it may miss recently acknowledged writes.
func Stale() ReadOption {
	return func(o *readOptions) { o.consistency = rationv1.ReadConsistency_READ_CONSISTENCY_STALE }
}

func readOpts(opts []ReadOption) readOptions {
	o := readOptions{consistency: rationv1.ReadConsistency_READ_CONSISTENCY_LINEARIZABLE}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Balance returns user's balance at instant at (Unix ms), or at the
// server's current time when at is nil. An unknown user has a zero balance.
func (c *Client) Balance(ctx context.Context, user string, at *int64, opts ...ReadOption) (BalanceResult, error) {
	req := &rationv1.GetBalanceRequest{User: user, At: at, Consistency: readOpts(opts).consistency}
	var resp *rationv1.GetBalanceResponse
	err := c.do(ctx, call{method: "GetBalance", user: user}, func(ctx context.Context, ep *endpoint, co []grpc.CallOption) error {
		var err error
		resp, err = ep.reads.call(ctx, req, co)
		return err
	})
	if err != nil {
		return BalanceResult{}, err
	}
	return balanceResult(resp), nil
}

// Events returns one page of user's history. Pass the page's NextPageToken
// as q.PageToken, with the other fields unchanged, for the next page; or
// use AllEvents.
func (c *Client) Events(ctx context.Context, user string, q EventsQuery, opts ...ReadOption) (EventsPage, error) {
	req := &rationv1.ListEventsRequest{
		User: user, From: q.From, To: q.To, Limit: q.Limit, PageToken: q.PageToken,
		Consistency: readOpts(opts).consistency,
	}
	var resp *rationv1.ListEventsResponse
	err := c.do(ctx, call{method: "ListEvents", user: user}, func(ctx context.Context, ep *endpoint, co []grpc.CallOption) error {
		var err error
		resp, err = ep.ledger.ListEvents(ctx, req, co...)
		return err
	})
	if err != nil {
		return EventsPage{}, err
	}
	page := EventsPage{NextPageToken: resp.GetNextPageToken(), Events: make([]Event, len(resp.GetEvents()))}
	for i, e := range resp.GetEvents() {
		page.Events[i] = event(e)
	}
	return page, nil
}

// errStuckPaging guards against a server that hands back the token it was
// given with nothing in the page, which would otherwise loop forever.
var errStuckPaging = errors.New("ration: list events: server returned an empty page with the same page token")

// AllEvents iterates over every event of user's history selected by q
// (q.Limit is the page size), fetching pages as needed. Iteration stops at
// the first error, which is yielded with a zero Event.
//
// Pages are separate reads: with linearizable consistency each page is
// fresh, so an operation written while iterating may or may not show up.
func (c *Client) AllEvents(ctx context.Context, user string, q EventsQuery, opts ...ReadOption) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		for {
			page, err := c.Events(ctx, user, q, opts...)
			if err != nil {
				yield(Event{}, err)
				return
			}
			for _, e := range page.Events {
				if !yield(e, nil) {
					return
				}
			}
			if page.NextPageToken == "" {
				return
			}
			if page.NextPageToken == q.PageToken && len(page.Events) == 0 {
				yield(Event{}, errStuckPaging)
				return
			}
			q.PageToken = page.NextPageToken
		}
	}
}

// Status describes the cluster as the answering node sees it.
func (c *Client) Status(ctx context.Context, opts ...StatusOption) (ClusterStatus, error) {
	req := &rationv1.StatusRequest{}
	for _, o := range opts {
		o(req)
	}
	var resp *rationv1.StatusResponse
	err := c.do(ctx, call{method: "Status"}, func(ctx context.Context, ep *endpoint, _ []grpc.CallOption) error {
		var err error
		resp, err = ep.admin.Status(ctx, req)
		return err
	})
	if err != nil {
		return ClusterStatus{}, err
	}
	return clusterStatus(resp), nil
}

// Batch applies grants and deductions, possibly for different users, with
// as few calls as possible (MaxBatchOps operations per call, in order).
// Like the server's Batch it is not atomic: each operation succeeds or
// fails on its own.
//
// With routing, the operations are split by the node that leads their
// user's shard, and the parts are sent to those nodes in parallel (the
// operations whose leader is not known form one more part, sent to an
// Endpoint). All of a user's operations are in one part, in their order,
// and a part longer than MaxBatchOps is sent as consecutive calls.
//
// The result has one entry per operation, in order. Operations that fail
// transiently (the whole call, or just them, e.g. because their user's
// shard has no leader) are re-sent with the same ids within the retry
// budget; the others are not sent again.
//
// A transient failure can break the order of one user's operations: if
// the server refuses an operation with UNAVAILABLE but applies a later
// operation of the same user in the same call (its shard got a leader in
// between), the retry applies the first one after the second. The server
// fails all of a shard's operations together in the common case, a shard
// without a leader for the whole call.
//
// The error is nil when every operation got an outcome, refusals included
// (see OpResult.Err). Otherwise it wraps the first operation's
// ErrUnavailable, ErrOutcomeUnknown or context error, and the results say
// which operations are affected; re-sending exactly those is safe.
func (c *Client) Batch(ctx context.Context, ops []Op) ([]OpResult, error) {
	results := make([]OpResult, len(ops))
	parts := c.partsByLeader(ops)
	if len(parts) <= 1 {
		c.batchPart(ctx, ops, results)
	} else {
		var wg sync.WaitGroup
		for _, idx := range parts {
			wg.Go(func() {
				sub := make([]Op, len(idx))
				for j, i := range idx {
					sub[j] = ops[i]
				}
				res := make([]OpResult, len(idx))
				c.batchPart(ctx, sub, res)
				// Each part owns its indices: no two goroutines write
				// the same element.
				for j, i := range idx {
					results[i] = res[j]
				}
			})
		}
		wg.Wait()
	}
	var (
		n     int
		first error
	)
	for _, r := range results {
		if r.Err != nil && !definitive(r.Err) {
			if n == 0 {
				first = r.Err
			}
			n++
		}
	}
	if n > 0 {
		return results, &prefixed{fmt.Sprintf("batch: %d of %d operation(s) without an outcome", n, len(ops)), first}
	}
	return results, nil
}

// partsByLeader groups the positions of ops by where routing sends each
// now: the leader of its user's shard, or an Endpoint when that is not
// known. A user's operations all land in one part, in their order. One
// part (all of ops) without routing.
func (c *Client) partsByLeader(ops []Op) [][]int {
	if c.routes == nil || len(ops) < 2 {
		return nil
	}
	t := c.routes.table.Load()
	if t == nil {
		return nil
	}
	byShard := map[uint32]int{} // shard → part
	byEp := map[*endpoint]int{} // leader's endpoint (nil: an Endpoint) → part
	var parts [][]int
	for i, op := range ops {
		shard := t.shardOf(op.User)
		k, ok := byShard[shard]
		if !ok {
			ep, _ := c.routes.leaderOf(t, shard)
			if k, ok = byEp[ep]; !ok {
				k = len(parts)
				byEp[ep] = k
				parts = append(parts, nil)
			}
			byShard[shard] = k
		}
		parts[k] = append(parts[k], i)
	}
	return parts
}

// batchPart sends ops in calls of at most MaxBatchOps, one after the
// other, so that a user's operations are applied in their order.
func (c *Client) batchPart(ctx context.Context, ops []Op, results []OpResult) {
	for lo := 0; lo < len(ops); lo += MaxBatchOps {
		hi := min(lo+MaxBatchOps, len(ops))
		c.batch(ctx, ops[lo:hi], results[lo:hi])
	}
}

// definitive reports whether err is the server's final word on an
// operation rather than a failure to get one.
func definitive(err error) bool {
	return errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrConflict) || errors.Is(err, ErrInsufficientCredits)
}

// batch sends ops (at most MaxBatchOps) and fills results. It re-sends the
// operations that failed transiently, alone, until none is left or the
// budget is spent.
func (c *Client) batch(ctx context.Context, ops []Op, results []OpResult) {
	r := c.retrier(call{method: "Batch", write: true, op: "batch"})
	pending := make([]*batchOp, len(ops))
	for i := range ops {
		pending[i] = &batchOp{i: i, op: ops[i], res: &results[i]}
	}
	for pos := c.start(); ; pos++ {
		if ctx.Err() != nil {
			giveUpBatch(ctx, pending)
			return
		}
		if c.closed.Load() {
			failBatch(pending, &prefixed{"batch", ErrClosed})
			return
		}
		req := &rationv1.BatchRequest{Operations: make([]*rationv1.Operation, len(pending))}
		for j, b := range pending {
			req.Operations[j] = b.op.proto()
			b.attempts++
		}
		// The part's operations were led by one node when it was made:
		// routing by the first one's user sends them all there, unless
		// leadership moved since (the node then forwards).
		user := pending[0].op.User
		ep, at, node := c.target(user, pos)
		pos = at
		r.attempts++
		actx, cancel, sent := c.attemptContext(ctx)
		var md metadata.MD
		resp, err := ep.ledger.Batch(actx, req, c.trailer(&md)...)
		cancel()
		c.learn(user, node, md, err)

		var round batchRound
		if err != nil {
			round = c.batchCallFailed(ctx, actx, r.k, pending, err, sent.Load())
		} else {
			round = c.batchResults(actx, pending, resp.GetResults())
		}
		if pending = round.again; len(pending) == 0 {
			return
		}
		if round.refusedEarly {
			if !r.settle(ctx, round.unsettled) {
				for _, b := range pending {
					b.maybeApplied = b.maybeApplied || b.open.unsettled(c.now())
				}
				giveUpBatch(ctx, pending)
				return
			}
			if round.err == nil {
				continue
			}
		}
		if !r.again(ctx, ep, round.err, false) {
			giveUpBatch(ctx, pending)
			return
		}
	}
}

// batchOp is one operation of a batch call, and what its attempts have
// told so far: for each operation what a retrier keeps for a single call.
type batchOp struct {
	i            int // its position in the call, for errors
	op           Op
	res          *OpResult
	attempts     int
	maybeApplied bool
	last         error // the last attempt's failure
	open         openAttempts
}

// batchRound is what one attempt of a batch call leaves to do.
type batchRound struct {
	again []*batchOp // the operations to send again; none when done
	err   error      // the transient failure to back off from; nil if none
	// refusedEarly: some operations were refused while an earlier attempt
	// of theirs may still apply, which unsettled covers; they are sent
	// again once it cannot (see Client.do).
	refusedEarly bool
	unsettled    openAttempts
}

// batchCallFailed handles a batch call that failed as a whole: every
// operation is sent again if the failure is transient, and gets its error
// otherwise.
func (c *Client) batchCallFailed(ctx, actx context.Context, k call, pending []*batchOp, err error, sent bool) batchRound {
	if ctx.Err() != nil {
		// The caller gave up mid-attempt: the writes may have reached the
		// server.
		for _, b := range pending {
			b.maybeApplied = true
		}
		giveUpBatch(ctx, pending)
		return batchRound{}
	}
	retry, maybe := transient(attemptCode(err))
	if !retry {
		failBatch(pending, c.final(k, err))
		return batchRound{}
	}
	for _, b := range pending {
		b.maybeApplied = b.maybeApplied || maybe
		b.last = err
		if sent {
			b.open.add(actx)
		}
	}
	return batchRound{again: pending, err: err}
}

// batchResults takes the results of a batch call of pending, in order:
// outcomes go to their operations' results, and the operations that failed
// transiently, or were refused too early, are to be sent again.
func (c *Client) batchResults(actx context.Context, pending []*batchOp, results []*rationv1.OperationResult) batchRound {
	if len(results) != len(pending) {
		failBatch(pending, fmt.Errorf("ration: batch: server returned %d results for %d operations", len(results), len(pending)))
		return batchRound{}
	}
	round := batchRound{again: pending[:0]}
	for j, res := range results {
		b := pending[j]
		switch v := res.GetResult().(type) {
		case *rationv1.OperationResult_Grant:
			gr := grantResult(v.Grant)
			*b.res = OpResult{Grant: &gr}
		case *rationv1.OperationResult_Deduct:
			dr := deductResult(v.Deduct)
			*b.res = OpResult{Deduct: &dr}
		case *rationv1.OperationResult_Error:
			opErr := fromOpError(v.Error)
			retry, maybe := transient(parseCode(v.Error.GetCode()))
			switch {
			case retry:
				b.maybeApplied = b.maybeApplied || maybe
				b.last = opErr
				b.open.add(actx)
				round.err = opErr
			case errors.Is(opErr, ErrInsufficientCredits) && b.open.unsettled(c.now()):
				b.last = fmt.Errorf("refused (%v) while an earlier attempt may still apply", opErr)
				round.unsettled.join(b.open)
				round.refusedEarly = true
			default:
				*b.res = OpResult{Err: opErr}
				continue
			}
			round.again = append(round.again, b)
		default:
			*b.res = OpResult{Err: fmt.Errorf("ration: batch: operation %d: empty result", b.i)}
		}
	}
	return round
}

// failBatch gives every operation of pending the error err.
func failBatch(pending []*batchOp, err error) {
	for _, b := range pending {
		b.res.Err = err
	}
}

// giveUpBatch gives every operation of pending its error after its last
// attempt, as retrier.giveUp does for a single call: outcome unknown for a
// write that may have been applied, unavailable after transient failures,
// else the ctx's error.
func giveUpBatch(ctx context.Context, pending []*batchOp) {
	for _, b := range pending {
		last := withCtxErr(ctx, b.last)
		switch {
		case b.maybeApplied:
			kind := "grant"
			if b.op.Deduct != nil {
				kind = "deduct"
			}
			b.res.Err = &OutcomeUnknownError{Op: kind, ID: b.op.id(), Attempts: b.attempts, Err: last}
		case b.last == nil:
			b.res.Err = fmt.Errorf("ration: batch: %w", last)
		default:
			b.res.Err = &UnavailableError{Attempts: b.attempts, Err: last}
		}
	}
}

// StatusOption adjusts a Status call.
type StatusOption func(*rationv1.StatusRequest)

// WithStateHashes asks the node for each replica's state hash
// (Shard.StateHash). It costs the node a pass over its whole state, so it is
// for consistency checks, not monitoring.
func WithStateHashes() StatusOption {
	return func(r *rationv1.StatusRequest) { r.IncludeStateHash = true }
}
