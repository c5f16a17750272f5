package membership

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestJoinAndMetadata(t *testing.T) {
	t.Parallel()
	a, b, c := cluster3(t)
	all := []*Membership{a, b, c}
	for _, o := range all {
		if n := o.NumAlive(); n != 3 {
			t.Errorf("%s: NumAlive = %d, want 3", o.cfg.NodeID, n)
		}
		got := o.Members()
		if len(got) != 3 || got[0].NodeID != "a" || got[1].NodeID != "b" || got[2].NodeID != "c" {
			t.Fatalf("%s: Members not the three nodes sorted: %+v", o.cfg.NodeID, got)
		}
		for i, mb := range got {
			want := all[i]
			if mb.Meta != want.LocalMeta() {
				t.Errorf("%s sees %s meta %+v, want %+v", o.cfg.NodeID, mb.NodeID, mb.Meta, want.LocalMeta())
			}
			if mb.GossipAddr != addrOf(want) {
				t.Errorf("%s sees %s at %s, want %s", o.cfg.NodeID, mb.NodeID, mb.GossipAddr, addrOf(want))
			}
			if mb.Since.IsZero() {
				t.Errorf("%s sees %s with zero Since", o.cfg.NodeID, mb.NodeID)
			}
		}
	}
	if got := a.LocalMeta(); got.NodeID != "a" || got.RaftAddr != "a.raft:7000" {
		t.Errorf("LocalMeta = %+v, want NodeID filled in from Config.NodeID", got)
	}
}

// recordStates follows id's state in o's view through Subscribe, as a
// consumer would, and returns a function giving the states seen so far.
func recordStates(t *testing.T, o *Membership, id string) func() []State {
	ch, cancel := o.Subscribe()
	t.Cleanup(cancel)
	var mu sync.Mutex
	var seen []State
	go func() {
		for range ch {
			mb, ok := memberOf(o, id)
			mu.Lock()
			if ok && (len(seen) == 0 || seen[len(seen)-1] != mb.State) {
				seen = append(seen, mb.State)
			}
			mu.Unlock()
		}
	}()
	return func() []State {
		mu.Lock()
		defer mu.Unlock()
		return append([]State(nil), seen...)
	}
}

func TestFailedMemberSuspectThenDead(t *testing.T) {
	t.Parallel()
	a, b, c := cluster3(t)
	seenByA := recordStates(t, a, "c")
	seenByB := recordStates(t, b, "c")

	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitState(t, "c", Dead, a, b)

	for name, seen := range map[string]func() []State{"a": seenByA, "b": seenByB} {
		// The view turns Dead before the subscriber's goroutine has read
		// the notification; what matters is that the notification comes.
		waitFor(t, name+"'s subscriber to hear c is dead", func() bool {
			return indexOf(seen(), Dead) >= 0
		})
		got := seen()
		si := indexOf(got, Suspect)
		di := indexOf(got, Dead)
		if si < 0 || di < si {
			t.Errorf("%s saw c go through %v, want Suspect before Dead", name, got)
		}
	}
	dead, _ := memberOf(a, "c")
	if dead.Meta != c.LocalMeta() {
		t.Errorf("dead member lost its metadata: %+v", dead.Meta)
	}
	if a.NumAlive() != 2 {
		t.Errorf("NumAlive = %d after c died, want 2", a.NumAlive())
	}

	// Dead members stay until forgotten; live ones and this node cannot be.
	if err := a.Forget("b"); !errors.Is(err, ErrMemberNotGone) {
		t.Errorf("Forget(alive b) = %v, want ErrMemberNotGone", err)
	}
	if err := a.Forget("a"); !errors.Is(err, ErrMemberNotGone) {
		t.Errorf("Forget(self) = %v, want ErrMemberNotGone", err)
	}
	if err := a.Forget("zz"); !errors.Is(err, ErrUnknownMember) {
		t.Errorf("Forget(unknown) = %v, want ErrUnknownMember", err)
	}
	if err := a.Forget("c"); err != nil {
		t.Fatalf("Forget(dead c) = %v", err)
	}
	if _, ok := memberOf(a, "c"); ok {
		t.Error("c still in the view after Forget")
	}
}

func indexOf(s []State, x State) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}

func TestGracefulLeaveIsLeft(t *testing.T) {
	t.Parallel()
	a, b, c := cluster3(t)
	sub, _ := c.Subscribe()
	if err := c.Leave(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	waitState(t, "c", Left, a, b)
	if got := stateOf(c, "c"); got != "left" {
		t.Errorf("c sees itself %s after Leave, want left", got)
	}
	if err := c.Leave(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("second Leave = %v, want ErrClosed", err)
	}
	if err := c.Shutdown(); err != nil {
		t.Errorf("Shutdown after Leave = %v, want nil", err)
	}
	// The subscription is closed once the membership stops.
	for range sub {
	}
	if a.NumAlive() != 2 {
		t.Errorf("NumAlive = %d after c left, want 2", a.NumAlive())
	}
}

// A member that announces it is stopping stays what it was (Alive) for
// placement and routing, and says it is stopping until it leaves.
func TestAnnounceStopping(t *testing.T) {
	t.Parallel()
	a, b, c := cluster3(t)
	if err := c.AnnounceStopping(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("AnnounceStopping: %v", err)
	}
	for _, o := range []*Membership{a, b} {
		waitFor(t, o.cfg.NodeID+" to see c stopping", func() bool {
			mb, ok := memberOf(o, "c")
			return ok && mb.Stopping
		})
		if mb, _ := memberOf(o, "c"); mb.State != Alive {
			t.Errorf("%s sees stopping c %s, want alive", o.cfg.NodeID, mb.State)
		}
	}
	if mb, _ := memberOf(a, "b"); mb.Stopping {
		t.Error("b stopping too")
	}
	if err := c.Leave(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	waitState(t, "c", Left, a, b)
	if err := c.AnnounceStopping(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("AnnounceStopping after Leave = %v, want ErrClosed", err)
	}
}

// Every member leaving at once: each one's broadcasts lose their
// listeners as the others leave, which memberlist alone would wait out
// to the end of the context. Each Leave stops waiting once nobody is
// left to hear it, and succeeds.
func TestLeaveTogether(t *testing.T) {
	t.Parallel()
	// LeaveTimeout long enough for a loaded machine to gossip, so that
	// only a wait for listeners that are gone runs into it.
	a, b, c := cluster3With(t, func(c *Config) { c.LeaveTimeout = time.Minute })
	ms := []*Membership{a, b, c}
	for _, m := range ms {
		if err := m.AnnounceStopping(ctxTimeout(t, time.Minute)); err != nil {
			t.Fatalf("%s: AnnounceStopping: %v", m.cfg.NodeID, err)
		}
	}
	errs := make(chan error, len(ms))
	for _, m := range ms {
		go func() { errs <- m.Leave(ctxTimeout(t, time.Minute)) }()
	}
	for range ms {
		if err := <-errs; err != nil {
			t.Errorf("Leave: %v", err)
		}
	}
}

func TestRestartedMemberComesBack(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// waitDead: restart only once peers have declared the old
		// incarnation dead; otherwise restart at once, which a peer
		// refuses until it has (the address conflict path).
		waitDead bool
		samePort bool
		// leave: the old incarnation left gracefully instead.
		leave bool
	}{
		{name: "after death on a new address", waitDead: true},
		{name: "after a graceful leave on the same address", leave: true, samePort: true},
		{name: "at once on a new address", waitDead: false},
		{name: "at once on the same address", waitDead: false, samePort: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b, c := cluster3(t)
			oldAddr, oldPort := addrOf(c), portOf(c)
			if tc.leave {
				if err := c.Leave(ctxTimeout(t, 10*time.Second)); err != nil {
					t.Fatal(err)
				}
				waitState(t, "c", Left, a, b)
			} else if err := c.Shutdown(); err != nil {
				t.Fatal(err)
			}
			if tc.waitDead {
				waitState(t, "c", Dead, a, b)
			}
			cfg := fastConfig(t, "c")
			cfg.Join = []string{addrOf(b)}
			cfg.Meta.HTTPAddr = "c.http:18080"
			cfg.Meta.Version = 2
			var c2 *Membership
			if tc.samePort {
				var err error
				if c2, err = startOn(t, cfg, oldPort); err != nil {
					t.Fatalf("restart on port %d: %v", oldPort, err)
				}
			} else {
				c2 = start(t, cfg)
			}
			for _, o := range []*Membership{a, b} {
				waitFor(t, o.cfg.NodeID+" to see c back with its new metadata", func() bool {
					mb, ok := memberOf(o, "c")
					return ok && mb.State == Alive && mb.Meta == c2.LocalMeta() && mb.GossipAddr == addrOf(c2)
				})
			}
			if !tc.samePort && addrOf(c2) == oldAddr {
				t.Fatalf("restart reused the old address %s", oldAddr)
			}
			waitFor(t, "c to see a and b", func() bool { return c2.NumAlive() == 3 })
		})
	}
}

func TestEncryption(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789abcdef0123456789abcdef")
	ca := fastConfig(t, "a")
	ca.SecretKey = key
	a := start(t, ca)
	cb := fastConfig(t, "b")
	cb.SecretKey = key
	cb.Join = []string{addrOf(a)}
	b := start(t, cb)
	waitState(t, "b", Alive, a)
	waitState(t, "a", Alive, b)

	for _, tc := range []struct {
		id  string
		key []byte
	}{
		{"other-key", []byte("fedcba9876543210")},
		{"no-key", nil},
	} {
		cfg := fastConfig(t, tc.id)
		cfg.SecretKey = tc.key
		cfg.Join = []string{addrOf(a)}
		x := start(t, cfg)
		// Each attempt is a full push/pull exchange that a refused;
		// once two have completed, a has judged at least one.
		waitFor(t, tc.id+" to fail two join attempts", func() bool { return x.joinAttempts.Load() >= 2 })
		if n := x.NumAlive(); n != 1 {
			t.Errorf("%s: NumAlive = %d, want 1 (alone)", tc.id, n)
		}
		if st := stateOf(a, tc.id); st != "absent" {
			t.Errorf("a sees %s as %s, want absent", tc.id, st)
		}
	}
	if _, err := Start(t.Context(), Config{NodeID: "x", BindHost: "127.0.0.1", SecretKey: []byte("short")}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("5-byte key: err = %v, want ErrInvalidConfig", err)
	}
}

// TestJoinSeedAnswersLate gives the seed as a DNS name, "localhost:port",
// on which nothing listens until the joiner has retried a few times.
func TestJoinSeedAnswersLate(t *testing.T) {
	t.Parallel()
	for range 5 {
		port := freePort(t)
		cb := fastConfig(t, "b")
		cb.Join = []string{"localhost:" + strconv.Itoa(port)}
		b := start(t, cb)
		waitFor(t, "b to retry the silent seed", func() bool { return b.joinAttempts.Load() >= 3 })
		if b.NumAlive() != 1 {
			t.Fatalf("b joined something before the seed existed: %+v", b.Members())
		}
		a, err := startOn(t, fastConfig(t, "a"), port)
		if isBindConflict(err) {
			continue // someone took the port meanwhile: try another
		}
		if err != nil {
			t.Fatal(err)
		}
		waitState(t, "a", Alive, b)
		waitState(t, "b", Alive, a)
		return
	}
	t.Fatal("ports kept conflicting")
}

// TestJoinReresolvesSeedName checks that a name is resolved again on each
// attempt, as a Kubernetes headless service gains addresses only once pods
// are ready.
// Seeds that do not answer yet are usual while a cluster's nodes start
// together: INFO. Seeds that still do not answer after JoinRetryMax need
// an operator: one WARN.
func TestJoinWarnsOnceWhenNoSeedAnswers(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	warns := map[string]int{}
	cb := fastConfig(t, "b")
	cb.Join = []string{"127.0.0.1:" + strconv.Itoa(freePort(t))}
	cb.Logger = slog.New(levelCount{cb.Logger.Handler(), slog.LevelWarn, &mu, warns})
	b := start(t, cb)
	if mu.Lock(); len(warns) > 0 {
		t.Errorf("first failed join warned: %v", warns)
	}
	mu.Unlock()
	waitFor(t, "a warning", func() bool { mu.Lock(); defer mu.Unlock(); return warns["join attempt failed"] > 0 })
	attempts := b.joinAttempts.Load()
	waitFor(t, "more attempts", func() bool { return b.joinAttempts.Load() >= attempts+3 })
	mu.Lock()
	defer mu.Unlock()
	if len(warns) != 1 || warns["join attempt failed"] != 1 {
		t.Errorf("warnings %v, want one join attempt failed", warns)
	}
}

func TestJoinReresolvesSeedName(t *testing.T) {
	t.Parallel()
	a := start(t, fastConfig(t, "a"))
	aAddr := netip.MustParseAddrPort(addrOf(a))
	var lookups atomic.Int64
	cb := fastConfig(t, "b")
	cb.Join = []string{"seeds.ration.test:" + strconv.Itoa(int(aAddr.Port()))}
	cb.lookupIP = func(ctx context.Context, host string) ([]netip.Addr, error) {
		if host != "seeds.ration.test" {
			return nil, errors.New("unexpected lookup of " + host)
		}
		if lookups.Add(1) <= 3 {
			return nil, errors.New("no such host")
		}
		return []netip.Addr{aAddr.Addr()}, nil
	}
	b := start(t, cb)
	waitState(t, "a", Alive, b)
	waitState(t, "b", Alive, a)
	if n := lookups.Load(); n < 4 {
		t.Errorf("%d lookups, want at least 4 (one per attempt)", n)
	}
}

func TestAloneWhenOnlySeedIsSelf(t *testing.T) {
	t.Parallel()
	for range 5 {
		port := freePort(t)
		cfg := fastConfig(t, "a")
		cfg.Join = []string{"127.0.0.1:" + strconv.Itoa(port), "127.0.0.1"}
		a, err := startOn(t, cfg, port)
		if isBindConflict(err) {
			continue
		}
		if err != nil {
			t.Fatalf("Start with only itself as seed: %v", err)
		}
		if got := a.Members(); len(got) != 1 || got[0].NodeID != "a" || got[0].State != Alive {
			t.Fatalf("Members = %+v, want a alone and alive", got)
		}
		return
	}
	t.Fatal("ports kept conflicting")
}

// TestRejoinWhenAlone: b's only peer dies and comes back without seeds of
// its own; memberlist would never contact it again, the join loop does.
func TestRejoinWhenAlone(t *testing.T) {
	t.Parallel()
	a := start(t, fastConfig(t, "a"))
	cb := fastConfig(t, "b")
	cb.Join = []string{addrOf(a)}
	b := start(t, cb)
	waitState(t, "a", Alive, b)
	port := portOf(a)
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitState(t, "a", Dead, b)
	a2, err := startOn(t, fastConfig(t, "a"), port)
	if err != nil {
		t.Fatalf("restart a on %d: %v", port, err)
	}
	waitState(t, "b", Alive, a2)
	waitState(t, "a", Alive, b)
}

func TestSubscribe(t *testing.T) {
	t.Parallel()
	a := start(t, fastConfig(t, "a"))
	ch, cancel := a.Subscribe()
	select {
	case <-ch:
	default:
		t.Fatal("no initial signal")
	}
	cb := fastConfig(t, "b")
	cb.Join = []string{addrOf(a)}
	start(t, cb)
	waitFor(t, "a signal for b joining", func() bool {
		select {
		case <-ch:
			_, ok := memberOf(a, "b")
			return ok
		default:
			return false
		}
	})
	cancel()
	cancel() // idempotent
	if _, ok := <-ch; ok {
		// A signal may have been pending; the next receive must see the close.
		if _, ok := <-ch; ok {
			t.Fatal("channel not closed by cancel")
		}
	}
	late, _ := a.Subscribe()
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for range late {
	}
	after, _ := a.Subscribe()
	if _, ok := <-after; ok {
		t.Fatal("Subscribe after Shutdown gave an open channel")
	}
}

func TestStartRefusesBadConfig(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 600)
	base := func() Config { return Config{NodeID: "n", BindHost: "127.0.0.1"} }
	cases := []struct {
		name string
		mod  func(*Config)
		want error
	}{
		{"meta over 512 bytes", func(c *Config) { c.Meta.HTTPAddr = long }, ErrMetaTooLarge},
		{"no node id", func(c *Config) { c.NodeID = "" }, ErrInvalidConfig},
		{"meta names another node", func(c *Config) { c.Meta.NodeID = "m" }, ErrInvalidConfig},
		{"probe timeout above interval", func(c *Config) { c.ProbeTimeout = 2 * time.Second }, ErrInvalidConfig},
		{"negative duration", func(c *Config) { c.GossipInterval = -1 }, ErrInvalidConfig},
		{"bad seed port", func(c *Config) { c.Join = []string{"h:99999"} }, ErrInvalidConfig},
		{"bad port", func(c *Config) { c.BindPort = 70000 }, ErrInvalidConfig},
		{"retry bounds", func(c *Config) { c.JoinRetryMin, c.JoinRetryMax = time.Minute, time.Second }, ErrInvalidConfig},
	}
	for _, tc := range cases {
		cfg := base()
		tc.mod(&cfg)
		m, err := Start(t.Context(), cfg)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
		if m != nil {
			_ = m.Shutdown()
		}
	}
	// The largest Meta that fits is accepted.
	cfg := base()
	cfg.Meta.NodeID = "n"
	cfg.Meta.HTTPAddr = strings.Repeat("x", 512-len(encodeMeta(Meta{NodeID: "n"}, flagLeaving))-1)
	if err := checkMetaSize(cfg.Meta); err == nil {
		cfg.Meta.HTTPAddr += "x"
		if err := checkMetaSize(cfg.Meta); !errors.Is(err, ErrMetaTooLarge) {
			t.Errorf("one byte over: %v, want ErrMetaTooLarge", err)
		}
	} else {
		t.Errorf("meta of exactly 512 bytes refused: %v", err)
	}
}

func TestStartCancelledDuringJoin(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cfg := fastConfig(t, "a")
	cfg.Join = []string{"blocked.ration.test"}
	cfg.lookupIP = func(ctx context.Context, _ string) ([]netip.Addr, error) {
		cancel()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	cfg.BindPort = 0
	m, err := Start(ctx, cfg)
	if !errors.Is(err, context.Canceled) || m != nil {
		t.Fatalf("Start = %v, %v; want context.Canceled", m, err)
	}
}
