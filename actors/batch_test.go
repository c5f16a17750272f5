package actors

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ration/ration/actors/actorstest"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/raftfsm"
)

func grantOp(user, id string, amount, ts int64) BatchOp {
	return BatchOp{User: user, Grant: &ledger.Grant{ID: id, Amount: amount, Timestamp: ts, ExpiresAt: ledger.Never}}
}

func deductOp(user, id string, amount, ts int64) BatchOp {
	return BatchOp{User: user, Deduction: &ledger.Deduction{ID: id, Amount: amount, Timestamp: ts}}
}

// sequentially runs ops one at a time as single writes: what a batch must
// answer.
func sequentially(ctx context.Context, d *Directory, ops []BatchOp) []BatchResult {
	out := make([]BatchResult, len(ops))
	for i, op := range ops {
		switch {
		case op.Grant != nil && op.Deduction == nil:
			out[i].WriteResult, out[i].Err = d.Grant(ctx, op.User, *op.Grant)
		case op.Deduction != nil && op.Grant == nil:
			out[i].WriteResult, out[i].Err = d.Deduct(ctx, op.User, *op.Deduction)
		default:
			out[i].Err = checkBatchOp(op)
		}
	}
	return out
}

// sameResults compares a batch's results with single writes' results:
// the same successes and the same answers, with their details.
func sameResults(t *testing.T, got, want []BatchResult) {
	t.Helper()
	for i := range want {
		g, w := got[i], want[i]
		if !reflect.DeepEqual(g.WriteResult, w.WriteResult) || outcome(g.Err) != outcome(w.Err) || !reflect.DeepEqual(g.Err, w.Err) {
			t.Errorf("op %d: batch %+v (%v), single writes %+v (%v)", i, g.WriteResult, g.Err, w.WriteResult, w.Err)
		}
	}
}

// sameLogs checks that two replicas hold the same log for every user.
func sameLogs(t *testing.T, a, b *actorstest.Replica, users []string) {
	t.Helper()
	for _, u := range users {
		va, la := a.LogSince(a.ShardOf(u), u, 0)
		vb, lb := b.LogSince(b.ShardOf(u), u, 0)
		if va != vb || !reflect.DeepEqual(la, lb) {
			t.Errorf("%s: batch log v%d %+v, single writes' log v%d %+v", u, va, la, vb, lb)
		}
	}
}

// A batch answers exactly what the same ops sent one at a time answer, and
// leaves the same logs: refusals in the middle of a user's ops, duplicates
// of committed ops and of ops earlier in the batch, conflicts, invalid ops.
func TestBatchAnswersAsSingleWrites(t *testing.T) {
	ctx := context.Background()
	pre := []BatchOp{grantOp("ann", "old", 5, 0), grantOp("bob", "g0", 1, 0), deductOp("bob", "d0", 1, 0)}
	ops := []BatchOp{
		grantOp("ann", "g1", 10, 1),
		deductOp("ann", "big", 100, 2), // refused between accepted ops
		deductOp("ann", "d1", 12, 3),   // needs g1 and old
		grantOp("ann", "old", 5, 0),    // duplicate of a committed op
		grantOp("ann", "g1", 10, 1),    // duplicate of an op earlier in the batch
		grantOp("ann", "g1", 11, 1),    // conflict
		grantOp("bob", "g", 0, 1),      // invalid amount
		{User: "bob"},                  // neither grant nor deduction
		{User: "bad user!", Grant: &ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never}},
		grantOp("bob", "g2", 3, 1),
		deductOp("bob", "d0", 1, 0), // duplicate of a committed deduction
		deductOp("cat", "d", 1, 0),  // refused: nothing granted
		grantOp("cat", "g", 1, 0),
		deductOp("cat", "d", 1, 0), // the same id, now accepted
	}
	single, batched := actorstest.NewReplica(4), actorstest.NewReplica(4)
	ds, db := newDir(t, single, time.Minute), newDir(t, batched, time.Minute)
	sequentially(ctx, ds, pre)
	sequentially(ctx, db, pre)
	want := sequentially(ctx, ds, ops)
	got := db.Batch(ctx, ops)
	sameResults(t, got, want)
	sameLogs(t, batched, single, []string{"ann", "bob", "cat"})
	if outcome(got[1].Err) != "insufficient" || got[2].Err != nil || !got[3].Duplicate || !got[4].Duplicate {
		t.Fatalf("results %+v", got)
	}
}

// Random batches over a few users, compared with single writes.
func TestBatchDifferential(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 11))
	single, batched := actorstest.NewReplica(3), actorstest.NewReplica(3)
	ds, db := newDir(t, single, time.Minute), newDir(t, batched, time.Minute)
	users := []string{"u0", "u1", "u2", "u3", "u4"}
	for round := range 30 {
		ops := make([]BatchOp, 1+rng.IntN(40))
		for i := range ops {
			u := users[rng.IntN(len(users))]
			id := fmt.Sprint("x", rng.IntN(12)) // reused: duplicates and conflicts
			amount, ts := int64(1+rng.IntN(20)), int64(rng.IntN(100))
			if rng.IntN(2) == 0 {
				ops[i] = grantOp(u, id, amount, ts)
				if rng.IntN(3) == 0 {
					ops[i].Grant.ExpiresAt = ts + int64(1+rng.IntN(50))
				}
			} else {
				ops[i] = deductOp(u, id, amount, ts)
			}
		}
		want := sequentially(ctx, ds, ops)
		got := db.Batch(ctx, ops)
		sameResults(t, got, want)
		if t.Failed() {
			t.Fatalf("round %d: %d ops", round, len(ops))
		}
	}
	sameLogs(t, batched, single, users)
}

// Each shard's part of a batch is one entry when every op is accepted:
// every user's ops chained, every user of the shard together.
func TestBatchOneEntryPerShard(t *testing.T) {
	ctx := context.Background()
	rep := actorstest.NewReplica(4)
	d := newDir(t, rep, time.Minute)
	var ops []BatchOp
	shards := map[uint32]bool{}
	for u := range 12 {
		user := fmt.Sprint("user-", u)
		shards[rep.ShardOf(user)] = true
		ops = append(ops, grantOp(user, "g", 10, 1))
		for k := range 4 {
			ops = append(ops, deductOp(user, fmt.Sprint("d", k), 2, int64(2+k)))
		}
	}
	before := rep.Entries.Load()
	res := d.Batch(ctx, ops)
	for i, r := range res {
		if want := uint64(i%5 + 1); r.Err != nil || r.Duplicate || r.Version != want {
			t.Fatalf("op %d: %+v, want applied at version %d", i, r, want)
		}
	}
	if got := rep.Entries.Load() - before; got != int64(len(shards)) {
		t.Fatalf("%d entries for a batch over %d shards, want one per shard", got, len(shards))
	}
	if r := res[4]; len(r.Allocations) != 1 || r.Allocations[0] != (ledger.Allocation{GrantID: "g", Amount: 2}) {
		t.Fatalf("allocations %+v", r.Allocations)
	}
}

// interloper is a replica on which another activation of a user writes
// first: before the first proposal of one of its ops, an op with the same
// expected version is committed, as a stale actor's would be.
type interloper struct {
	*actorstest.Replica
	user string
	done atomic.Bool
}

func (i *interloper) ProposeBatch(ctx context.Context, ops []raftfsm.Op) ([]raftfsm.OpResult, error) {
	for _, op := range ops {
		if op.User == i.user && !i.done.Swap(true) {
			g := ledger.Grant{ID: "other", Amount: 1, Timestamp: 0, ExpiresAt: ledger.Never}
			if _, err := i.Replica.Propose(ctx, raftfsm.Op{User: i.user, ExpectedVersion: op.ExpectedVersion, Grant: &g}); err != nil {
				return nil, err
			}
		}
	}
	return i.Replica.ProposeBatch(ctx, ops)
}

// A run whose first op is refused for a version mismatch is refused whole
// (its second op's expected version matches the log by then), and the
// actor decides again on the reloaded log: every op applies once, in
// order, after the other activation's.
func TestBatchAfterAnotherActivationWrote(t *testing.T) {
	ctx := context.Background()
	rep := &interloper{Replica: actorstest.NewReplica(2), user: "u"}
	d := newDir(t, rep, time.Minute)
	res := d.Batch(ctx, []BatchOp{grantOp("u", "a", 1, 0), grantOp("u", "b", 1, 0), deductOp("u", "c", 3, 1)})
	for i, r := range res {
		if r.Err != nil || r.Duplicate || r.Version != uint64(i+2) {
			t.Fatalf("op %d: %+v, want applied at version %d, after the other activation's op", i, r, i+2)
		}
	}
	_, log := rep.LogSince(rep.ShardOf("u"), "u", 0)
	var ids []string
	for _, op := range log {
		if op.Grant != nil {
			ids = append(ids, op.Grant.ID)
		} else {
			ids = append(ids, op.Deduction.ID)
		}
	}
	if !reflect.DeepEqual(ids, []string{"other", "a", "b", "c"}) {
		t.Fatalf("log %v", ids)
	}
}

// A proposal that fails, or whose reply is lost, leaves its ops to be
// decided again: each is applied once and reported as this request's, not
// as a duplicate. With no leader at all, a user's first op fails and its
// later ops are skipped, not run out of order.
func TestBatchProposalFailures(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		set  func(*actorstest.Replica)
	}{
		{"failed", func(r *actorstest.Replica) { r.FailBefore.Store(1) }},
		{"reply lost", func(r *actorstest.Replica) { r.LoseReply.Store(1) }},
	} {
		rep := actorstest.NewReplica(1)
		d := newDir(t, rep, time.Minute)
		c.set(rep)
		res := d.Batch(ctx, []BatchOp{grantOp("u", "a", 5, 0), deductOp("u", "b", 3, 1), grantOp("v", "a", 1, 0)})
		for i, r := range res {
			if r.Err != nil || r.Duplicate {
				t.Fatalf("%s: op %d: %+v, %v", c.name, i, r, r.Err)
			}
		}
		if v, _ := rep.LogSince(0, "u", 0); v != 2 {
			t.Fatalf("%s: u at version %d, want 2", c.name, v)
		}
	}

	rep := actorstest.NewReplica(1)
	d := newDir(t, rep, time.Minute)
	rep.Unavailable.Store(true)
	res := d.Batch(ctx, []BatchOp{grantOp("u", "a", 5, 0), deductOp("u", "b", 3, 1), grantOp("u", "c", 1, 0)})
	if res[0].Err == nil || answered(res[0].Err) || !errors.Is(res[1].Err, ErrSkipped) || !errors.Is(res[2].Err, ErrSkipped) {
		t.Fatalf("no leader: %v, %v, %v; want a retryable failure, then skipped", res[0].Err, res[1].Err, res[2].Err)
	}
}

// Concurrent batches over the same users in different orders neither
// deadlock nor lose or double an op.
func TestConcurrentBatchesOverlap(t *testing.T) {
	rep := actorstest.NewReplica(2)
	d := newDir(t, rep, time.Minute)
	users := []string{"a", "b", "c", "d", "e", "f"}
	const workers, rounds = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			for r := range rounds {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				var ops []BatchOp
				for _, k := range rng.Perm(len(users)) {
					ops = append(ops, grantOp(users[k], fmt.Sprint(w, "-", r, "-", k), 1, 0))
				}
				res := d.Batch(ctx, ops)
				cancel()
				for i, x := range res {
					if x.Err != nil || x.Duplicate {
						errs <- fmt.Errorf("worker %d round %d op %d: %+v", w, r, i, x)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, u := range users {
		if v, _ := rep.LogSince(rep.ShardOf(u), u, 0); v != workers*rounds {
			t.Errorf("%s at version %d, want %d", u, v, workers*rounds)
		}
	}
}

// Without chaining (a replica of an older release may be about), each of
// a user's ops goes into an entry of its own; the answers do not change.
func TestBatchWithoutChains(t *testing.T) {
	ctx := context.Background()
	rep := actorstest.NewReplica(1)
	d := New(rep, Options{IdleTimeout: time.Minute, Chain: func(uint32) bool { return false }})
	t.Cleanup(func() { _ = d.Shutdown(context.Background()) })
	ops := []BatchOp{grantOp("u", "a", 5, 0), deductOp("u", "b", 3, 1), grantOp("v", "a", 1, 0), grantOp("u", "c", 1, 0)}
	before := rep.Entries.Load()
	for i, r := range d.Batch(ctx, ops) {
		if r.Err != nil || r.Duplicate {
			t.Fatalf("op %d: %+v", i, r)
		}
	}
	// u's first op and v's together, then u's other two alone.
	if got := rep.Entries.Load() - before; got != 3 {
		t.Fatalf("%d entries, want 3", got)
	}
}
