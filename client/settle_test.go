package client_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/client"
)

// lateApplier is a node on which the first attempt of a deduction is
// answered UNAVAILABLE (a router that lost its forward) but applies a
// little later, within its deadline, as a held forward can. Until then
// the deduction does not fit.
type lateApplier struct {
	rationv1.UnimplementedLedgerServer
	applyAfter time.Duration

	mu      sync.Mutex
	calls   []time.Time
	applied bool
}

func (s *lateApplier) Deduct(ctx context.Context, req *rationv1.DeductRequest) (*rationv1.DeductResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, time.Now())
	switch {
	case len(s.calls) == 1:
		time.AfterFunc(s.applyAfter, func() {
			s.mu.Lock()
			s.applied = true
			s.mu.Unlock()
		})
		return nil, status.Error(codes.Unavailable, "forward unanswered")
	case s.applied:
		return &rationv1.DeductResponse{Duplicate: true, Version: 2}, nil
	}
	st, err := status.New(codes.FailedPrecondition, "insufficient credits").
		WithDetails(&rationv1.InsufficientCredits{DeductionId: req.GetId(), At: req.GetTimestamp(), Shortfall: 1})
	if err != nil {
		return nil, err
	}
	return nil, st.Err()
}

// Batch is Deduct for a batch of one deduction, answered inline.
func (s *lateApplier) Batch(ctx context.Context, req *rationv1.BatchRequest) (*rationv1.BatchResponse, error) {
	d := req.GetOperations()[0].GetDeduct()
	res, err := s.Deduct(ctx, d)
	if err == nil {
		return &rationv1.BatchResponse{Results: []*rationv1.OperationResult{{Result: &rationv1.OperationResult_Deduct{Deduct: res}}}}, nil
	}
	e := &rationv1.Error{Code: "UNAVAILABLE", Message: status.Convert(err).Message()}
	if status.Code(err) == codes.FailedPrecondition {
		e.Code = "FAILED_PRECONDITION"
		e.Insufficient = &rationv1.InsufficientCredits{DeductionId: d.GetId(), At: d.GetTimestamp(), Shortfall: 1}
	}
	return &rationv1.BatchResponse{Results: []*rationv1.OperationResult{{Result: &rationv1.OperationResult_Error{Error: e}}}}, nil
}

func (s *lateApplier) callTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.calls...)
}

func startLateApplier(t *testing.T, applyAfter time.Duration) (*lateApplier, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lateApplier{applyAfter: applyAfter}
	gs := grpc.NewServer()
	rationv1.RegisterLedgerServer(gs, s)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return s, lis.Addr().String()
}

// A refusal that follows an unanswered attempt is not passed on while that
// attempt may still apply: the client waits until it cannot, asks again,
// and reports what the node then says. The same for an operation of a
// batch, refused inline.
func TestRefusalAfterUnansweredAttemptWaitsItOut(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		deduct func(*client.Client, client.Deduction) (duplicate bool, err error)
	}{
		{"single", func(c *client.Client, d client.Deduction) (bool, error) {
			res, err := c.Deduct(ctx, "u", d)
			return res.Duplicate, err
		}},
		{"batch", func(c *client.Client, d client.Deduction) (bool, error) {
			res, err := c.Batch(ctx, []client.Op{client.DeductOp("u", d)})
			switch {
			case err != nil:
				return false, err
			case res[0].Err != nil:
				return false, res[0].Err
			}
			return res[0].Deduct != nil && res[0].Deduct.Duplicate, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const timeout = 300 * time.Millisecond
			srv, addr := startLateApplier(t, 150*time.Millisecond)
			opts := fast(addr)
			opts.Timeout = timeout
			c := newClient(t, opts)

			start := time.Now()
			dup, err := tc.deduct(c, client.Deduction{ID: "d", Amount: 5, Timestamp: t0})
			if err != nil {
				t.Fatalf("deduct = %v; the first attempt applied, so the answer is its duplicate", err)
			}
			if !dup {
				t.Errorf("deduct was not the duplicate of the late first attempt")
			}
			srv.checkAskedAgainAfterSettling(t, start, timeout)
		})
	}
}

// checkAskedAgainAfterSettling checks the three calls: unanswered, refused,
// and the third sent only once the first attempt's deadline has passed by
// the allowance.
func (s *lateApplier) checkAskedAgainAfterSettling(t *testing.T, start time.Time, timeout time.Duration) {
	t.Helper()
	calls := s.callTimes()
	if len(calls) != 3 {
		t.Fatalf("%d calls, want 3: unanswered, refused, asked again", len(calls))
	}
	if settled := start.Add(timeout + 250*time.Millisecond); calls[2].Before(settled) {
		t.Errorf("asked again %v after the start, before the first attempt settled (%v)", calls[2].Sub(start), timeout+250*time.Millisecond)
	}
}

// Without the budget to wait it out, the refusal is not reported as one:
// the outcome is unknown.
func TestRefusalAfterUnansweredAttemptWithoutBudgetIsUnknown(t *testing.T) {
	_, addr := startLateApplier(t, time.Hour)
	opts := fast(addr)
	opts.Timeout = 2 * time.Second
	opts.RetryBudget = 500 * time.Millisecond
	c := newClient(t, opts)

	_, err := c.Deduct(context.Background(), "u", client.Deduction{ID: "d", Amount: 5, Timestamp: t0})
	if !errors.Is(err, client.ErrOutcomeUnknown) || errors.Is(err, client.ErrInsufficientCredits) {
		t.Fatalf("Deduct = %v, want an unknown outcome and not insufficient credits", err)
	}
}
