package actors

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ration/ration/actors/actorstest"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/raftfsm"
)

// localReplicas are the shards of an in-memory replica as this node's own;
// hosted says whether it holds them, and swap replaces one shard's state
// (a replica rebuilt from scratch after a move).
type localReplicas struct {
	rep    *actorstest.Replica
	hosted atomic.Bool
	mu     sync.Mutex
	swap   map[uint32]*raftfsm.Shard
}

func newLocal(rep *actorstest.Replica) *localReplicas {
	l := &localReplicas{rep: rep, swap: map[uint32]*raftfsm.Shard{}}
	l.hosted.Store(true)
	return l
}

func (l *localReplicas) ShardOf(user string) uint32 { return l.rep.ShardOf(user) }

func (l *localReplicas) Replica(shard uint32) (UserLogs, bool) {
	if !l.hosted.Load() {
		return nil, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.swap[shard]; ok {
		return s, true
	}
	return l.rep.Shard(shard), true
}

// A view answers exactly what the user's actor answers from the same
// replica, and follows the log as it grows.
func TestViewsAnswerAsTheActor(t *testing.T) {
	rep := actorstest.NewReplica(4)
	d := newDir(t, rep, time.Minute)
	v := NewViews(newLocal(rep), 0, 0, nil)
	ctx := context.Background()
	const user = "viewer"
	for i := range 5 {
		if _, err := d.Grant(ctx, user, ledger.Grant{ID: fmt.Sprint("g", i), Amount: 10, Timestamp: int64(i * 10), ExpiresAt: int64(i*10 + 25)}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Deduct(ctx, user, ledger.Deduction{ID: fmt.Sprint("d", i), Amount: 3, Timestamp: int64(i*10 + 5)}); err != nil {
			t.Fatal(err)
		}
		for _, at := range []int64{0, 7, int64(i*10 + 6), 1000} {
			want, err := d.Balance(ctx, user, at, false)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Balance(ctx, user, at)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round %d at %d: view %+v, actor %+v", i, at, got, want)
			}
		}
		want, err := d.History(ctx, user, 0, 1000, 0, 4, false)
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.History(ctx, user, 0, 1000, 0, 4)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: view page %+v, actor page %+v", i, got, want)
		}
	}
}

// A replica that holds less than a view (rebuilt after a move) makes the
// view start over from it; one this node no longer holds answers
// ErrNoReplica; an unknown user is an empty ledger.
func TestViewsFollowTheReplica(t *testing.T) {
	rep := actorstest.NewReplica(2)
	d := newDir(t, rep, time.Minute)
	local := newLocal(rep)
	v := NewViews(local, 0, 0, nil)
	ctx := context.Background()
	const user = "mover"
	for i := range 3 {
		if _, err := d.Grant(ctx, user, ledger.Grant{ID: fmt.Sprint("g", i), Amount: 5, Timestamp: 1, ExpiresAt: ledger.Never}); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := v.Balance(ctx, user, 10); err != nil || b.Balance != 15 || b.Version != 3 {
		t.Fatalf("balance %+v, %v; want 15 at version 3", b, err)
	}

	// The shard comes back empty, then with one other grant.
	fresh := actorstest.NewReplica(2)
	shard := rep.ShardOf(user)
	local.mu.Lock()
	local.swap[shard] = fresh.Shard(shard)
	local.mu.Unlock()
	if _, err := newDir(t, fresh, time.Minute).Grant(ctx, user, ledger.Grant{ID: "other", Amount: 7, Timestamp: 1, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	if b, err := v.Balance(ctx, user, 10); err != nil || b.Balance != 7 || b.Version != 1 {
		t.Fatalf("after the rebuild: balance %+v, %v; want 7 at version 1", b, err)
	}

	if b, err := v.Balance(ctx, "nobody", 10); err != nil || b.Balance != 0 || b.Version != 0 || len(b.Grants) != 0 {
		t.Fatalf("unknown user: %+v, %v", b, err)
	}
	if _, err := v.Balance(ctx, "bad user", 10); !errors.Is(err, ledger.ErrInvalidArgument) {
		t.Fatalf("invalid user: %v", err)
	}
	local.hosted.Store(false)
	if v.Hosts(shard) {
		t.Fatal("Hosts while the replica is gone")
	}
	if _, err := v.History(ctx, user, 0, 100, 0, 10); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("no replica: %v, want ErrNoReplica", err)
	}
}

// Views keep at most their bound of users, and a user read again after
// eviction is rebuilt right.
func TestViewsBound(t *testing.T) {
	rep := actorstest.NewReplica(4)
	d := newDir(t, rep, time.Minute)
	v := NewViews(newLocal(rep), 3, 0, nil)
	ctx := context.Background()
	for i := range 10 {
		user := fmt.Sprint("u", i)
		if _, err := d.Grant(ctx, user, ledger.Grant{ID: "g", Amount: int64(i + 1), Timestamp: 0, ExpiresAt: ledger.Never}); err != nil {
			t.Fatal(err)
		}
		if b, err := v.Balance(ctx, user, 1); err != nil || b.Balance != int64(i+1) {
			t.Fatalf("%s: %+v, %v", user, b, err)
		}
		v.mu.Lock()
		n, m := v.lru.Len(), len(v.byUser)
		v.mu.Unlock()
		if n != min(i+1, 3) || m != n {
			t.Fatalf("after %d users: %d views listed, %d mapped; want %d", i+1, n, m, min(i+1, 3))
		}
	}
	if b, err := v.Balance(ctx, "u0", 1); err != nil || b.Balance != 1 {
		t.Fatalf("u0 again: %+v, %v", b, err)
	}
}

// Reads of one user from many goroutines, while its log grows, each see
// a state the log had (the race detector checks the rest).
func TestViewsConcurrentReads(t *testing.T) {
	rep := actorstest.NewReplica(1)
	d := newDir(t, rep, time.Minute)
	v := NewViews(newLocal(rep), 0, 0, nil)
	ctx := context.Background()
	const user, grants = "busy", 50
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 40 {
				b, err := v.Balance(ctx, user, 1)
				if err == nil && b.Balance != int64(b.Version) {
					err = fmt.Errorf("balance %d at version %d: not a state the log had", b.Balance, b.Version)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := range grants {
		if _, err := d.Grant(ctx, user, ledger.Grant{ID: fmt.Sprint("g", i), Amount: 1, Timestamp: 0, ExpiresAt: ledger.Never}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if b, err := v.Balance(ctx, user, 1); err != nil || b.Balance != grants {
		t.Fatalf("final: %+v, %v", b, err)
	}
}
