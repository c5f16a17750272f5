package actors

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ration/ration/actors/actorstest"
	"github.com/ration/ration/ledger"
)

// waitFor polls cond: an actor reports its size after its answer, so the
// directory's cache settles a moment after the call returns.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// With CacheBytes set, the directory keeps the actors whose ledgers fit,
// passivating the least recently used first, and every answer stays right:
// an evicted user is rebuilt from the log on its next request.
func TestCacheBytesEvictsLeastRecentlyUsed(t *testing.T) {
	rep := actorstest.NewReplica(4)
	one := ledger.New()
	if _, err := one.Grant(ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	const fit = 8 // users of one grant that fit
	d := New(rep, Options{IdleTimeout: time.Hour, CacheBytes: fit * one.MemoryBound()})
	t.Cleanup(func() { _ = d.Shutdown(context.Background()) })
	ctx := context.Background()
	const users = 40
	for i := range users {
		if _, err := d.Grant(ctx, fmt.Sprint("u", i), ledger.Grant{ID: "g", Amount: int64(i + 1), ExpiresAt: ledger.Never}); err != nil {
			t.Fatal(err)
		}
		// u0 is read after every write: the most recently used, it stays.
		if b, err := d.Balance(ctx, "u0", 0, false); err != nil || b.Balance != 1 {
			t.Fatalf("u0: %+v, %v", b, err)
		}
	}
	waitFor(t, fmt.Sprintf("at most %d actors", fit), func() bool { return d.Active() <= fit })
	d.mu.Lock()
	_, kept := d.acts.byUser["u0"]
	bytes := d.acts.bytes
	d.mu.Unlock()
	if !kept {
		t.Error("u0, read after every write, was evicted")
	}
	if bytes > fit*one.MemoryBound() {
		t.Errorf("cache weighs %d bytes, bound %d", bytes, fit*one.MemoryBound())
	}
	if n := testutil.ToFloat64(d.met.evictions); n < users-fit {
		t.Errorf("%v evictions, want at least %d", n, users-fit)
	}
	if n := testutil.ToFloat64(d.met.hits); n == 0 {
		t.Error("no cache hits counted")
	}
	for i := range users {
		if b, err := d.Balance(ctx, fmt.Sprint("u", i), 0, false); err != nil || b.Balance != int64(i+1) || b.Version != 1 {
			t.Fatalf("u%d after evictions: %+v, %v", i, b, err)
		}
	}
}

// Reads of users that have no operations activate no actor and keep no
// view, and answer as an empty ledger does; a user's first write still
// shows in the next read.
func TestReadsOfAbsentUsersActivateNothing(t *testing.T) {
	rep := actorstest.NewReplica(4)
	d := newDir(t, rep, time.Hour)
	v := NewViews(newLocal(rep), 0, 0, nil)
	ctx := context.Background()
	empty := ledger.New()
	wantPage := Page{}
	wantPage.Events, wantPage.Next, wantPage.NextSkip, wantPage.More = empty.History(0, 100, 0, 10)
	for i := range 300 {
		user := fmt.Sprint("made-up-", i)
		stale := i%2 == 0
		b, err := d.Balance(ctx, user, 5, stale)
		if err != nil || b.Balance != 0 || b.Version != 0 || len(b.Grants) != 0 {
			t.Fatalf("%s: %+v, %v", user, b, err)
		}
		p, err := d.History(ctx, user, 0, 100, 0, 10, stale)
		if err != nil || !reflect.DeepEqual(p, wantPage) {
			t.Fatalf("%s: page %+v, %v; want %+v", user, p, err, wantPage)
		}
		if vb, err := v.Balance(ctx, user, 5); err != nil || !reflect.DeepEqual(vb, b) {
			t.Fatalf("%s from a view: %+v, %v; want %+v", user, vb, err, b)
		}
	}
	if n := d.Active(); n != 0 {
		t.Fatalf("%d actors active after reads of made-up users", n)
	}
	if n := v.lru.Len(); n != 0 {
		t.Fatalf("%d views kept after reads of made-up users", n)
	}
	if n := testutil.ToFloat64(d.met.absent); n != 600 {
		t.Fatalf("absent reads counted %v, want 600", n)
	}

	// A linearizable read of an absent user still needs the barrier.
	rep.Unavailable.Store(true)
	if _, err := d.Balance(ctx, "made-up-0", 5, false); !errors.Is(err, actorstest.ErrInjected) {
		t.Fatalf("read with the barrier failing: %v, want the barrier's error", err)
	}
	rep.Unavailable.Store(false)

	if _, err := d.Grant(ctx, "made-up-1", ledger.Grant{ID: "g", Amount: 9, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	if b, err := d.Balance(ctx, "made-up-1", 5, false); err != nil || b.Balance != 9 {
		t.Fatalf("after a first write: %+v, %v", b, err)
	}
	if b, err := v.Balance(ctx, "made-up-1", 5); err != nil || b.Balance != 9 || v.lru.Len() != 1 {
		t.Fatalf("view after a first write: %+v, %v (%d views)", b, err, v.lru.Len())
	}
}

// Views weigh their ledgers too: with a byte bound, the least recently
// read go first.
func TestViewsByteBound(t *testing.T) {
	rep := actorstest.NewReplica(4)
	d := newDir(t, rep, time.Hour)
	ctx := context.Background()
	for i := range 10 {
		user := fmt.Sprint("u", i)
		for j := range i + 1 { // user i has i+1 grants
			if _, err := d.Grant(ctx, user, ledger.Grant{ID: fmt.Sprint("g", j), Amount: 1, ExpiresAt: ledger.Never}); err != nil {
				t.Fatal(err)
			}
		}
	}
	weigh := func(grants int) int64 { return 1024 + 96*int64(grants) }
	bound := weigh(10) + weigh(9) + weigh(8)
	v := NewViews(newLocal(rep), 0, bound, nil)
	for i := range 10 {
		if b, err := v.Balance(ctx, fmt.Sprint("u", i), 1); err != nil || b.Balance != int64(i+1) {
			t.Fatalf("u%d: %+v, %v", i, b, err)
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.bytes > bound || v.lru.Len() != 3 {
		t.Fatalf("%d views weighing %d, want the last 3 read weighing at most %d", v.lru.Len(), v.bytes, bound)
	}
	for _, u := range []string{"u7", "u8", "u9"} {
		if _, ok := v.byUser[u]; !ok {
			t.Errorf("%s, among the last read, was evicted", u)
		}
	}
}

// A request that reaches an actor without activate (another node sends
// to the actor's address directly) also makes it the most recently used.
func TestDirectRequestsKeepAnActorFresh(t *testing.T) {
	rep := actorstest.NewReplica(4)
	one := ledger.New()
	if _, err := one.Grant(ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	d := New(rep, Options{IdleTimeout: time.Hour, CacheBytes: 4 * one.MemoryBound()})
	t.Cleanup(func() { _ = d.Shutdown(context.Background()) })
	ctx := context.Background()
	for i := range 4 {
		if _, err := d.Grant(ctx, fmt.Sprint("u", i), ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "4 actors weighed", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.acts.bytes == 4*one.MemoryBound()
	})
	d.mu.Lock()
	pid := d.acts.byUser["u0"].pid
	d.mu.Unlock()
	// u0, the least recently activated, is used the way a remote node
	// uses it: straight to its PID.
	if _, err := d.send(ctx, pid, &request{ctx: ctx, kind: opBalance}, time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "u0 the most recently used", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.acts.lru.Front().Value.(*activation).user == "u0"
	})
	if _, err := d.Grant(ctx, "u4", ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an eviction", func() bool { return testutil.ToFloat64(d.met.evictions) >= 1 })
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.acts.byUser["u0"]; !ok {
		t.Fatal("u0, just used directly, was evicted")
	}
	if _, ok := d.acts.byUser["u1"]; ok {
		t.Fatal("u1, the least recently used, was kept")
	}
}
