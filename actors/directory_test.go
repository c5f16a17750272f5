package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ration/ration/actors/actorstest"
	"github.com/ration/ration/ledger"
)

func newDir(t *testing.T, rep Replica, idle time.Duration) *Directory {
	d := New(rep, Options{IdleTimeout: idle})
	t.Cleanup(func() { _ = d.Shutdown(context.Background()) })
	return d
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ledger.ErrInvalidArgument):
		return "invalid"
	case errors.Is(err, ledger.ErrConflict):
		return "conflict"
	case errors.Is(err, ledger.ErrInsufficientCredits):
		return "insufficient"
	}
	return "error: " + err.Error()
}

// Every scenario of the shared vectors, through actors and the real FSM.
func TestVectorsThroughActors(t *testing.T) {
	data, err := os.ReadFile("../ledger/testdata/ledger-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Scenarios []struct {
			Name, User string
			Steps      []struct {
				Op, ID, Expect                 string
				Amount, Timestamp, At, Balance int64
				ExpiresAt                      *int64 `json:"expires_at"`
				Priority                       *int32
			}
		}
	}
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	rep := actorstest.NewReplica(4)
	d := newDir(t, rep, time.Minute)
	ctx := context.Background()
	for _, sc := range v.Scenarios {
		for i, st := range sc.Steps {
			var err error
			switch st.Op {
			case "grant":
				g := ledger.Grant{ID: st.ID, Amount: st.Amount, Timestamp: st.Timestamp, ExpiresAt: ledger.Never}
				if st.ExpiresAt != nil {
					g.ExpiresAt = *st.ExpiresAt
				}
				if st.Priority != nil {
					g.Priority = *st.Priority
				}
				_, err = d.Grant(ctx, sc.User, g)
			case "deduct":
				_, err = d.Deduct(ctx, sc.User, ledger.Deduction{ID: st.ID, Amount: st.Amount, Timestamp: st.Timestamp})
			case "balance":
				b, berr := d.Balance(ctx, sc.User, st.At, false)
				if berr != nil || b.Balance != st.Balance {
					t.Fatalf("%s step %d: balance at %d = %d (%v), want %d", sc.Name, i, st.At, b.Balance, berr, st.Balance)
				}
			}
			if got := outcome(err); got != st.Expect {
				t.Fatalf("%s step %d: got %s, want %s", sc.Name, i, got, st.Expect)
			}
		}
	}
}

// Many concurrent deductions of one user, several activations of the user
// (as during a leadership change), retries racing each other, and replies
// lost after apply: credits are never overspent and no id applies twice.
func TestConcurrentWritersNeverOverspend(t *testing.T) {
	rep := actorstest.NewReplica(2)
	dirs := []*Directory{newDir(t, rep, time.Minute), newDir(t, rep, time.Minute)}
	ctx := context.Background()
	const user, credits = "racer", 100
	if _, err := dirs[0].Grant(ctx, user, ledger.Grant{ID: "g", Amount: credits, Timestamp: 0, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	rep.LoseReply.Store(5)
	var okIDs, refusedIDs sync.Map
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				// Ids shared between pairs of workers: the same request
				// racing itself, as client retries do.
				id := fmt.Sprintf("d-%d-%d", w/2, i)
				_, err := dirs[w%2].Deduct(ctx, user, ledger.Deduction{ID: id, Amount: 1, Timestamp: int64(i)})
				switch {
				case err == nil:
					okIDs.Store(id, true)
				case errors.Is(err, ledger.ErrInsufficientCredits):
					refusedIDs.Store(id, true)
				default:
					t.Errorf("deduct %s: %v", id, err)
				}
			}
		}(w)
	}
	wg.Wait()
	version, ops := rep.LogSince(rep.ShardOf(user), user, 0)
	seen := map[string]bool{}
	for _, op := range ops {
		if op.Deduction != nil {
			if seen[op.Deduction.ID] {
				t.Fatalf("%s applied twice", op.Deduction.ID)
			}
			seen[op.Deduction.ID] = true
		}
	}
	if len(seen) != credits {
		t.Fatalf("%d distinct deductions applied, want exactly %d (all credits, no more)", len(seen), credits)
	}
	if version != credits+1 {
		t.Fatalf("version %d", version)
	}
	// Answers agree with the log: an id answered ok is applied, an id
	// refused is not, and every applied id was answered ok.
	okIDs.Range(func(k, _ any) bool {
		if !seen[k.(string)] {
			t.Errorf("%s answered ok but not applied", k)
		}
		return true
	})
	refusedIDs.Range(func(k, _ any) bool {
		if seen[k.(string)] {
			t.Errorf("%s refused but applied", k)
		}
		return true
	})
	for id := range seen {
		if _, ok := okIDs.Load(id); !ok {
			t.Errorf("%s applied but never answered ok", id)
		}
	}
	b, err := dirs[1].Balance(ctx, user, 1000, false)
	if err != nil || b.Balance != 0 {
		t.Fatalf("balance %+v %v", b, err)
	}
}

func TestFailedProposalIsRetriedOrReported(t *testing.T) {
	rep := actorstest.NewReplica(1)
	d := newDir(t, rep, time.Minute)
	ctx := context.Background()
	if _, err := d.Grant(ctx, "u", ledger.Grant{ID: "g", Amount: 10, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	// Applied, reply lost: the actor finds it in the log and reports it as
	// this request's success, not as a duplicate.
	rep.LoseReply.Store(1)
	r, err := d.Deduct(ctx, "u", ledger.Deduction{ID: "d1", Amount: 3, Timestamp: 1})
	if err != nil || r.Duplicate || len(r.Allocations) != 1 {
		t.Fatalf("lost reply: %+v %v", r, err)
	}
	// Not applied: the actor proposes again.
	rep.FailBefore.Store(1)
	r, err = d.Deduct(ctx, "u", ledger.Deduction{ID: "d2", Amount: 3, Timestamp: 2})
	if err != nil || r.Duplicate {
		t.Fatalf("failed before apply: %+v %v", r, err)
	}
	// A client retry of d2 is a duplicate.
	r, err = d.Deduct(ctx, "u", ledger.Deduction{ID: "d2", Amount: 3, Timestamp: 2})
	if err != nil || !r.Duplicate {
		t.Fatalf("retry: %+v %v", r, err)
	}
	if v, _ := rep.LogSince(0, "u", 0); v != 3 {
		t.Fatalf("version %d, want 3", v)
	}
	// Failing every attempt ends with outcome unknown.
	rep.FailBefore.Store(100)
	if _, err := d.Deduct(ctx, "u", ledger.Deduction{ID: "d3", Amount: 1, Timestamp: 3}); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("got %v, want outcome unknown", err)
	}
}

func TestPassivationAndReactivation(t *testing.T) {
	rep := actorstest.NewReplica(1)
	d := newDir(t, rep, 30*time.Millisecond)
	ctx := context.Background()
	if _, err := d.Grant(ctx, "sleepy", ledger.Grant{ID: "g", Amount: 7, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.Active() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("actor never passivated")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b, err := d.Balance(ctx, "sleepy", 0, false)
	if err != nil || b.Balance != 7 || b.Version != 1 {
		t.Fatalf("after reactivation: %+v %v", b, err)
	}
	if _, err := d.Balance(ctx, "bad user", 0, false); !errors.Is(err, ledger.ErrInvalidArgument) {
		t.Fatalf("invalid user: %v", err)
	}
}

// A request that reaches an actor which has stopped is answered by the
// dead-letter watch at once, not left to wait out its timeout, and call
// sends it again to a fresh activation.
func TestRequestToStoppedActorIsAnsweredAndResent(t *testing.T) {
	rep := actorstest.NewReplica(1)
	d := newDir(t, rep, time.Hour)
	ctx := context.Background()
	if _, err := d.Grant(ctx, "gone", ledger.Grant{ID: "g", Amount: 5, ExpiresAt: ledger.Never}); err != nil {
		t.Fatal(err)
	}
	pid, err := d.activate("gone")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.sys.Root.StopFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
	// The directory still lists the stopped PID, as it does for a request
	// routed just before a passivation: a bare send gets the dead letter...
	_, err = d.send(ctx, pid, &request{ctx: ctx, kind: opBalance}, time.Hour)
	if !errors.Is(err, errDeadLetter) {
		t.Fatalf("send to a stopped actor: %v, want errDeadLetter", err)
	}
	// ...and call, once the stale activation is forgotten, reaches a new one.
	d.mu.Lock()
	act := d.acts.byUser["gone"]
	d.mu.Unlock()
	d.forget(act)
	b, err := d.Balance(ctx, "gone", 0, false)
	if err != nil || b.Balance != 5 {
		t.Fatalf("balance after the actor stopped: %+v %v", b, err)
	}
}
