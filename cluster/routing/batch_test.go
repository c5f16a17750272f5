package routing

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/service"
)

// leadAll makes node lead every shard.
func leadAll(w *world, node string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := range w.shards {
		w.leaders[s] = node
	}
}

// batchOver makes a batch over users (each granted 10, then two
// deductions of 3) and the users it touches.
func batchOver(n int) ([]actors.BatchOp, []string) {
	var ops []actors.BatchOp
	var users []string
	for u := range n {
		user := fmt.Sprint("b", u)
		users = append(users, user)
		ops = append(ops, actors.BatchOp{User: user, Grant: &ledger.Grant{ID: "g", Amount: 10, ExpiresAt: ledger.Never}})
	}
	for k := range 2 {
		for _, user := range users {
			ops = append(ops, actors.BatchOp{User: user, Deduction: &ledger.Deduction{ID: fmt.Sprint("d", k), Amount: 3, Timestamp: int64(k + 1)}})
		}
	}
	return ops, users
}

// checkBatch checks that every op of batchOver applied in order. A
// duplicate (the retry of an attempt whose reply was lost) reports the
// user's version after the whole batch, as a single write's retry would.
func checkBatch(t *testing.T, ops []actors.BatchOp, res []actors.BatchResult, users int) {
	t.Helper()
	for i, r := range res {
		want := uint64(i/users + 1)
		if r.Duplicate {
			want = 3
		}
		if r.Err != nil || r.Version != want {
			t.Fatalf("op %d (%s): %+v, want applied at version %d", i, ops[i].User, r, want)
		}
	}
}

// A batch sent to any node reaches each shard's leader once, in one call
// per shard, and every op applies in its user's order.
func TestBatchByShardLeader(t *testing.T) {
	w, nodes := newWorld(t, 3)
	a := nodes[0]
	ops, users := batchOver(12)
	remoteShards := map[uint32]bool{}
	for _, u := range users {
		if s := a.router.loc.ShardOf(u); w.leaderOf(s) != "a" {
			remoteShards[s] = true
		}
	}
	res := a.router.Batch(context.Background(), ops)
	checkBatch(t, ops, res, len(users))
	if got := a.remote.hops.Load(); got != int64(len(remoteShards)) {
		t.Fatalf("%d hops for a batch over %d shards led elsewhere, want one each", got, len(remoteShards))
	}
}

// Attempts that fail, or whose reply is lost, are tried again with the
// same ids: each op applies once, in order; a lost reply's retry reports
// duplicates, as for single writes.
func TestBatchRetries(t *testing.T) {
	w, nodes := newWorld(t, 2)
	a := nodes[0]
	leadAll(w, "b")
	ops, users := batchOver(6)
	a.remote.fail.Store(2)
	checkBatch(t, ops, a.router.Batch(context.Background(), ops), len(users))

	ops, users = batchOver(6)
	for i := range ops {
		ops[i].User += "-lost"
	}
	a.remote.lose.Store(1)
	res := a.router.Batch(context.Background(), ops)
	checkBatch(t, ops, res, len(users))
	lost := 0
	for _, r := range res {
		if r.Duplicate {
			lost++
		}
	}
	if lost == 0 {
		t.Fatal("no op reported as the duplicate of its lost attempt")
	}
}

// While the leader cannot propose, its answers are not answers: the ops
// are tried again, a user's later ops with them, until it can.
func TestBatchWaitsForTheLeader(t *testing.T) {
	w, nodes := newWorld(t, 2)
	a := nodes[0]
	leadAll(w, "a")
	ops, users := batchOver(6)
	nodes[0].rep.Unavailable.Store(true)
	go func() {
		time.Sleep(100 * time.Millisecond)
		nodes[0].rep.Unavailable.Store(false)
	}()
	checkBatch(t, ops, a.router.Batch(context.Background(), ops), len(users))

	// No leader at all: unavailable after the deadline, never wrong.
	leadAll(w, "nobody")
	r := New(w.dirs["a"], a.router.loc, Options{Deadline: 300 * time.Millisecond, Remote: a.remote})
	for i, x := range r.Batch(context.Background(), ops[:4]) {
		if service.ClassOf(x.Err) != service.ClassUnavailable {
			t.Fatalf("op %d without a leader: %v, want unavailable", i, x.Err)
		}
	}
}

// heldBatch is a remote whose first batch attempt goes unanswered and
// reaches the leader later, within its deadline, as a forward held up in
// a partition does.
type heldBatch struct {
	*remote
	dir     *actors.Directory // the leader's
	openFor time.Duration
	mu      sync.Mutex
	calls   []time.Time
	late    chan []actors.BatchResult
}

func (h *heldBatch) Batch(ctx context.Context, ops []actors.BatchOp) []actors.BatchResult {
	h.mu.Lock()
	h.calls = append(h.calls, time.Now())
	first := len(h.calls) == 1
	h.mu.Unlock()
	if !first {
		return h.remote.Batch(ctx, ops)
	}
	until := time.Now().Add(h.openFor)
	go func() {
		time.Sleep(h.openFor / 2)
		h.late <- h.dir.Batch(context.Background(), ops)
	}()
	res := make([]actors.BatchResult, len(ops))
	for k := range res {
		res[k].Err = openErr{until}
	}
	return res
}

// After an attempt that was sent and not answered, the next one waits
// until it can no longer start: the held attempt applies the ops, and
// the retry finds them.
func TestBatchWaitsOutOpenAttempts(t *testing.T) {
	w, nodes := newWorld(t, 2)
	a := nodes[0]
	leadAll(w, "b")
	h := &heldBatch{remote: a.remote, dir: w.dirs["b"], openFor: 200 * time.Millisecond, late: make(chan []actors.BatchResult, 1)}
	r := New(w.dirs["a"], a.router.loc, Options{Deadline: 3 * time.Second, Remote: h})
	ops := []actors.BatchOp{
		{User: "held", Grant: &ledger.Grant{ID: "g", Amount: 5, ExpiresAt: ledger.Never}},
		{User: "held", Deduction: &ledger.Deduction{ID: "d", Amount: 5, Timestamp: 1}},
	}
	start := time.Now()
	res := r.Batch(context.Background(), ops)
	for i, x := range <-h.late {
		if x.Err != nil {
			t.Fatalf("the held attempt's op %d: %v", i, x.Err)
		}
	}
	for i, x := range res {
		if x.Err != nil || !x.Duplicate {
			t.Fatalf("op %d: %+v; the held attempt applied it, so the answer is its duplicate", i, x)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.calls) != 2 {
		t.Fatalf("%d attempts, want 2", len(h.calls))
	}
	if settled := start.Add(h.openFor + clockAllowance); h.calls[1].Before(settled) {
		t.Errorf("tried again %v after the start, before the held attempt settled", h.calls[1].Sub(start))
	}
}
