package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

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
		return results, fmt.Errorf("ration: batch: %d of %d operation(s) without an outcome: %w", n, len(ops), first)
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
	pending := make([]int, len(ops))
	for i := range pending {
		pending[i] = i
	}
	maybeApplied := make([]bool, len(ops))
	attempts := make([]int, len(ops))
	lastErr := make([]error, len(ops))
	open := make([]openAttempts, len(ops))

	giveUp := func() {
		for _, i := range pending {
			var last error = lastErr[i]
			if err := ctx.Err(); err != nil {
				if last == nil {
					last = err
				} else {
					last = fmt.Errorf("%w (last attempt: %v)", err, last)
				}
			}
			switch op := ops[i]; {
			case maybeApplied[i]:
				kind := "grant"
				if op.Deduct != nil {
					kind = "deduct"
				}
				results[i].Err = &OutcomeUnknownError{Op: kind, ID: op.id(), Attempts: attempts[i], Err: last}
			case lastErr[i] == nil:
				results[i].Err = fmt.Errorf("ration: batch: %w", last)
			default:
				results[i].Err = &UnavailableError{Attempts: attempts[i], Err: last}
			}
		}
	}

	for pos := c.start(); ; pos++ {
		if ctx.Err() != nil {
			giveUp()
			return
		}
		if c.closed.Load() {
			for _, i := range pending {
				results[i].Err = fmt.Errorf("ration: batch: %w", ErrClosed)
			}
			return
		}
		req := &rationv1.BatchRequest{Operations: make([]*rationv1.Operation, len(pending))}
		for j, i := range pending {
			req.Operations[j] = ops[i].proto()
			attempts[i]++
		}
		// The part's operations were led by one node when it was made:
		// routing by the first one's user sends them all there, unless
		// leadership moved since (the node then forwards).
		user := ops[pending[0]].User
		ep, at, node := c.target(user, pos)
		pos = at
		r.attempts++
		actx, cancel, sent := c.attemptContext(ctx)
		var md metadata.MD
		resp, err := ep.ledger.Batch(actx, req, c.trailer(&md)...)
		cancel()
		c.learn(user, node, md, err)

		var callErr error
		// The operations refused while an earlier attempt of theirs may
		// still apply: re-sent once that attempt cannot (see Client.do).
		var unsettled openAttempts
		refusedEarly := false
		switch {
		case err != nil && ctx.Err() != nil:
			for _, i := range pending {
				maybeApplied[i] = true
			}
			giveUp()
			return
		case err != nil:
			retry, maybe := transient(status.Code(err))
			if !retry {
				mapped := c.final(r.k, err)
				for _, i := range pending {
					results[i].Err = mapped
				}
				return
			}
			for _, i := range pending {
				maybeApplied[i] = maybeApplied[i] || maybe
				lastErr[i] = err
				if sent.Load() {
					open[i].add(actx)
				}
			}
			callErr = err
		case len(resp.GetResults()) != len(pending):
			err := fmt.Errorf("ration: batch: server returned %d results for %d operations", len(resp.GetResults()), len(pending))
			for _, i := range pending {
				results[i].Err = err
			}
			return
		default:
			next := pending[:0]
			for j, res := range resp.GetResults() {
				i := pending[j]
				switch v := res.GetResult().(type) {
				case *rationv1.OperationResult_Grant:
					gr := grantResult(v.Grant)
					results[i] = OpResult{Grant: &gr}
				case *rationv1.OperationResult_Deduct:
					dr := deductResult(v.Deduct)
					results[i] = OpResult{Deduct: &dr}
				case *rationv1.OperationResult_Error:
					code := parseCode(v.Error.GetCode())
					retry, maybe := transient(code)
					if !retry {
						opErr := fromOpError(v.Error)
						if errors.Is(opErr, ErrInsufficientCredits) && open[i].unsettled(c.now()) {
							lastErr[i] = fmt.Errorf("refused (%v) while an earlier attempt may still apply", opErr)
							unsettled.join(open[i])
							refusedEarly = true
							next = append(next, i)
							continue
						}
						results[i] = OpResult{Err: opErr}
						continue
					}
					maybeApplied[i] = maybeApplied[i] || maybe
					lastErr[i] = fromOpError(v.Error)
					open[i].add(actx)
					callErr = lastErr[i]
					next = append(next, i)
				default:
					results[i] = OpResult{Err: fmt.Errorf("ration: batch: operation %d: empty result", i)}
				}
			}
			pending = next
			if len(pending) == 0 {
				return
			}
		}
		if refusedEarly {
			if !r.settle(ctx, unsettled) {
				for _, i := range pending {
					maybeApplied[i] = maybeApplied[i] || open[i].unsettled(c.now())
				}
				giveUp()
				return
			}
			if callErr == nil {
				continue
			}
		}
		if !r.again(ctx, ep, callErr, false) {
			giveUp()
			return
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
