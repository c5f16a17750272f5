package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/ration/ration/client"
	"github.com/ration/ration/internal/hist"
)

// Operation kinds and outcomes of the benchmark.
const (
	opGrant = iota
	opDeduct
	opBalance
	numOps
)

const (
	outcomeOK      = iota
	outcomeRefused // the server said no: invalid, conflict, insufficient credits
	outcomeError   // no answer: unavailable, timeout, transport
	numOutcomes
)

var (
	opNames      = [numOps]string{"grant", "deduct", "balance"}
	outcomeNames = [numOutcomes]string{"ok", "refused", "error"}
)

const (
	protoGRPC = "grpc"
	protoHTTP = "http"
)

type benchOptions struct {
	clients  int
	users    int
	duration time.Duration
	ops      int64
	mix      string
	protocol string
	httpAddr string
	rate     float64
	initial  int64
	batch    int
	stale    bool
}

func (a *App) benchCommand() *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench [--clients N] [--users N] [--duration D | --ops N] [--mix grant=10,deduct=80,balance=10] [--protocol grpc|http] [--rate N]",
		Short: "Load-test a cluster and report throughput and latency",
		Long: `Bench runs --clients concurrent clients against --users users named
bench-u0, bench-u1, ..., each of which first gets a large grant so that most
deductions succeed. It runs for --duration, or until --ops operations, with
operations drawn at random from --mix (relative weights). Every write has
a unique id.

--rate caps the total rate (operations per second) with a token bucket;
latencies are then measured from each operation's scheduled start, so a
server that falls behind shows as latency instead of as a silently lower
rate (up to a backlog of one second's worth of operations).

--protocol http uses the HTTP/JSON API at --http-addr instead of gRPC.

--batch N sends each grant or deduction call as one Batch of N operations
of that kind for random users (gRPC only), as a scheduler that collects
its charges would. Each operation counts on its own, with the latency of
its Batch call.

Progress is printed once a second on stderr. The report gives throughput
and latency percentiles per operation and outcome: ok, refused (the server
said no, e.g. insufficient credits) and error (no answer).`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			mix, err := parseMix(o.mix)
			if err != nil {
				return usageError{err}
			}
			switch {
			case o.clients < 1:
				return usageError{errors.New("--clients must be at least 1")}
			case o.users < 1:
				return usageError{errors.New("--users must be at least 1")}
			case o.ops < 0 || o.rate < 0:
				return usageError{errors.New("--ops and --rate must not be negative")}
			case o.ops == 0 && o.duration <= 0:
				return usageError{errors.New("need a positive --duration or --ops")}
			case o.initial < 1:
				return usageError{errors.New("--initial-credits must be positive")}
			case o.batch < 1 || o.batch > client.MaxBatchOps:
				return usageError{fmt.Errorf("--batch must be between 1 and %d", client.MaxBatchOps)}
			case o.batch > 1 && o.protocol != protoGRPC:
				return usageError{errors.New("--batch needs --protocol grpc")}
			}
			var drv benchDriver
			switch o.protocol {
			case protoGRPC:
				c, err := a.dial(cmd.Context())
				if err != nil {
					return err
				}
				drv = grpcDriver{c: c, stale: o.stale}
			case protoHTTP:
				drv = newHTTPDriver(o.httpAddr, o.clients, a.g.timeout, a.g.retryBudget)
			default:
				return usageError{fmt.Errorf("--protocol must be grpc or http, got %q", o.protocol)}
			}
			defer drv.close()
			return a.runBench(cmd.Context(), drv, o, mix)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.clients, "clients", 64, "concurrent clients")
	f.IntVar(&o.users, "users", 1000, "distinct users")
	f.DurationVar(&o.duration, "duration", 30*time.Second, "how long to run (ignored with --ops)")
	f.Int64Var(&o.ops, "ops", 0, "stop after this many operations instead of after --duration")
	f.StringVar(&o.mix, "mix", "grant=10,deduct=80,balance=10", "relative weights of grant, deduct and balance")
	f.StringVar(&o.protocol, "protocol", protoGRPC, "grpc or http")
	f.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "HTTP API address (host:port or URL) for --protocol http")
	f.Float64Var(&o.rate, "rate", 0, "total operations per second; 0 means as fast as the clients go")
	f.Int64Var(&o.initial, "initial-credits", 1<<40, "credits granted to each user before the run")
	f.BoolVar(&o.stale, "stale", false, "balance reads that any replica may answer (gRPC only)")
	f.IntVar(&o.batch, "batch", 1, "operations per grant or deduction call, sent as one Batch (gRPC only)")
	return cmd
}

// parseMix reads "grant=10,deduct=80,balance=10" into weights; missing
// kinds weigh 0.
func parseMix(s string) ([numOps]int, error) {
	var w [numOps]int
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return w, fmt.Errorf("--mix: %q is not name=weight", part)
		}
		n, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil || n < 0 {
			return w, fmt.Errorf("--mix: weight %q of %s is not a non-negative integer", val, name)
		}
		i := -1
		for k, on := range opNames {
			if on == strings.TrimSpace(name) {
				i = k
			}
		}
		if i < 0 {
			return w, fmt.Errorf("--mix: unknown operation %q (want grant, deduct, balance)", name)
		}
		w[i] = n
		total += n
	}
	if total == 0 {
		return w, errors.New("--mix: all weights are zero")
	}
	return w, nil
}

// benchDriver is one protocol's way of sending the benchmark's operations.
type benchDriver interface {
	setup(ctx context.Context, grants []client.Op, parallel int) error
	grant(ctx context.Context, user string, g client.Grant) error
	deduct(ctx context.Context, user string, d client.Deduction) error
	balance(ctx context.Context, user string) error
	// batch sends ops in one call and returns each one's error.
	batch(ctx context.Context, ops []client.Op) []error
	// routing says where the calls went; nil when the protocol does not
	// route.
	routing() *jsonRouting
	close() error
}

type grpcDriver struct {
	c     *client.Client
	stale bool
}

func (d grpcDriver) setup(ctx context.Context, ops []client.Op, _ int) error {
	res, err := d.c.Batch(ctx, ops)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}

func (d grpcDriver) grant(ctx context.Context, user string, g client.Grant) error {
	_, err := d.c.Grant(ctx, user, g)
	return err
}

func (d grpcDriver) deduct(ctx context.Context, user string, dd client.Deduction) error {
	_, err := d.c.Deduct(ctx, user, dd)
	return err
}

func (d grpcDriver) balance(ctx context.Context, user string) error {
	var opts []client.ReadOption
	if d.stale {
		opts = append(opts, client.Stale())
	}
	_, err := d.c.Balance(ctx, user, nil, opts...)
	return err
}

func (d grpcDriver) batch(ctx context.Context, ops []client.Op) []error {
	errs := make([]error, len(ops))
	res, err := d.c.Batch(ctx, ops)
	for i := range errs {
		switch {
		case err != nil:
			errs[i] = err
		case i < len(res):
			errs[i] = res[i].Err
		}
	}
	return errs
}

func (d grpcDriver) routing() *jsonRouting {
	rs := d.c.RouteStats()
	return &jsonRouting{Enabled: rs.Enabled, Direct: rs.Direct, Fallback: rs.Fallback, Redirected: rs.Redirected}
}

func (d grpcDriver) close() error { return d.c.Close() }

func classify(err error) int {
	switch {
	case err == nil:
		return outcomeOK
	case refusalReason(err) != "":
		return outcomeRefused
	}
	return outcomeError
}

// benchStats is shared by all clients: lock-free histograms and counters.
type benchStats struct {
	h        [numOps][numOutcomes]hist.Histogram
	total    atomic.Int64
	refused  atomic.Int64
	errors   atomic.Int64
	firstErr atomic.Pointer[error]
}

func (s *benchStats) record(op, outcome int, lat time.Duration, err error) {
	s.h[op][outcome].Record(int64(lat))
	s.total.Add(1)
	switch outcome {
	case outcomeRefused:
		s.refused.Add(1)
	case outcomeError:
		s.errors.Add(1)
		s.firstErr.CompareAndSwap(nil, &err)
	}
}

func (a *App) runBench(ctx context.Context, drv benchDriver, o benchOptions, mix [numOps]int) error {
	b, err := a.benchSetup(ctx, drv, o, mix)
	if err != nil {
		return err
	}
	// stopCtx ends the issuing of operations; those in flight finish
	// under ctx so that the end of the run does not count as errors.
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	if o.ops == 0 {
		t := time.AfterFunc(o.duration, stop)
		defer t.Stop()
	}
	if o.rate > 0 {
		b.bucket = newTokenBucket(o.rate, time.Second, time.Now())
	}

	var wg sync.WaitGroup
	start := time.Now()
	for ci := range o.clients {
		wg.Go(func() {
			c := benchClient{b: b, n: ci, rng: rand.New(rand.NewPCG(uint64(start.UnixNano()), uint64(ci)))}
			c.run(ctx, stopCtx)
		})
	}

	progressDone := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Go(func() { a.benchProgress(&b.st, start, progressDone) })
	wg.Wait()
	elapsed := time.Since(start)
	close(progressDone)
	pwg.Wait()

	if p := b.st.firstErr.Load(); p != nil {
		fmt.Fprintf(a.Stderr, "bench: first error: %v\n", *p)
	}
	rep := benchReport(&b.st, o, mix, elapsed)
	rep.Routing = drv.routing()
	if a.g.output == outJSON {
		return writeJSON(a.Stdout, rep)
	}
	printBenchTable(a.Stdout, rep)
	if ctx.Err() != nil {
		return fmt.Errorf("bench interrupted: %w", ctx.Err())
	}
	return nil
}

// benchRun is what the clients of a run share.
type benchRun struct {
	drv   benchDriver
	o     benchOptions
	users []string
	id    string // the run's, in every write's id
	// cum is the mix's cumulative weights; sum the total.
	cum    [numOps]int
	sum    int
	bucket *tokenBucket // nil without --rate
	issued atomic.Int64 // operations counted against --ops
	st     benchStats
}

// benchSetup names the users and grants each its initial credits.
func (a *App) benchSetup(ctx context.Context, drv benchDriver, o benchOptions, mix [numOps]int) (*benchRun, error) {
	b := &benchRun{drv: drv, o: o, users: make([]string, o.users)}
	for i := range b.users {
		b.users[i] = fmt.Sprintf("bench-u%d", i)
	}
	for i, w := range mix {
		b.sum += w
		b.cum[i] = b.sum
	}
	// One run id keeps every id unique across runs against one cluster.
	b.id = client.NewID()
	setupAt := a.Now().UnixMilli()
	grants := make([]client.Op, len(b.users))
	for i, u := range b.users {
		grants[i] = client.GrantOp(u, client.Grant{ID: b.id + "-init", Amount: o.initial, Timestamp: setupAt})
	}
	fmt.Fprintf(a.Stderr, "bench: granting %d credits to each of %d users...\n", o.initial, len(b.users))
	if err := drv.setup(ctx, grants, o.clients); err != nil {
		return nil, fmt.Errorf("bench setup: %w", err)
	}
	return b, nil
}

// benchClient is one of a run's concurrent clients.
type benchClient struct {
	b   *benchRun
	n   int // its number, in its operations' ids
	rng *rand.Rand
	seq int // the current operation's number, in its ids
}

// run issues operations until stop ends or the run's --ops are issued.
// They are sent under ctx, so those in flight at the end finish.
func (c *benchClient) run(ctx, stop context.Context) {
	o := &c.b.o
	for ; stop.Err() == nil; c.seq++ {
		r := c.rng.IntN(c.b.sum)
		op := 0
		for r >= c.b.cum[op] {
			op++
		}
		batch := o.batch > 1 && op != opBalance
		size := int64(1)
		if batch {
			size = int64(o.batch)
		}
		size, ok := c.b.claim(size)
		if !ok {
			return
		}
		begin, ok := c.b.pace(stop, size)
		if !ok {
			return
		}
		if batch {
			c.batch(ctx, op, size, begin)
		} else {
			c.one(ctx, op, begin)
		}
	}
}

// claim counts size more operations against --ops, fewer if fewer are
// left; false once none are. Not stop(): that would also drop the
// operations other clients have already counted and wait to send.
func (b *benchRun) claim(size int64) (int64, bool) {
	if b.o.ops == 0 {
		return size, true
	}
	prev := b.issued.Add(size) - size
	if prev >= b.o.ops {
		return 0, false
	}
	return min(size, b.o.ops-prev), true
}

// pace waits for size slots of --rate, which counts operations, and
// returns when the operations were scheduled to start: now without
// --rate, else the last slot's time. False if stop ends first.
func (b *benchRun) pace(stop context.Context, size int64) (time.Time, bool) {
	begin := time.Now()
	if b.bucket == nil {
		return begin, true
	}
	for range size {
		slot, err := b.bucket.take(stop)
		if err != nil {
			return time.Time{}, false
		}
		begin = slot
	}
	return begin, true
}

// batch sends size grants or deductions (op) for random users as one
// Batch, and records each with the call's latency.
func (c *benchClient) batch(ctx context.Context, op int, size int64, begin time.Time) {
	now := time.Now().UnixMilli()
	ops := make([]client.Op, size)
	for i := range ops {
		user := c.b.users[c.rng.IntN(len(c.b.users))]
		id := fmt.Sprintf("%s-%d-%d-%d", c.b.id, c.n, c.seq, i)
		if op == opGrant {
			ops[i] = client.GrantOp(user, client.Grant{ID: id, Amount: 1 + c.rng.Int64N(100), Timestamp: now})
		} else {
			ops[i] = client.DeductOp(user, client.Deduction{ID: id, Amount: 1 + c.rng.Int64N(10), Timestamp: now})
		}
	}
	errs := c.b.drv.batch(ctx, ops)
	lat := time.Since(begin)
	for _, err := range errs {
		c.b.st.record(op, classify(err), lat, err)
	}
}

// one sends one operation (op) for a random user and records it.
func (c *benchClient) one(ctx context.Context, op int, begin time.Time) {
	now := time.Now().UnixMilli()
	user := c.b.users[c.rng.IntN(len(c.b.users))]
	id := fmt.Sprintf("%s-%d-%d", c.b.id, c.n, c.seq)
	var err error
	switch op {
	case opGrant:
		err = c.b.drv.grant(ctx, user, client.Grant{ID: id, Amount: 1 + c.rng.Int64N(100), Timestamp: now})
	case opDeduct:
		err = c.b.drv.deduct(ctx, user, client.Deduction{ID: id, Amount: 1 + c.rng.Int64N(10), Timestamp: now})
	case opBalance:
		err = c.b.drv.balance(ctx, user)
	}
	c.b.st.record(op, classify(err), time.Since(begin), err)
}

// benchProgress prints a line a second until done.
func (a *App) benchProgress(st *benchStats, start time.Time, done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, lastAt := int64(0), start
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			total := st.total.Load()
			rate := float64(total-last) / now.Sub(lastAt).Seconds()
			last, lastAt = total, now
			fmt.Fprintf(a.Stderr, "bench: %5.0fs  %9.1f ops/s  total %d  refused %d  errors %d\n",
				now.Sub(start).Seconds(), rate, total, st.refused.Load(), st.errors.Load())
		}
	}
}

type jsonLatency struct {
	P50  int64 `json:"p50"`
	P99  int64 `json:"p99"`
	P999 int64 `json:"p999"`
	Max  int64 `json:"max"`
}

type jsonBenchRow struct {
	Op         string  `json:"op"`
	Outcome    string  `json:"outcome"`
	Count      uint64  `json:"count"`
	Throughput float64 `json:"ops_per_sec"`
	// Microseconds.
	LatencyUS jsonLatency `json:"latency_us"`
}

type jsonBench struct {
	Protocol   string         `json:"protocol"`
	Clients    int            `json:"clients"`
	Users      int            `json:"users"`
	Rate       float64        `json:"rate"`
	Batch      int            `json:"batch"`
	Mix        map[string]int `json:"mix"`
	ElapsedMS  int64          `json:"elapsed_ms"`
	Ops        int64          `json:"ops"`
	Throughput float64        `json:"ops_per_sec"`
	Refused    int64          `json:"refused"`
	Errors     int64          `json:"errors"`
	Results    []jsonBenchRow `json:"results"`
	Routing    *jsonRouting   `json:"routing,omitempty"`
}

// jsonRouting counts the attempts of a run (setup included) by where they
// went: see client.RouteStats. Enabled is false with --no-routing.
type jsonRouting struct {
	Enabled    bool   `json:"enabled"`
	Direct     uint64 `json:"direct"`
	Fallback   uint64 `json:"fallback"`
	Redirected uint64 `json:"redirected"`
}

func benchReport(st *benchStats, o benchOptions, mix [numOps]int, elapsed time.Duration) jsonBench {
	secs := elapsed.Seconds()
	rep := jsonBench{
		Protocol: o.protocol, Clients: o.clients, Users: o.users, Rate: o.rate, Batch: o.batch,
		Mix: map[string]int{}, ElapsedMS: elapsed.Milliseconds(), Ops: st.total.Load(),
		Throughput: float64(st.total.Load()) / secs, Refused: st.refused.Load(), Errors: st.errors.Load(),
		Results: []jsonBenchRow{},
	}
	for i, w := range mix {
		rep.Mix[opNames[i]] = w
	}
	us := func(ns int64) int64 { return (ns + 500) / 1000 }
	for op := range numOps {
		for oc := range numOutcomes {
			h := &st.h[op][oc]
			if h.Count() == 0 {
				continue
			}
			rep.Results = append(rep.Results, jsonBenchRow{
				Op: opNames[op], Outcome: outcomeNames[oc], Count: h.Count(), Throughput: float64(h.Count()) / secs,
				LatencyUS: jsonLatency{P50: us(h.Quantile(0.5)), P99: us(h.Quantile(0.99)), P999: us(h.Quantile(0.999)), Max: us(h.Max())},
			})
		}
	}
	return rep
}

func printBenchTable(w io.Writer, rep jsonBench) {
	batch := ""
	if rep.Batch > 1 {
		batch = fmt.Sprintf(" (writes in batches of %d)", rep.Batch)
	}
	fmt.Fprintf(w, "%s%s, %d clients, %d users, %.2fs: %d ops, %.1f ops/s, %d refused, %d errors\n",
		rep.Protocol, batch, rep.Clients, rep.Users, float64(rep.ElapsedMS)/1000, rep.Ops, rep.Throughput, rep.Refused, rep.Errors)
	tw := newTable(w)
	row(tw, "OP", "OUTCOME", "COUNT", "OPS/S", "P50", "P99", "P99.9", "MAX")
	d := func(us int64) string { return (time.Duration(us) * time.Microsecond).String() }
	for _, r := range rep.Results {
		row(tw, r.Op, r.Outcome, r.Count, fmt.Sprintf("%.1f", r.Throughput),
			d(r.LatencyUS.P50), d(r.LatencyUS.P99), d(r.LatencyUS.P999), d(r.LatencyUS.Max))
	}
	tw.Flush()
	switch r := rep.Routing; {
	case r == nil:
	case !r.Enabled:
		fmt.Fprintln(w, "routing: off (every call went to --addr, which forwards)")
	default:
		fmt.Fprintf(w, "routing: %d attempts straight to the leader, %d through --addr (leader unknown or not connected), %d redirected by a node that did not lead\n",
			r.Direct, r.Fallback, r.Redirected)
	}
}

// tokenBucket paces operations at a fixed rate. It hands out slots, the
// scheduled start times of operations, one interval apart. A caller behind
// schedule gets a slot in the past and goes at once, so clients catch up
// after a stall, but by at most capacity: older slots are dropped, as a
// full bucket drops tokens.
type tokenBucket struct {
	mu       sync.Mutex
	interval time.Duration
	capacity time.Duration
	next     time.Time
}

func newTokenBucket(rate float64, capacity time.Duration, start time.Time) *tokenBucket {
	return &tokenBucket{interval: time.Duration(float64(time.Second) / rate), capacity: capacity, next: start}
}

// take waits for the next slot and returns it.
func (b *tokenBucket) take(ctx context.Context) (time.Time, error) {
	b.mu.Lock()
	now := time.Now()
	if floor := now.Add(-b.capacity); b.next.Before(floor) {
		b.next = floor
	}
	slot := b.next
	b.next = b.next.Add(b.interval)
	b.mu.Unlock()
	if wait := slot.Sub(now); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-t.C:
		}
	}
	return slot, nil
}
