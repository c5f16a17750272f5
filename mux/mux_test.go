package mux

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ration/ration/tlsfiles/tlsfilestest"
)

// waitLimit only bounds how long a broken test hangs; nothing asserts on it.
const waitLimit = 20 * time.Second

var quiet = slog.New(slog.DiscardHandler)

// eventually polls cond until it holds, failing the test if it never does.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitStats polls until the counters equal want. Counters are bumped by the
// mux's handler goroutine, which can run just after the client sees the
// effect (a routed conn may be served before Routed is incremented).
func waitStats(t testing.TB, m *Mux, want Stats) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		got := m.Stats()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want %+v", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkLeaks must be called first in a test so its cleanup runs last, after
// every other cleanup has shut things down.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(waitLimit)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// startMux serves a Mux on a loopback port and closes it at cleanup,
// checking that Serve returns nil.
func startMux(t testing.TB, opts ...Option) *Mux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New(ln, append([]Option{WithLogger(quiet)}, opts...)...)
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Close", err)
		}
	})
	return m
}

// serveEcho answers each line on every accepted conn with "name:line".
func serveEcho(t testing.TB, l *Layer, name string) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			c, err := l.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("%s: Accept: %v", name, err)
				}
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, name+":"+line); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
}

func roundTrip(t testing.TB, c net.Conn, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(waitLimit))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimSuffix(line, "\n")
}

// expectClosed asserts the peer closed c rather than leaving it open.
func expectClosed(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil {
		t.Fatalf("read %d bytes, err %v; want connection closed", n, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open: %v", err)
	}
}

func mustListen(t testing.TB, m *Mux, typ byte, shard uint32) *Layer {
	t.Helper()
	l, err := m.Listen(typ, shard)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustDial(t testing.TB, addr string, typ byte, shard uint32, cfg *tls.Config) net.Conn {
	t.Helper()
	c, err := Dial(addr, typ, shard, waitLimit, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRouting(t *testing.T) {
	checkLeaks(t)
	a := startMux(t)
	b := startMux(t)

	targets := []struct {
		typ   byte
		shard uint32
		name  string
	}{
		{TypeRaft, 1, "raft/1"},
		{TypeRaft, 2, "raft/2"},
		{TypeRaft, 0, "raft/0"},
		{TypeNode, 0, "node/0"},
		{7, 1, "seven/1"}, // types beyond the named ones route too
	}
	for _, tg := range targets {
		serveEcho(t, mustListen(t, b, tg.typ, tg.shard), tg.name)
	}

	// Each target is reached from a Layer on another mux, as raft does, and
	// by the package-level Dial; concurrent conns must not cross over.
	var wg sync.WaitGroup
	for _, tg := range targets {
		from := mustListen(t, a, tg.typ, tg.shard)
		t.Cleanup(func() { from.Close() })
		viaLayer, err := from.Dial(raft.ServerAddress(b.Addr().String()), waitLimit)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { viaLayer.Close() })
		viaDial := mustDial(t, b.Addr().String(), tg.typ, tg.shard, nil)
		for _, c := range []net.Conn{viaLayer, viaDial} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 20 {
					msg := fmt.Sprintf("msg-%d", i)
					if got, want := roundTrip(t, c, msg), tg.name+":"+msg; got != want {
						t.Errorf("got %q, want %q", got, want)
					}
				}
			}()
		}
	}
	wg.Wait()

	n := uint64(2 * len(targets))
	waitStats(t, b, Stats{Accepted: n, Routed: n, Layers: len(targets)})
}

func TestUnregisteredClosedAndCounted(t *testing.T) {
	checkLeaks(t)
	m := startMux(t)
	serveEcho(t, mustListen(t, m, TypeRaft, 1), "raft/1")

	// Wrong shard, and right shard with the wrong type.
	expectClosed(t, mustDial(t, m.Addr().String(), TypeRaft, 7, nil))
	expectClosed(t, mustDial(t, m.Addr().String(), TypeNode, 1, nil))
	waitStats(t, m, Stats{Accepted: 2, Unregistered: 2, Layers: 1})

	// Registering later serves new conns only.
	serveEcho(t, mustListen(t, m, TypeRaft, 7), "raft/7")
	if got := roundTrip(t, mustDial(t, m.Addr().String(), TypeRaft, 7, nil), "hi"); got != "raft/7:hi" {
		t.Fatalf("got %q", got)
	}
	waitStats(t, m, Stats{Accepted: 3, Unregistered: 2, Routed: 1, Layers: 2})
}

// levels records the level of each log message, by message and shard.
type levels struct {
	mu sync.Mutex
	by map[string]slog.Level
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }

func (l *levels) Handle(_ context.Context, r slog.Record) error {
	key := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "shard" {
			key += fmt.Sprintf(" shard=%v", a.Value)
		}
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.by[key] = r.Level
	return nil
}

func (l *levels) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *levels) WithGroup(string) slog.Handler      { return l }

func (l *levels) of(key string) (slog.Level, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lv, ok := l.by[key]
	return lv, ok
}

// A connection for a listener that closed here (its shard moved away, or
// the node is stopping) is expected: DEBUG. One for a listener this mux
// never had says a peer is wrong about this node: WARN.
func TestUnregisteredLevel(t *testing.T) {
	checkLeaks(t)
	rec := &levels{by: map[string]slog.Level{}}
	m := startMux(t, WithLogger(slog.New(rec)))
	l := mustListen(t, m, TypeRaft, 3)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, mustDial(t, m.Addr().String(), TypeRaft, 3, nil))
	expectClosed(t, mustDial(t, m.Addr().String(), TypeRaft, 9, nil))
	const msg = "dropping connection for unregistered listener"
	for shard, want := range map[int]slog.Level{3: slog.LevelDebug, 9: slog.LevelWarn} {
		key := fmt.Sprintf("%s shard=%d", msg, shard)
		deadline := time.Now().Add(waitLimit)
		for {
			got, ok := rec.of(key)
			if ok {
				if got != want {
					t.Errorf("shard %d: %s, want %s", shard, got, want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("shard %d: not logged", shard)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestSilentClientDropped(t *testing.T) {
	checkLeaks(t)
	m := startMux(t, WithHeaderTimeout(300*time.Millisecond))
	serveEcho(t, mustListen(t, m, TypeRaft, 1), "raft/1")

	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	partial, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer partial.Close()
	if _, err := partial.Write([]byte{TypeRaft, 0}); err != nil {
		t.Fatal(err)
	}
	// A reserved type is a bad header, not an unregistered listener.
	zero, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	if _, err := zero.Write(make([]byte, headerLen)); err != nil {
		t.Fatal(err)
	}

	// Stalled handshakes must not hold up a well-behaved client.
	if got := roundTrip(t, mustDial(t, m.Addr().String(), TypeRaft, 1, nil), "hi"); got != "raft/1:hi" {
		t.Fatalf("got %q", got)
	}

	expectClosed(t, silent)
	expectClosed(t, partial)
	expectClosed(t, zero)
	waitStats(t, m, Stats{Accepted: 4, BadHeader: 3, Routed: 1, Layers: 1})
}

func TestUnacceptedConnDropped(t *testing.T) {
	checkLeaks(t)
	m := startMux(t, WithHeaderTimeout(200*time.Millisecond))
	l := mustListen(t, m, TypeRaft, 1) // registered, but nobody calls Accept
	defer l.Close()

	expectClosed(t, mustDial(t, m.Addr().String(), TypeRaft, 1, nil))
	waitStats(t, m, Stats{Accepted: 1, Dropped: 1, Layers: 1})
}

func TestLayerClose(t *testing.T) {
	checkLeaks(t)
	m := startMux(t)

	if _, err := m.Listen(0, 1); !errors.Is(err, ErrInvalidType) {
		t.Fatalf("Listen type 0: %v", err)
	}
	l := mustListen(t, m, TypeRaft, 3)
	if _, err := m.Listen(TypeRaft, 3); !errors.Is(err, ErrRegistered) {
		t.Fatalf("second Listen: %v, want ErrRegistered", err)
	}

	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on closed layer: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	expectClosed(t, mustDial(t, m.Addr().String(), TypeRaft, 3, nil))

	// The key is free again; the old Layer must not get the new conns.
	serveEcho(t, mustListen(t, m, TypeRaft, 3), "again")
	if got := roundTrip(t, mustDial(t, m.Addr().String(), TypeRaft, 3, nil), "hi"); got != "again:hi" {
		t.Fatalf("got %q", got)
	}
	if err := l.Close(); err != nil { // stale Close must not unregister the new Layer
		t.Fatal(err)
	}
	if got := roundTrip(t, mustDial(t, m.Addr().String(), TypeRaft, 3, nil), "hi"); got != "again:hi" {
		t.Fatalf("after stale Close got %q", got)
	}
}

func TestMuxClose(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A long header timeout: Close, not the deadline, must release the
	// stalled handshake below.
	m := New(ln, WithLogger(quiet), WithHeaderTimeout(time.Hour))
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()

	// One established conn that Close should leave alone.
	live := mustListen(t, m, TypeNode, 0)
	client := mustDial(t, m.Addr().String(), TypeNode, 0, nil)
	server, err := live.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	// A routed conn proves the first Serve is running.
	if err := m.Serve(); !errors.Is(err, ErrServing) {
		t.Fatalf("concurrent Serve: %v", err)
	}

	const n = 50
	accepted := make(chan error, n)
	for i := range n {
		l := mustListen(t, m, TypeRaft, uint32(i))
		go func() {
			_, err := l.Accept()
			accepted <- err
		}()
	}
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// Registered but never accepted: this conn waits in hand-off.
	mustListen(t, m, TypeRaft, 5000)
	parked := mustDial(t, m.Addr().String(), TypeRaft, 5000, nil)
	eventually(t, "pending conns accepted", func() bool { return m.Stats().Accepted == 3 })

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve returned %v after Close", err)
	}
	for range n {
		if err := <-accepted; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after mux Close: %v", err)
		}
	}
	if _, err := live.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after mux Close: %v", err)
	}
	expectClosed(t, silent)
	expectClosed(t, parked)
	if st := m.Stats(); st.Dropped != 0 || st.BadHeader != 0 || st.Layers != 0 {
		t.Fatalf("stats after Close %+v; shutdown must not count as drops", st)
	}
	if _, err := m.Listen(TypeRaft, 999); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Listen after Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := m.Serve(); err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}

	// Handed-off conns belong to their owners and survive the Mux.
	go func() {
		buf := make([]byte, 4)
		if _, err := io.ReadFull(server, buf); err == nil {
			server.Write(buf)
		}
	}()
	client.SetDeadline(time.Now().Add(waitLimit))
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo after Close: %q, %v", buf, err)
	}
}

// testTLS returns mutual-TLS configs with one certificate, valid for
// 127.0.0.1, from a test CA.
func testTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	ca := tlsfilestest.NewCA(t, "ration-test-ca")
	issued := ca.Issue(t, "ration-test", net.IPv4(127, 0, 0, 1))
	cert, err := tls.X509KeyPair(issued.CertPEM, issued.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.PEM) {
		t.Fatal("test CA does not parse")
	}
	server = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS13,
	}
	client = &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		MinVersion:   tls.VersionTLS13,
	}
	return server, client
}

func TestTLS(t *testing.T) {
	checkLeaks(t)
	srvCfg, cliCfg := testTLS(t)
	a := startMux(t, WithTLS(srvCfg, cliCfg))
	b := startMux(t, WithTLS(srvCfg, cliCfg), WithHeaderTimeout(time.Second))
	serveEcho(t, mustListen(t, b, TypeRaft, 5), "raft/5")

	from := mustListen(t, a, TypeRaft, 5)
	defer from.Close()
	c, err := from.Dial(raft.ServerAddress(b.Addr().String()), waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*tls.Conn); !ok {
		t.Fatalf("Layer.Dial returned %T, want *tls.Conn", c)
	}
	for i := range 5 {
		msg := fmt.Sprintf("secret-%d", i)
		if got := roundTrip(t, c, msg); got != "raft/5:"+msg {
			t.Fatalf("got %q", got)
		}
	}

	// A plaintext header is not a TLS ClientHello; the conn must be refused.
	expectClosed(t, mustDial(t, b.Addr().String(), TypeRaft, 5, nil))
	// And a client that does not trust the server fails at the handshake.
	if _, err := Dial(b.Addr().String(), TypeRaft, 5, waitLimit, &tls.Config{MinVersion: tls.VersionTLS13}); err == nil {
		t.Fatal("dial with untrusting client config succeeded")
	}
	waitStats(t, b, Stats{Accepted: 3, BadHeader: 2, Routed: 1, Layers: 1})
}

// countFSM counts distinct entries, so a retried Apply whose first attempt
// was committed after all does not skew the count.
type countFSM struct {
	mu   sync.Mutex
	seen map[string]struct{}
}

func newCountFSM() *countFSM { return &countFSM{seen: make(map[string]struct{})} }

func (f *countFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen[string(l.Data)] = struct{}{}
	return len(f.seen)
}

func (f *countFSM) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seen)
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]string, 0, len(f.seen))
	for k := range f.seen {
		keys = append(keys, k)
	}
	return countSnapshot(keys), nil
}

func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var keys []string
	if err := json.NewDecoder(rc).Decode(&keys); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = make(map[string]struct{}, len(keys))
	for _, k := range keys {
		f.seen[k] = struct{}{}
	}
	return nil
}

type countSnapshot []string

func (s countSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (countSnapshot) Release() {}

func TestRaftShardsOverOnePort(t *testing.T) {
	checkLeaks(t)
	const nodes, entries = 3, 25
	shards := []uint32{0, 1, 2, 4096}

	muxes := make([]*Mux, nodes)
	servers := make([]raft.Server, nodes)
	for i := range muxes {
		muxes[i] = startMux(t)
		servers[i] = raft.Server{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(fmt.Sprintf("node-%d", i)),
			Address:  raft.ServerAddress(muxes[i].Addr().String()),
		}
	}

	type replica struct {
		r     *raft.Raft
		fsm   *countFSM
		trans *raft.NetworkTransport
	}
	groups := make(map[uint32][]replica)
	for _, shard := range shards {
		for i, m := range muxes {
			layer := mustListen(t, m, TypeRaft, shard)
			trans := raft.NewNetworkTransport(layer, 3, 10*time.Second, io.Discard)
			cfg := raft.DefaultConfig()
			cfg.LocalID = servers[i].ID
			cfg.HeartbeatTimeout = 200 * time.Millisecond
			cfg.ElectionTimeout = 200 * time.Millisecond
			cfg.LeaderLeaseTimeout = 100 * time.Millisecond
			cfg.CommitTimeout = 5 * time.Millisecond
			cfg.Logger = hclog.NewNullLogger()
			store := raft.NewInmemStore()
			snaps := raft.NewInmemSnapshotStore()
			if err := raft.BootstrapCluster(cfg, store, store, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
				t.Fatalf("bootstrap shard %d node %d: %v", shard, i, err)
			}
			fsm := newCountFSM()
			r, err := raft.NewRaft(cfg, fsm, store, store, snaps, trans)
			if err != nil {
				t.Fatalf("raft shard %d node %d: %v", shard, i, err)
			}
			groups[shard] = append(groups[shard], replica{r: r, fsm: fsm, trans: trans})
		}
	}
	// Registered after the muxes, so this runs before their Close.
	t.Cleanup(func() {
		for _, shard := range shards {
			for _, rep := range groups[shard] {
				if err := rep.r.Shutdown().Error(); err != nil {
					t.Errorf("shutdown shard %d: %v", shard, err)
				}
				// Shutdown closes the transport's listener but not its pooled
				// outbound conns, which would pin the peers' handlers.
				rep.trans.CloseStreams()
			}
		}
	})

	leader := func(shard uint32) *raft.Raft {
		for _, rep := range groups[shard] {
			if rep.r.State() == raft.Leader {
				return rep.r
			}
		}
		return nil
	}
	for _, shard := range shards {
		eventually(t, fmt.Sprintf("leader of shard %d", shard), func() bool { return leader(shard) != nil })
	}

	var wg sync.WaitGroup
	for _, shard := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range entries {
				data := fmt.Appendf(nil, "shard-%d-entry-%d", shard, i)
				deadline := time.Now().Add(waitLimit)
				for {
					// Retry through whichever replica leads now; the FSM
					// deduplicates an entry that committed despite an error.
					if l := leader(shard); l != nil && l.Apply(data, 5*time.Second).Error() == nil {
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("shard %d: could not apply entry %d", shard, i)
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	for _, shard := range shards {
		for i, rep := range groups[shard] {
			eventually(t, fmt.Sprintf("shard %d node %d to apply %d entries", shard, i, entries), func() bool {
				return rep.fsm.count() == entries
			})
		}
		// Followers learned the leader's address from RPCs sent through the
		// mux, so it must be the leader's mux address, not something else.
		l := leader(shard)
		for i, rep := range groups[shard] {
			eventually(t, fmt.Sprintf("shard %d node %d to know the leader", shard, i), func() bool {
				addr, _ := rep.r.LeaderWithID()
				return l != nil && addr == l.Leader() && addr != ""
			})
		}
	}
	// A node that wins every election may never be dialled, so only the
	// total is checked.
	var routed uint64
	for i, m := range muxes {
		st := m.Stats()
		routed += st.Routed
		if st.BadHeader != 0 || st.Layers != len(shards) {
			t.Errorf("node %d stats %+v", i, st)
		}
	}
	if routed == 0 {
		t.Error("no raft connection went through any mux")
	}
}

func BenchmarkDialRoundTrip(b *testing.B) {
	m := startMux(b)
	l := mustListen(b, m, TypeRaft, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				var buf [1]byte
				if _, err := io.ReadFull(c, buf[:]); err == nil {
					c.Write(buf[:])
				}
			}()
		}
	}()
	b.Cleanup(func() {
		l.Close()
		wg.Wait()
	})

	addr := m.Addr().String()
	var buf [1]byte
	b.ReportAllocs()
	for b.Loop() {
		c, err := Dial(addr, TypeRaft, 1, 5*time.Second, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write([]byte{'x'}); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:]); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
