package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/client/clienttest"
)

const c0 = int64(1_700_000_000_000)

// gatedServer is the fake node behind an interceptor that can hold calls
// until released, so that a test fills a client's places in flight at
// will, and that records the size of every Batch.
type gatedServer struct {
	*clienttest.Server
	addr string

	mu      sync.Mutex
	closed  bool
	gate    chan struct{} // calls wait on it while closed is true
	held    int
	batches []int
	reads   []int // the size of every GetBalances
	// noReads answers GetBalances UNIMPLEMENTED, as a node of an earlier
	// release does.
	noReads bool
}

func startGated(t *testing.T) *gatedServer {
	t.Helper()
	g := &gatedServer{Server: clienttest.NewServer(clienttest.Options{Now: func() int64 { return c0 + 500 }})}
	gs := grpc.NewServer(grpc.UnaryInterceptor(g.intercept))
	g.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = lis.Addr().String()
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return g
}

func (g *gatedServer) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	g.mu.Lock()
	if r, ok := req.(*rationv1.BatchRequest); ok {
		g.batches = append(g.batches, len(r.GetOperations()))
	}
	if r, ok := req.(*rationv1.GetBalancesRequest); ok {
		g.reads = append(g.reads, len(r.GetRequests()))
		if g.noReads {
			g.mu.Unlock()
			return nil, status.Error(codes.Unimplemented, "unknown method GetBalances")
		}
	}
	gate := g.gate
	if g.closed {
		g.held++
	}
	g.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	return h(ctx, req)
}

// hold makes calls wait from now on, until release.
func (g *gatedServer) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed, g.gate, g.held = true, make(chan struct{}), 0
}

func (g *gatedServer) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.gate)
	g.closed, g.gate = false, nil
}

func (g *gatedServer) heldCalls() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

func (g *gatedServer) readSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.reads...)
}

func (g *gatedServer) batchSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.batches...)
}

// waitFor polls cond for up to 10 s: the client's queue fills from other
// goroutines.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func queuedWrites(c *Client) int {
	q := c.eps[0].writes
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

func queuedReads(c *Client) int {
	q := c.eps[0].reads
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

func gatedClient(t *testing.T, g *gatedServer, inflight int) *Client {
	t.Helper()
	c, err := New(context.Background(), Options{
		Endpoints: []string{g.addr}, DisableRouting: true, MaxInflight: inflight,
		Timeout: 5 * time.Second, RetryBudget: 5 * time.Second,
		Backoff: Backoff{Base: time.Millisecond, Cap: 10 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCoalescedWrites: with its places in flight taken, a client sends the
// writes queued meanwhile in one Batch, and each caller gets exactly what
// its single call would have returned, refusals and their details
// included.
func TestCoalescedWrites(t *testing.T) {
	g := startGated(t)
	c := gatedClient(t, g, 2)
	ctx := context.Background()
	if _, err := c.Grant(ctx, "alice", Grant{ID: "g1", Amount: 10, Timestamp: c0}); err != nil {
		t.Fatal(err)
	}

	g.hold()
	var wg sync.WaitGroup
	for _, id := range []string{"a1", "a2"} {
		wg.Go(func() {
			if _, err := c.Deduct(ctx, "alice", Deduction{ID: id, Amount: 1, Timestamp: c0 + 1}); err != nil {
				t.Errorf("Deduct %s: %v", id, err)
			}
		})
	}
	waitFor(t, "two calls held by the server", func() bool { return g.heldCalls() == 2 })

	type outcome struct {
		res DeductResult
		err error
	}
	queuedCalls := []struct {
		user string
		d    Deduction
	}{
		{"alice", Deduction{ID: "q1", Amount: 3, Timestamp: c0 + 2}},
		{"alice", Deduction{ID: "bad id", Amount: 1, Timestamp: c0 + 2}},
		{"bob", Deduction{ID: "q3", Amount: 1, Timestamp: c0 + 2}},
	}
	out := make([]outcome, len(queuedCalls))
	for i, k := range queuedCalls {
		wg.Go(func() {
			out[i].res, out[i].err = c.Deduct(ctx, k.user, k.d)
		})
	}
	var grantErr error
	wg.Go(func() {
		_, grantErr = c.Grant(ctx, "carol", Grant{ID: "g2", Amount: 5, Timestamp: c0})
	})
	waitFor(t, "four queued writes", func() bool { return queuedWrites(c) == 4 })
	g.release()
	wg.Wait()

	if sizes := g.batchSizes(); len(sizes) != 1 || sizes[0] != 4 {
		t.Fatalf("Batch calls carried %v operations, want one Batch of the 4 queued writes", sizes)
	}
	if out[0].err != nil || len(out[0].res.Allocations) != 1 || out[0].res.Allocations[0] != (Allocation{GrantID: "g1", Amount: 3}) {
		t.Errorf("q1 = %+v, %v; want 3 drawn from g1", out[0].res, out[0].err)
	}
	var inv *InvalidArgumentError
	if !errors.As(out[1].err, &inv) || inv.Field != "id" || inv.Reason == "" {
		t.Errorf("bad id: err = %#v, want InvalidArgumentError on field id with a reason", out[1].err)
	}
	var ins *InsufficientCreditsError
	if !errors.As(out[2].err, &ins) || *ins != (InsufficientCreditsError{DeductionID: "q3", At: c0 + 2, Shortfall: 1}) {
		t.Errorf("bob: err = %v, want insufficient credits for q3 short by 1", out[2].err)
	}
	if grantErr != nil {
		t.Errorf("Grant in the batch: %v", grantErr)
	}
	if got := g.Balance("alice", c0+10); got != 5 {
		t.Errorf("alice's balance = %d, want 10-1-1-3 = 5", got)
	}

	// The same refusal sent alone reads the same.
	_, err := c.Deduct(ctx, "bob", Deduction{ID: "q3", Amount: 1, Timestamp: c0 + 2})
	var alone *InsufficientCreditsError
	if !errors.As(err, &alone) || *alone != *ins || err.Error() != out[2].err.Error() {
		t.Errorf("alone: %v; in a batch: %v", err, out[2].err)
	}
}

// TestCoalescedCancelNotSent: a queued write whose caller gives up before
// it leaves is never sent, and the others still go.
func TestCoalescedCancelNotSent(t *testing.T) {
	g := startGated(t)
	c := gatedClient(t, g, 1)
	ctx := context.Background()
	if _, err := c.Grant(ctx, "alice", Grant{ID: "g1", Amount: 10, Timestamp: c0}); err != nil {
		t.Fatal(err)
	}
	g.hold()
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := c.Deduct(ctx, "alice", Deduction{ID: "first", Amount: 1, Timestamp: c0 + 1}); err != nil {
			t.Errorf("first: %v", err)
		}
	})
	waitFor(t, "the first call held", func() bool { return g.heldCalls() == 1 })
	cctx, cancel := context.WithCancel(ctx)
	gone := make(chan error, 1)
	wg.Go(func() {
		_, err := c.Deduct(cctx, "alice", Deduction{ID: "gone", Amount: 4, Timestamp: c0 + 1})
		gone <- err
	})
	wg.Go(func() {
		if _, err := c.Deduct(ctx, "alice", Deduction{ID: "kept", Amount: 2, Timestamp: c0 + 1}); err != nil {
			t.Errorf("kept: %v", err)
		}
	})
	waitFor(t, "two queued writes", func() bool { return queuedWrites(c) == 2 })
	cancel()
	var cancelled error
	select {
	case cancelled = <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the cancelled call did not return")
	}
	g.release()
	wg.Wait()
	if !errors.Is(cancelled, context.Canceled) {
		t.Errorf("cancelled call: %v, want context.Canceled", cancelled)
	}
	if got := g.Balance("alice", c0+10); got != 7 {
		t.Errorf("balance = %d, want 10-1-2 = 7: the cancelled write must not apply", got)
	}
	if sizes := g.batchSizes(); len(sizes) != 0 {
		t.Errorf("Batch calls of %v operations; the one write left should go alone", sizes)
	}
}

// TestCoalescingOff: a negative MaxInflight sends every write alone.
func TestCoalescingOff(t *testing.T) {
	g := startGated(t)
	c := gatedClient(t, g, -1)
	ctx := context.Background()
	if _, err := c.Grant(ctx, "u", Grant{ID: "g", Amount: 100, Timestamp: c0}); err != nil {
		t.Fatal(err)
	}
	g.hold()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := c.Deduct(ctx, "u", Deduction{ID: NewID(), Amount: 1, Timestamp: c0 + int64(i)}); err != nil {
				t.Errorf("Deduct: %v", err)
			}
		})
	}
	waitFor(t, "20 calls held", func() bool { return g.heldCalls() == 20 })
	g.release()
	wg.Wait()
	if sizes := g.batchSizes(); len(sizes) != 0 {
		t.Errorf("Batch calls of %v operations with coalescing off", sizes)
	}
}

// TestBatchContextEarliestDeadline: a call carrying several writes ends
// with the first of their deadlines, and one caller's cancel does not end
// it.
func TestBatchContextEarliestDeadline(t *testing.T) {
	now := time.Now()
	late, cancelLate := context.WithDeadline(context.Background(), now.Add(time.Hour))
	defer cancelLate()
	early, cancelEarly := context.WithDeadline(context.Background(), now.Add(time.Minute))
	ws := []*queued[*rationv1.Operation, *rationv1.OperationResult]{{ctx: late}, {ctx: early}, {ctx: context.Background()}}
	ctx, cancel := batchContext(ws)
	defer cancel()
	if d, ok := ctx.Deadline(); !ok || !d.Equal(now.Add(time.Minute)) {
		t.Errorf("deadline = %v, %v; want the earliest, %v", d, ok, now.Add(time.Minute))
	}
	cancelEarly()
	if ctx.Err() != nil {
		t.Errorf("cancelling one caller ended the call: %v", ctx.Err())
	}
	none, cancelNone := batchContext([]*queued[*rationv1.Operation, *rationv1.OperationResult]{{ctx: context.Background()}})
	defer cancelNone()
	if _, ok := none.Deadline(); ok {
		t.Error("no caller has a deadline, but the call has one")
	}
}

// TestOpStatusRoundTrip: a batch operation's error, turned into the status
// of its single call, maps back to the same typed error.
func TestOpStatusRoundTrip(t *testing.T) {
	for _, pe := range []*rationv1.Error{
		{Code: "INVALID_ARGUMENT", Message: "amount: must be positive", Field: "amount"},
		{Code: "INVALID_ARGUMENT", Message: "invalid argument: id: may only contain A-Z", Field: "id"},
		{Code: "ALREADY_EXISTS", Message: "id g reused"},
		{Code: "FAILED_PRECONDITION", Message: "insufficient", Insufficient: &rationv1.InsufficientCredits{DeductionId: "d", At: 5, Shortfall: 2}},
		{Code: "UNAVAILABLE", Message: "no leader"},
	} {
		err := opStatus(pe)
		if got, want := status.Code(err), parseCode(pe.GetCode()); got != want {
			t.Errorf("%s: code %v", pe.GetCode(), got)
		}
		if got, want := fromStatus(err), fromOpError(pe); got.Error() != want.Error() && status.Code(err) != codes.Unavailable {
			t.Errorf("%s: %v, want %v", pe.GetCode(), got, want)
		}
		if !strings.Contains(err.Error(), pe.GetMessage()) {
			t.Errorf("%s: %v lost the message", pe.GetCode(), err)
		}
		if msg := fromStatus(err).Error(); pe.GetField() != "" && (strings.Count(msg, "invalid argument") != 1 || strings.Count(msg, pe.GetField()+":") != 1) {
			t.Errorf("%s: %q says its class or field more than once", pe.GetCode(), msg)
		}
	}
}

// TestCoalescedReads: balance reads queued behind the places in flight
// leave in one GetBalances, each with its own consistency and answer; a
// node that does not know GetBalances gets them one by one.
func TestCoalescedReads(t *testing.T) {
	for _, old := range []bool{false, true} {
		t.Run(map[bool]string{false: "GetBalances", true: "earlier release"}[old], func(t *testing.T) {
			g := startGated(t)
			g.noReads = old
			c := gatedClient(t, g, 1)
			ctx := context.Background()
			if _, err := c.Grant(ctx, "alice", Grant{ID: "g1", Amount: 10, Timestamp: c0}); err != nil {
				t.Fatal(err)
			}
			g.hold()
			var wg sync.WaitGroup
			wg.Go(func() {
				if _, err := c.Balance(ctx, "alice", nil); err != nil {
					t.Errorf("first read: %v", err)
				}
			})
			waitFor(t, "the first read held", func() bool { return g.heldCalls() == 1 })
			at := c0 + 1
			var (
				alice, bob BalanceResult
				errA, errB error
				bad        error
			)
			wg.Go(func() { alice, errA = c.Balance(ctx, "alice", &at, Stale()) })
			wg.Go(func() { bob, errB = c.Balance(ctx, "bob", &at) })
			wg.Go(func() { _, bad = c.Balance(ctx, "b/o/b", &at) })
			waitFor(t, "three queued reads", func() bool { return queuedReads(c) == 3 })
			g.release()
			wg.Wait()

			// An earlier release is asked once, then read one by one.
			if got := g.readSizes(); fmt.Sprint(got) != "[3]" {
				t.Errorf("GetBalances calls carried %v reads, want one of 3", got)
			}
			if old && !c.eps[0].reads.noMany.Load() {
				t.Error("UNIMPLEMENTED did not turn GetBalances off for the node")
			}
			if errA != nil || alice.Balance != 10 || alice.At != at {
				t.Errorf("alice = %+v, %v; want 10 at %d", alice, errA, at)
			}
			if errB != nil || bob.Balance != 0 {
				t.Errorf("bob = %+v, %v; want 0", bob, errB)
			}
			var inv *InvalidArgumentError
			if !errors.As(bad, &inv) || inv.Field != "user" {
				t.Errorf("bad user: %v, want InvalidArgumentError on field user", bad)
			}
		})
	}
}

// TestUnavailableSaysItOnce: an UNAVAILABLE status from a node reads as
// its cause after the client's own "unavailable after n attempt(s)".
func TestUnavailableSaysItOnce(t *testing.T) {
	err := &UnavailableError{Attempts: 2, Err: status.Error(codes.Unavailable, "unavailable: shard 1: no leader")}
	if got, want := err.Error(), "ration: unavailable after 2 attempt(s): shard 1: no leader"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	other := &UnavailableError{Attempts: 1, Err: errors.New("dial tcp: refused")}
	if got, want := other.Error(), "ration: unavailable after 1 attempt(s): dial tcp: refused"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}
