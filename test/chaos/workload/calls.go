package workload

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/ration/ration/client"
	"github.com/ration/ration/test/chaos/history"
)

// callInfo is what the gRPC layer tells about one client call: how many
// attempts it made, which node the last went to, and whether any request
// left for the wire. It travels in the call's context, which every
// attempt's context derives from.
type callInfo struct {
	attempts atomic.Int32
	node     atomic.Pointer[string]
	sent     atomic.Bool
}

type callInfoKey struct{}

func withCallInfo(ctx context.Context) (context.Context, *callInfo) {
	ci := &callInfo{}
	return context.WithValue(ctx, callInfoKey{}, ci), ci
}

func callInfoOf(ctx context.Context) *callInfo {
	ci, _ := ctx.Value(callInfoKey{}).(*callInfo)
	return ci
}

func countAttempts(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if ci := callInfoOf(ctx); ci != nil {
		ci.attempts.Add(1)
		t := cc.Target()
		ci.node.Store(&t)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// sentHandler notes when a request message was handed to the transport.
// A write whose attempts never got that far was not applied, whatever the
// error says: it is Failed, not Unknown.
type sentHandler struct{}

func (sentHandler) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (sentHandler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.OutPayload); ok {
		if ci := callInfoOf(ctx); ci != nil {
			ci.sent.Store(true)
		}
	}
}

func (sentHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (sentHandler) HandleConn(context.Context, stats.ConnStats) {}

func newClient(ctx context.Context, cfg Config) (*client.Client, error) {
	c, err := client.New(ctx, client.Options{
		Endpoints:   cfg.Endpoints,
		Timeout:     cfg.AttemptTimeout,
		RetryBudget: cfg.RetryBudget,
		Logger:      cfg.Logger,
		DialOptions: []grpc.DialOption{
			grpc.WithChainUnaryInterceptor(countAttempts),
			grpc.WithStatsHandler(sentHandler{}),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("workload: %w", err)
	}
	return c, nil
}

// writeOutcome classifies a write's error. Only refusals are definite
// answers. Everything else is Unknown once a request was sent: the server
// reports an outcome it does not know (its raft entry may still commit)
// as UNAVAILABLE, which the client passes on as ErrUnavailable, so
// unavailable does not mean not applied.
func writeOutcome(err error, sent bool) (history.Outcome, *history.Insufficient) {
	var ic *client.InsufficientCreditsError
	switch {
	case err == nil:
		return history.OK, nil
	case errors.As(err, &ic):
		return history.Refused, &history.Insufficient{DeductionID: ic.DeductionID, At: ic.At, Shortfall: ic.Shortfall}
	case errors.Is(err, client.ErrInsufficientCredits):
		return history.Refused, nil
	case errors.Is(err, client.ErrConflict):
		return history.Conflict, nil
	case errors.Is(err, client.ErrInvalidArgument):
		return history.Invalid, nil
	case !sent:
		return history.Failed, nil
	}
	return history.Unknown, nil
}

// maxErrorLen keeps error texts in the history readable.
const maxErrorLen = 300

func errorText(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > maxErrorLen {
		s = s[:maxErrorLen] + "..."
	}
	return s
}
