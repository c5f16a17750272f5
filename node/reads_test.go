package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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

// entriesProposed sums, over ms, the raft entries their proposers made
// and the ops those carried (ration_propose_batch_ops).
func entriesProposed(t *testing.T, ms []*member) (entries, ops int64) {
	t.Helper()
	for _, m := range ms {
		code, body, err := httpGet(m, "/metrics")
		if err != nil || code != http.StatusOK {
			t.Fatalf("metrics of %s: %d %v", m.id, code, err)
		}
		for _, line := range strings.Split(body, "\n") {
			name, value, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			v, err := strconv.ParseFloat(value, 64)
			switch {
			case err != nil:
			case name == "ration_propose_batch_ops_count":
				entries += int64(v)
			case name == "ration_propose_batch_ops_sum":
				ops += int64(v)
			}
		}
	}
	return entries, ops
}

// A Batch sent to one node, over users of several shards led by every
// node, answers each op as a single write would, applies each user's ops
// in order, and proposes each shard's part as one raft entry.
func TestBatchByShard(t *testing.T) {
	ms := startCluster(t, 3)
	waitFor(t, 10*time.Second, "agreed leaders", func() (bool, string) { ls, why := leaders(ms); return ls != nil, why })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := ledgerOf(t, ms[0])
	const users, deductions = 12, 3
	shardsTouched := map[uint32]bool{}
	var ops []*rationv1.Operation
	for u := range users {
		user := fmt.Sprint("batch-", u)
		shardsTouched[shards.ShardOf(user, testShards)] = true
		ops = append(ops, &rationv1.Operation{Op: &rationv1.Operation_Grant{Grant: &rationv1.GrantRequest{User: user, Id: "g", Amount: 10}}})
	}
	for k := range deductions {
		for u := range users {
			ops = append(ops, &rationv1.Operation{Op: &rationv1.Operation_Deduct{Deduct: &rationv1.DeductRequest{User: fmt.Sprint("batch-", u), Id: fmt.Sprint("d", k), Amount: 3, Timestamp: int64(k)}}})
		}
	}
	entries0, ops0 := entriesProposed(t, ms)
	res, err := c.Batch(ctx, &rationv1.BatchRequest{Operations: ops})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res.GetResults() {
		want := uint64(i/users + 1)
		var got uint64
		if i < users {
			got = r.GetGrant().GetVersion()
		} else {
			got = r.GetDeduct().GetVersion()
		}
		if r.GetError() != nil || got != want {
			t.Fatalf("op %d: %v, want applied at version %d", i, r, want)
		}
	}
	entries, applied := entriesProposed(t, ms)
	if entries-entries0 != int64(len(shardsTouched)) || applied-ops0 != int64(len(ops)) {
		t.Fatalf("%d entries carrying %d ops for a batch of %d ops over %d shards: want one entry per shard",
			entries-entries0, applied-ops0, len(ops), len(shardsTouched))
	}

	// Answers as single writes: a refusal between accepted ops, the
	// retry of an applied op, a conflict, an invalid op.
	user := "batch-0"
	more := []*rationv1.Operation{
		{Op: &rationv1.Operation_Deduct{Deduct: &rationv1.DeductRequest{User: user, Id: "big", Amount: 100, Timestamp: 5}}},
		{Op: &rationv1.Operation_Grant{Grant: &rationv1.GrantRequest{User: user, Id: "g2", Amount: 5, Timestamp: 1}}},
		{Op: &rationv1.Operation_Deduct{Deduct: &rationv1.DeductRequest{User: user, Id: "d0", Amount: 3, Timestamp: 0}}},
		{Op: &rationv1.Operation_Deduct{Deduct: &rationv1.DeductRequest{User: user, Id: "d1", Amount: 4, Timestamp: 1}}},
		{Op: &rationv1.Operation_Deduct{Deduct: &rationv1.DeductRequest{User: user, Id: "d9", Amount: 6, Timestamp: 9}}},
		{Op: &rationv1.Operation_Grant{Grant: &rationv1.GrantRequest{User: user, Id: "g3", Amount: 0}}},
	}
	res, err = c.Batch(ctx, &rationv1.BatchRequest{Operations: more})
	if err != nil {
		t.Fatal(err)
	}
	r := res.GetResults()
	switch {
	case r[0].GetError().GetCode() != "FAILED_PRECONDITION" || r[0].GetError().GetInsufficient().GetShortfall() != 99:
		t.Fatalf("big deduction: %v", r[0])
	case r[1].GetGrant().GetVersion() != 5:
		t.Fatalf("grant: %v", r[1])
	case !r[2].GetDeduct().GetDuplicate():
		t.Fatalf("retried deduction: %v", r[2])
	case r[3].GetError().GetCode() != "ALREADY_EXISTS":
		t.Fatalf("conflicting deduction: %v", r[3])
	case r[4].GetDeduct().GetVersion() != 6:
		t.Fatalf("deduction after the grant: %v", r[4])
	case r[5].GetError().GetCode() != "INVALID_ARGUMENT" || r[5].GetError().GetField() != "amount":
		t.Fatalf("invalid grant: %v", r[5])
	}
	b, err := c.GetBalance(ctx, &rationv1.GetBalanceRequest{User: user, At: proto.Int64(100)})
	if err != nil || b.GetBalance() != 0 {
		t.Fatalf("balance %v, %v; want 10 + 5 - 9 - 6 = 0", b, err)
	}
}
