package client

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ration/ration/api/rationv1"
)

// Coalescing: concurrent Grant and Deduct calls bound for one node share
// Batch calls, and concurrent balance reads share GetBalances calls, as
// TiKV's client batches commands and a Kafka producer batches records. A
// call is sent at once, alone and as itself, while fewer than
// Options.MaxInflight calls of its kind are in flight to its node; past
// that, calls queue, and the next call to leave carries every one queued
// by then. Under light load nothing changes; under heavy load a node
// parses, routes and answers one request for many. This is invisible to
// callers because Batch and GetBalances answer each request exactly as if
// it had been sent alone (api/ration/v1), and concurrent calls have no
// order between them.

// DefaultMaxInflight is Options.MaxInflight's default: a few calls per
// node keep its raft pipeline busy (each shard keeps entries in flight)
// while a queue builds and batches under load. With 64 clients writing,
// 4 beat 1, 2, 8 and 16 on 1 node (7.8-8.9k/s against 5.8-7.7k at 8 and
// 5.8-6.1k alone) and 2 and 8 on 3 nodes, measured interleaved
// (docs/BENCHMARKS.md, "Coalescing"). Reads use the same bound.
const DefaultMaxInflight = 4

// maxCoalesced is the most requests one coalesced call carries: the
// server's limit for Batch and GetBalances alike.
const maxCoalesced = MaxBatchOps

// coalescer is one endpoint's share of calls of one kind in flight, and
// the queue of those waiting for a place. Q is the single request, R its
// answer.
type coalescer[Q, R any] struct {
	max int // calls in flight at once; 0 turns coalescing off
	// one sends a request as its own call.
	one func(context.Context, Q, []grpc.CallOption) (R, error)
	// many sends several in one call: one answer or one error (a status,
	// as one would have returned it) per request, or the call's error.
	many func(context.Context, []Q, *metadata.MD) ([]R, []error, error)

	mu       sync.Mutex
	inflight int
	queue    []*queued[Q, R]
	// noMany is set once the node answered UNIMPLEMENTED to a many call
	// (a node of an earlier release): its requests then go one by one.
	noMany atomic.Bool
}

// queued is one attempt handed to a coalescer.
type queued[Q, R any] struct {
	ctx  context.Context // the attempt's: its deadline bounds the call that carries it
	req  Q
	co   []grpc.CallOption
	done chan struct{} // closed once res or err is set
	res  R
	err  error
	// gone is set by the caller that stopped waiting and by the sender
	// that took the request: whichever is first decides whether it is sent.
	gone atomic.Bool
}

// call sends req, alone or with others, and returns its answer, or the
// error its own call would have returned (a gRPC status, with the API's
// details). co are the attempt's call options: the trailer they ask for
// is the carrying call's.
func (q *coalescer[Q, R]) call(ctx context.Context, req Q, co []grpc.CallOption) (R, error) {
	w := &queued[Q, R]{ctx: ctx, req: req, co: co, done: make(chan struct{})}
	q.mu.Lock()
	if q.max <= 0 || q.inflight < q.max {
		q.inflight++
		q.mu.Unlock()
		w.gone.Store(true)
		q.send([]*queued[Q, R]{w})
		q.next()
		return w.res, w.err
	}
	q.queue = append(q.queue, w)
	q.mu.Unlock()
	select {
	case <-w.done:
		return w.res, w.err
	case <-ctx.Done():
	}
	// Still queued, it is never sent and cannot apply; taken, take marked
	// it sent. Either way the attempt ends with its context.
	w.gone.CompareAndSwap(false, true)
	var zero R
	return zero, status.FromContextError(ctx.Err()).Err()
}

// next hands the place in flight that a call just gave back to the
// requests queued meanwhile, as one call on a goroutine of its own (the
// caller whose call ended has its answer and goes), or frees it.
func (q *coalescer[Q, R]) next() {
	q.mu.Lock()
	ws := q.take()
	if len(ws) == 0 {
		q.inflight--
		q.mu.Unlock()
		return
	}
	q.mu.Unlock()
	go func() {
		q.send(ws)
		q.next()
	}()
}

// take removes up to maxCoalesced queued requests that are still wanted
// and marks them sent: from here on a write may apply. Called with q.mu
// held.
func (q *coalescer[Q, R]) take() []*queued[Q, R] {
	var ws []*queued[Q, R]
	n := 0
	for n < len(q.queue) && len(ws) < maxCoalesced {
		w := q.queue[n]
		n++
		if w.gone.CompareAndSwap(false, true) {
			markSent(w.ctx)
			ws = append(ws, w)
		}
	}
	clear(q.queue[:n])
	q.queue = q.queue[n:]
	if len(q.queue) == 0 {
		q.queue = nil
	}
	return ws
}

// send makes the call, or calls, for ws; a lone request goes as itself.
func (q *coalescer[Q, R]) send(ws []*queued[Q, R]) {
	defer func() {
		for _, w := range ws {
			close(w.done)
		}
	}()
	if len(ws) == 1 || q.noMany.Load() {
		q.sendEach(ws)
		return
	}
	ctx, cancel := batchContext(ws)
	defer cancel()
	reqs := make([]Q, len(ws))
	for i, w := range ws {
		reqs[i] = w.req
	}
	var md metadata.MD
	res, errs, err := q.many(ctx, reqs, &md)
	if status.Code(err) == codes.Unimplemented {
		q.noMany.Store(true)
		q.sendEach(ws)
		return
	}
	if err == nil && (len(res) != len(ws) || len(errs) != len(ws)) {
		err = status.Errorf(codes.Internal, "ration: server returned %d results for %d requests", len(res), len(ws))
	}
	for i, w := range ws {
		setTrailer(w.co, md)
		if err != nil {
			w.err = err
			continue
		}
		w.res, w.err = res[i], errs[i]
	}
}

// sendEach sends every request of ws as its own call, at once.
func (q *coalescer[Q, R]) sendEach(ws []*queued[Q, R]) {
	if len(ws) == 1 {
		ws[0].res, ws[0].err = q.one(ws[0].ctx, ws[0].req, ws[0].co)
		return
	}
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.res, w.err = q.one(w.ctx, w.req, w.co) })
	}
	wg.Wait()
}

// batchContext is the context of a call that carries ws: it ends at the
// earliest of their deadlines, so that no write is applied after its own
// attempt gave up (nodes start no write past its deadline), and it is not
// cancelled when one caller goes away, which would fail the others.
func batchContext[Q, R any](ws []*queued[Q, R]) (context.Context, context.CancelFunc) {
	var first time.Time
	for _, w := range ws {
		if d, ok := w.ctx.Deadline(); ok && (first.IsZero() || d.Before(first)) {
			first = d
		}
	}
	ctx := context.WithoutCancel(ws[0].ctx)
	if first.IsZero() {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, first)
}

// setTrailer hands md to the attempt's trailer call option, if it asked
// for one, so that routing learns from the carrying call's route hints.
func setTrailer(co []grpc.CallOption, md metadata.MD) {
	for _, o := range co {
		if t, ok := o.(grpc.TrailerCallOption); ok && t.TrailerAddr != nil {
			*t.TrailerAddr = md
		}
	}
}

// The two kinds an endpoint coalesces.
type (
	writeCoalescer = coalescer[*rationv1.Operation, *rationv1.OperationResult]
	readCoalescer  = coalescer[*rationv1.GetBalanceRequest, *rationv1.GetBalanceResponse]
)

// newCoalescers sets up ep's coalescers, max calls of each kind in flight.
func (ep *endpoint) newCoalescers(max int) {
	ep.writes = &writeCoalescer{max: max, one: ep.writeOne, many: ep.writeMany}
	ep.reads = &readCoalescer{max: max, one: ep.readOne, many: ep.readMany}
}

// writeOne sends a Grant or Deduct as itself.
func (ep *endpoint) writeOne(ctx context.Context, op *rationv1.Operation, co []grpc.CallOption) (*rationv1.OperationResult, error) {
	switch v := op.GetOp().(type) {
	case *rationv1.Operation_Grant:
		resp, err := ep.ledger.Grant(ctx, v.Grant, co...)
		if err != nil {
			return nil, err
		}
		return &rationv1.OperationResult{Result: &rationv1.OperationResult_Grant{Grant: resp}}, nil
	case *rationv1.Operation_Deduct:
		resp, err := ep.ledger.Deduct(ctx, v.Deduct, co...)
		if err != nil {
			return nil, err
		}
		return &rationv1.OperationResult{Result: &rationv1.OperationResult_Deduct{Deduct: resp}}, nil
	}
	return nil, fmt.Errorf("ration: coalescer: operation %T", op.GetOp())
}

// writeMany sends writes as one Batch.
func (ep *endpoint) writeMany(ctx context.Context, ops []*rationv1.Operation, md *metadata.MD) ([]*rationv1.OperationResult, []error, error) {
	resp, err := ep.ledger.Batch(ctx, &rationv1.BatchRequest{Operations: ops}, grpc.Trailer(md))
	if err != nil {
		return nil, nil, err
	}
	res := resp.GetResults()
	errs := make([]error, len(res))
	for i, r := range res {
		if pe := r.GetError(); pe != nil {
			res[i], errs[i] = nil, opStatus(pe)
		}
	}
	return res, errs, nil
}

// readOne sends a balance read as itself.
func (ep *endpoint) readOne(ctx context.Context, req *rationv1.GetBalanceRequest, co []grpc.CallOption) (*rationv1.GetBalanceResponse, error) {
	return ep.ledger.GetBalance(ctx, req, co...)
}

// readMany sends balance reads as one GetBalances.
func (ep *endpoint) readMany(ctx context.Context, reqs []*rationv1.GetBalanceRequest, md *metadata.MD) ([]*rationv1.GetBalanceResponse, []error, error) {
	resp, err := ep.ledger.GetBalances(ctx, &rationv1.GetBalancesRequest{Requests: reqs}, grpc.Trailer(md))
	if err != nil {
		return nil, nil, err
	}
	out := make([]*rationv1.GetBalanceResponse, len(resp.GetResults()))
	errs := make([]error, len(out))
	for i, r := range resp.GetResults() {
		if pe := r.GetError(); pe != nil {
			errs[i] = opStatus(pe)
			continue
		}
		out[i] = r.GetBalance()
	}
	return out, errs, nil
}
