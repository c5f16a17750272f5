package actorcluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/ration/ration/actors"
	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/cluster/actorcluster/actorpb"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/service"
)

// opsFor is a batch for user: a grant of 10, a deduction too large, a
// deduction of 4, a conflicting grant, an invalid deduction.
func opsFor(user string) []actors.BatchOp {
	return []actors.BatchOp{
		{User: user, Grant: &ledger.Grant{ID: "g", Amount: 10, Timestamp: 1, ExpiresAt: 100, Priority: 2}},
		{User: user, Deduction: &ledger.Deduction{ID: "big", Amount: 50, Timestamp: 5}},
		{User: user, Deduction: &ledger.Deduction{ID: "d", Amount: 4, Timestamp: 5}},
		{User: user, Grant: &ledger.Grant{ID: "g", Amount: 11, Timestamp: 1, ExpiresAt: 100}},
		{User: user, Deduction: &ledger.Deduction{ID: "zero", Amount: 0, Timestamp: 5}},
	}
}

// checkOps checks the results of opsFor: every answer the leader's, with
// its details.
func checkOps(t *testing.T, via string, res []actors.BatchResult) {
	t.Helper()
	var ie *ledger.InsufficientCreditsError
	var ia *ledger.InvalidArgumentError
	switch {
	case res[0].Err != nil || res[0].Version != 1:
		t.Fatalf("%s: grant %+v", via, res[0])
	case !errors.As(res[1].Err, &ie) || ie.DeductionID != "big" || ie.Shortfall != 40 || ie.At != 5:
		t.Fatalf("%s: big deduction %v", via, res[1].Err)
	case res[2].Err != nil || res[2].Version != 2 || len(res[2].Allocations) != 1 || res[2].Allocations[0] != (ledger.Allocation{GrantID: "g", Amount: 4}):
		t.Fatalf("%s: deduction %+v", via, res[2])
	case !errors.Is(res[3].Err, ledger.ErrConflict):
		t.Fatalf("%s: conflicting grant %v", via, res[3].Err)
	case !errors.As(res[4].Err, &ia) || ia.Field != "amount" || ia.Reason == "":
		t.Fatalf("%s: invalid deduction %v", via, res[4].Err)
	}
}

// A batch from one node reaches the leader of each of its shards, one
// envelope and one raft entry per shard, and every op's answer comes back
// with its details.
func TestBatchReachesEachLeader(t *testing.T) {
	w := newWorld(6)
	nodes := startNodes(t, w, 3)
	a := nodes[0].c
	var ops []actors.BatchOp
	var users []string
	for _, leader := range nodes {
		user := userOn(t, w, leader.rep, leader.id)
		users = append(users, user)
		ops = append(ops, opsFor(user)...)
	}
	entries := make([]int64, len(nodes))
	for i, n := range nodes {
		entries[i] = n.rep.Entries.Load()
	}
	res := a.Batch(context.Background(), ops)
	for i, user := range users {
		checkOps(t, "via "+nodes[i].id, res[5*i:5*i+5])
		if got := nodes[i].rep.Entries.Load() - entries[i]; got < 1 || got > 2 {
			// One entry for the run (g), one after the refusal (d).
			t.Errorf("%s (led by %s): %d entries for its ops", user, nodes[i].id, got)
		}
	}
}

// A batch sent along a stale view is answered not-leader, retryably, and
// the lookup then knows the new leader; the next attempt is served there.
func TestBatchFollowsLeadership(t *testing.T) {
	w := newWorld(2)
	nodes := startNodes(t, w, 2)
	a, b := nodes[0], nodes[1]
	user := userOn(t, w, b.rep, "b")
	ops := []actors.BatchOp{{User: user, Grant: &ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never}}}
	if res := a.c.Batch(context.Background(), ops); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	// b's view moves the shard to a: b no longer leads it, a does, and
	// a's lookup still holds b as its leader (no leadership event on a).
	w.mu.Lock()
	w.leaders[a.rep.ShardOf(user)] = "c"
	w.mu.Unlock()
	ops[0].Grant.ID = "g2"
	res := a.c.Batch(context.Background(), ops)
	if !errors.Is(res[0].Err, ErrNotLeader) || service.ClassOf(res[0].Err) != service.ClassUnavailable {
		t.Fatalf("stale view: %v, want a retryable not-leader", res[0].Err)
	}
	w.setLeader(a.rep.ShardOf(user), "b")
	if res := a.c.Batch(context.Background(), ops); res[0].Err != nil || res[0].Version != 2 {
		t.Fatalf("after the move back: %+v", res[0])
	}
}

// A leader that does not serve KIND_BATCH (an older release) gets the
// ops one by one, each user's in order, skipping after an op without an
// answer.
func TestBatchOneByOne(t *testing.T) {
	w := newWorld(2)
	nodes := startNodes(t, w, 2)
	a, b := nodes[0], nodes[1]
	user := userOn(t, w, b.rep, "b")
	ops := opsFor(user)
	res := make([]actors.BatchResult, len(ops))
	a.c.batchOneByOne(context.Background(), ops, []int{0, 1, 2, 3, 4}, res)
	checkOps(t, "one by one", res)

	for s := range w.shards {
		w.setLeader(uint32(s), "nobody")
	}
	ops = ops[:3]
	for i := range ops {
		ops[i].User = user + "-x"
	}
	res = make([]actors.BatchResult, len(ops))
	a.c.batchOneByOne(context.Background(), ops, []int{0, 1, 2}, res)
	if service.ClassOf(res[0].Err) != service.ClassUnavailable || !errors.Is(res[1].Err, actors.ErrSkipped) || !errors.Is(res[2].Err, actors.ErrSkipped) {
		t.Fatalf("no leader: %v, %v, %v", res[0].Err, res[1].Err, res[2].Err)
	}
}

// The directory actor refuses batches it cannot run, without a panic:
// payloads that do not decode, ops of several shards, shards it does not
// lead, and batches that arrived after their sender's deadline.
func TestBatchEnvelopesRefused(t *testing.T) {
	w := newWorld(4)
	nodes := startNodes(t, w, 2)
	a, b := nodes[0], nodes[1]
	dirPID := actor.NewPID(a.c.Address(), DirectoryActor)
	ask := func(req *actorpb.Request) actorpb.Code {
		t.Helper()
		req.Version, req.Kind = actorpb.Version_VERSION_1, actorpb.Kind_KIND_BATCH
		rep, err := b.c.calls.request(context.Background(), dirPID, req, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return rep.GetError().GetCode()
	}
	batchOf := func(users ...string) []byte {
		msg := &rationv1.BatchRequest{}
		for i, u := range users {
			msg.Operations = append(msg.Operations, operation(actors.BatchOp{User: u, Grant: &ledger.Grant{ID: fmt.Sprint("g", i), Amount: 1, ExpiresAt: ledger.Never}}))
		}
		p, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	var onA, onB []string
	for i := 0; len(onA) < 2 || len(onB) < 1; i++ {
		u := fmt.Sprint("v", i)
		w.mu.Lock()
		l := w.leaders[a.rep.ShardOf(u)]
		w.mu.Unlock()
		if l == "a" {
			onA = append(onA, u)
		} else {
			onB = append(onB, u)
		}
	}
	for _, c := range []struct {
		name string
		req  *actorpb.Request
		want actorpb.Code
	}{
		{"undecodable", &actorpb.Request{Payload: []byte{0xff, 0xff}}, actorpb.Code_CODE_UNSUPPORTED},
		{"empty", &actorpb.Request{}, actorpb.Code_CODE_UNSUPPORTED},
		{"not led here", &actorpb.Request{Payload: batchOf(onB[0])}, actorpb.Code_CODE_NOT_LEADER},
		{"late", &actorpb.Request{Payload: batchOf(onA[0]), DeadlineUnixMs: time.Now().Add(-time.Second).UnixMilli()}, actorpb.Code_CODE_DEADLINE_EXCEEDED},
	} {
		if got := ask(c.req); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if a.rep.ShardOf(onA[0]) != a.rep.ShardOf(onB[0]) {
		if got := ask(&actorpb.Request{Payload: batchOf(onA[0], onB[0])}); got != actorpb.Code_CODE_UNAVAILABLE {
			t.Errorf("two shards: %v, want unavailable", got)
		}
	}
	// The directory actor still activates afterwards, and a served batch
	// changed nothing for the refused ones.
	if v, _ := a.rep.LogSince(a.rep.ShardOf(onA[0]), onA[0], 0); v != 0 {
		t.Fatalf("a refused batch applied: %s at version %d", onA[0], v)
	}
	if _, err := b.c.Grant(context.Background(), onA[1], ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
}
