package client_test

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
	"github.com/ration/ration/client"
	"github.com/ration/ration/client/clienttest"
)

const t0 = int64(1_700_000_000_000)

// fast are options that keep retry tests quick while still exercising the
// backoff and budget logic.
func fast(addrs ...string) client.Options {
	return client.Options{
		Endpoints:   addrs,
		Timeout:     2 * time.Second,
		RetryBudget: 2 * time.Second,
		Backoff:     client.Backoff{Base: time.Millisecond, Cap: 10 * time.Millisecond},
	}
}

func newClient(t *testing.T, opts client.Options) *client.Client {
	t.Helper()
	c, err := client.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func setup(t *testing.T) (*clienttest.Server, *client.Client) {
	t.Helper()
	srv := clienttest.Start(t, clienttest.Options{Now: func() int64 { return t0 + 500 }})
	return srv, newClient(t, fast(srv.Addr()))
}

func TestHappyPath(t *testing.T) {
	srv, c := setup(t)
	ctx := context.Background()

	gr, err := c.Grant(ctx, "alice", client.Grant{ID: "g1", Amount: 100, Timestamp: t0, ExpiresAt: client.Int64(t0 + 1000)})
	if err != nil {
		t.Fatalf("Grant: %v", err)
	}
	if gr.Duplicate || gr.Version != 1 {
		t.Errorf("Grant = %+v, want first application at version 1", gr)
	}
	if _, err := c.Grant(ctx, "alice", client.Grant{ID: "g2", Amount: 50, Timestamp: t0, Priority: -1}); err != nil {
		t.Fatalf("Grant g2: %v", err)
	}
	dr, err := c.Deduct(ctx, "alice", client.Deduction{ID: "d1", Amount: 70, Timestamp: t0 + 10})
	if err != nil {
		t.Fatalf("Deduct: %v", err)
	}
	// Priority -1 draws first, then the expiring grant.
	want := []client.Allocation{{GrantID: "g2", Amount: 50}, {GrantID: "g1", Amount: 20}}
	if fmt.Sprint(dr.Allocations) != fmt.Sprint(want) || dr.Version != 3 || dr.Duplicate {
		t.Errorf("Deduct = %+v, want allocations %v at version 3", dr, want)
	}
	again, err := c.Deduct(ctx, "alice", client.Deduction{ID: "d1", Amount: 70, Timestamp: t0 + 10})
	if err != nil || !again.Duplicate || fmt.Sprint(again.Allocations) != fmt.Sprint(want) {
		t.Errorf("Deduct retry = %+v, %v; want duplicate with the same allocations", again, err)
	}

	b, err := c.Balance(ctx, "alice", nil)
	if err != nil {
		t.Fatalf("Balance: %v", err)
	}
	if b.At != t0+500 || b.Balance != 80 || len(b.Grants) != 1 || b.Grants[0].ID != "g1" ||
		b.Grants[0].Remaining != 80 || b.Grants[0].ExpiresAt == nil || *b.Grants[0].ExpiresAt != t0+1000 {
		t.Errorf("Balance(now) = %+v", b)
	}
	b, err = c.Balance(ctx, "alice", client.Int64(t0+1000), client.Stale())
	if err != nil || b.Balance != 0 || len(b.Grants) != 0 {
		t.Errorf("Balance(after expiry) = %+v, %v; want 0", b, err)
	}
	if b, err := c.Balance(ctx, "nobody", nil); err != nil || b.Balance != 0 || b.User != "nobody" {
		t.Errorf("Balance(unknown user) = %+v, %v", b, err)
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.NodeID != "fake-1" || len(st.Nodes) != 1 || st.Nodes[0].GRPCAddr != srv.Addr() ||
		len(st.Shards) != 1 || st.Shards[0].AppliedIndex != 3 || st.Shards[0].Users != 1 {
		t.Errorf("Status = %+v", st)
	}
}

// Status carries each shard's target replica set; a node that places
// nothing reports none.
func TestStatusTarget(t *testing.T) {
	srv, c := setup(t)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil || len(st.Shards) != 1 || st.Shards[0].Target != nil {
		t.Fatalf("Status = %+v, %v; want one shard without a target", st, err)
	}
	srv.SetStatus(func(r *rationv1.StatusResponse) {
		r.Shards[0].Replicas = []string{"fake-1", "n2"}
		r.Shards[0].Target = []string{"n2", "n3"}
	})
	st, err = c.Status(ctx)
	if err != nil || len(st.Shards) != 1 || strings.Join(st.Shards[0].Target, ",") != "n2,n3" ||
		strings.Join(st.Shards[0].Replicas, ",") != "fake-1,n2" {
		t.Fatalf("Status = %+v, %v; want target n2,n3", st, err)
	}
}

func TestEventsPaging(t *testing.T) {
	_, c := setup(t)
	ctx := context.Background()
	for i := range 5 {
		if _, err := c.Grant(ctx, "u", client.Grant{ID: fmt.Sprintf("g%d", i), Amount: 10, Timestamp: t0 + int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Grant(ctx, "u", client.Grant{ID: "exp", Amount: 5, Timestamp: t0, ExpiresAt: client.Int64(t0 + 100)}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Deduct(ctx, "u", client.Deduction{ID: fmt.Sprintf("d%d", i), Amount: 3, Timestamp: t0 + 10 + int64(i)}); err != nil {
			t.Fatal(err)
		}
	}

	page, err := c.Events(ctx, "u", client.EventsQuery{Limit: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 4 || page.NextPageToken == "" {
		t.Fatalf("first page = %d events, token %q; want 4 and a token", len(page.Events), page.NextPageToken)
	}

	var got []string
	for e, err := range c.AllEvents(ctx, "u", client.EventsQuery{Limit: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s:%s:%d", e.Kind, e.ID, e.BalanceAfter))
	}
	// 6 grants, 3 deductions, and the scheduled expiration of "exp",
	// which forfeits nothing: expiring soonest, it was drawn first.
	want := "grant:g0:10 grant:exp:15 grant:g1:25 grant:g2:35 grant:g3:45 grant:g4:55 " +
		"deduction:d0:52 deduction:d1:49 deduction:d2:46 expiration:exp:46"
	if strings.Join(got, " ") != want {
		t.Errorf("AllEvents =\n %s\nwant\n %s", strings.Join(got, " "), want)
	}

	// A range, and stopping the iteration early.
	n := 0
	for e, err := range c.AllEvents(ctx, "u", client.EventsQuery{From: client.Int64(t0 + 10), To: client.Int64(t0 + 100), Limit: 1}) {
		if err != nil || e.Kind != client.EventDeduction {
			t.Fatalf("ranged event = %+v, %v", e, err)
		}
		if n++; n == 2 {
			break
		}
	}
	if n != 2 {
		t.Errorf("early break: saw %d events", n)
	}

	// A token reused with another range is refused with the field named.
	_, err = c.Events(ctx, "u", client.EventsQuery{From: client.Int64(1), Limit: 4, PageToken: page.NextPageToken})
	var inv *client.InvalidArgumentError
	if !errors.As(err, &inv) || inv.Field != "page_token" {
		t.Errorf("mismatched page token: err = %v, want InvalidArgumentError{page_token}", err)
	}
	for _, err := range c.AllEvents(ctx, "u", client.EventsQuery{Limit: -1}) {
		if !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("negative limit: err = %v", err)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	srv, c := setup(t)
	ctx := context.Background()
	if _, err := c.Grant(ctx, "bob", client.Grant{ID: "g", Amount: 10, Timestamp: t0}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		call  func() error
		is    error
		field string
	}{
		{"zero amount", func() error {
			_, err := c.Grant(ctx, "bob", client.Grant{ID: "x", Amount: 0, Timestamp: t0})
			return err
		}, client.ErrInvalidArgument, "amount"},
		{"bad id", func() error {
			_, err := c.Deduct(ctx, "bob", client.Deduction{ID: "no spaces", Amount: 1, Timestamp: t0})
			return err
		}, client.ErrInvalidArgument, "id"},
		{"bad user", func() error {
			_, err := c.Grant(ctx, "b/o/b", client.Grant{ID: "x", Amount: 1, Timestamp: t0})
			return err
		}, client.ErrInvalidArgument, "user"},
		{"expiry before start", func() error {
			_, err := c.Grant(ctx, "bob", client.Grant{ID: "x", Amount: 1, Timestamp: t0, ExpiresAt: client.Int64(t0)})
			return err
		}, client.ErrInvalidArgument, "expires_at"},
		{"conflict", func() error {
			_, err := c.Grant(ctx, "bob", client.Grant{ID: "g", Amount: 11, Timestamp: t0})
			return err
		}, client.ErrConflict, ""},
		{"insufficient", func() error {
			_, err := c.Deduct(ctx, "bob", client.Deduction{ID: "d", Amount: 25, Timestamp: t0 + 1})
			return err
		}, client.ErrInsufficientCredits, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := srv.Calls("Grant") + srv.Calls("Deduct")
			err := tt.call()
			if !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want %v", err, tt.is)
			}
			if n := srv.Calls("Grant") + srv.Calls("Deduct") - before; n != 1 {
				t.Errorf("%d calls, want 1: refusals must not be retried", n)
			}
			if tt.field != "" {
				var inv *client.InvalidArgumentError
				if !errors.As(err, &inv) || inv.Field != tt.field || inv.Reason == "" {
					t.Errorf("err = %#v, want field %q with a reason", err, tt.field)
				}
			}
		})
	}

	// Each error says its class and field once.
	_, err := c.Deduct(ctx, "bob", client.Deduction{ID: "no spaces", Amount: 1, Timestamp: t0})
	if got, want := fmt.Sprint(err), "ration: invalid argument: id: may only contain A-Z a-z 0-9 . _ : @ -"; got != want {
		t.Errorf("invalid id reads %q, want %q", got, want)
	}

	_, err = c.Deduct(ctx, "bob", client.Deduction{ID: "d", Amount: 25, Timestamp: t0 + 1})
	var ins *client.InsufficientCreditsError
	if !errors.As(err, &ins) || *ins != (client.InsufficientCreditsError{DeductionID: "d", At: t0 + 1, Shortfall: 15}) {
		t.Errorf("insufficient detail = %+v", ins)
	}

	// Codes outside the API's model are passed through, not retried.
	srv.FailNextWith(1, codes.PermissionDenied)
	_, err = c.Balance(ctx, "bob", nil)
	if status.Code(err) != codes.PermissionDenied || srv.Calls("GetBalance") != 1 {
		t.Errorf("PermissionDenied: err = %v after %d calls", err, srv.Calls("GetBalance"))
	}
}

func TestRetryKeepsID(t *testing.T) {
	srv, c := setup(t)
	ctx := context.Background()
	srv.FailNext(3)
	res, err := c.Grant(ctx, "u", client.Grant{ID: "g", Amount: 10, Timestamp: t0})
	if err != nil {
		t.Fatalf("Grant after 3 failures: %v", err)
	}
	if res.Duplicate || srv.Calls("Grant") != 4 || srv.Version("u") != 1 {
		t.Errorf("res = %+v after %d calls, version %d", res, srv.Calls("Grant"), srv.Version("u"))
	}
	for _, code := range []codes.Code{codes.ResourceExhausted, codes.Aborted} {
		srv.FailNextWith(1, code)
		if _, err := c.Balance(ctx, "u", nil); err != nil {
			t.Errorf("Balance after one %v: %v", code, err)
		}
	}
}

func TestLostReplyRetriedAsDuplicate(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	opts := fast(srv.Addr())
	opts.Timeout = 100 * time.Millisecond
	c := newClient(t, opts)
	ctx := context.Background()

	if _, err := c.Grant(ctx, "u", client.Grant{ID: "g", Amount: 10, Timestamp: t0}); err != nil {
		t.Fatal(err)
	}
	srv.DropNextReplies(1)
	res, err := c.Deduct(ctx, "u", client.Deduction{ID: "d", Amount: 4, Timestamp: t0 + 1})
	if err != nil {
		t.Fatalf("Deduct: %v", err)
	}
	if !res.Duplicate || len(res.Allocations) != 1 || res.Allocations[0] != (client.Allocation{GrantID: "g", Amount: 4}) {
		t.Errorf("Deduct = %+v, want the duplicate of the applied first attempt", res)
	}
	if srv.Calls("Deduct") != 2 || srv.Version("u") != 2 || srv.Balance("u", t0+1) != 6 {
		t.Errorf("%d calls, version %d, balance %d; want 2 calls and one application",
			srv.Calls("Deduct"), srv.Version("u"), srv.Balance("u", t0+1))
	}
}

func TestBudgetExhausted(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	opts := fast(srv.Addr())
	opts.Timeout = 50 * time.Millisecond
	opts.RetryBudget = 300 * time.Millisecond
	c := newClient(t, opts)
	ctx := context.Background()

	t.Run("unavailable", func(t *testing.T) {
		srv.FailNext(1 << 30)
		defer srv.FailNext(0)
		start := time.Now()
		_, err := c.Grant(ctx, "u", client.Grant{ID: "g", Amount: 1, Timestamp: t0})
		var ue *client.UnavailableError
		if !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &ue) || ue.Attempts < 2 {
			t.Fatalf("err = %v, want ErrUnavailable after several attempts", err)
		}
		if errors.Is(err, client.ErrOutcomeUnknown) {
			t.Errorf("refused attempts cannot have applied anything: %v", err)
		}
		if status.Code(err) != codes.Unavailable {
			t.Errorf("status.Code = %v, want the last attempt's Unavailable", status.Code(err))
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("gave up after %v, budget is 300ms", d)
		}
		if srv.Version("u") != 0 {
			t.Errorf("version = %d, want nothing applied", srv.Version("u"))
		}
	})

	t.Run("outcome unknown", func(t *testing.T) {
		srv.DropNextReplies(1 << 30)
		defer srv.DropNextReplies(0)
		_, err := c.Grant(ctx, "u", client.Grant{ID: "g2", Amount: 1, Timestamp: t0})
		var ou *client.OutcomeUnknownError
		if !errors.Is(err, client.ErrOutcomeUnknown) || !errors.As(err, &ou) || ou.ID != "g2" || ou.Op != "grant" {
			t.Fatalf("err = %v, want ErrOutcomeUnknown for grant g2", err)
		}
		if !strings.Contains(err.Error(), "retrying with the same id is safe") {
			t.Errorf("message %q does not say retrying is safe", err)
		}
		if srv.Version("u") != 1 {
			t.Errorf("version = %d, want the grant applied once", srv.Version("u"))
		}
		// Reads have no outcome to lose: a timed-out read is unavailable.
		_, err = c.Balance(ctx, "u", nil)
		if !errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrOutcomeUnknown) {
			t.Errorf("read err = %v, want ErrUnavailable", err)
		}
	})

	t.Run("caller deadline", func(t *testing.T) {
		srv.FailNext(1 << 30)
		defer srv.FailNext(0)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		_, err := c.Deduct(ctx, "u", client.Deduction{ID: "d", Amount: 1, Timestamp: t0})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want the caller's deadline in the chain", err)
		}
	})

	t.Run("no retries", func(t *testing.T) {
		opts := fast(srv.Addr())
		opts.RetryBudget = -1
		c := newClient(t, opts)
		srv.FailNext(1)
		before := srv.Calls("GetBalance")
		if _, err := c.Balance(ctx, "u", nil); !errors.Is(err, client.ErrUnavailable) {
			t.Errorf("err = %v", err)
		}
		if n := srv.Calls("GetBalance") - before; n != 1 {
			t.Errorf("%d attempts with retries disabled", n)
		}
	})
}

// deadAddr is a local address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestFailover(t *testing.T) {
	a := clienttest.Start(t, clienttest.Options{NodeID: "a"})
	b := clienttest.Start(t, clienttest.Options{NodeID: "b"})
	c := newClient(t, fast(deadAddr(t), a.Addr(), b.Addr()))
	ctx := context.Background()

	seen := map[string]int{}
	for range 12 {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatalf("Status with one dead endpoint: %v", err)
		}
		seen[st.NodeID]++
	}
	if seen["a"] == 0 || seen["b"] == 0 {
		t.Errorf("answers by node = %v, want both live nodes used round-robin", seen)
	}

	a.Stop()
	for i := range 6 {
		st, err := c.Status(ctx)
		if err != nil || st.NodeID != "b" {
			t.Fatalf("call %d with a stopped: %+v, %v", i, st, err)
		}
	}
	a.Restart(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.NodeID == "a" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("restarted node a never answered again")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBatch(t *testing.T) {
	srv, c := setup(t)
	ctx := context.Background()
	ops := []client.Op{
		client.GrantOp("u1", client.Grant{ID: "g", Amount: 10, Timestamp: t0}),
		client.DeductOp("u1", client.Deduction{ID: "d1", Amount: 4, Timestamp: t0 + 1}),
		client.DeductOp("u1", client.Deduction{ID: "d2", Amount: 40, Timestamp: t0 + 2}),
		client.GrantOp("u2", client.Grant{ID: "g", Amount: -1, Timestamp: t0}),
		{User: "u2"},
		client.GrantOp("u2", client.Grant{ID: "g2", Amount: 3, Timestamp: t0}),
	}
	srv.FailUser("u2", 2)
	res, err := c.Batch(ctx, ops)
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if len(res) != len(ops) {
		t.Fatalf("%d results for %d ops", len(res), len(ops))
	}
	if res[0].Grant == nil || res[0].Grant.Version != 1 {
		t.Errorf("res[0] = %+v", res[0])
	}
	if res[1].Deduct == nil || len(res[1].Deduct.Allocations) != 1 {
		t.Errorf("res[1] = %+v", res[1])
	}
	var ins *client.InsufficientCreditsError
	if !errors.As(res[2].Err, &ins) || ins.DeductionID != "d2" || ins.Shortfall != 34 {
		t.Errorf("res[2] = %+v, want insufficient by 34", res[2])
	}
	var inv *client.InvalidArgumentError
	if !errors.As(res[3].Err, &inv) || inv.Field != "amount" {
		t.Errorf("res[3] = %+v, want invalid amount", res[3])
	}
	// The server's message already says "invalid argument: amount: ".
	if got, want := res[3].Err.Error(), "ration: invalid argument: amount: must be positive, got -1"; got != want {
		t.Errorf("res[3] reads %q, want %q", got, want)
	}
	if !errors.As(res[4].Err, &inv) || inv.Field != "op" {
		t.Errorf("res[4] = %+v, want invalid op", res[4])
	}
	if res[5].Grant == nil || res[5].Grant.Duplicate {
		t.Errorf("res[5] = %+v, want applied after the per-user retries", res[5])
	}
	// First call: u2's two ops fail (2 faults). Second: only g2 re-sent... the
	// invalid ones are definitive at once, so exactly g2 needs retries.
	if n := srv.Calls("Batch"); n < 2 || n > 3 {
		t.Errorf("%d Batch calls, want the transient ops re-sent", n)
	}
	if srv.Version("u1") != 2 || srv.Version("u2") != 1 {
		t.Errorf("versions u1=%d u2=%d, want 2 and 1", srv.Version("u1"), srv.Version("u2"))
	}

	// A lost reply: the re-sent batch comes back as duplicates.
	srv.DropNextReplies(1)
	opts := fast(srv.Addr())
	opts.Timeout = 100 * time.Millisecond
	c2 := newClient(t, opts)
	res, err = c2.Batch(ctx, []client.Op{client.GrantOp("u3", client.Grant{ID: "g", Amount: 5, Timestamp: t0})})
	if err != nil || res[0].Grant == nil || !res[0].Grant.Duplicate || srv.Version("u3") != 1 {
		t.Errorf("lost batch reply: %+v, %v", res, err)
	}
}

func TestBatchPartialOutage(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	opts := fast(srv.Addr())
	opts.RetryBudget = 200 * time.Millisecond
	c := newClient(t, opts)
	srv.FailUser("down", 1<<30)
	res, err := c.Batch(context.Background(), []client.Op{
		client.GrantOp("up", client.Grant{ID: "g", Amount: 5, Timestamp: t0}),
		client.GrantOp("down", client.Grant{ID: "g", Amount: 5, Timestamp: t0}),
	})
	if !errors.Is(err, client.ErrUnavailable) || !strings.Contains(err.Error(), "1 of 2") {
		t.Errorf("err = %v, want ErrUnavailable for 1 of 2 operations", err)
	}
	if res[0].Err != nil || res[0].Grant == nil || !errors.Is(res[1].Err, client.ErrUnavailable) {
		t.Errorf("results = %+v", res)
	}
	if srv.Version("up") != 1 {
		t.Errorf("healthy user's op applied %d times", srv.Version("up"))
	}
}

func TestBatchSplits(t *testing.T) {
	srv, c := setup(t)
	ops := make([]client.Op, 2500)
	for i := range ops {
		ops[i] = client.GrantOp(fmt.Sprintf("u%d", i%7), client.Grant{ID: fmt.Sprintf("g%d", i), Amount: 1, Timestamp: t0})
	}
	res, err := c.Batch(context.Background(), ops)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || r.Grant == nil {
			t.Fatalf("res[%d] = %+v", i, r)
		}
	}
	if n := srv.Calls("Batch"); n != 3 {
		t.Errorf("%d Batch calls for 2500 ops, want 3", n)
	}
}

func TestStaleAndRequestsSent(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	var (
		mu   sync.Mutex
		reqs []any
	)
	opts := fast(srv.Addr())
	opts.DialOptions = []grpc.DialOption{grpc.WithUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
			// Not the routing table's requests, which the client sends
			// in the background.
			if strings.HasPrefix(method, "/ration.v1.Ledger/") {
				mu.Lock()
				reqs = append(reqs, req)
				mu.Unlock()
			}
			return invoker(ctx, method, req, reply, cc, o...)
		})}
	c := newClient(t, opts)
	ctx := context.Background()
	srv.FailNext(2)
	if _, err := c.Grant(ctx, "u", client.Grant{ID: "g", Amount: 1, Timestamp: t0, ExpiresAt: client.Int64(t0 + 5), Priority: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Balance(ctx, "u", nil, client.Stale()); err != nil {
		t.Fatal(err)
	}
	var kinds []client.EventKind
	for e, err := range c.AllEvents(ctx, "u", client.EventsQuery{}, client.Stale()) {
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, e.Kind)
		if e.Kind == client.EventGrant && (e.ExpiresAt == nil || *e.ExpiresAt != t0+5 || e.Priority != 3) {
			t.Errorf("grant event = %+v", e)
		}
	}
	if len(kinds) != 2 || kinds[0] != client.EventGrant || kinds[1] != client.EventExpiration {
		t.Errorf("event kinds = %v, want grant, expiration", kinds)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reqs) != 5 {
		t.Fatalf("%d requests, want 3 grant attempts, 1 balance, 1 events", len(reqs))
	}
	first := reqs[0].(*rationv1.GrantRequest)
	for _, r := range reqs[1:3] {
		if r != first {
			t.Errorf("retry sent %v, want the very same request %v", r, first)
		}
	}
	if g := reqs[3].(*rationv1.GetBalanceRequest); g.GetConsistency() != rationv1.ReadConsistency_READ_CONSISTENCY_STALE || g.At != nil {
		t.Errorf("balance request = %v", g)
	}
	if l := reqs[4].(*rationv1.ListEventsRequest); l.GetConsistency() != rationv1.ReadConsistency_READ_CONSISTENCY_STALE {
		t.Errorf("events request = %v", l)
	}
}

func TestConcurrentUse(t *testing.T) {
	srv, c := setup(t)
	ctx := context.Background()
	if _, err := c.Grant(ctx, "u", client.Grant{ID: "g", Amount: 1000, Timestamp: t0}); err != nil {
		t.Fatal(err)
	}
	srv.FailNext(5)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			id := client.NewID()
			for range 2 { // the second send is a caller-level retry
				if _, err := c.Deduct(ctx, "u", client.Deduction{ID: id, Amount: 1, Timestamp: t0 + int64(i)}); err != nil {
					t.Errorf("Deduct: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if b := srv.Balance("u", t0+100); b != 980 {
		t.Errorf("balance = %d, want 980: each id applied once", b)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := client.New(context.Background(), client.Options{}); err == nil {
		t.Error("New without endpoints succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := client.New(ctx, client.Options{Endpoints: []string{"x:1"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("New with a cancelled ctx: %v", err)
	}
}

func TestClosed(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	c, err := client.New(context.Background(), fast(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	start := time.Now()
	if _, err := c.Grant(context.Background(), "u", client.Grant{ID: "g", Amount: 1}); !errors.Is(err, client.ErrClosed) || err.Error() != "ration: grant: client closed" {
		t.Errorf("Grant after Close: %v", err)
	}
	res, err := c.Batch(context.Background(), []client.Op{client.GrantOp("u", client.Grant{ID: "g", Amount: 1})})
	if !errors.Is(err, client.ErrClosed) || !errors.Is(res[0].Err, client.ErrClosed) || res[0].Err.Error() != "ration: batch: client closed" {
		t.Errorf("Batch after Close: %v, %v", err, res[0].Err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("calls after Close took %v, want an immediate failure", d)
	}
}

func TestBatchOutcomeUnknown(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	opts := fast(srv.Addr())
	opts.Timeout = 50 * time.Millisecond
	opts.RetryBudget = 200 * time.Millisecond
	c := newClient(t, opts)
	srv.DropNextReplies(1 << 30)
	res, err := c.Batch(context.Background(), []client.Op{
		client.GrantOp("u", client.Grant{ID: "g", Amount: 5, Timestamp: t0}),
		client.DeductOp("u", client.Deduction{ID: "d", Amount: 1, Timestamp: t0}),
	})
	if !errors.Is(err, client.ErrOutcomeUnknown) {
		t.Fatalf("err = %v, want ErrOutcomeUnknown", err)
	}
	var ou *client.OutcomeUnknownError
	if !errors.As(res[1].Err, &ou) || ou.Op != "deduct" || ou.ID != "d" || ou.Attempts < 2 {
		t.Errorf("res[1].Err = %v", res[1].Err)
	}
	if srv.Version("u") != 2 {
		t.Errorf("version %d: the lost batch was applied once", srv.Version("u"))
	}
}
