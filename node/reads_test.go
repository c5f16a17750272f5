package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/shards"
)

// ledgerOf dials m's gRPC API directly, without the Go client's retries
// and routing, so that the answer is the node's own.
func ledgerOf(t *testing.T, m *member) rationv1.LedgerClient {
	t.Helper()
	conn, err := grpc.NewClient(m.n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return rationv1.NewLedgerClient(conn)
}

// httpGet returns the status and body of a GET of path on m's HTTP API.
func httpGet(m *member, path string) (int, string, error) {
	res, err := http.Get("http://" + m.n.HTTPAddr() + path)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// reads is what one node answers for a user over both transports.
type reads struct {
	balance *rationv1.GetBalanceResponse
	events  *rationv1.ListEventsResponse
	httpBal string
	httpEvs string
}

func (r reads) same(o reads) bool {
	return proto.Equal(r.balance, o.balance) && proto.Equal(r.events, o.events) && r.httpBal == o.httpBal && r.httpEvs == o.httpEvs
}

func (r reads) String() string {
	return fmt.Sprintf("grpc balance %v, events %d; http %s %s", r.balance, len(r.events.GetEvents()), r.httpBal, r.httpEvs)
}

// readAll reads user's balance at at and history through m, over gRPC and
// HTTP, with the given consistency.
func readAll(ctx context.Context, t *testing.T, m *member, c rationv1.LedgerClient, user string, at int64, stale bool) (reads, error) {
	cons, q := rationv1.ReadConsistency_READ_CONSISTENCY_LINEARIZABLE, ""
	if stale {
		cons, q = rationv1.ReadConsistency_READ_CONSISTENCY_STALE, "&consistency=stale"
	}
	var r reads
	var err error
	if r.balance, err = c.GetBalance(ctx, &rationv1.GetBalanceRequest{User: user, At: &at, Consistency: cons}); err != nil {
		return r, fmt.Errorf("grpc balance: %w", err)
	}
	if r.events, err = c.ListEvents(ctx, &rationv1.ListEventsRequest{User: user, Consistency: cons}); err != nil {
		return r, fmt.Errorf("grpc events: %w", err)
	}
	u := url.PathEscape(user)
	for _, p := range []struct {
		path string
		out  *string
	}{
		{fmt.Sprintf("/v1/users/%s/balance?at=%d%s", u, at, q), &r.httpBal},
		{fmt.Sprintf("/v1/users/%s/events?limit=100%s", u, q), &r.httpEvs},
	} {
		code, body, err := httpGet(m, p.path)
		if err != nil {
			return r, err
		}
		if code != http.StatusOK {
			return r, fmt.Errorf("GET %s: %d %s", p.path, code, body)
		}
		*p.out = body
	}
	return r, nil
}

// A stale read on a follower is answered from the follower's own replica:
// the same as the leader's linearizable answer once it has caught up, and
// still, over both transports, after the rest of the cluster is gone and
// the shard has no leader at all. A linearizable read then fails.
func TestStaleReadOnFollowerWithoutLeader(t *testing.T) {
	ms := startCluster(t, 3)
	waitFor(t, 10*time.Second, "agreed leaders", func() (bool, string) { ls, why := leaders(ms); return ls != nil, why })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const user = "stale-follower"
	shard := shards.ShardOf(user, testShards)
	ls, _ := leaders(ms)
	leader := ls[shard]
	var follower *member
	for _, m := range ms {
		if m != leader {
			follower = m
			break
		}
	}
	lc, fc := ledgerOf(t, leader), ledgerOf(t, follower)
	exp := int64(2_000_000)
	for i, amount := range []int64{100, 50, 25} {
		if _, err := lc.Grant(ctx, &rationv1.GrantRequest{User: user, Id: fmt.Sprint("g", i), Amount: amount, Timestamp: int64(i * 1000), ExpiresAt: &exp}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := lc.Deduct(ctx, &rationv1.DeductRequest{User: user, Id: "d", Amount: 60, Timestamp: 1500}); err != nil {
		t.Fatal(err)
	}
	const at = 5000
	want, err := readAll(ctx, t, leader, lc, user, at, false)
	if err != nil {
		t.Fatal(err)
	}
	if want.balance.GetBalance() != 115 {
		t.Fatalf("leader's balance %d, want 115", want.balance.GetBalance())
	}
	waitFor(t, 10*time.Second, "the follower's stale reads catch up with the leader", func() (bool, string) {
		got, err := readAll(ctx, t, follower, fc, user, at, true)
		if err != nil {
			return false, err.Error()
		}
		return got.same(want), got.String()
	})

	for _, m := range ms {
		if m != follower {
			m.stop(t)
		}
	}
	waitFor(t, 20*time.Second, "the follower without a leader", func() (bool, string) {
		id, _ := follower.n.Host().Leader(shard)
		return id == "" && !follower.n.Host().IsLeader(shard), "leader " + id
	})
	got, err := readAll(ctx, t, follower, fc, user, at, true)
	if err != nil {
		t.Fatalf("stale reads on the follower without a leader: %v", err)
	}
	if !got.same(want) {
		t.Fatalf("stale reads on the follower without a leader: %v, want %v", got, want)
	}
	lctx, lcancel := context.WithTimeout(ctx, time.Second)
	defer lcancel()
	if _, err := fc.GetBalance(lctx, &rationv1.GetBalanceRequest{User: user, At: proto.Int64(at)}); err == nil {
		t.Fatal("a linearizable read without a leader succeeded")
	}
}
