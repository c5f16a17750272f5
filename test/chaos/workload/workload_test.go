package workload_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/client/clienttest"
	"github.com/ration/ration/test/chaos/check"
	"github.com/ration/ration/test/chaos/history"
	"github.com/ration/ration/test/chaos/workload"
)

// run drives a fake node (real ledgers, injected faults) for d and
// returns the history, the final state and the users.
func run(t *testing.T, seed int64, d time.Duration, faults bool) ([]history.Op, check.Final) {
	t.Helper()
	srv := clienttest.Start(t, clienttest.Options{})
	rec, err := history.NewRecorder(filepath.Join(t.TempDir(), "history.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	if faults {
		go inject(ctx, srv, seed)
	}
	cfg := workload.Config{
		Seed: seed, Clients: 8, Users: 20, HotUsers: 3, Endpoints: []string{srv.Addr()},
		Resend: 0.05, UserPrefix: "u-" + time.Now().Format("150405.000") + "-",
		AttemptTimeout: 150 * time.Millisecond, RetryBudget: 400 * time.Millisecond,
	}
	if err := workload.Run(ctx, cfg, rec); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	ops := rec.Ops()
	c, err := client.New(t.Context(), client.Options{Endpoints: []string{srv.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var users []string
	for _, op := range ops {
		if !slices.Contains(users, op.User) {
			users = append(users, op.User)
		}
	}
	final, err := check.FetchFinal(t.Context(), c, users)
	if err != nil {
		t.Fatal(err)
	}
	return ops, final
}

// inject makes the fake fail calls (not applied) and lose replies
// (applied), in bursts long enough to exhaust some calls' retry budget.
func inject(ctx context.Context, srv *clienttest.Server, seed int64) {
	rng := rand.New(rand.NewPCG(uint64(seed), 99))
	tick := time.NewTicker(150 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		switch rng.IntN(4) {
		case 0:
			srv.FailNext(1 + rng.IntN(8))
		case 1:
			// Enough for some calls to lose every attempt's reply.
			srv.DropNextReplies(1 + rng.IntN(30))
		}
	}
}

func TestWorkloadAgainstRealLedgerPassesCheck(t *testing.T) {
	ops, final := run(t, 7, 3*time.Second, true)
	st := workload.StatsOf(ops)
	t.Log(st)

	deducts := st.Kind(history.Deduct) - st.Count(history.Deduct, history.Unknown) - st.Count(history.Deduct, history.Failed)
	refused := float64(st.Count(history.Deduct, history.Refused)) / float64(max(deducts, 1))
	t.Logf("refused %.0f%% of answered deductions", 100*refused)
	switch {
	case st.Ops < 300:
		t.Fatalf("only %d ops", st.Ops)
	case refused < 0.05 || refused > 0.4:
		t.Errorf("refused share %.2f, want roughly 0.1..0.3", refused)
	case st.Count(history.Grant, history.Unknown)+st.Count(history.Deduct, history.Unknown) == 0:
		t.Error("no write of unknown outcome: the faults did not bite")
	case st.Resends == 0:
		t.Error("no resends")
	}
	var dups, multi, now, past, future int
	for _, op := range ops {
		if op.Duplicate {
			dups++
		}
		if op.Attempts > 1 {
			multi++
		}
		if op.Kind == history.Balance && op.Outcome == history.OK {
			switch {
			case op.At == nil:
				now++
			case *op.At <= op.Invoke/1e6:
				past++
			default:
				future++
			}
		}
	}
	if dups == 0 || multi == 0 || now == 0 || past == 0 || future == 0 {
		t.Errorf("dups=%d multi-attempt=%d reads now/past/future=%d/%d/%d: want all > 0", dups, multi, now, past, future)
	}

	dir := t.TempDir()
	r := check.Check(ops, final, check.Options{Timeout: 30 * time.Second, VisualizeDir: dir})
	t.Logf("checked %d users, %d ops, slowest %v", r.UsersChecked, r.OpsChecked, r.Slowest)
	for _, a := range r.Anomalies {
		t.Error(a)
	}

	// Not vacuous: one wrong answer is caught.
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i].Kind == history.Balance && ops[i].Outcome == history.OK && ops[i].Balance > 0 {
			ops[i].Balance--
			break
		}
	}
	if r := check.Check(ops, final, check.Options{Timeout: 30 * time.Second}); r.Linearizable {
		t.Error("a wrong balance passed")
	}
}

// The operations a client chooses depend on the seed only: two runs give
// the same sequence (up to the shorter one), whatever the timing.
func TestOpChoiceIsDeterministic(t *testing.T) {
	type choice struct {
		kind     history.Kind
		user, id string
		amount   int64
		prio     int32
	}
	seqs := func(ops []history.Op) map[int][]choice {
		out := map[int][]choice{}
		for _, op := range ops {
			if op.Resend {
				continue
			}
			c := choice{kind: op.Kind, user: op.User[len(op.User)-3:], id: op.ID, prio: op.Priority}
			if op.Kind == history.Grant {
				c.amount = op.Amount // deductions are sized from the balance seen
			}
			out[op.Client] = append(out[op.Client], c)
		}
		return out
	}
	// Long enough for ten ops per client on a loaded machine under -race
	// (at 500 ms, half the runs at load average 20 had fewer).
	a, _ := run(t, 11, 1500*time.Millisecond, false)
	b, _ := run(t, 11, 1700*time.Millisecond, false)
	c, _ := run(t, 12, 1500*time.Millisecond, false)
	sa, sb, sc := seqs(a), seqs(b), seqs(c)
	for client, x := range sa {
		y := sb[client]
		n := min(len(x), len(y))
		if n < 10 {
			t.Fatalf("client %d: only %d ops", client, n)
		}
		if !slices.Equal(x[:n], y[:n]) {
			t.Errorf("client %d: same seed, different choices", client)
		}
		if z := sc[client]; slices.Equal(x[:min(n, len(z))], z[:min(n, len(z))]) {
			t.Errorf("client %d: different seeds, same choices", client)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	rec, _ := history.NewRecorder("")
	for _, cfg := range []workload.Config{
		{Clients: 0, Users: 1, Endpoints: []string{"x:1"}},
		{Clients: 1, Users: 0, Endpoints: []string{"x:1"}},
		{Clients: 1, Users: 2, HotUsers: 3, Endpoints: []string{"x:1"}},
		{Clients: 1, Users: 1},
		{Clients: 1, Users: 1, Endpoints: []string{"x:1"}, Resend: 2},
	} {
		if err := workload.Run(t.Context(), cfg, rec); !errors.Is(err, workload.ErrConfig) {
			t.Errorf("%+v: err %v, want ErrConfig", cfg, err)
		}
	}
}

// A cluster that is down: every call fails; writes that never left the
// client are Failed, not Unknown, and Run still ends with ctx.
func TestUnreachable(t *testing.T) {
	rec, _ := history.NewRecorder("")
	ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := workload.Run(ctx, workload.Config{Seed: 1, Clients: 2, Users: 5, Endpoints: []string{"127.0.0.1:1"},
		AttemptTimeout: 100 * time.Millisecond, RetryBudget: 200 * time.Millisecond}, rec)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Run took %v after a 700ms context", took)
	}
	st := workload.StatsOf(rec.Ops())
	t.Log(st)
	if st.Ops == 0 || st.Count(history.Grant, history.Unknown)+st.Count(history.Deduct, history.Unknown) > 0 ||
		st.Count(history.Grant, history.OK)+st.Count(history.Balance, history.OK) > 0 {
		t.Errorf("want only failed calls: %v", st)
	}
}
