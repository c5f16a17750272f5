package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	"github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/client"
	"github.com/ration/ration/client/clienttest"
	"github.com/ration/ration/cluster/routetable"
	"github.com/ration/ration/internal/shardhash"
)

// fakeCluster is nodes that share one Ledger implementation, so that a
// node "forwards" a call it does not lead by serving it itself, and that
// answer the routing table and send route hints with the nodes' real
// routetable service, from leaders the test sets.
type fakeCluster struct {
	shards int
	nodes  []*fakeNode

	mu      sync.Mutex
	leaders []string // by shard
	terms   []uint64
}

// fakeNode is one node of a fakeCluster; it records the users of the
// Ledger calls it receives.
type fakeNode struct {
	id, addr string
	fc       *fakeCluster
	gs       *grpc.Server

	mu    sync.Mutex
	users []string
}

// startFakeCluster starts n nodes, "n1" to "nN", serving what register
// registers as their Ledger, with shard s led by node s mod n in term 1.
func startFakeCluster(t *testing.T, n, shards int, register func(*grpc.Server)) *fakeCluster {
	t.Helper()
	fc := &fakeCluster{shards: shards, leaders: make([]string, shards), terms: make([]uint64, shards)}
	lis := make([]net.Listener, n)
	for i := range n {
		var err error
		if lis[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		fc.nodes = append(fc.nodes, &fakeNode{id: fmt.Sprintf("n%d", i+1), addr: lis[i].Addr().String(), fc: fc})
	}
	for s := range shards {
		fc.leaders[s], fc.terms[s] = fc.nodes[s%n].id, 1
	}
	for i, nd := range fc.nodes {
		svc, err := routetable.New(routetable.Config{NodeID: nd.id, Shards: shards, Host: fakeHost{nd}, Members: fakeMembers{fc}})
		if err != nil {
			t.Fatal(err)
		}
		nd.gs = grpc.NewServer(grpc.ChainUnaryInterceptor(nd.record, svc.Hints))
		register(nd.gs)
		rationv1.RegisterRoutingServer(nd.gs, svc)
		go func() { _ = nd.gs.Serve(lis[i]) }()
		t.Cleanup(nd.gs.Stop)
	}
	return fc
}

func (fc *fakeCluster) node(id string) *fakeNode {
	for _, nd := range fc.nodes {
		if nd.id == id {
			return nd
		}
	}
	panic("no node " + id)
}

// lead makes node the leader of shard, in a new term.
func (fc *fakeCluster) lead(shard uint32, node string) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.leaders[shard] = node
	fc.terms[shard]++
}

func (fc *fakeCluster) leaderOf(user string) string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.leaders[shardhash.Of(user, fc.shards)]
}

// userLedBy is a user whose shard node leads, not in avoid.
func (fc *fakeCluster) userLedBy(node string, avoid ...string) string {
	for i := 0; ; i++ {
		u := fmt.Sprintf("user-%d", i)
		if fc.leaderOf(u) == node && !slices.Contains(avoid, u) {
			return u
		}
	}
}

func (nd *fakeNode) record(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, "/ration.v1.Ledger/") {
		var users []string
		switch r := req.(type) {
		case interface{ GetUser() string }:
			users = append(users, r.GetUser())
		case *rationv1.BatchRequest:
			for _, op := range r.GetOperations() {
				users = append(users, op.GetGrant().GetUser()+op.GetDeduct().GetUser())
			}
		}
		nd.mu.Lock()
		nd.users = append(nd.users, users...)
		nd.mu.Unlock()
	}
	return handler(ctx, req)
}

// received returns and forgets the users of the calls nd received.
func (nd *fakeNode) received() []string {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	u := nd.users
	nd.users = nil
	return u
}

type fakeHost struct{ nd *fakeNode }

func (h fakeHost) Hosted() []uint32 {
	var all []uint32
	for s := range h.nd.fc.shards {
		all = append(all, uint32(s))
	}
	return all
}

func (h fakeHost) IsLeader(shard uint32) bool {
	id, _, _ := h.LeaderTerm(shard)
	return id == h.nd.id
}

func (h fakeHost) LeaderTerm(shard uint32) (string, string, uint64) {
	fc := h.nd.fc
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.leaders[shard], "", fc.terms[shard]
}

func (h fakeHost) Configuration(uint32) (raft.Configuration, error) {
	var c raft.Configuration
	for _, nd := range h.nd.fc.nodes {
		c.Servers = append(c.Servers, raft.Server{ID: raft.ServerID(nd.id)})
	}
	return c, nil
}

type fakeMembers struct{ fc *fakeCluster }

func (m fakeMembers) Nodes() []routetable.Node {
	var out []routetable.Node
	for _, nd := range m.fc.nodes {
		out = append(out, routetable.Node{ID: nd.id, GRPCAddr: nd.addr})
	}
	return out
}

func (m fakeMembers) GRPCAddr(id string) string { return m.fc.node(id).addr }

// routedClient is a client whose only Endpoint is n1.
func routedClient(t *testing.T, fc *fakeCluster) *client.Client {
	t.Helper()
	opts := fast(fc.nodes[0].addr)
	opts.RoutingRefresh = 50 * time.Millisecond
	return newClient(t, opts)
}

// warmUp reads the balance of users until a pass over all of them goes
// straight to their leaders: the client has the table and a connection
// up to every leader.
func warmUp(t *testing.T, c *client.Client, fc *fakeCluster, users []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		before := c.RouteStats()
		for _, u := range users {
			if _, err := c.Balance(context.Background(), u, nil); err != nil {
				t.Fatal(err)
			}
		}
		if after := c.RouteStats(); after.Direct-before.Direct == uint64(len(users)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls still not routed after 10 s: %+v", c.RouteStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, nd := range fc.nodes {
		nd.received()
	}
}

// checkLedBy fails unless every user node received a call for is one
// whose shard it leads.
func checkLedBy(t *testing.T, fc *fakeCluster) {
	t.Helper()
	for _, nd := range fc.nodes {
		for _, u := range nd.received() {
			if l := fc.leaderOf(u); l != nd.id {
				t.Errorf("%s got a call for %s, whose shard %s leads", nd.id, u, l)
			}
		}
	}
}

func TestRoutesStraightToTheLeader(t *testing.T) {
	backend := clienttest.NewServer(clienttest.Options{})
	fc := startFakeCluster(t, 3, 8, backend.Register)
	c := routedClient(t, fc)
	var users []string
	for i := range 30 {
		users = append(users, fmt.Sprintf("u%d", i))
	}
	warmUp(t, c, fc, users)
	before := c.RouteStats()

	ctx := context.Background()
	for _, u := range users {
		if _, err := c.Grant(ctx, u, client.Grant{ID: "g", Amount: 10, Timestamp: t0}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Deduct(ctx, u, client.Deduction{ID: "d", Amount: 3, Timestamp: t0 + 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Events(ctx, u, client.EventsQuery{}); err != nil {
			t.Fatal(err)
		}
	}
	checkLedBy(t, fc)
	if s := c.RouteStats(); s.Redirected != before.Redirected || s.Fallback != before.Fallback {
		t.Errorf("route stats %+v after %+v: redirects or fallbacks with a current table", s, before)
	}
}

// After a leadership change the first call goes to the old leader, which
// forwards it and says who leads now; the next goes to the new leader.
func TestStaleTableCostsOneRedirect(t *testing.T) {
	backend := clienttest.NewServer(clienttest.Options{})
	fc := startFakeCluster(t, 3, 8, backend.Register)
	opts := fast(fc.nodes[0].addr)
	opts.RoutingRefresh = time.Hour // only the hint can tell
	c := newClient(t, opts)
	u := fc.userLedBy("n2")
	warmUp(t, c, fc, []string{u, fc.userLedBy("n3")})

	fc.lead(shardhash.Of(u, fc.shards), "n3")
	before := c.RouteStats()
	ctx := context.Background()
	if _, err := c.Grant(ctx, u, client.Grant{ID: "g1", Amount: 1, Timestamp: t0}); err != nil {
		t.Fatalf("call with a stale table: %v", err)
	}
	if got := fc.node("n2").received(); !slices.Equal(got, []string{u}) {
		t.Errorf("n2 received calls for %v, want the stale call for %s", got, u)
	}
	if s := c.RouteStats(); s.Redirected != before.Redirected+1 {
		t.Errorf("route stats %+v after %+v, want one redirect", s, before)
	}
	if _, err := c.Grant(ctx, u, client.Grant{ID: "g2", Amount: 1, Timestamp: t0}); err != nil {
		t.Fatal(err)
	}
	checkLedBy(t, fc)
	if backend.Version(u) != 2 {
		t.Errorf("version %d, want both grants applied once", backend.Version(u))
	}
}

// A leader that dies costs its calls a fallback to an Endpoint (which
// forwards) until the table names the new leader, never an error.
func TestDeadLeaderFallsBack(t *testing.T) {
	backend := clienttest.NewServer(clienttest.Options{})
	fc := startFakeCluster(t, 3, 8, backend.Register)
	c := routedClient(t, fc)
	u := fc.userLedBy("n2")
	warmUp(t, c, fc, []string{u})

	fc.node("n2").gs.Stop()
	ctx := context.Background()
	if _, err := c.Grant(ctx, u, client.Grant{ID: "g1", Amount: 1, Timestamp: t0}); err != nil {
		t.Fatalf("call with its leader dead: %v", err)
	}
	// An election: n3 leads now. The refreshed table sends calls there.
	fc.lead(shardhash.Of(u, fc.shards), "n3")
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		if _, err := c.Grant(ctx, u, client.Grant{ID: fmt.Sprintf("g%d", i+2), Amount: 1, Timestamp: t0}); err != nil {
			t.Fatal(err)
		}
		if got := fc.node("n3").received(); len(got) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls never went to the new leader: %+v", c.RouteStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Batch splits by leader: each node gets one call with exactly the
// operations of the users it leads, and the results come back in the
// order of the operations, each user's in its order.
func TestBatchSplitsByLeader(t *testing.T) {
	backend := clienttest.NewServer(clienttest.Options{})
	fc := startFakeCluster(t, 3, 8, backend.Register)
	c := routedClient(t, fc)
	var users []string // two per node
	for _, n := range []string{"n1", "n1", "n2", "n2", "n3", "n3"} {
		users = append(users, fc.userLedBy(n, users...))
	}
	warmUp(t, c, fc, users)

	// Per user: a grant of 10, a deduction of 6 that needs it, one of 6
	// that cannot be met, and an invalid grant; users interleaved.
	var ops []client.Op
	for _, mk := range []func(u string) client.Op{
		func(u string) client.Op { return client.GrantOp(u, client.Grant{ID: "g", Amount: 10, Timestamp: t0}) },
		func(u string) client.Op {
			return client.DeductOp(u, client.Deduction{ID: "d1", Amount: 6, Timestamp: t0 + 1})
		},
		func(u string) client.Op {
			return client.DeductOp(u, client.Deduction{ID: "d2", Amount: 6, Timestamp: t0 + 2})
		},
		func(u string) client.Op { return client.GrantOp(u, client.Grant{ID: "bad", Amount: -1, Timestamp: t0}) },
	} {
		for _, u := range users {
			ops = append(ops, mk(u))
		}
	}
	res, err := c.Batch(context.Background(), ops)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		op := ops[i]
		var ins *client.InsufficientCreditsError
		var inv *client.InvalidArgumentError
		switch {
		case op.Grant != nil && op.Grant.ID == "g":
			if r.Grant == nil || r.Grant.Version != 1 {
				t.Errorf("op %d (%s grant): %+v", i, op.User, r)
			}
		case op.Deduct != nil && op.Deduct.ID == "d1":
			if r.Deduct == nil || r.Deduct.Version != 2 {
				t.Errorf("op %d (%s d1): %+v", i, op.User, r)
			}
		case op.Deduct != nil:
			if !errors.As(r.Err, &ins) || ins.DeductionID != "d2" {
				t.Errorf("op %d (%s d2): %+v, want insufficient credits", i, op.User, r)
			}
		default:
			if !errors.As(r.Err, &inv) || inv.Field != "amount" {
				t.Errorf("op %d (%s bad grant): %+v, want invalid amount", i, op.User, r)
			}
		}
	}
	for _, nd := range fc.nodes {
		got := nd.received()
		if len(got) != 8 {
			t.Errorf("%s received %d operations, want the 8 of its 2 users", nd.id, len(got))
		}
		for _, u := range got {
			if fc.leaderOf(u) != nd.id {
				t.Errorf("%s received an operation of %s, led by %s", nd.id, u, fc.leaderOf(u))
			}
		}
	}
	if n := backend.Calls("Batch"); n != 3 {
		t.Errorf("%d Batch calls, want one per leader", n)
	}
}

// A refusal that follows an unanswered attempt on the leader is not passed
// on while that attempt may still apply, though it came from another node.
func TestRefusalWaitsOutAnAttemptOnAnotherNode(t *testing.T) {
	const timeout = 300 * time.Millisecond
	late := &lateApplier{applyAfter: 150 * time.Millisecond}
	fc := startFakeCluster(t, 2, 4, func(gs *grpc.Server) { rationv1.RegisterLedgerServer(gs, late) })
	opts := fast(fc.nodes[0].addr)
	opts.Timeout = timeout
	opts.RetryBudget = 5 * time.Second
	c := newClient(t, opts)
	u := fc.userLedBy("n2")
	deadline := time.Now().Add(10 * time.Second)
	for c.RouteStats().Direct == 0 {
		// Routing is up once a read goes to n2 (lateApplier answers
		// reads UNIMPLEMENTED, which is final).
		_, _ = c.Balance(context.Background(), u, nil)
		if time.Now().After(deadline) {
			t.Fatal("never routed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fc.node("n1").received()
	fc.node("n2").received()

	start := time.Now()
	res, err := c.Deduct(context.Background(), u, client.Deduction{ID: "d", Amount: 5, Timestamp: t0})
	if err != nil || !res.Duplicate {
		t.Fatalf("deduct = %+v, %v; the first attempt applied, so the answer is its duplicate", res, err)
	}
	if got := fc.node("n2").received(); len(got) != 1 {
		t.Errorf("the leader n2 got %d attempts, want the first", len(got))
	}
	if got := fc.node("n1").received(); len(got) != 2 {
		t.Errorf("n1 got %d attempts, want the refused one and the last", len(got))
	}
	late.checkAskedAgainAfterSettling(t, start, timeout)
}
