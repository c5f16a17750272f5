package client

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/connectivity"
	"google.golang.org/protobuf/proto"

	"github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/internal/shardhash"
)

func TestReport(t *testing.T) {
	a5 := leaderTerm{node: "a", term: 5}
	for _, tc := range []struct {
		name         string
		cur          leaderTerm
		from, leader string
		term         uint64
		want         leaderTerm
	}{
		{"a higher term wins", a5, "b", "c", 6, leaderTerm{"c", 6}},
		{"a higher term without a leader still wins", a5, "b", "", 6, leaderTerm{"", 6}},
		{"a lower term loses", a5, "b", "c", 4, a5},
		{"the same news changes nothing", a5, "b", "a", 5, a5},
		{"a leader for an unknown one at the same term", leaderTerm{"", 5}, "b", "c", 5, leaderTerm{"c", 5}},
		{"no leader at the same term changes nothing", a5, "b", "", 5, a5},
		{"a node's claim to lead beats second-hand news", a5, "b", "b", 5, leaderTerm{"b", 5}},
		{"the believed leader names another", a5, "a", "b", 5, leaderTerm{"b", 5}},
		{"the believed leader knows of none", a5, "a", "", 5, leaderTerm{"", 5}},
		{"the believed leader does not host the shard", a5, "a", "", 0, leaderTerm{"", 5}},
		{"the believed leader's own stale claim changes nothing", a5, "a", "a", 4, a5},
		{"first news", leaderTerm{}, "b", "a", 1, leaderTerm{"a", 1}},
		{"a node without the shard tells nothing", leaderTerm{}, "b", "", 0, leaderTerm{}},
	} {
		if got := report(tc.cur, tc.from, tc.leader, tc.term); got != tc.want {
			t.Errorf("%s: report(%v, from %q, %q in %d) = %v, want %v", tc.name, tc.cur, tc.from, tc.leader, tc.term, got, tc.want)
		}
	}
}

func routeTable(node string, shards uint32, routes ...*rationv1.ShardRoute) *rationv1.GetRoutingTableResponse {
	return &rationv1.GetRoutingTableResponse{
		NodeId: node, ShardCount: shards, Hash: shardhash.FNV1a64Mod,
		Nodes: []*rationv1.RoutingNode{
			{Id: "a", GrpcAddr: "10.0.0.1:9090"}, {Id: "b", GrpcAddr: "10.0.0.2:9090"},
			{Id: "c", GrpcAddr: "not an address"}, {Id: "", GrpcAddr: "10.0.0.9:9090"},
		},
		Shards: routes,
	}
}

func TestWithTable(t *testing.T) {
	t1, err := (*table)(nil).withTable(routeTable("a", 4,
		&rationv1.ShardRoute{Id: 0, Leader: "a", Term: 3},
		&rationv1.ShardRoute{Id: 1, Leader: "b", Term: 3},
		&rationv1.ShardRoute{Id: 9, Leader: "b", Term: 3}, // no such shard
	))
	if err != nil {
		t.Fatal(err)
	}
	if t1.shards != 4 || t1.leaders[0] != (leaderTerm{"a", 3}) || t1.leaders[1] != (leaderTerm{"b", 3}) || t1.leaders[2] != (leaderTerm{}) {
		t.Fatalf("first table = %+v", t1)
	}
	if len(t1.addrs) != 2 || t1.addrs["a"] != "10.0.0.1:9090" || t1.addrs["c"] != "" {
		t.Errorf("addresses = %v, want a and b only: c's is no address, and a node needs an id", t1.addrs)
	}

	// Another node's table: fresher reports win, older ones lose, and the
	// shards it does not report keep what the first said.
	t2, err := t1.withTable(routeTable("b", 4,
		&rationv1.ShardRoute{Id: 0, Leader: "a", Term: 2},
		&rationv1.ShardRoute{Id: 1, Leader: "a", Term: 4},
		&rationv1.ShardRoute{Id: 2, Leader: "b", Term: 1},
	))
	if err != nil {
		t.Fatal(err)
	}
	want := []leaderTerm{{"a", 3}, {"a", 4}, {"b", 1}, {}}
	for s, w := range want {
		if t2.leaders[s] != w {
			t.Errorf("merged shard %d = %v, want %v", s, t2.leaders[s], w)
		}
	}
	if t1.leaders[1] != (leaderTerm{"b", 3}) {
		t.Error("merging changed the table it started from")
	}

	// Another shard count: the table is replaced, not merged.
	t3, err := t2.withTable(routeTable("a", 8, &rationv1.ShardRoute{Id: 5, Leader: "b", Term: 1}))
	if err != nil || t3.shards != 8 || t3.leaders[0] != (leaderTerm{}) || t3.leaders[5] != (leaderTerm{"b", 1}) {
		t.Errorf("table for 8 shards = %+v, %v", t3, err)
	}

	unknown := routeTable("a", 4)
	unknown.Hash = "murmur3-jump"
	if _, err := t1.withTable(unknown); !errors.Is(err, errUnknownHash) {
		t.Errorf("unknown shard function: %v, want errUnknownHash", err)
	}
	for _, n := range []uint32{0, maxShards + 1} {
		if _, err := t1.withTable(routeTable("a", n)); !errors.Is(err, errBadTable) {
			t.Errorf("%d shards: %v, want errBadTable", n, err)
		}
	}
}

func hint(h *rationv1.RouteHint) string {
	b, err := proto.Marshal(h)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestWithHints(t *testing.T) {
	t0, err := (*table)(nil).withTable(routeTable("a", 4,
		&rationv1.ShardRoute{Id: 0, Leader: "a", Term: 3},
		&rationv1.ShardRoute{Id: 1, Leader: "b", Term: 3},
	))
	if err != nil {
		t.Fatal(err)
	}

	if nt, stale := t0.withHints([]string{hint(&rationv1.RouteHint{Shard: 0, Leader: "b", Term: 2, NodeId: "b"})}); nt != t0 || stale {
		t.Errorf("an older hint changed the table (%v) or called it stale (%v)", nt != t0, stale)
	}
	if nt, _ := t0.withHints([]string{"\xff\xff not a hint", hint(&rationv1.RouteHint{Shard: 4, Leader: "b", Term: 9})}); nt != t0 {
		t.Error("a malformed hint, or one for a shard out of range, changed the table")
	}

	// A new leader with an address the table did not have.
	nt, stale := t0.withHints([]string{hint(&rationv1.RouteHint{Shard: 0, Leader: "d", Term: 4, NodeId: "a", LeaderGrpcAddr: "10.0.0.4:9090"})})
	if stale || nt.leaders[0] != (leaderTerm{"d", 4}) || nt.addrs["d"] != "10.0.0.4:9090" {
		t.Errorf("hint of a new leader: stale %v, %+v", stale, nt)
	}
	if t0.leaders[0] != (leaderTerm{"a", 3}) || t0.addrs["d"] != "" {
		t.Error("a hint changed the table it was merged into")
	}

	// The believed leader says it does not lead and knows no leader: the
	// belief goes, and the table is stale.
	nt, stale = t0.withHints([]string{hint(&rationv1.RouteHint{Shard: 1, Term: 3, NodeId: "b"})})
	if !stale || nt.leaders[1] != (leaderTerm{"", 3}) {
		t.Errorf("the leader's denial: stale %v, shard 1 = %v", stale, nt.leaders[1])
	}
	// A leader without an address: stale too.
	if _, stale := t0.withHints([]string{hint(&rationv1.RouteHint{Shard: 1, Leader: "e", Term: 5, NodeId: "a"})}); !stale {
		t.Error("a leader the client has no address for did not make the table stale")
	}
}

func TestWithout(t *testing.T) {
	t0, err := (*table)(nil).withTable(routeTable("a", 2, &rationv1.ShardRoute{Id: 0, Leader: "a", Term: 3}))
	if err != nil {
		t.Fatal(err)
	}
	if t0.without(0, "b") != t0 || t0.without(7, "a") != t0 {
		t.Error("without changed a shard the node was not believed to lead")
	}
	if nt := t0.without(0, "a"); nt.leaders[0] != (leaderTerm{"", 3}) || t0.leaders[0].node != "a" {
		t.Errorf("without: %v, and the original %v", nt.leaders[0], t0.leaders[0])
	}
}

// checkTable checks what every table the client publishes must satisfy.
func checkTable(t *testing.T, tb *table) {
	t.Helper()
	if tb.shards < 1 || tb.shards > maxShards || len(tb.leaders) != tb.shards {
		t.Fatalf("table of %d shards with %d leaders", tb.shards, len(tb.leaders))
	}
	for id, addr := range tb.addrs {
		if id == "" || !validAddr(addr) {
			t.Fatalf("address %q for node %q", addr, id)
		}
	}
}

// FuzzRouting feeds the decoders arbitrary bytes as a routing table and as
// hints: a table is taken or refused, hints merge or are ignored, and
// nothing panics or breaks the table's shape.
func FuzzRouting(f *testing.F) {
	tb, err := proto.Marshal(routeTable("a", 4, &rationv1.ShardRoute{Id: 1, Leader: "b", Term: 3, Replicas: []string{"a", "b"}}))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tb, []byte(hint(&rationv1.RouteHint{Shard: 1, Leader: "a", Term: 4, NodeId: "b", LeaderGrpcAddr: "h:1"})))
	f.Add([]byte{}, []byte{0xff})
	f.Fuzz(func(t *testing.T, tableBytes, hintBytes []byte) {
		base, err := (*table)(nil).withTable(routeTable("x", 3))
		if err != nil {
			t.Fatal(err)
		}
		res := &rationv1.GetRoutingTableResponse{}
		if proto.Unmarshal(tableBytes, res) == nil {
			if nt, err := base.withTable(res); err == nil {
				checkTable(t, nt)
				base = nt
			}
		}
		nt, _ := base.withHints([]string{string(hintBytes)})
		checkTable(t, nt)
		for s := range uint32(nt.shards) {
			checkTable(t, nt.without(s, nt.leaders[s].node))
		}
	})
}

// A connection to a node the table no longer names is closed after
// retireAfter; the Endpoints' connections never are.
func TestRetire(t *testing.T) {
	c, err := New(context.Background(), Options{Endpoints: []string{"127.0.0.1:1"}, DisableRouting: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	clock := time.Unix(1_000_000, 0)
	c.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return clock
	}
	advance := func(d time.Duration) {
		mu.Lock()
		clock = clock.Add(d)
		mu.Unlock()
	}
	c.routes = newRouter(c, time.Hour)

	publish := func(addrs map[string]string) {
		c.routes.wmu.Lock()
		c.routes.table.Store(&table{shards: 1, leaders: make([]leaderTerm, 1), addrs: addrs})
		c.routes.wmu.Unlock()
	}
	const node = "127.0.0.1:2"
	publish(map[string]string{"n2": node})
	ep := c.routes.endpoint(node)
	if ep == nil {
		t.Fatal("no endpoint for a valid address")
	}
	advance(2 * retireAfter)
	c.routes.retire()
	if _, ok := c.routes.eps.Load(node); !ok {
		t.Fatal("retired a node the table names")
	}

	publish(map[string]string{})
	advance(retireAfter / 2)
	c.routes.retire()
	if _, ok := c.routes.eps.Load(node); !ok {
		t.Fatal("retired a node the table stopped naming only just now")
	}
	advance(retireAfter)
	c.routes.retire()
	if _, ok := c.routes.eps.Load(node); ok || ep.conn.GetState() != connectivity.Shutdown {
		t.Errorf("a node gone from the table for longer than retireAfter kept its connection (%v)", ep.conn.GetState())
	}
	if _, ok := c.routes.eps.Load("127.0.0.1:1"); !ok || c.eps[0].conn.GetState() == connectivity.Shutdown {
		t.Error("an Endpoint was retired")
	}
}
