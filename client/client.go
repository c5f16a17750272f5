// Package client is the Go client of Ration's gRPC API (package ration.v1).
//
// It exposes the Ledger and Admin services with plain Go types, maps the
// API's error model to typed errors (see ErrInvalidArgument and friends),
// and retries transient failures with the same request. Because every write
// carries a caller-chosen id and the server applies an id at most once,
// re-sending a write after a timeout or an UNAVAILABLE error is always safe:
// a write that had in fact been applied comes back with Duplicate set.
//
// An "insufficient credits" answer is final for the call: when it follows
// an attempt that was sent and not answered, which the cluster could
// still apply until that attempt's deadline, the client waits the
// deadline out (plus 250 ms for clocks that disagree) and asks again. If
// the retry budget does not allow it, the call ends with
// ErrOutcomeUnknown instead. See docs/semantics.md.
//
// Routing: the client asks the cluster which node leads each shard (the
// ration.v1 Routing service) and sends each call for a user straight to
// the leader of the user's shard, sparing the hop a node takes to forward
// a call it does not lead. It keeps the table fresh in the background,
// from route hints in answers and after a routed attempt fails. Until it
// knows a shard's leader, or while it has no connection up to it, calls
// go to the Endpoints, which forward them: a stale table costs a forward,
// never an error. Batch splits its operations by leader and sends the
// parts in parallel. Options.DisableRouting turns all of this off.
//
// Coalescing: Grant and Deduct calls that run concurrently and go to the
// same node share Batch calls once Options.MaxInflight of them are in
// flight to that node, and balance reads share GetBalances calls the same
// way (coalesce.go). Each still gets exactly its own answer: both apply
// every request as if it had been sent alone.
//
// A Client is safe for concurrent use. Create one per process and Close it
// when done.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/internal/backoff"
)

// Defaults for the zero values of Options.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultRetryBudget = 10 * time.Second
	DefaultBackoffBase = 50 * time.Millisecond
	DefaultBackoffCap  = 2 * time.Second
)

// MaxBatchOps is the most operations the server takes in one Batch call.
// Client.Batch splits longer lists into calls of at most this many.
const MaxBatchOps = 1000

// suspectFor is how long an endpoint that just failed is passed over when
// another one is available: long enough for a retry to go elsewhere, short
// enough that a node which comes back gets traffic again soon.
const suspectFor = 2 * time.Second

// settleAfter is how long past an unanswered attempt's deadline a node may
// still take it up: the time the request spent reaching the node, plus
// how far the nodes' clocks may lag this one's (docs/semantics.md). Nodes
// start no write past its deadline; until then an attempt that got no
// answer may still apply, so a later attempt's "insufficient credits" is
// only trusted once every such attempt is this far past its deadline.
const settleAfter = 250 * time.Millisecond

// Options configures a Client.
type Options struct {
	// Endpoints are the host:port addresses of the nodes' gRPC API. Calls
	// that routing does not send to a leader are spread over them
	// round-robin, and a failed attempt is retried on the next one. Any
	// node serves any user. The routing table is fetched from them.
	// Required.
	Endpoints []string
	// DisableRouting sends every call to the Endpoints, which forward it
	// to the leader of its user's shard, instead of straight to that
	// leader. Routing dials the gRPC addresses the nodes advertise; where
	// the client cannot reach them (a cluster behind a load balancer),
	// calls go to the Endpoints anyway, and turning routing off saves the
	// futile dials.
	DisableRouting bool
	// RoutingRefresh is how often the routing table is fetched again when
	// nothing says it is stale. 0 means DefaultRoutingRefresh.
	RoutingRefresh time.Duration
	// TLS enables TLS with this configuration; nil means plaintext.
	TLS *tls.Config
	// Timeout bounds each attempt. 0 means DefaultTimeout; negative means
	// no per-attempt bound (only the caller's context).
	Timeout time.Duration
	// RetryBudget bounds how long transient failures are retried, counted
	// from the first attempt: no new attempt starts after it. 0 means
	// DefaultRetryBudget; negative disables retries.
	RetryBudget time.Duration
	// Backoff is the wait between attempts.
	Backoff Backoff
	// Logger receives a debug record for every retry. nil discards.
	Logger *slog.Logger
	// MaxInflight bounds the calls of each kind in flight to one node:
	// writes (Grant, Deduct) and balance reads. Past it, calls wait and
	// leave together, writes in one Batch call, reads in one GetBalances
	// (coalesce.go). 0 means DefaultMaxInflight; negative sends every
	// call alone.
	MaxInflight int
	// DialOptions are appended to the client's own when connecting, e.g.
	// for interceptors or a custom dialer.
	DialOptions []grpc.DialOption
}

// Backoff is exponential backoff with full jitter: before retry n (n >= 1)
// the client waits a uniformly random duration in [0, min(Cap, Base*2^(n-1))).
// Full jitter keeps many clients that failed together from retrying in
// lockstep against a node that is just electing a leader.
type Backoff struct {
	Base time.Duration // 0 means DefaultBackoffBase
	Cap  time.Duration // 0 means DefaultBackoffCap
}

// Delay returns a random wait before retry number retry (1 for the first
// retry), with the defaults for zero fields. It is exported for callers
// that retry on their own, e.g. over the HTTP API.
func (b Backoff) Delay(retry int) time.Duration {
	if b.Base <= 0 {
		b.Base = DefaultBackoffBase
	}
	if b.Cap <= 0 {
		b.Cap = DefaultBackoffCap
	}
	return backoff.Policy{Base: b.Base, Cap: b.Cap}.Delay(retry)
}

// Client talks to a Ration cluster.
type Client struct {
	eps      []*endpoint // Options.Endpoints
	rr       atomic.Uint64
	timeout  time.Duration
	budget   time.Duration
	backoff  Backoff
	log      *slog.Logger
	now      func() time.Time
	dialOpts []grpc.DialOption
	inflight int     // Options.MaxInflight, resolved
	routes   *router // nil when routing is disabled
	closed   atomic.Bool
}

type endpoint struct {
	addr    string
	conn    *grpc.ClientConn
	ledger  rationv1.LedgerClient
	admin   rationv1.AdminClient
	routing rationv1.RoutingClient
	// seed: one of Options.Endpoints, kept for the client's life.
	seed bool
	// suspectUntil is a UnixNano time before which the endpoint is skipped
	// if another one is available.
	suspectUntil atomic.Int64
	// wanted is a UnixNano time when the routing table last named the
	// endpoint's address (router.retire).
	wanted atomic.Int64
	// writes and reads coalesce the Grants and Deducts, and the balance
	// reads, sent to the endpoint.
	writes *writeCoalescer
	reads  *readCoalescer
}

// dial makes an endpoint for addr; gRPC connects in the background.
func (c *Client) dial(addr string) (*endpoint, error) {
	conn, err := grpc.NewClient(addr, c.dialOpts...)
	if err != nil {
		return nil, err
	}
	conn.Connect()
	ep := &endpoint{
		addr: addr, conn: conn,
		ledger:  rationv1.NewLedgerClient(conn),
		admin:   rationv1.NewAdminClient(conn),
		routing: rationv1.NewRoutingClient(conn),
	}
	ep.newCoalescers(c.inflight)
	return ep, nil
}

// New returns a Client for the endpoints in opts. It does not wait for
// connections: they are made in the background and on first use, so a
// cluster that is down makes calls fail (and retry), not New. ctx only
// bounds the setup.
func New(ctx context.Context, opts Options) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ration: new client: %w", err)
	}
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("ration: new client: no endpoints")
	}
	c := &Client{
		timeout: opts.Timeout,
		budget:  opts.RetryBudget,
		backoff: opts.Backoff,
		log:     opts.Logger,
		now:     time.Now,
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.budget == 0 {
		c.budget = DefaultRetryBudget
	}
	switch c.inflight = opts.MaxInflight; {
	case c.inflight == 0:
		c.inflight = DefaultMaxInflight
	case c.inflight < 0:
		c.inflight = 0
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	creds := insecure.NewCredentials()
	if opts.TLS != nil {
		creds = credentials.NewTLS(opts.TLS)
	}
	c.dialOpts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// gRPC's default reconnect backoff grows to two minutes; a node
		// restarting after a crash should get traffic again within seconds.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithStatsHandler(sentTracker{}),
	}, opts.DialOptions...)
	for _, addr := range opts.Endpoints {
		addr = strings.TrimSpace(addr)
		if addr == "" {
			continue
		}
		ep, err := c.dial(addr)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("ration: new client: endpoint %q: %w", addr, err)
		}
		ep.seed = true
		c.eps = append(c.eps, ep)
	}
	if len(c.eps) == 0 {
		return nil, errors.New("ration: new client: no endpoints")
	}
	if !opts.DisableRouting {
		c.routes = newRouter(c, opts.RoutingRefresh)
	}
	return c, nil
}

// Close releases the connections. In-flight calls fail.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	var errs []error
	if c.routes != nil {
		errs = c.routes.close()
	}
	for _, ep := range c.eps {
		if err := ep.conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", ep.addr, err))
		}
	}
	return errors.Join(errs...)
}

// pick returns the first endpoint at or after position i (round-robin) that
// is not suspect, or the one at i if all are, and its position.
func (c *Client) pick(i int) (*endpoint, int) {
	n := len(c.eps)
	now := c.now().UnixNano()
	for k := range n {
		ep := c.eps[(i+k)%n]
		if ep.suspectUntil.Load() <= now {
			return ep, i + k
		}
	}
	return c.eps[i%n], i
}

func (c *Client) start() int { return int(c.rr.Add(1) % uint64(len(c.eps))) }

// attemptContext is the context of one attempt, and the flag that says
// whether it was sent.
func (c *Client) attemptContext(ctx context.Context) (context.Context, context.CancelFunc, *atomic.Bool) {
	ctx, sent := withSentFlag(ctx)
	if c.timeout > 0 {
		ctx, cancel := context.WithTimeout(ctx, c.timeout)
		return ctx, cancel, sent
	}
	ctx, cancel := context.WithCancel(ctx)
	return ctx, cancel, sent
}

// transient reports whether a failed attempt may succeed if sent again, and
// whether a write it carried may have been applied anyway.
func transient(code codes.Code) (retry, maybeApplied bool) {
	switch code {
	case codes.Unavailable, codes.ResourceExhausted, codes.Aborted:
		return true, false
	case codes.DeadlineExceeded, codes.Canceled:
		// Only reached while the caller's context is alive: the attempt's
		// own timeout, or a server-side one. The request may have been
		// applied with the reply lost.
		return true, true
	}
	return false, false
}

// call describes one logical operation for retries and error reports.
type call struct {
	method string // for logs: "Grant", "GetBalance", ...
	write  bool
	op, id string // for OutcomeUnknownError
	// user is whose shard the call is for, which routing sends it to the
	// leader of; empty for calls any node answers alike (Status).
	user string
}

// retrier tracks one logical operation's attempts.
type retrier struct {
	c            *Client
	k            call
	deadline     time.Time
	attempts     int
	failures     int // transient failures, not counting a done ctx
	maybeApplied bool
	last         error
	open         openAttempts
}

// openAttempts tracks the attempts of one write that got no answer: until
// they are settled (past their deadline by settleAfter), a node may still
// apply one of them.
type openAttempts struct {
	until   time.Time // the latest deadline among them
	forever bool      // one had no deadline
}

// add records an unanswered attempt whose context was actx.
func (o *openAttempts) add(actx context.Context) {
	d, ok := actx.Deadline()
	switch {
	case !ok:
		o.forever = true
	case d.After(o.until):
		o.until = d
	}
}

// settledAt is when every recorded attempt is settled; ok is false if one
// never is.
func (o *openAttempts) settledAt() (t time.Time, ok bool) {
	if o.forever {
		return time.Time{}, false
	}
	if o.until.IsZero() {
		return time.Time{}, true
	}
	return o.until.Add(settleAfter), true
}

// join makes o cover the attempts of p too.
func (o *openAttempts) join(p openAttempts) {
	o.forever = o.forever || p.forever
	if p.until.After(o.until) {
		o.until = p.until
	}
}

// unsettled reports whether one of the attempts may still apply at now.
func (o *openAttempts) unsettled(now time.Time) bool {
	at, ok := o.settledAt()
	return !ok || now.Before(at)
}

// settle waits until every attempt o records is settled, so that the next
// attempt's refusal is final. It returns false, at once, if the budget or
// ctx does not allow the wait; the outcome is then unknown.
func (r *retrier) settle(ctx context.Context, o openAttempts) bool {
	at, ok := o.settledAt()
	if !ok || r.c.budget < 0 || at.After(r.deadline) {
		return false
	}
	if d, has := ctx.Deadline(); has && at.After(d) {
		return false
	}
	wait := at.Sub(r.c.now())
	if wait <= 0 {
		return true
	}
	r.c.log.DebugContext(ctx, "ration: refused while an earlier attempt may still apply; waiting it out",
		"method", r.k.method, "id", r.k.id, "wait", wait)
	return backoff.Sleep(ctx, wait, time.Time{}) == nil
}

func (c *Client) retrier(k call) *retrier {
	return &retrier{c: c, k: k, deadline: c.now().Add(c.budget)}
}

// again records a transient failure and sleeps before the next attempt. It
// returns false, without sleeping, when the budget or ctx does not allow
// another attempt.
func (r *retrier) again(ctx context.Context, ep *endpoint, err error, maybeApplied bool) bool {
	r.last = err
	r.failures++
	r.maybeApplied = r.maybeApplied || maybeApplied
	ep.suspectUntil.Store(r.c.now().Add(suspectFor).UnixNano())
	if r.c.budget < 0 {
		return false
	}
	wait := r.c.backoff.Delay(r.attempts)
	if backoff.Sleep(ctx, wait, r.deadline) != nil {
		return false
	}
	r.c.log.DebugContext(ctx, "ration: retrying", "method", r.k.method, "id", r.k.id,
		"endpoint", ep.addr, "attempt", r.attempts, "backoff", wait, "err", err)
	return true
}

// giveUp is the error after the last attempt: unknown outcome for a write
// that may have been applied, unavailable after transient failures, else
// the ctx's error. A done ctx is kept in the chain so that
// errors.Is(err, context.Canceled) holds.
func (r *retrier) giveUp(ctx context.Context) error {
	last := withCtxErr(ctx, r.last)
	switch {
	case r.k.write && r.maybeApplied:
		return &OutcomeUnknownError{Op: r.k.op, ID: r.k.id, Attempts: r.attempts, Err: last}
	case r.failures == 0:
		return fmt.Errorf("ration: %s: %w", strings.ToLower(r.k.method), last)
	}
	return &UnavailableError{Attempts: r.attempts, Err: last}
}

// withCtxErr is last, the last attempt's error, behind ctx's error once
// ctx is done.
func withCtxErr(ctx context.Context, last error) error {
	err := ctx.Err()
	switch {
	case err == nil:
		return last
	case last == nil:
		return err
	}
	return fmt.Errorf("%w (last attempt: %v)", err, last)
}

// do runs f until it succeeds, fails for good, or the retry budget or ctx
// runs out. f gets a per-attempt context, the endpoint to use and the call
// options to pass on (they collect route hints); it must send the same
// request every time, which is what makes retrying writes safe, whichever
// node each attempt goes to.
func (c *Client) do(ctx context.Context, k call, f func(context.Context, *endpoint, []grpc.CallOption) error) error {
	r := c.retrier(k)
	for pos := c.start(); ; pos++ {
		if ctx.Err() != nil {
			return r.giveUp(ctx)
		}
		// A closed connection fails with CANCELLED, which is otherwise
		// retried.
		if c.closed.Load() {
			return &prefixed{strings.ToLower(k.method), ErrClosed}
		}
		ep, at, node := c.target(k.user, pos)
		pos = at
		r.attempts++
		actx, cancel, sent := c.attemptContext(ctx)
		var md metadata.MD
		err := f(actx, ep, c.trailer(&md))
		cancel()
		c.learn(k.user, node, md, err)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			// The caller gave up mid-attempt: a write may have reached
			// the server.
			r.maybeApplied = true
			return r.giveUp(ctx)
		}
		retry, maybeApplied := transient(attemptCode(err))
		if !retry && k.write && r.maybeApplied && tlsFailure(err) {
			// An earlier attempt may have applied the write; this one
			// says nothing of it.
			r.last = err
			return r.giveUp(ctx)
		}
		if !retry {
			mapped := c.final(k, err)
			if k.write && errors.Is(mapped, ErrInsufficientCredits) && r.open.unsettled(c.now()) {
				// An earlier attempt got no answer and may still apply,
				// after this refusal: ask again once it cannot.
				r.last = fmt.Errorf("refused (%v) while an earlier attempt may still apply", mapped)
				if !r.settle(ctx, r.open) {
					r.maybeApplied = true
					return r.giveUp(ctx)
				}
				continue
			}
			return mapped
		}
		if k.write && sent.Load() {
			r.open.add(actx)
		}
		if !r.again(ctx, ep, err, maybeApplied) {
			return r.giveUp(ctx)
		}
	}
}

// final maps a non-retryable error: the API's refusals to typed errors,
// anything else wrapped with the method so that status.Code still works.
func (c *Client) final(k call, err error) error {
	if tlsFailure(err) {
		return fmt.Errorf("ration: %s: %w: %s (check the client's certificate, key and CA)", strings.ToLower(k.method), ErrTLS, causeText(err))
	}
	mapped := fromStatus(err)
	if mapped != err {
		return mapped
	}
	return fmt.Errorf("ration: %s: %w", strings.ToLower(k.method), err)
}
