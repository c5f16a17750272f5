package routing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/actors/actorstest"
	"github.com/ration/ration/httpapi"
	"github.com/ration/ration/internal/contract"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/service"
)

// world is the cluster as every fake node sees it: who leads each shard,
// and each node's directory. The actor cluster's hop is faked by remote,
// which serves on the leader's directory (cluster/actorcluster tests the
// real hop, node/ and test/e2e the two together).
type world struct {
	mu      sync.Mutex
	leaders map[uint32]string
	dirs    map[string]*actors.Directory
	shards  uint32
}

func (w *world) leaderOf(shard uint32) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leaders[shard]
}

type locator struct {
	w    *world
	self string
	rep  *actorstest.Replica
}

func (l locator) ShardOf(user string) uint32 { return l.rep.ShardOf(user) }

func (l locator) LocalLeader(shard uint32) bool { return l.w.leaderOf(shard) == l.self }

// remote is one attempt at the user's shard's leader, as the actor
// cluster makes it: a retryable failure when no node leads the shard, or
// when a fault is injected.
type remote struct {
	w    *world
	loc  locator
	hops atomic.Int64
	// fail fails this many attempts before they reach the leader;
	// lose this many after the leader served them (a lost reply).
	fail, lose atomic.Int32
}

var errInjected = fmt.Errorf("injected: %w", service.ErrUnavailable)

func attempt[T any](ctx context.Context, r *remote, user string, do func(*actors.Directory) (T, error)) (T, error) {
	var zero T
	r.hops.Add(1)
	if r.fail.Add(-1) >= 0 {
		return zero, errInjected
	}
	leader := r.w.leaderOf(r.loc.ShardOf(user))
	r.w.mu.Lock()
	dir, ok := r.w.dirs[leader]
	r.w.mu.Unlock()
	if !ok {
		return zero, fmt.Errorf("no leader: %w", service.ErrUnavailable)
	}
	res, err := do(dir)
	if r.lose.Add(-1) >= 0 {
		return zero, errInjected
	}
	return res, err
}

func (r *remote) Grant(ctx context.Context, user string, g ledger.Grant) (actors.WriteResult, error) {
	return attempt(ctx, r, user, func(d *actors.Directory) (actors.WriteResult, error) { return d.Grant(ctx, user, g) })
}

func (r *remote) Deduct(ctx context.Context, user string, dd ledger.Deduction) (actors.WriteResult, error) {
	return attempt(ctx, r, user, func(d *actors.Directory) (actors.WriteResult, error) { return d.Deduct(ctx, user, dd) })
}

func (r *remote) Balance(ctx context.Context, user string, at int64, stale bool) (actors.BalanceResult, error) {
	return attempt(ctx, r, user, func(d *actors.Directory) (actors.BalanceResult, error) { return d.Balance(ctx, user, at, stale) })
}

func (r *remote) History(ctx context.Context, user string, from, to int64, skip, limit int, stale bool) (actors.Page, error) {
	return attempt(ctx, r, user, func(d *actors.Directory) (actors.Page, error) {
		return d.History(ctx, user, from, to, skip, limit, stale)
	})
}

// Batch is one attempt at a shard's part of a batch, as the actor cluster
// makes it: the whole part fails, or the leader's directory answers each
// op.
func (r *remote) Batch(ctx context.Context, ops []actors.BatchOp) []actors.BatchResult {
	res, err := attempt(ctx, r, ops[0].User, func(d *actors.Directory) ([]actors.BatchResult, error) { return d.Batch(ctx, ops), nil })
	if err != nil {
		res = make([]actors.BatchResult, len(ops))
		for k := range res {
			res[k].Err = err
		}
	}
	return res
}

type fakeNode struct {
	router *Router
	remote *remote
	http   *httptest.Server
	rep    *actorstest.Replica // the node's own
}

// ownReplicas is a fake node's own replica, as the replicas it holds.
type ownReplicas struct{ rep *actorstest.Replica }

func (o ownReplicas) ShardOf(user string) uint32 { return o.rep.ShardOf(user) }

func (o ownReplicas) Replica(shard uint32) (actors.UserLogs, bool) { return o.rep.Shard(shard), true }

// hostedViews are views of a node's own replica that it holds (hosts) or
// not.
type hostedViews struct {
	*actors.Views
	hosts bool
}

func (h hostedViews) Hosts(uint32) bool { return h.hosts }

func replicasOf(n *fakeNode, hosts bool) Replicas {
	return hostedViews{Views: actors.NewViews(ownReplicas{n.rep}, 0, 0, nil), hosts: hosts}
}

// newWorld starts n in-process nodes. Every node's replica is its own, so
// a user's data lives where its shard's leader is: a request served by
// any other node must be routed to be right.
func newWorld(t *testing.T, n int) (*world, []*fakeNode) {
	w := &world{leaders: map[uint32]string{}, dirs: map[string]*actors.Directory{}, shards: 4}
	var nodes []*fakeNode
	var ids []string
	for i := 0; i < n; i++ {
		id := string(rune('a' + i))
		ids = append(ids, id)
		rep := actorstest.NewReplica(int(w.shards))
		dir := actors.New(rep, actors.Options{IdleTimeout: time.Minute})
		t.Cleanup(func() { _ = dir.Shutdown(context.Background()) })
		w.dirs[id] = dir
		loc := locator{w: w, self: id, rep: rep}
		rem := &remote{w: w, loc: loc}
		r := New(dir, loc, Options{Deadline: 2 * time.Second, Remote: rem})
		svc := service.New(r, nil)
		hs := httptest.NewServer(httpapi.Handler(svc, httpapi.Options{Registerer: prometheus.NewRegistry(), Gatherer: prometheus.NewRegistry()}))
		t.Cleanup(hs.Close)
		nodes = append(nodes, &fakeNode{router: r, remote: rem, http: hs, rep: rep})
	}
	for s := uint32(0); s < w.shards; s++ {
		w.leaders[s] = ids[int(s)%n]
	}
	return w, nodes
}

// The vectors, each step sent to another node in turn: every answer must
// be the leader's.
func TestVectorsThroughEveryNode(t *testing.T) {
	_, nodes := newWorld(t, 3)
	v, err := contract.Load()
	if err != nil {
		t.Fatal(err)
	}
	var bases []string
	for _, n := range nodes {
		bases = append(bases, n.http.URL)
	}
	if err := contract.Replay(http.DefaultClient, bases, v, "r-", 4); err != nil {
		t.Fatal(err)
	}
}

// Requests for shards this node leads never leave it; the rest go through
// the remote, once each when nothing fails.
func TestLocalOrRemote(t *testing.T) {
	w, nodes := newWorld(t, 2)
	a := nodes[0]
	ctx := context.Background()
	var local, remote int
	for i := 0; i < 20; i++ {
		user := fmt.Sprintf("u%d", i)
		if w.leaderOf(a.router.loc.ShardOf(user)) == "a" {
			local++
		} else {
			remote++
		}
		if _, err := a.router.Grant(ctx, user, ledger.Grant{ID: "g", Amount: 10, ExpiresAt: ledger.Never}); err != nil {
			t.Fatal(err)
		}
	}
	if local == 0 || remote == 0 {
		t.Fatalf("users: %d local, %d remote; want some of each", local, remote)
	}
	if got := a.remote.hops.Load(); got != int64(remote) {
		t.Fatalf("%d hops for %d users led elsewhere", got, remote)
	}
}

// Answers are final, not retried, and keep their details.
func TestAnswersAreFinal(t *testing.T) {
	w, nodes := newWorld(t, 2)
	a := nodes[0]
	ctx := context.Background()
	user := userLedBy(w, a, "b")
	if _, err := a.router.Grant(ctx, user, ledger.Grant{ID: "g", Amount: 5, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	hops := a.remote.hops.Load()
	_, err := a.router.Deduct(ctx, user, ledger.Deduction{ID: "big", Amount: 50, Timestamp: 20})
	var ie *ledger.InsufficientCreditsError
	if !errors.As(err, &ie) || ie.DeductionID != "big" || ie.Shortfall != 45 {
		t.Fatalf("insufficient: %v", err)
	}
	if _, err := a.router.Grant(ctx, user, ledger.Grant{ID: "g", Amount: 6, ExpiresAt: ledger.Never}); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("conflict: %v", err)
	}
	if got := a.remote.hops.Load() - hops; got != 2 {
		t.Fatalf("%d hops for two answers, want 2: answers are not retried", got)
	}
}

// A write whose reply is lost is retried with the same id: it is applied
// once, and the retry reports it as a duplicate.
func TestIdsKeptAcrossRetries(t *testing.T) {
	w, nodes := newWorld(t, 2)
	a := nodes[0]
	ctx := context.Background()
	user := userLedBy(w, a, "b")
	if _, err := a.router.Grant(ctx, user, ledger.Grant{ID: "g", Amount: 10, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	a.remote.fail.Store(2)
	a.remote.lose.Store(1)
	res, err := a.router.Deduct(ctx, user, ledger.Deduction{ID: "d", Amount: 3, Timestamp: 1})
	if err != nil || !res.Duplicate {
		t.Fatalf("deduct after two failed attempts and a lost reply: %+v %v; want the duplicate of the applied one", res, err)
	}
	b, err := a.router.Balance(ctx, user, 2, false)
	if err != nil || b.Balance != 7 {
		t.Fatalf("balance %+v %v, want 7: applied exactly once", b, err)
	}
}

// leaderless is a remote for the router's own retries, run in a synctest
// bubble: every attempt fails as "no leader" until up is set, then
// succeeds; with hang set, an attempt waits for its context to end.
type leaderless struct {
	service.Backend // only Grant is called
	up, hang        atomic.Bool
	hops            atomic.Int64
}

func (l *leaderless) Grant(ctx context.Context, _ string, _ ledger.Grant) (actors.WriteResult, error) {
	l.hops.Add(1)
	switch {
	case l.hang.Load():
		<-ctx.Done()
		return actors.WriteResult{}, ctx.Err()
	case l.up.Load():
		return actors.WriteResult{Version: 1}, nil
	}
	return actors.WriteResult{}, fmt.Errorf("no leader: %w", service.ErrUnavailable)
}

// nowhere leads nothing on this node.
type nowhere struct{}

func (nowhere) ShardOf(string) uint32   { return 0 }
func (nowhere) LocalLeader(uint32) bool { return false }

// A shard with no leader anywhere: the request is retried, with backoff,
// until the next attempt could not start before the deadline, then
// reported unavailable, never wrong. In the bubble the clock is the
// router's alone, so when it gave up is exact.
func TestNoLeaderIsUnavailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rem := &leaderless{}
		r := New(nil, nowhere{}, Options{Deadline: 2 * time.Second, Remote: rem})
		start := time.Now()
		_, err := r.Grant(t.Context(), "x", ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never})
		if !errors.Is(err, service.ErrUnavailable) {
			t.Fatalf("got %v, want unavailable", err)
		}
		if el := time.Since(start); el > 2*time.Second || el < 2*time.Second-routeBackoff.Cap {
			t.Fatalf("gave up after %v, want within one wait (%v) before the 2s deadline", el, routeBackoff.Cap)
		}
		if hops := rem.hops.Load(); hops < 4 {
			t.Fatalf("%d attempts in 2s: the router should retry with backoff", hops)
		}
		// Leadership appears during the retries: the request succeeds.
		time.AfterFunc(300*time.Millisecond, func() { rem.up.Store(true) })
		start = time.Now()
		if _, err := r.Grant(t.Context(), "y", ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never}); err != nil {
			t.Fatalf("after a leader appeared: %v", err)
		}
		if el := time.Since(start); el < 300*time.Millisecond {
			t.Fatalf("succeeded after %v, before the leader appeared", el)
		}
	})
}

// An attempt that never answers ends at the routing deadline, as
// unavailable (503), not as the caller's deadline.
func TestHungAttemptIsUnavailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rem := &leaderless{}
		rem.hang.Store(true)
		r := New(nil, nowhere{}, Options{Deadline: 2 * time.Second, Remote: rem})
		start := time.Now()
		_, err := r.Grant(t.Context(), "x", ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never})
		if service.ClassOf(err) != service.ClassUnavailable {
			t.Fatalf("got %v, want unavailable", err)
		}
		if el := time.Since(start); el != 2*time.Second {
			t.Errorf("gave up after %v, want at the 2s deadline", el)
		}
		// The caller's own, shorter deadline is the caller's.
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err = r.Grant(ctx, "x", ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want the caller's deadline", err)
		}
	})
}

// userLedBy finds a user whose shard, as n's router places it, node leads.
func userLedBy(w *world, n *fakeNode, node string) string {
	for i := 0; ; i++ {
		if u := fmt.Sprintf("u%d", i); w.leaderOf(n.router.loc.ShardOf(u)) == node {
			return u
		}
	}
}

// openErr is an attempt sent and not answered, startable until until.
type openErr struct{ until time.Time }

func (e openErr) Error() string        { return "sent, no reply" }
func (e openErr) Unwrap() error        { return service.ErrUnavailable }
func (e openErr) OpenUntil() time.Time { return e.until }

// heldOnce is a remote whose first deduction goes unanswered and reaches
// the leader later, within its deadline, after more credits were granted:
// what a forward held up in a partition does.
type heldOnce struct {
	*remote
	dir      *actors.Directory // the leader's
	openFor  time.Duration
	held     atomic.Bool
	lateDone chan error
	calls    []time.Time
	mu       sync.Mutex
}

func (h *heldOnce) Deduct(ctx context.Context, user string, d ledger.Deduction) (actors.WriteResult, error) {
	h.mu.Lock()
	h.calls = append(h.calls, time.Now())
	h.mu.Unlock()
	if h.held.CompareAndSwap(false, true) {
		until := time.Now().Add(h.openFor)
		go func() {
			time.Sleep(h.openFor / 2)
			if _, err := h.dir.Grant(context.Background(), user, ledger.Grant{ID: "more", Amount: 100, ExpiresAt: ledger.Never}); err != nil {
				h.lateDone <- err
				return
			}
			_, err := h.dir.Deduct(context.Background(), user, d)
			h.lateDone <- err
		}()
		return actors.WriteResult{}, openErr{until}
	}
	return h.remote.Deduct(ctx, user, d)
}

// A refusal that follows an attempt which was sent and not answered is not
// passed on while that attempt may still start: the router waits it out,
// asks again, and answers what the leader then says.
func TestRefusalWaitsOutOpenAttempts(t *testing.T) {
	w, nodes := newWorld(t, 2)
	a := nodes[0]
	ctx := context.Background()
	user := userLedBy(w, a, "b")
	if _, err := a.router.Grant(ctx, user, ledger.Grant{ID: "g", Amount: 100, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	h := &heldOnce{remote: a.remote, dir: w.dirs["b"], openFor: 200 * time.Millisecond, lateDone: make(chan error, 1)}
	r := New(w.dirs["a"], a.router.loc, Options{Deadline: 2 * time.Second, Remote: h})

	start := time.Now()
	res, err := r.Deduct(ctx, user, ledger.Deduction{ID: "d", Amount: 150, Timestamp: 10})
	if err != nil {
		t.Fatalf("deduct = %v; the held attempt applied it, so the answer is its duplicate", err)
	}
	if !res.Duplicate {
		t.Errorf("deduct = %+v, want the duplicate of the held attempt", res)
	}
	if err := <-h.lateDone; err != nil {
		t.Fatalf("the held attempt: %v", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.calls); n < 3 {
		t.Fatalf("%d attempts, want at least 3: held, refused, asked again", n)
	}
	last := h.calls[len(h.calls)-1]
	if settled := start.Add(h.openFor + clockAllowance); last.Before(settled) {
		t.Errorf("asked again %v after the start, before the held attempt settled", last.Sub(start))
	}
}

// A stale read on a node that holds a replica of the user's shard and
// does not lead it is answered from that replica, with no hop and even
// while the shard has no leader; the leader answers its own through the
// actor; a node without a replica asks the leader, as for a linearizable
// read.
func TestStaleReadsFromOwnReplica(t *testing.T) {
	w, nodes := newWorld(t, 2)
	a := nodes[0]
	ctx := context.Background()
	const user = "reader"
	shard := a.router.loc.ShardOf(user)
	setLeader := func(node string) {
		w.mu.Lock()
		w.leaders[shard] = node
		w.mu.Unlock()
	}
	// a leads at first: the grant lands in a's own replica.
	setLeader("a")
	if _, err := a.router.Grant(ctx, user, ledger.Grant{ID: "g", Amount: 10, Timestamp: 1, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	for _, hosts := range []bool{true, false} {
		r := New(w.dirs["a"], a.router.loc, Options{Deadline: 300 * time.Millisecond, Remote: a.remote, Replicas: replicasOf(a, hosts)})
		setLeader("a")
		hops := a.remote.hops.Load()
		if b, err := r.Balance(ctx, user, 5, true); err != nil || b.Balance != 10 {
			t.Fatalf("hosts=%v, leading: stale balance %+v, %v; want 10", hosts, b, err)
		}
		setLeader("nobody")
		b, err := r.Balance(ctx, user, 5, true)
		p, perr := r.History(ctx, user, 0, 100, 0, 10, true)
		if hosts {
			if err != nil || b.Balance != 10 || b.Version != 1 || perr != nil || len(p.Events) != 1 {
				t.Fatalf("no leader: stale balance %+v, %v, page %+v, %v; want 10 and one event from a's replica", b, err, p, perr)
			}
			if got := a.remote.hops.Load() - hops; got != 0 {
				t.Fatalf("%d hops for reads a's replica answers", got)
			}
		} else if service.ClassOf(err) != service.ClassUnavailable || service.ClassOf(perr) != service.ClassUnavailable {
			t.Fatalf("no replica here, no leader: %v, %v; want unavailable", err, perr)
		}
		if _, err := r.Balance(ctx, user, 5, false); service.ClassOf(err) != service.ClassUnavailable {
			t.Fatalf("hosts=%v: linearizable read without a leader: %v, want unavailable", hosts, err)
		}
	}
}
