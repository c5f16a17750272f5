// Package grpcapi serves the ration.v1 gRPC services over the service
// layer. Errors become gRPC statuses with details: InvalidArgument with an
// InvalidField, AlreadyExists for an id conflict, FailedPrecondition with an
// InsufficientCredits, Unavailable when a retry (same ids) is the answer.
package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/api/ledgerproto"
	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/service"
)

// StatusFunc answers the Admin.Status call.
type StatusFunc func(ctx context.Context, req *rationv1.StatusRequest) (*rationv1.StatusResponse, error)

// Register adds the Ledger and Admin services to s.
func Register(s *grpc.Server, svc *service.Service, statusFn StatusFunc, reg prometheus.Registerer) {
	srv := &ledgerServer{svc: svc, met: newMetrics(reg)}
	rationv1.RegisterLedgerServer(s, srv)
	rationv1.RegisterAdminServer(s, &adminServer{status: statusFn})
}

type ledgerServer struct {
	rationv1.UnimplementedLedgerServer
	svc *service.Service
	met *prometheus.HistogramVec
}

func grantOf(r *rationv1.GrantRequest) (ledger.Grant, error) {
	g := ledger.Grant{ID: r.GetId(), Amount: r.GetAmount(), Timestamp: r.GetTimestamp(), ExpiresAt: ledger.Never, Priority: r.GetPriority()}
	if r.ExpiresAt != nil {
		if *r.ExpiresAt == ledger.Never {
			return g, &ledger.InvalidArgumentError{Field: "expires_at", Reason: "too large; leave it unset for credits that never expire"}
		}
		g.ExpiresAt = *r.ExpiresAt
	}
	return g, nil
}

func deductionOf(r *rationv1.DeductRequest) ledger.Deduction {
	return ledger.Deduction{ID: r.GetId(), Amount: r.GetAmount(), Timestamp: r.GetTimestamp()}
}

func (s *ledgerServer) Grant(ctx context.Context, r *rationv1.GrantRequest) (*rationv1.GrantResponse, error) {
	start := time.Now()
	g, err := grantOf(r)
	var res *rationv1.GrantResponse
	if err == nil {
		var wr actors.WriteResult
		wr, err = s.svc.Grant(ctx, r.GetUser(), g)
		res = &rationv1.GrantResponse{Duplicate: wr.Duplicate, Version: wr.Version}
	}
	return res, s.done("grant", start, err)
}

func (s *ledgerServer) Deduct(ctx context.Context, r *rationv1.DeductRequest) (*rationv1.DeductResponse, error) {
	start := time.Now()
	wr, err := s.svc.Deduct(ctx, r.GetUser(), deductionOf(r))
	var res *rationv1.DeductResponse
	if err == nil {
		res = &rationv1.DeductResponse{Duplicate: wr.Duplicate, Version: wr.Version, Allocations: ledgerproto.Allocations(wr.Allocations)}
	}
	return res, s.done("deduct", start, err)
}

func stale(c rationv1.ReadConsistency) bool {
	return c == rationv1.ReadConsistency_READ_CONSISTENCY_STALE
}

func (s *ledgerServer) GetBalance(ctx context.Context, r *rationv1.GetBalanceRequest) (*rationv1.GetBalanceResponse, error) {
	start := time.Now()
	res, err := s.balance(ctx, r)
	return res, s.done("balance", start, err)
}

// balance answers one balance read, alone or in a GetBalances call.
func (s *ledgerServer) balance(ctx context.Context, r *rationv1.GetBalanceRequest) (*rationv1.GetBalanceResponse, error) {
	b, err := s.svc.Balance(ctx, r.GetUser(), r.At, stale(r.GetConsistency()))
	if err != nil {
		return nil, err
	}
	return &rationv1.GetBalanceResponse{User: r.GetUser(), At: b.At, Balance: b.Balance, Grants: ledgerproto.GrantBalances(b.Grants)}, nil
}

// maxBalanceReads is the most reads one GetBalances call takes, as Batch
// takes at most 1000 writes.
const maxBalanceReads = 1000

// GetBalances answers each read as GetBalance would, all at once: the
// reads of different users wait on different actors (and, linearizable,
// on their shards' read barriers, which coalesce), so one at a time would
// add their waits up.
func (s *ledgerServer) GetBalances(ctx context.Context, r *rationv1.GetBalancesRequest) (*rationv1.GetBalancesResponse, error) {
	start := time.Now()
	reqs := r.GetRequests()
	if len(reqs) > maxBalanceReads {
		err := &ledger.InvalidArgumentError{Field: "requests", Reason: fmt.Sprintf("more than %d requests", maxBalanceReads)}
		return nil, s.done("balances", start, err)
	}
	res := &rationv1.GetBalancesResponse{Results: make([]*rationv1.BalanceResult, len(reqs))}
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() {
			// Each goroutine owns its element of Results.
			b, err := s.balance(ctx, req)
			if err != nil {
				res.Results[i] = &rationv1.BalanceResult{Result: &rationv1.BalanceResult_Error{Error: errorMessage(err)}}
				return
			}
			res.Results[i] = &rationv1.BalanceResult{Result: &rationv1.BalanceResult_Balance{Balance: b}}
		})
	}
	wg.Wait()
	return res, s.done("balances", start, nil)
}

func (s *ledgerServer) ListEvents(ctx context.Context, r *rationv1.ListEventsRequest) (*rationv1.ListEventsResponse, error) {
	start := time.Now()
	page, err := s.svc.Events(ctx, r.GetUser(), service.EventsQuery{
		From: r.From, To: r.To, Limit: int(r.GetLimit()), PageToken: r.GetPageToken(), Stale: stale(r.GetConsistency()),
	})
	var res *rationv1.ListEventsResponse
	if err == nil {
		res = &rationv1.ListEventsResponse{NextPageToken: page.NextPageToken, Events: ledgerproto.Events(page.Events)}
	}
	return res, s.done("events", start, err)
}

func (s *ledgerServer) Batch(ctx context.Context, r *rationv1.BatchRequest) (*rationv1.BatchResponse, error) {
	start := time.Now()
	ops := make([]service.BatchOp, len(r.GetOperations()))
	pre := make([]error, len(ops))
	for i, op := range r.GetOperations() {
		switch o := op.GetOp().(type) {
		case *rationv1.Operation_Grant:
			g, err := grantOf(o.Grant)
			ops[i] = service.BatchOp{User: o.Grant.GetUser(), Grant: &g}
			pre[i] = err
		case *rationv1.Operation_Deduct:
			d := deductionOf(o.Deduct)
			ops[i] = service.BatchOp{User: o.Deduct.GetUser(), Deduction: &d}
		default:
			pre[i] = &ledger.InvalidArgumentError{Field: "op", Reason: "exactly one of grant and deduct must be set"}
		}
		if pre[i] != nil {
			// Keep the operation in the batch, but as one that does nothing.
			ops[i] = service.BatchOp{User: ops[i].User}
		}
	}
	results, err := s.svc.Batch(ctx, ops)
	if err != nil {
		return nil, s.done("batch", start, err)
	}
	res := &rationv1.BatchResponse{Results: make([]*rationv1.OperationResult, len(results))}
	for i, br := range results {
		if pre[i] != nil {
			br.Err = pre[i]
		}
		out := &rationv1.OperationResult{}
		switch {
		case br.Err != nil:
			out.Result = &rationv1.OperationResult_Error{Error: errorMessage(br.Err)}
		case ops[i].Grant != nil:
			out.Result = &rationv1.OperationResult_Grant{Grant: &rationv1.GrantResponse{Duplicate: br.Duplicate, Version: br.Version}}
		default:
			out.Result = &rationv1.OperationResult_Deduct{Deduct: &rationv1.DeductResponse{Duplicate: br.Duplicate, Version: br.Version, Allocations: ledgerproto.Allocations(br.Allocations)}}
		}
		res.Results[i] = out
	}
	return res, s.done("batch", start, nil)
}

// errorMessage is a per-operation error of a batch.
func errorMessage(err error) *rationv1.Error {
	st := toStatus(err)
	e := &rationv1.Error{Code: codeName(st.Code()), Message: st.Message()}
	var ia *ledger.InvalidArgumentError
	if errors.As(err, &ia) {
		e.Field = ia.Field
	}
	var ie *ledger.InsufficientCreditsError
	if errors.As(err, &ie) {
		e.Insufficient = &rationv1.InsufficientCredits{DeductionId: ie.DeductionID, At: ie.At, Shortfall: ie.Shortfall}
	}
	return e
}

// codeName is the upper-snake name of a code, as codes.Code.UnmarshalJSON
// reads it back.
func codeName(c codes.Code) string {
	switch c {
	case codes.InvalidArgument:
		return "INVALID_ARGUMENT"
	case codes.AlreadyExists:
		return "ALREADY_EXISTS"
	case codes.FailedPrecondition:
		return "FAILED_PRECONDITION"
	case codes.DeadlineExceeded:
		return "DEADLINE_EXCEEDED"
	case codes.Canceled:
		return "CANCELLED"
	case codes.Unavailable:
		return "UNAVAILABLE"
	}
	return "UNKNOWN"
}

// toStatus maps an error of the service layer to a gRPC status.
func toStatus(err error) *status.Status {
	switch service.ClassOf(err) {
	case service.ClassOK:
		return status.New(codes.OK, "")
	case service.ClassInvalid:
		st := status.New(codes.InvalidArgument, err.Error())
		var ia *ledger.InvalidArgumentError
		if errors.As(err, &ia) {
			if d, derr := st.WithDetails(&rationv1.InvalidField{Field: ia.Field, Reason: ia.Reason}); derr == nil {
				return d
			}
		}
		return st
	case service.ClassConflict:
		return status.New(codes.AlreadyExists, err.Error())
	case service.ClassInsufficient:
		st := status.New(codes.FailedPrecondition, err.Error())
		var ie *ledger.InsufficientCreditsError
		if errors.As(err, &ie) {
			if d, derr := st.WithDetails(&rationv1.InsufficientCredits{DeductionId: ie.DeductionID, At: ie.At, Shortfall: ie.Shortfall}); derr == nil {
				return d
			}
		}
		return st
	case service.ClassDeadline:
		return status.New(codes.DeadlineExceeded, err.Error())
	case service.ClassCanceled:
		return status.New(codes.Canceled, err.Error())
	}
	return status.New(codes.Unavailable, err.Error())
}

func (s *ledgerServer) done(op string, start time.Time, err error) error {
	st := toStatus(err)
	s.met.WithLabelValues("grpc", op, outcomeOf(st.Code())).Observe(time.Since(start).Seconds())
	if err == nil {
		return nil
	}
	return st.Err()
}

func outcomeOf(c codes.Code) string {
	switch c {
	case codes.OK:
		return "ok"
	case codes.InvalidArgument:
		return "invalid_argument"
	case codes.AlreadyExists:
		return "conflict"
	case codes.FailedPrecondition:
		return "insufficient_credits"
	case codes.Canceled:
		return "canceled"
	}
	return "unavailable"
}

func newMetrics(reg prometheus.Registerer) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ration_request_duration_seconds",
		Help:    "API request latency by transport, operation and outcome.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	}, []string{"transport", "op", "outcome"})
	if reg != nil {
		if err := reg.Register(h); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return are.ExistingCollector.(*prometheus.HistogramVec)
			}
		}
	}
	return h
}

type adminServer struct {
	rationv1.UnimplementedAdminServer
	status StatusFunc
}

func (a *adminServer) Status(ctx context.Context, req *rationv1.StatusRequest) (*rationv1.StatusResponse, error) {
	if a.status == nil {
		return nil, status.Error(codes.Unimplemented, "status is not available on this node")
	}
	return a.status(ctx, req)
}
