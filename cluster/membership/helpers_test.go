package membership

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds every poll: generous, since the race detector on a
// loaded 2-core box slows gossip down a lot, and polls end as soon as the
// condition holds.
const waitTimeout = 30 * time.Second

// testLogger writes to t.Log until the test ends; memberlist goroutines
// that outlive it are silenced rather than allowed to panic the test.
// MEMBERSHIP_DEBUG=1 shows memberlist's debug lines too.
func testLogger(t testing.TB, name string) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	level := slog.LevelInfo
	if os.Getenv("MEMBERSHIP_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With(slog.String("test_node", name))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

var _ io.Writer = (*testWriter)(nil)

// fastConfig probes ten times faster than production. SuspicionMult 20
// keeps a failed member Suspect for about two seconds before it is Dead,
// long enough for the view's own Suspect (after five silent probe
// intervals in a three-node cluster) to show first.
func fastConfig(t testing.TB, id string) Config {
	return Config{
		NodeID:   id,
		BindHost: "127.0.0.1",
		Meta: Meta{
			RaftAddr: id + ".raft:7000",
			GRPCAddr: id + ".grpc:9090",
			HTTPAddr: id + ".http:8080",
			Version:  1,
		},
		Logger:              testLogger(t, id),
		ProbeInterval:       100 * time.Millisecond,
		ProbeTimeout:        50 * time.Millisecond,
		SuspicionMult:       20,
		GossipInterval:      20 * time.Millisecond,
		PushPullInterval:    time.Second,
		DeadNodeReclaimTime: 200 * time.Millisecond,
		TCPTimeout:          2 * time.Second,
		JoinRetryMin:        20 * time.Millisecond,
		JoinRetryMax:        200 * time.Millisecond,
	}
}

// freePort finds a port free for both TCP and UDP on 127.0.0.1, as
// memberlist binds both to the same number. Another process may still take
// it before the caller binds: callers retry on "address already in use".
func freePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}

func isBindConflict(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

// start starts cfg on a free port, retrying on bind conflicts, and shuts
// it down when the test ends.
func start(t testing.TB, cfg Config) *Membership {
	t.Helper()
	for range 10 {
		cfg.BindPort = freePort(t)
		m, err := Start(t.Context(), cfg)
		if isBindConflict(err) {
			continue
		}
		if err != nil {
			t.Fatalf("start %s: %v", cfg.NodeID, err)
		}
		t.Cleanup(func() { _ = m.Shutdown() })
		return m
	}
	t.Fatalf("start %s: ports kept conflicting", cfg.NodeID)
	return nil
}

// startOn starts cfg on a given port; a bind conflict is returned for the
// caller to retry its scenario with another port.
func startOn(t testing.TB, cfg Config, port int) (*Membership, error) {
	t.Helper()
	cfg.BindPort = port
	m, err := Start(t.Context(), cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m, nil
}

func addrOf(m *Membership) string {
	return m.selfAddr.Load().(netip.AddrPort).String()
}

func portOf(m *Membership) int {
	_, p, _ := net.SplitHostPort(addrOf(m))
	n, _ := strconv.Atoi(p)
	return n
}

func memberOf(m *Membership, id string) (Member, bool) {
	for _, mb := range m.Members() {
		if mb.NodeID == id {
			return mb, true
		}
	}
	return Member{}, false
}

func stateOf(m *Membership, id string) string {
	if mb, ok := memberOf(m, id); ok {
		return mb.State.String()
	}
	return "absent"
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState waits until every observer sees id in state want.
func waitState(t testing.TB, id string, want State, observers ...*Membership) {
	t.Helper()
	for _, o := range observers {
		waitFor(t, fmt.Sprintf("%s to see %s %s (now %s)", o.cfg.NodeID, id, want, stateOf(o, id)), func() bool {
			mb, ok := memberOf(o, id)
			return ok && mb.State == want
		})
	}
}

// cluster3 starts a, b and c, b and c joining through a.
func cluster3(t testing.TB) (a, b, c *Membership) {
	return cluster3With(t, func(*Config) {})
}

// cluster3With is cluster3 with each Config adjusted by adjust.
func cluster3With(t testing.TB, adjust func(*Config)) (a, b, c *Membership) {
	t.Helper()
	ca := fastConfig(t, "a")
	adjust(&ca)
	a = start(t, ca)
	cb := fastConfig(t, "b")
	cb.Join = []string{addrOf(a)}
	adjust(&cb)
	b = start(t, cb)
	cc := fastConfig(t, "c")
	cc.Join = []string{addrOf(a)}
	adjust(&cc)
	c = start(t, cc)
	for _, id := range []string{"a", "b", "c"} {
		waitState(t, id, Alive, a, b, c)
	}
	return a, b, c
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
