package actors

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ration/ration/actors/actorstest"
	"github.com/ration/ration/raftfsm"
)

// heldProposals is a replica whose batch proposals wait for the test: a
// send on gate lets one go, closing it lets all go. Like shards.claim, it
// proposes nothing past the end of its context.
type heldProposals struct {
	*actorstest.Replica
	gate  chan struct{}
	calls atomic.Int64
}

func (h *heldProposals) ProposeBatch(ctx context.Context, ops []raftfsm.Op) ([]raftfsm.OpResult, error) {
	h.calls.Add(1)
	select {
	case <-h.gate:
	case <-ctx.Done():
	}
	if err := ended(ctx); err != nil {
		return nil, fmt.Errorf("held: not proposed: %w", err)
	}
	return h.Replica.ProposeBatch(ctx, ops)
}

// heldDirectory is a directory over a one-shard heldProposals, and a
// context for the test.
func heldDirectory(t *testing.T) (context.Context, *heldProposals, *Directory) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	rep := &heldProposals{Replica: actorstest.NewReplica(1), gate: make(chan struct{})}
	return ctx, rep, newDir(t, rep, time.Minute)
}

// gatherState is shard's current gather: its members, the runs handed
// in, and whether it is still open.
func gatherState(d *Directory, shard uint32) (members, runs int, open bool) {
	d.gathersMu.Lock()
	g := d.gathers[shard]
	d.gathersMu.Unlock()
	if g == nil {
		return 0, 0, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.members), len(g.runs), !g.done
}

// waitUntil polls cond, for at most 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// batchAsync runs a batch in the background; its results come on the
// channel.
func batchAsync(ctx context.Context, d *Directory, ops ...BatchOp) <-chan []BatchResult {
	c := make(chan []BatchResult, 1)
	go func() { c <- d.Batch(ctx, ops) }()
	return c
}

// holdOpenGather sets up the shard-0 state the gather tests start from: a
// batch over user x proposing (held by rep's gate), and a batch over x and
// y0 that opened the next gather (under secondCtx), which waits for x
// (busy in the first).
func holdOpenGather(t *testing.T, ctx, secondCtx context.Context, d *Directory, rep *heldProposals) (first, second <-chan []BatchResult) {
	first = batchAsync(ctx, d, grantOp("x", "g0", 1, 0))
	waitUntil(t, "the first batch proposes", func() bool { return rep.calls.Load() == 1 })
	second = batchAsync(secondCtx, d, grantOp("x", "g1", 1, 0), grantOp("y0", "g", 1, 0))
	waitUntil(t, "the second gather has y0's run", func() bool {
		m, r, open := gatherState(d, 0)
		return open && m == 2 && r == 1
	})
	return first, second
}

func allApplied(t *testing.T, what string, res []BatchResult) {
	t.Helper()
	for i, r := range res {
		if r.Err != nil || r.Duplicate {
			t.Fatalf("%s: op %d: %+v, %v", what, i, r, r.Err)
		}
	}
}

// Batches that arrive while a shard's entry is being committed share its
// next gather: N batches over distinct users go out in one entry, not N.
func TestConcurrentBatchesShareAGather(t *testing.T) {
	ctx, rep, d := heldDirectory(t)
	first, second := holdOpenGather(t, ctx, ctx, d, rep)
	const n = 32
	var later []<-chan []BatchResult
	for i := range n {
		u := fmt.Sprint("y", i+1)
		later = append(later, batchAsync(ctx, d, grantOp(u, "g", 10, 0), deductOp(u, "d", 3, 1)))
	}
	waitUntil(t, "every batch joins the open gather", func() bool {
		m, r, open := gatherState(d, 0)
		return open && m == n+2 && r == n+1
	})
	close(rep.gate)
	allApplied(t, "first", <-first)
	allApplied(t, "second", <-second)
	for _, c := range later {
		res := <-c
		allApplied(t, "later", res)
		if res[1].Version != 2 {
			t.Fatalf("deduction at version %d, want 2", res[1].Version)
		}
	}
	// The first batch's entry, then one for the n+1 others.
	if got := rep.calls.Load(); got != 2 {
		t.Fatalf("%d entries for %d batches, want 2", got, n+2)
	}
}

// A batch whose caller goes away while its runs share a gather fails
// alone: its runs are not proposed, and the others' are, whether the
// batch that went away opened the gather or joined it.
func TestCancelledBatchInASharedGather(t *testing.T) {
	ctx, rep, d := heldDirectory(t)
	creatorCtx, cancelCreator := context.WithCancel(ctx)
	first, creator := holdOpenGather(t, ctx, creatorCtx, d, rep)
	joinerCtx, cancelJoiner := context.WithCancel(ctx)
	joiner := batchAsync(joinerCtx, d, grantOp("y1", "g", 1, 0))
	other := batchAsync(ctx, d, grantOp("y2", "g", 1, 0), deductOp("y2", "d", 1, 1))
	waitUntil(t, "both batches join the open gather", func() bool {
		m, r, open := gatherState(d, 0)
		return open && m == 4 && r == 3
	})
	cancelJoiner()
	if res := <-joiner; res[0].Err == nil {
		t.Fatalf("cancelled joiner: %+v", res)
	}
	cancelCreator() // x's call ends, x leaves, the gather proposes
	if res := <-creator; res[0].Err == nil || res[1].Err == nil {
		t.Fatalf("cancelled creator: %+v", res)
	}
	close(rep.gate)
	allApplied(t, "first", <-first)
	allApplied(t, "other", <-other)
	for user, want := range map[string]uint64{"x": 1, "y0": 0, "y1": 0, "y2": 2} {
		if v, _ := rep.LogSince(0, user, 0); v != want {
			t.Errorf("%s at version %d, want %d", user, v, want)
		}
	}
}

// randomBatches is workers' lists of batches over users, seeded: grants
// and deductions with ids of their own that never run short (every user
// starts with a large grant), and now and then an op sent again (a
// duplicate), so that the final state is the same in any order.
func randomBatches(seed uint64, workers, rounds int, users []string) [][][]BatchOp {
	rng := rand.New(rand.NewPCG(seed, 5))
	out := make([][][]BatchOp, workers)
	for w := range out {
		var sent []BatchOp
		for r := range rounds {
			ops := make([]BatchOp, 1+rng.IntN(40))
			for i := range ops {
				u, id := users[rng.IntN(len(users))], fmt.Sprint(w, "-", r, "-", i)
				amount, ts := int64(1+rng.IntN(20)), int64(1+rng.IntN(100))
				switch {
				case len(sent) > 0 && rng.IntN(8) == 0:
					ops[i] = sent[rng.IntN(len(sent))]
				case rng.IntN(2) == 0:
					ops[i] = grantOp(u, id, amount, 0)
				default:
					ops[i] = deductOp(u, id, amount, ts)
				}
				sent = append(sent, ops[i])
			}
			out[w] = append(out[w], ops)
		}
	}
	return out
}

func opID(op BatchOp) string {
	if op.Grant != nil {
		return "g:" + op.Grant.ID
	}
	return "d:" + op.Deduction.ID
}

func loggedID(op raftfsm.LoggedOp) string {
	if op.Grant != nil {
		return "g:" + op.Grant.ID
	}
	return "d:" + op.Deduction.ID
}

// checkOrder checks that a batch's results are where its ops are in the
// logs: each applied op at its version, each user's ops at increasing
// versions, in the batch's order (a duplicate at the version it was read
// at). It counts the ops applied in applied.
func checkOrder(rep *actorstest.Replica, ops []BatchOp, res []BatchResult, applied map[string]int) error {
	last := map[string]uint64{}
	for i, op := range ops {
		r := res[i]
		switch {
		case r.Err != nil:
			return fmt.Errorf("op %d: %w", i, r.Err)
		case r.Duplicate && r.Version < last[op.User], !r.Duplicate && r.Version <= last[op.User]:
			return fmt.Errorf("op %d of %s at version %d, after version %d", i, op.User, r.Version, last[op.User])
		}
		last[op.User] = r.Version
		if r.Duplicate {
			continue
		}
		applied[op.User+"/"+opID(op)]++
		_, log := rep.LogSince(rep.ShardOf(op.User), op.User, r.Version-1)
		if len(log) == 0 || loggedID(log[0]) != opID(op) {
			return fmt.Errorf("op %d of %s: version %d of its log is not it", i, op.User, r.Version)
		}
	}
	return nil
}

// Many concurrent batches over overlapping users end in the state single
// writes of the same ops reach: the same versions and balances, each op
// applied once, each user's ops of a batch in the batch's order.
func TestConcurrentBatchesDifferential(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	single, batched := actorstest.NewReplica(3), actorstest.NewReplica(3)
	ds, db := newDir(t, single, time.Minute), newDir(t, batched, time.Minute)
	var base []BatchOp
	var names []string
	for u := range 12 {
		names = append(names, fmt.Sprint("u", u))
		base = append(base, grantOp(names[u], "base", 1_000_000, 0))
	}
	sequentially(ctx, ds, base)
	sequentially(ctx, db, base)
	work := randomBatches(42, 16, 8, names)
	var mu sync.Mutex
	applied := map[string]int{}
	var wg sync.WaitGroup
	for _, batches := range work {
		wg.Go(func() {
			for _, ops := range batches {
				res := db.Batch(ctx, ops)
				mu.Lock()
				err := checkOrder(batched, ops, res, applied)
				mu.Unlock()
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, batches := range work {
		for _, ops := range batches {
			sequentially(ctx, ds, ops)
		}
	}
	for key, n := range applied {
		if n != 1 {
			t.Errorf("%s applied %d times", key, n)
		}
	}
	for _, u := range names {
		bs, err1 := ds.Balance(ctx, u, 1000, false)
		bb, err2 := db.Balance(ctx, u, 1000, false)
		if err1 != nil || err2 != nil || bs.Balance != bb.Balance || bs.Version != bb.Version {
			t.Errorf("%s: single writes %+v %v, batches %+v %v", u, bs, err1, bb, err2)
		}
	}
}

// The caller that opened a gather going away after the gather proposed
// does not fail the entry: the other callers' runs in it still apply, in
// that entry.
func TestCreatorGoneAfterSharedProposal(t *testing.T) {
	ctx, rep, d := heldDirectory(t)
	creatorCtx, cancelCreator := context.WithCancel(ctx)
	first, creator := holdOpenGather(t, ctx, creatorCtx, d, rep)
	other := batchAsync(ctx, d, grantOp("y1", "g", 1, 0))
	waitUntil(t, "the other batch joins the open gather", func() bool {
		m, r, open := gatherState(d, 0)
		return open && m == 3 && r == 2
	})
	rep.gate <- struct{}{} // the first entry goes; x joins; the gather proposes
	waitUntil(t, "the shared gather proposes", func() bool { return rep.calls.Load() == 2 })
	cancelCreator()
	<-creator
	close(rep.gate)
	allApplied(t, "first", <-first)
	allApplied(t, "other", <-other)
	if got := rep.Entries.Load(); got != 2 {
		t.Fatalf("%d entries, want 2: the shared one failed with its creator", got)
	}
	for user, want := range map[string]uint64{"x": 2, "y0": 1, "y1": 1} {
		if v, _ := rep.LogSince(0, user, 0); v != want {
			t.Errorf("%s at version %d, want %d", user, v, want)
		}
	}
}

// Gathers open one at a time in queue order: a queued gather that seals
// early (every member left before it opened) does not open the one behind
// it before the gathers ahead of it have sealed. Two open gathers could
// hold one user each and wait for each other's members.
//
// The gathers' goroutines run in a synctest bubble: synctest.Wait returns
// once every one of them is blocked, so "not open" below means a wrong
// implementation had every chance to open it, not that it was too slow.
func TestQueuedGathersOpenInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rep := actorstest.NewReplica(1)
		isOpen := func(g *gather) bool {
			select {
			case <-g.open:
				return true
			default:
				return false
			}
		}
		one := func(string) int { return 1 }
		g1 := newGather(rep, nil)
		g1.add([]string{"a"}, one)
		// Sealing g1 lets the queue's goroutines end, also after a
		// failure (a bubble must end with no goroutine blocked).
		t.Cleanup(g1.leave)
		g2 := newGather(rep, g1)
		g2.add([]string{"a", "b"}, one)
		g3 := newGather(rep, g2)
		g3.add([]string{"a"}, one)
		g2.leave()
		g2.leave()
		if !g2.sealed() {
			t.Fatal("g2 not sealed after both its members left")
		}
		synctest.Wait()
		if !isOpen(g1) || isOpen(g2) || isOpen(g3) {
			t.Fatalf("open: g1 %v g2 %v g3 %v, want only g1", isOpen(g1), isOpen(g2), isOpen(g3))
		}
		g1.leave()
		synctest.Wait()
		if !isOpen(g2) || !isOpen(g3) {
			t.Fatalf("after g1 sealed: g2 open %v, g3 open %v; want both", isOpen(g2), isOpen(g3))
		}
	})
}
