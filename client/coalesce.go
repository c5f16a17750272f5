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
// Batch calls, as TiKV's client batches commands and a Kafka producer
// batches records. A call is sent at once, alone and as itself, while
// fewer than Options.MaxInflightWrites calls are in flight to its node;
// past that, writes queue, and the next call to leave carries every write
// queued by then in one Batch. Under light load nothing changes; under
// heavy load a node parses, routes and answers one request for many
// writes. This is invisible to callers because Batch applies each
// operation exactly as if it had been sent alone (api/ration/v1), and
// concurrent calls have no order between them.

// DefaultMaxInflightWrites is Options.MaxInflightWrites' default: enough
// requests per node to keep its raft pipeline busy (each shard keeps
// entries in flight), few enough that a queue builds and batches under
// load.
const DefaultMaxInflightWrites = 8

// coalescer is one endpoint's share of writes in flight and its queue.
type coalescer struct {
	ep  *endpoint
	max int // calls in flight at once; 0 turns coalescing off

	mu       sync.Mutex
	inflight int
	queue    []*queuedWrite
}

// queuedWrite is one attempt of a Grant or Deduct handed to a coalescer.
type queuedWrite struct {
	ctx  context.Context // the attempt's: its deadline bounds the call that carries it
	op   *rationv1.Operation
	co   []grpc.CallOption
	done chan struct{} // closed once res or err is set
	res  *rationv1.OperationResult
	err  error
	// gone is set by the caller that stopped waiting and by the sender
	// that took the write: whichever is first decides whether it is sent.
	gone atomic.Bool
}

// write sends op through ep, alone or in a Batch with other writes, and
// returns its result, or the error the single call would have returned (a
// gRPC status, with the API's details). co are the attempt's call options:
// the trailer they ask for is the carrying call's.
func (q *coalescer) write(ctx context.Context, op *rationv1.Operation, co []grpc.CallOption) (*rationv1.OperationResult, error) {
	w := &queuedWrite{ctx: ctx, op: op, co: co, done: make(chan struct{})}
	q.mu.Lock()
	if q.max <= 0 || q.inflight < q.max {
		q.inflight++
		q.mu.Unlock()
		w.gone.Store(true)
		q.send([]*queuedWrite{w})
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
	return nil, status.FromContextError(ctx.Err()).Err()
}

// next hands the place in flight that a call just gave back to the writes
// queued meanwhile, as one Batch on a goroutine of its own (the caller
// whose call ended has its answer and goes), or frees it.
func (q *coalescer) next() {
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

// take removes up to MaxBatchOps queued writes that are still wanted and
// marks them sent: from here on they may apply. Called with q.mu held.
func (q *coalescer) take() []*queuedWrite {
	var ws []*queuedWrite
	n := 0
	for n < len(q.queue) && len(ws) < MaxBatchOps {
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

// send makes one call for ws: a lone write as itself, several as a Batch.
func (q *coalescer) send(ws []*queuedWrite) {
	defer func() {
		for _, w := range ws {
			close(w.done)
		}
	}()
	if len(ws) == 1 {
		w := ws[0]
		w.res, w.err = q.single(w.ctx, w.op, w.co)
		return
	}
	ctx, cancel := batchContext(ws)
	defer cancel()
	req := &rationv1.BatchRequest{Operations: make([]*rationv1.Operation, len(ws))}
	for i, w := range ws {
		req.Operations[i] = w.op
	}
	var md metadata.MD
	resp, err := q.ep.ledger.Batch(ctx, req, grpc.Trailer(&md))
	if err == nil && len(resp.GetResults()) != len(ws) {
		err = status.Errorf(codes.Internal, "ration: batch: server returned %d results for %d operations", len(resp.GetResults()), len(ws))
	}
	for i, w := range ws {
		setTrailer(w.co, md)
		if err != nil {
			w.err = err
			continue
		}
		w.res = resp.GetResults()[i]
		if pe := w.res.GetError(); pe != nil {
			w.res, w.err = nil, opStatus(pe)
		}
	}
}

// single sends one write as the call it is.
func (q *coalescer) single(ctx context.Context, op *rationv1.Operation, co []grpc.CallOption) (*rationv1.OperationResult, error) {
	switch v := op.GetOp().(type) {
	case *rationv1.Operation_Grant:
		resp, err := q.ep.ledger.Grant(ctx, v.Grant, co...)
		if err != nil {
			return nil, err
		}
		return &rationv1.OperationResult{Result: &rationv1.OperationResult_Grant{Grant: resp}}, nil
	case *rationv1.Operation_Deduct:
		resp, err := q.ep.ledger.Deduct(ctx, v.Deduct, co...)
		if err != nil {
			return nil, err
		}
		return &rationv1.OperationResult{Result: &rationv1.OperationResult_Deduct{Deduct: resp}}, nil
	}
	return nil, fmt.Errorf("ration: coalescer: operation %T", op.GetOp())
}

// batchContext is the context of a call that carries ws: it ends at the
// earliest of their deadlines, so that no write is applied after its own
// attempt gave up (nodes start no write past its deadline), and it is not
// cancelled when one caller goes away, which would fail the others.
func batchContext(ws []*queuedWrite) (context.Context, context.CancelFunc) {
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
