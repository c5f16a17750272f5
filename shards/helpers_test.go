package shards

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ration/ration/ledger"
	"github.com/ration/ration/mux"
	"github.com/ration/ration/raftfsm"
)

// testLogger shows warnings and errors only when RATION_TEST_LOG is set;
// raft is chatty about the elections the tests provoke.
func testLogger() *slog.Logger {
	if os.Getenv("RATION_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// node is one in-process node: a mux on a real TCP port and a Host.
type node struct {
	t    testing.TB
	id   string
	dir  string
	addr string
	mux  *mux.Mux
	host *Host
	cfg  Config
}

func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	var (
		ln  net.Listener
		err error
	)
	// A port just released may take a moment to be free again.
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal(err)
	return nil
}

// newNode binds a port; start opens the Host. cfg's NodeID, DataDir, Mux
// and AdvertiseAddr are filled in.
func newNode(t testing.TB, id, dir string) *node {
	t.Helper()
	n := &node{t: t, id: id, dir: dir}
	n.bind("127.0.0.1:0")
	return n
}

func (n *node) bind(addr string) {
	ln := listen(n.t, addr)
	n.addr = ln.Addr().String()
	n.mux = mux.New(ln, mux.WithLogger(testLogger()))
	go n.mux.Serve()
}

func fastConfig(shards int) Config {
	return Config{
		Shards:             shards,
		HeartbeatTimeout:   150 * time.Millisecond,
		ElectionTimeout:    150 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		CommitTimeout:      10 * time.Millisecond,
		Logger:             testLogger(),
	}
}

func (n *node) start(cfg Config) {
	n.t.Helper()
	cfg.NodeID, cfg.DataDir, cfg.Mux, cfg.AdvertiseAddr = n.id, n.dir, n.mux, n.addr
	n.cfg = cfg
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := Open(ctx, cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	n.host = h
}

// stop shuts the Host and the mux down.
func (n *node) stop() {
	n.t.Helper()
	if n.host != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.host.Shutdown(ctx); err != nil {
			n.t.Errorf("shutdown %s: %v", n.id, err)
		}
		n.host = nil
	}
	if n.mux != nil {
		n.mux.Close()
		n.mux = nil
	}
}

// restart stops the node and opens it again on the same directory and port.
func (n *node) restart() {
	n.t.Helper()
	cfg := n.cfg
	n.stop()
	n.bind(n.addr)
	n.start(cfg)
}

// singleNode starts a bootstrapped one-node Host and waits until it is
// ready.
func singleNode(t testing.TB, cfg Config) *node {
	t.Helper()
	n := newNode(t, "n1", t.TempDir())
	cfg.Bootstrap = true
	n.start(cfg)
	t.Cleanup(n.stop)
	waitReady(t, n.host)
	return n
}

func waitReady(t testing.TB, h *Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := h.WaitReady(ctx); err != nil {
		t.Fatalf("%v; status %+v", err, h.Status())
	}
}

func grant(user string, version uint64, id string, amount int64) raftfsm.Op {
	return raftfsm.Op{User: user, ExpectedVersion: version, Grant: &ledger.Grant{
		ID: id, Amount: amount, Timestamp: 1_700_000_000_000, ExpiresAt: ledger.Never,
	}}
}

func deduct(user string, version uint64, id string, amount int64) raftfsm.Op {
	return raftfsm.Op{User: user, ExpectedVersion: version, Deduction: &ledger.Deduction{
		ID: id, Amount: amount, Timestamp: 1_700_000_000_001,
	}}
}

func propose(t testing.TB, h *Host, op raftfsm.Op) raftfsm.OpResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.Propose(ctx, op)
	if err != nil {
		t.Fatalf("Propose(%s v%d): %v", op.User, op.ExpectedVersion, err)
	}
	return res
}

// hashes is every hosted shard's StateHash.
func hashes(h *Host) map[uint32][32]byte {
	out := map[uint32][32]byte{}
	for _, s := range h.Hosted() {
		out[s] = h.FSM(s).StateHash()
	}
	return out
}

// recMetrics records what the Host reports.
type recMetrics struct {
	mu       sync.Mutex
	batches  []int
	outcomes map[Outcome]int
}

func (m *recMetrics) batchProposed(shard uint32, ops int) {
	m.mu.Lock()
	m.batches = append(m.batches, ops)
	m.mu.Unlock()
}

func (m *recMetrics) proposalDone(shard uint32, o Outcome, d time.Duration) {
	m.mu.Lock()
	if m.outcomes == nil {
		m.outcomes = map[Outcome]int{}
	}
	m.outcomes[o]++
	m.mu.Unlock()
}

func (m *recMetrics) maxBatch() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	best := 0
	for _, b := range m.batches {
		best = max(best, b)
	}
	return best
}

func userIn(shard uint32, shards int, prefix string) string {
	for i := 0; ; i++ {
		u := fmt.Sprintf("%s%d", prefix, i)
		if ShardOf(u, shards) == shard {
			return u
		}
	}
}

func maxProcs() int { return max(runtime.GOMAXPROCS(0), 1) }
