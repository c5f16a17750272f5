package routing

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/actors/actorstest"
	"github.com/ration/ration/grpcapi"
	"github.com/ration/ration/httpapi"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/service"
	"github.com/ration/ration/test/contract"
)

// world is the cluster as every fake node sees it: who leads each shard,
// and where the nodes listen.
type world struct {
	mu      sync.Mutex
	leaders map[uint32]string
	hints   bool
	addrs   map[string]string
	nodes   []string
	shards  uint32
}

type locator struct {
	w    *world
	self string
	rep  *actorstest.Replica
}

func (l locator) ShardOf(user string) uint32 { return l.rep.ShardOf(user) }

func (l locator) LocalLeader(shard uint32) bool {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	return l.w.leaders[shard] == l.self
}

func (l locator) LeaderHint(shard uint32) (string, bool) {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	id, ok := l.w.leaders[shard]
	return id, ok && l.w.hints
}

func (l locator) Candidates(uint32) []string { return l.w.nodes }

func (l locator) GRPCAddr(node string) (string, bool) {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	a, ok := l.w.addrs[node]
	return a, ok
}

type fakeNode struct {
	router *Router
	http   *httptest.Server
}

// newWorld starts n in-process nodes. Every node's replica is its own, so
// a user's data lives where its shard's leader is: a request served by
// any other node must be forwarded to be right.
func newWorld(t *testing.T, n int) (*world, []*fakeNode) {
	w := &world{leaders: map[uint32]string{}, addrs: map[string]string{}, shards: 4, hints: true}
	var nodes []*fakeNode
	for i := 0; i < n; i++ {
		id := string(rune('a' + i))
		w.nodes = append(w.nodes, id)
		rep := actorstest.NewReplica(int(w.shards))
		dir := actors.New(rep, actors.Options{IdleTimeout: time.Minute})
		t.Cleanup(func() { _ = dir.Shutdown(context.Background()) })
		r := New(dir, locator{w: w, self: id, rep: rep}, Options{Deadline: 2 * time.Second})
		t.Cleanup(func() { _ = r.Close() })
		svc := service.New(r, nil)
		gs := grpc.NewServer()
		grpcapi.Register(gs, svc, nil, prometheus.NewRegistry())
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = gs.Serve(ln) }()
		t.Cleanup(gs.Stop)
		w.addrs[id] = ln.Addr().String()
		hs := httptest.NewServer(httpapi.Handler(svc, httpapi.Options{Registerer: prometheus.NewRegistry(), Gatherer: prometheus.NewRegistry()}))
		t.Cleanup(hs.Close)
		nodes = append(nodes, &fakeNode{router: r, http: hs})
	}
	for s := uint32(0); s < w.shards; s++ {
		w.leaders[s] = w.nodes[int(s)%n]
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
	if err := contract.Replay(http.DefaultClient, bases, v, "r-"); err != nil {
		t.Fatal(err)
	}
}

func TestForwardingWithoutHintsAndPaging(t *testing.T) {
	w, nodes := newWorld(t, 3)
	w.hints = false // the routers must find leaders by trying candidates
	ctx := context.Background()
	a := nodes[0].router
	for i := 0; i < 12; i++ {
		user := "u" + string(rune('a'+i))
		if _, err := a.Grant(ctx, user, ledger.Grant{ID: "g", Amount: 10, ExpiresAt: 100}); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 5; j++ {
			if _, err := a.Deduct(ctx, user, ledger.Deduction{ID: "d" + string(rune('0'+j)), Amount: 1, Timestamp: 10}); err != nil {
				t.Fatal(err)
			}
		}
		// Page through the events 2 at a time from another node.
		var got []ledger.Event
		from, skip := int64(0), 0
		for pages := 0; ; pages++ {
			p, err := nodes[1].router.History(ctx, user, from, 1000, skip, 2, false)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, p.Events...)
			if !p.More {
				break
			}
			from, skip = p.Next, p.NextSkip
		}
		if len(got) != 7 || got[0].Kind != ledger.KindGrant || got[6].Kind != ledger.KindExpiration || got[6].Amount != 5 {
			t.Fatalf("%s: events %+v", user, got)
		}
		b, err := nodes[2].router.Balance(ctx, user, 50, false)
		if err != nil || b.Balance != 5 || len(b.Grants) != 1 || b.Grants[0].ExpiresAt != 100 {
			t.Fatalf("%s balance %+v %v", user, b, err)
		}
	}
	// Answers are final, not retried: an insufficient deduction carries its
	// details through the forward.
	_, err := a.Deduct(ctx, "ua", ledger.Deduction{ID: "big", Amount: 50, Timestamp: 20})
	var ie *ledger.InsufficientCreditsError
	if !errors.As(err, &ie) || ie.DeductionID != "big" || ie.Shortfall != 45 {
		t.Fatalf("insufficient through forward: %v", err)
	}
	if _, err := a.Grant(ctx, "ua", ledger.Grant{ID: "g", Amount: 11, ExpiresAt: 100}); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("conflict through forward: %v", err)
	}
}

// A shard with no leader anywhere: the request is retried until the
// deadline, then reported unavailable, never wrong.
func TestNoLeaderIsUnavailable(t *testing.T) {
	w, nodes := newWorld(t, 2)
	w.mu.Lock()
	for s := range w.leaders {
		w.leaders[s] = "nobody"
	}
	w.mu.Unlock()
	_, err := nodes[0].router.Grant(context.Background(), "x", ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never})
	if !errors.Is(err, service.ErrUnavailable) {
		t.Fatalf("got %v, want unavailable", err)
	}
	// Leadership appears during the retries: the request succeeds.
	go func() {
		time.Sleep(300 * time.Millisecond)
		w.mu.Lock()
		for s := range w.leaders {
			w.leaders[s] = "b"
		}
		w.mu.Unlock()
	}()
	if _, err := nodes[0].router.Grant(context.Background(), "y", ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never}); err != nil {
		t.Fatalf("after a leader appeared: %v", err)
	}
}
