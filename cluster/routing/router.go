// Package routing sends each request to the node that leads the user's
// shard: it serves locally when this node is the leader, and otherwise
// forwards over gRPC to the leader, retrying with backoff while a shard
// moves or elects, within a bounded deadline. Writes keep their ids across
// every retry, so a write is applied once even when a reply is lost.
package routing

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ration/ration/actors"
	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/service"
)

// Locator is this node's view of where shards are led.
type Locator interface {
	ShardOf(user string) uint32
	// LocalLeader reports whether this node leads the shard and may serve.
	LocalLeader(shard uint32) bool
	// LeaderHint is the node this node believes leads the shard, if any.
	LeaderHint(shard uint32) (nodeID string, ok bool)
	// Candidates are nodes that may lead the shard: its replica set.
	Candidates(shard uint32) []string
	// GRPCAddr is a node's gRPC address.
	GRPCAddr(nodeID string) (string, bool)
}

// hopKey marks a forwarded request: its receiver serves it locally or
// answers unavailable, never forwards again, so forwarding cannot loop.
const hopKey = "x-ration-forwarded"

// Options tune a Router.
type Options struct {
	// Deadline bounds the retries of one request while its shard has no
	// reachable leader (default 10s); past it the caller gets unavailable.
	Deadline time.Duration
	// Dial opens a connection to a node (default: insecure gRPC).
	Dial func(addr string) (*grpc.ClientConn, error)
}

// Router is a service.Backend that routes by shard leadership.
type Router struct {
	local service.Backend
	loc   Locator
	opts  Options

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn // by address
	leader map[uint32]string           // last leader seen per shard
}

// New routes over loc, serving locally through local.
func New(local service.Backend, loc Locator, opts Options) *Router {
	if opts.Deadline <= 0 {
		opts.Deadline = 10 * time.Second
	}
	if opts.Dial == nil {
		opts.Dial = func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}
	}
	return &Router{local: local, loc: loc, opts: opts, conns: map[string]*grpc.ClientConn{}, leader: map[uint32]string{}}
}

// Close closes the connections to other nodes.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, c := range r.conns {
		errs = append(errs, c.Close())
	}
	clear(r.conns)
	return errors.Join(errs...)
}

func forwarded(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(hopKey)) > 0
}

// errNoRoute is a retryable failure to reach the shard's leader.
var errNoRoute = errors.New("no reachable leader")

// route runs local when this node leads the user's shard, else remote
// against the node believed to lead it, until one answers with something
// other than "not here", or the deadline passes.
func route[T any](ctx context.Context, r *Router, user string,
	local func(context.Context) (T, error),
	remote func(context.Context, rationv1.LedgerClient) (T, error)) (T, error) {
	var zero T
	shard := r.loc.ShardOf(user)
	if forwarded(ctx) {
		// One hop only: the sender retries with its own view.
		if !r.loc.LocalLeader(shard) {
			return zero, fmt.Errorf("%w: shard %d is not led here", service.ErrUnavailable, shard)
		}
		return local(ctx)
	}
	deadline := time.Now().Add(r.opts.Deadline)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var lastErr error = errNoRoute
	tried := map[string]bool{}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, attempt, deadline); err != nil {
				return zero, fmt.Errorf("%w: shard %d: %w (last: %v)", service.ErrUnavailable, shard, err, lastErr)
			}
		}
		if r.loc.LocalLeader(shard) {
			res, err := local(ctx)
			if err == nil || !retryable(err) {
				return res, err
			}
			lastErr = err
			continue
		}
		node := r.target(shard, tried)
		if node == "" {
			clear(tried) // every candidate failed once: go round again
			continue
		}
		client, err := r.client(node)
		if err != nil {
			tried[node] = true
			lastErr = err
			continue
		}
		res, err := remote(metadata.AppendToOutgoingContext(ctx, hopKey, "1"), client)
		if err == nil || !retryable(err) {
			r.setLeader(shard, node)
			return res, err
		}
		r.forgetLeader(shard, node)
		tried[node] = true
		lastErr = err
	}
}

// target picks the node to try: the cached leader, the local raft's hint,
// then each candidate in turn.
func (r *Router) target(shard uint32, tried map[string]bool) string {
	r.mu.Lock()
	cached := r.leader[shard]
	r.mu.Unlock()
	if cached != "" && !tried[cached] {
		return cached
	}
	if hint, ok := r.loc.LeaderHint(shard); ok && !tried[hint] {
		return hint
	}
	for _, c := range r.loc.Candidates(shard) {
		if !tried[c] {
			return c
		}
	}
	return ""
}

func (r *Router) setLeader(shard uint32, node string) {
	r.mu.Lock()
	r.leader[shard] = node
	r.mu.Unlock()
}

func (r *Router) forgetLeader(shard uint32, node string) {
	r.mu.Lock()
	if r.leader[shard] == node {
		delete(r.leader, shard)
	}
	r.mu.Unlock()
}

func (r *Router) client(node string) (rationv1.LedgerClient, error) {
	addr, ok := r.loc.GRPCAddr(node)
	if !ok {
		return nil, fmt.Errorf("node %s: address unknown", node)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.conns[addr]
	if !ok {
		var err error
		if c, err = r.opts.Dial(addr); err != nil {
			return nil, fmt.Errorf("node %s: %w", node, err)
		}
		r.conns[addr] = c
	}
	return rationv1.NewLedgerClient(c), nil
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

// sleep waits before attempt n with jittered exponential backoff, 20 ms to
// 500 ms, or fails once the deadline would pass.
func sleep(ctx context.Context, n int, deadline time.Time) error {
	d := time.Duration(rand.Int64N(int64(20*time.Millisecond) << min(n-1, 5)))
	d = min(d, 500*time.Millisecond)
	if time.Now().Add(d).After(deadline) {
		return context.DeadlineExceeded
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Grant routes a grant.
func (r *Router) Grant(ctx context.Context, user string, g ledger.Grant) (actors.WriteResult, error) {
	return route(ctx, r, user,
		func(ctx context.Context) (actors.WriteResult, error) { return r.local.Grant(ctx, user, g) },
		func(ctx context.Context, c rationv1.LedgerClient) (actors.WriteResult, error) {
			req := &rationv1.GrantRequest{User: user, Id: g.ID, Amount: g.Amount, Timestamp: g.Timestamp, Priority: g.Priority}
			if g.ExpiresAt != ledger.Never {
				exp := g.ExpiresAt
				req.ExpiresAt = &exp
			}
			res, err := c.Grant(ctx, req)
			if err != nil {
				return actors.WriteResult{}, fromStatus(err)
			}
			return actors.WriteResult{Duplicate: res.Duplicate, Version: res.Version}, nil
		})
}

// Deduct routes a deduction.
func (r *Router) Deduct(ctx context.Context, user string, d ledger.Deduction) (actors.WriteResult, error) {
	return route(ctx, r, user,
		func(ctx context.Context) (actors.WriteResult, error) { return r.local.Deduct(ctx, user, d) },
		func(ctx context.Context, c rationv1.LedgerClient) (actors.WriteResult, error) {
			res, err := c.Deduct(ctx, &rationv1.DeductRequest{User: user, Id: d.ID, Amount: d.Amount, Timestamp: d.Timestamp})
			if err != nil {
				return actors.WriteResult{}, fromStatus(err)
			}
			out := actors.WriteResult{Duplicate: res.Duplicate, Version: res.Version}
			for _, a := range res.Allocations {
				out.Allocations = append(out.Allocations, ledger.Allocation{GrantID: a.GrantId, Amount: a.Amount})
			}
			return out, nil
		})
}

func consistency(stale bool) rationv1.ReadConsistency {
	if stale {
		return rationv1.ReadConsistency_READ_CONSISTENCY_STALE
	}
	return rationv1.ReadConsistency_READ_CONSISTENCY_LINEARIZABLE
}

// Balance routes a balance read. Stale reads are served by the leader too:
// this node may not hold a replica of the shard.
func (r *Router) Balance(ctx context.Context, user string, at int64, stale bool) (actors.BalanceResult, error) {
	if served, res, err := readLocally(ctx, r, user, at, stale); served {
		return res, err
	}
	return route(ctx, r, user,
		func(ctx context.Context) (actors.BalanceResult, error) { return r.local.Balance(ctx, user, at, stale) },
		func(ctx context.Context, c rationv1.LedgerClient) (actors.BalanceResult, error) {
			res, err := c.GetBalance(ctx, &rationv1.GetBalanceRequest{User: user, At: &at, Consistency: consistency(stale)})
			if err != nil {
				return actors.BalanceResult{}, fromStatus(err)
			}
			out := actors.BalanceResult{Balance: res.Balance}
			for _, g := range res.Grants {
				exp := ledger.Never
				if g.ExpiresAt != nil {
					exp = *g.ExpiresAt
				}
				out.Grants = append(out.Grants, ledger.GrantBalance{ID: g.Id, Remaining: g.Remaining, Timestamp: g.Timestamp, ExpiresAt: exp, Priority: g.Priority})
			}
			return out, nil
		})
}

var kinds = map[rationv1.EventKind]ledger.EventKind{
	rationv1.EventKind_EVENT_KIND_GRANT:      ledger.KindGrant,
	rationv1.EventKind_EVENT_KIND_DEDUCTION:  ledger.KindDeduction,
	rationv1.EventKind_EVENT_KIND_EXPIRATION: ledger.KindExpiration,
}

// History routes a history page. The page position (from, skip) travels as
// a page token of the query [from, to), which the leader parses back.
func (r *Router) History(ctx context.Context, user string, from, to int64, skip, limit int, stale bool) (actors.Page, error) {
	return route(ctx, r, user,
		func(ctx context.Context) (actors.Page, error) {
			return r.local.History(ctx, user, from, to, skip, limit, stale)
		},
		func(ctx context.Context, c rationv1.LedgerClient) (actors.Page, error) {
			req := &rationv1.ListEventsRequest{User: user, From: &from, To: &to, Limit: int32(min(limit, service.MaxLimit)), Consistency: consistency(stale)}
			if skip > 0 {
				req.PageToken = service.PageToken(user, from, to, from, skip)
			}
			res, err := c.ListEvents(ctx, req)
			if err != nil {
				return actors.Page{}, fromStatus(err)
			}
			var p actors.Page
			for _, e := range res.Events {
				ev := ledger.Event{Kind: kinds[e.Kind], ID: e.Id, Timestamp: e.Timestamp, Amount: e.Amount, Priority: e.Priority, BalanceAfter: e.BalanceAfter, ExpiresAt: ledger.Never}
				if e.ExpiresAt != nil {
					ev.ExpiresAt = *e.ExpiresAt
				}
				if ev.Kind == ledger.KindDeduction {
					ev.Allocations = []ledger.Allocation{}
					for _, a := range e.Allocations {
						ev.Allocations = append(ev.Allocations, ledger.Allocation{GrantID: a.GrantId, Amount: a.Amount})
					}
				}
				p.Events = append(p.Events, ev)
			}
			if res.NextPageToken != "" {
				next, nextSkip, err := service.ParsePageToken(res.NextPageToken, user, from, to)
				if err != nil {
					return actors.Page{}, fmt.Errorf("%w: leader's page token: %v", service.ErrUnavailable, err)
				}
				p.Next, p.NextSkip, p.More = next, nextSkip, true
			}
			return p, nil
		})
}

// fromStatus turns a forwarded call's gRPC error back into the error the
// leader's service returned, so that this node reports it the same way.
func fromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%w: %v", service.ErrUnavailable, err)
	}
	switch st.Code() {
	case codes.InvalidArgument:
		ia := &ledger.InvalidArgumentError{Reason: st.Message()}
		for _, d := range st.Details() {
			if f, ok := d.(*rationv1.InvalidField); ok {
				ia.Field, ia.Reason = f.Field, f.Reason
			}
		}
		return ia
	case codes.AlreadyExists:
		return &remoteConflict{msg: st.Message()}
	case codes.FailedPrecondition:
		ie := &ledger.InsufficientCreditsError{}
		for _, d := range st.Details() {
			if ic, ok := d.(*rationv1.InsufficientCredits); ok {
				ie.DeductionID, ie.At, ie.Shortfall = ic.DeductionId, ic.At, ic.Shortfall
			}
		}
		return ie
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %v", context.DeadlineExceeded, st.Message())
	case codes.Canceled:
		return fmt.Errorf("%w: %v", context.Canceled, st.Message())
	}
	return fmt.Errorf("%w: %v", service.ErrUnavailable, st.Message())
}

// remoteConflict is an id conflict reported by another node: the message
// already names the id.
type remoteConflict struct{ msg string }

func (e *remoteConflict) Error() string { return e.msg }
func (e *remoteConflict) Unwrap() error { return ledger.ErrConflict }
