package check

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/test/chaos/history"
)

func ptr(v int64) *int64 { return &v }

// scenario is a small concurrent history of one user "u" and the final
// history that goes with it. Times are in ns of the harness clock,
// timestamps in ms.
//
//	c0: grant g1 100 @1000                 [0, 10]   ok
//	c1: grant g2  50 @1000 exp 5000        [5, 15]   ok
//	c2: balance @2000 -> 150 [g2:50 g1:100] [12, 19]
//	c0: deduct d1 70 @1500                 [20, 30]  ok [g2:50 g1:20]
//	c1: balance @2000 -> 80 [g1:80]        [25, 35]  (d1 linearized first)
//	c2: deduct d2 100 @1600                [31, 40]  refused
//	c0: balance @6000 -> 80 [g1:80]        [41, 50]
type scenario struct {
	ops    []history.Op
	events []client.Event
}

func base() scenario {
	ops := []history.Op{
		{Client: 0, Kind: history.Grant, ID: "g1", Amount: 100, Timestamp: 1000, Invoke: 0, Return: 10, Outcome: history.OK},
		{Client: 1, Kind: history.Grant, ID: "g2", Amount: 50, Timestamp: 1000, ExpiresAt: ptr(5000), Invoke: 5, Return: 15, Outcome: history.OK},
		{Client: 2, Kind: history.Balance, At: ptr(2000), Invoke: 12, Return: 19, Outcome: history.OK, Balance: 150,
			Grants: []history.GrantBalance{{ID: "g2", Remaining: 50, ExpiresAt: ptr(5000), Timestamp: 1000}, {ID: "g1", Remaining: 100, Timestamp: 1000}}},
		{Client: 0, Kind: history.Deduct, ID: "d1", Amount: 70, Timestamp: 1500, Invoke: 20, Return: 30, Outcome: history.OK,
			Allocations: []history.Allocation{{GrantID: "g2", Amount: 50}, {GrantID: "g1", Amount: 20}}},
		{Client: 1, Kind: history.Balance, At: ptr(2000), Invoke: 25, Return: 35, Outcome: history.OK, Balance: 80,
			Grants: []history.GrantBalance{{ID: "g1", Remaining: 80, Timestamp: 1000}}},
		{Client: 2, Kind: history.Deduct, ID: "d2", Amount: 100, Timestamp: 1600, Invoke: 31, Return: 40, Outcome: history.Refused,
			Insufficient: &history.Insufficient{DeductionID: "d2", At: 1600, Shortfall: 20}},
		{Client: 0, Kind: history.Balance, At: ptr(6000), Invoke: 41, Return: 50, Outcome: history.OK, Balance: 80,
			Grants: []history.GrantBalance{{ID: "g1", Remaining: 80, Timestamp: 1000}}},
	}
	for i := range ops {
		ops[i].Seq = int64(i + 1)
		ops[i].User = "u"
	}
	events := []client.Event{
		{Kind: client.EventGrant, ID: "g1", Timestamp: 1000, Amount: 100, BalanceAfter: 100},
		{Kind: client.EventGrant, ID: "g2", Timestamp: 1000, Amount: 50, ExpiresAt: ptr(5000), BalanceAfter: 150},
		{Kind: client.EventDeduction, ID: "d1", Timestamp: 1500, Amount: 70, BalanceAfter: 80,
			Allocations: []client.Allocation{{GrantID: "g2", Amount: 50}, {GrantID: "g1", Amount: 20}}},
		{Kind: client.EventExpiration, ID: "g2", Timestamp: 5000, Amount: 0, BalanceAfter: 80},
	}
	return scenario{ops: ops, events: events}
}

func (s scenario) check(t *testing.T, opts Options) Result {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	return Check(s.ops, Final{Events: map[string][]client.Event{"u": s.events}}, opts)
}

// op returns the op with id (or, for "", the read with that seq).
func (s scenario) op(t *testing.T, seq int64) *history.Op {
	t.Helper()
	for i := range s.ops {
		if s.ops[i].Seq == seq {
			return &s.ops[i]
		}
	}
	t.Fatalf("no op seq %d", seq)
	return nil
}

func (s *scenario) add(op history.Op) {
	op.Seq = int64(len(s.ops) + 1)
	op.User = "u"
	s.ops = append(s.ops, op)
}

func kinds(r Result) []string {
	var ks []string
	for _, a := range r.Anomalies {
		if !slices.Contains(ks, a.Kind) {
			ks = append(ks, a.Kind)
		}
	}
	slices.Sort(ks)
	return ks
}

func wantPass(t *testing.T, r Result) {
	t.Helper()
	if len(r.Anomalies) > 0 {
		t.Fatalf("want no anomalies, got %v", r.Anomalies)
	}
}

func wantKinds(t *testing.T, r Result, want ...string) {
	t.Helper()
	slices.Sort(want)
	for _, a := range r.Anomalies {
		t.Log(a)
	}
	if got := kinds(r); !slices.Equal(got, want) {
		t.Fatalf("anomaly kinds %v, want %v; anomalies: %v", got, want, r.Anomalies)
	}
}

func TestCorrectConcurrentHistoryPasses(t *testing.T) {
	r := base().check(t, Options{})
	wantPass(t, r)
	if r.UsersChecked != 1 || r.OpsChecked != 7 || !r.Linearizable || !r.Invariants {
		t.Fatalf("result %+v", r)
	}
}

func TestReadOrderMatters(t *testing.T) {
	// The two reads at 2000 are concurrent with d1; swapping which one saw
	// it makes c2's read (which ended before d1 started) see it: stale
	// order reversed, not linearizable.
	s := base()
	r0, r1 := s.op(t, 3), s.op(t, 5)
	r0.Balance, r0.Grants, r1.Balance, r1.Grants = r1.Balance, r1.Grants, r0.Balance, r0.Grants
	wantKinds(t, s.check(t, Options{}), KindNonlinearizable)
}

func TestStaleReadFails(t *testing.T) {
	s := base()
	// A read that starts after d1 returned but does not see it.
	s.add(history.Op{Client: 1, Kind: history.Balance, At: ptr(2000), Invoke: 51, Return: 60, Outcome: history.OK, Balance: 150,
		Grants: []history.GrantBalance{{ID: "g2", Remaining: 50, ExpiresAt: ptr(5000), Timestamp: 1000}, {ID: "g1", Remaining: 100, Timestamp: 1000}}})
	r := s.check(t, Options{})
	wantKinds(t, r, KindNonlinearizable)
	if !strings.Contains(r.Anomalies[0].Detail, "seq 8") {
		t.Errorf("detail should name the stale read (seq 8): %s", r.Anomalies[0].Detail)
	}
}

func TestWriteAppliedTwiceFails(t *testing.T) {
	t.Run("final history", func(t *testing.T) {
		s := base()
		d := s.events[2]
		d.BalanceAfter = 10
		s.events = slices.Insert(s.events, 3, d)
		s.events[4].BalanceAfter = 10
		wantKinds(t, s.check(t, Options{}), KindDuplicateApply)
	})
	t.Run("balance reduced twice", func(t *testing.T) {
		s := base()
		s.op(t, 7).Balance = 10
		s.op(t, 7).Grants = []history.GrantBalance{{ID: "g1", Remaining: 10, Timestamp: 1000}}
		wantKinds(t, s.check(t, Options{}), KindNonlinearizable)
	})
}

func TestAckedWriteMissingFails(t *testing.T) {
	s := base()
	s.events = []client.Event{s.events[0], s.events[1], s.events[3]}
	s.events[2].Amount, s.events[2].BalanceAfter = 50, 100 // g2 now expires unused
	wantKinds(t, s.check(t, Options{}), KindLostWrite)
}

func TestRefusedFeasibleDeductionFails(t *testing.T) {
	s := base()
	d2 := s.op(t, 6)
	d2.Amount = 80 // exactly what is left
	d2.Insufficient = nil
	wantKinds(t, s.check(t, Options{}), KindNonlinearizable)
}

func TestRefusalDetailsAreChecked(t *testing.T) {
	s := base()
	s.op(t, 6).Insufficient.Shortfall = 21
	wantKinds(t, s.check(t, Options{}), KindNonlinearizable)
}

func TestWrongAllocationsFail(t *testing.T) {
	t.Run("reply", func(t *testing.T) {
		s := base()
		s.op(t, 4).Allocations = []history.Allocation{{GrantID: "g1", Amount: 70}}
		wantKinds(t, s.check(t, Options{}), KindNonlinearizable)
	})
	t.Run("final history", func(t *testing.T) {
		s := base()
		s.events[2].Allocations = []client.Allocation{{GrantID: "g1", Amount: 70}}
		wantKinds(t, s.check(t, Options{}), KindReplayMismatch)
	})
}

func TestFinalHistoryMustReplay(t *testing.T) {
	t.Run("balance after", func(t *testing.T) {
		s := base()
		s.events[1].BalanceAfter = 149
		wantKinds(t, s.check(t, Options{}), KindReplayMismatch)
	})
	t.Run("order", func(t *testing.T) {
		s := base()
		s.events[2], s.events[3] = s.events[3], s.events[2]
		wantKinds(t, s.check(t, Options{}), KindReplayMismatch)
	})
	t.Run("missing expiration", func(t *testing.T) {
		s := base()
		s.events = s.events[:3]
		wantKinds(t, s.check(t, Options{}), KindReplayMismatch)
	})
	t.Run("negative", func(t *testing.T) {
		s := base()
		s.events[2].Amount, s.events[2].BalanceAfter = 170, -20
		s.op(t, 4).Amount = 170
		wantKinds(t, s.check(t, Options{}), KindNegativeBalance, KindNonlinearizable, KindReplayMismatch)
	})
}

func TestPhantomWritesFail(t *testing.T) {
	t.Run("never sent", func(t *testing.T) {
		s := base()
		s.events = slices.Insert(s.events, 2, client.Event{Kind: client.EventGrant, ID: "gx", Timestamp: 1000, Amount: 5, BalanceAfter: 155})
		for i := 3; i < len(s.events); i++ {
			s.events[i].BalanceAfter += 5
		}
		wantKinds(t, s.check(t, Options{}), KindPhantomWrite)
	})
	t.Run("refused", func(t *testing.T) {
		s := base()
		s.op(t, 6).Amount = 20
		s.op(t, 6).Insufficient = nil
		s.op(t, 6).Outcome = history.Failed // definitely not sent
		s.events = slices.Insert(s.events, 3, client.Event{Kind: client.EventDeduction, ID: "d2", Timestamp: 1600, Amount: 20, BalanceAfter: 60,
			Allocations: []client.Allocation{{GrantID: "g1", Amount: 20}}})
		s.events[4].BalanceAfter = 60
		wantKinds(t, s.check(t, Options{}), KindPhantomWrite)
	})
}

func TestMissingUserFails(t *testing.T) {
	s := base()
	wantKinds(t, Check(s.ops, Final{Events: map[string][]client.Event{}}, Options{}), KindMissingUser)
}

// A write that timed out may or may not have been applied: both final
// states pass, and so do reads that saw it or not, as long as they agree
// with one moment at which it took effect.
func TestUnknownWriteEitherWay(t *testing.T) {
	withUnknown := func() scenario {
		s := base()
		s.add(history.Op{Client: 3, Kind: history.Grant, ID: "g3", Amount: 30, Timestamp: 1000, Invoke: 36, Outcome: history.Unknown})
		return s
	}
	applied := func(s *scenario) {
		s.events = slices.Insert(s.events, 2, client.Event{Kind: client.EventGrant, ID: "g3", Timestamp: 1000, Amount: 30, BalanceAfter: 180})
		s.events[3].Allocations = []client.Allocation{{GrantID: "g2", Amount: 50}, {GrantID: "g1", Amount: 20}}
		s.events[3].BalanceAfter, s.events[4].BalanceAfter = 110, 110
	}
	sawIt := func(s *scenario, seq int64) {
		op := s.op(t, seq)
		op.Balance = 110
		op.Grants = []history.GrantBalance{{ID: "g1", Remaining: 80, Timestamp: 1000}, {ID: "g3", Remaining: 30, Timestamp: 1000}}
	}
	t.Run("not applied", func(t *testing.T) {
		wantPass(t, withUnknown().check(t, Options{}))
	})
	t.Run("applied", func(t *testing.T) {
		s := withUnknown()
		applied(&s)
		wantPass(t, s.check(t, Options{}))
	})
	t.Run("applied and seen", func(t *testing.T) {
		s := withUnknown()
		applied(&s)
		sawIt(&s, 7)
		wantPass(t, s.check(t, Options{}))
	})
	t.Run("seen before it was sent", func(t *testing.T) {
		s := withUnknown()
		applied(&s)
		sawIt(&s, 5) // returned at 35, before g3 was invoked at 36
		wantKinds(t, s.check(t, Options{}), KindNonlinearizable)
	})
	t.Run("seen then unseen", func(t *testing.T) {
		s := withUnknown()
		applied(&s)
		sawIt(&s, 7)
		s.add(history.Op{Client: 0, Kind: history.Balance, At: ptr(6000), Invoke: 51, Return: 60, Outcome: history.OK, Balance: 80,
			Grants: []history.GrantBalance{{ID: "g1", Remaining: 80, Timestamp: 1000}}})
		wantKinds(t, s.check(t, Options{}), KindNonlinearizable)
	})
	t.Run("resent as duplicate", func(t *testing.T) {
		s := withUnknown()
		applied(&s)
		s.add(history.Op{Client: 3, Kind: history.Grant, ID: "g3", Amount: 30, Timestamp: 1000, Invoke: 61, Return: 70,
			Outcome: history.OK, Duplicate: true, Attempts: 1, Resend: true})
		wantPass(t, s.check(t, Options{}))
	})
	t.Run("resent, first applied, then lost", func(t *testing.T) {
		s := withUnknown()
		s.add(history.Op{Client: 3, Kind: history.Grant, ID: "g3", Amount: 30, Timestamp: 1000, Invoke: 61, Return: 70,
			Outcome: history.OK, Duplicate: true, Attempts: 1, Resend: true})
		wantKinds(t, s.check(t, Options{}), KindLostWrite)
	})
}

func TestDuplicateFlag(t *testing.T) {
	t.Run("duplicate of nothing after one request", func(t *testing.T) {
		// The cluster retried inside: the state is right, the flag is not.
		s := base()
		s.op(t, 1).Duplicate, s.op(t, 1).Attempts = true, 1
		r := s.check(t, Options{})
		wantPass(t, r)
		if len(r.Warnings) != 1 || r.Warnings[0].Kind != KindSpuriousDuplicate || !strings.Contains(r.Warnings[0].Detail, "grant g1") {
			t.Fatalf("warnings %v", r.Warnings)
		}
	})
	t.Run("duplicate of its own first attempt", func(t *testing.T) {
		s := base()
		s.op(t, 1).Duplicate, s.op(t, 1).Attempts = true, 2
		r := s.check(t, Options{})
		wantPass(t, r)
		if len(r.Warnings) != 0 {
			t.Fatalf("a retried call's duplicate is expected: %v", r.Warnings)
		}
	})
	t.Run("resend must be a duplicate", func(t *testing.T) {
		s := base()
		s.add(history.Op{Client: 0, Kind: history.Deduct, ID: "d1", Amount: 70, Timestamp: 1500, Invoke: 51, Return: 60,
			Outcome: history.OK, Resend: true, Attempts: 1, Allocations: s.op(t, 4).Allocations})
		wantKinds(t, s.check(t, Options{}), KindNonlinearizable)
		s.ops[len(s.ops)-1].Duplicate = true
		wantPass(t, s.check(t, Options{}))
	})
}

// A deduction applied by its first attempt and read back as a duplicate by
// its retry reports the allocations of the retry's moment: a back-dated
// grant that expires sooner came in between and now pays first.
func TestRetriedDuplicateSpansTwoMoments(t *testing.T) {
	s := base()
	d1 := s.op(t, 4)
	d1.Return, d1.Attempts, d1.Duplicate = 48, 2, true
	d1.Allocations = []history.Allocation{{GrantID: "g0", Amount: 20}, {GrantID: "g2", Amount: 50}}
	s.add(history.Op{Client: 3, Kind: history.Grant, ID: "g0", Amount: 20, Timestamp: 1000, ExpiresAt: ptr(3000), Invoke: 36, Return: 40, Outcome: history.OK})
	r7 := s.op(t, 7)
	r7.Balance, r7.Grants = 100, []history.GrantBalance{{ID: "g1", Remaining: 100, Timestamp: 1000}}
	s.events = []client.Event{
		{Kind: client.EventGrant, ID: "g0", Timestamp: 1000, Amount: 20, ExpiresAt: ptr(3000), BalanceAfter: 20},
		{Kind: client.EventGrant, ID: "g1", Timestamp: 1000, Amount: 100, BalanceAfter: 120},
		{Kind: client.EventGrant, ID: "g2", Timestamp: 1000, Amount: 50, ExpiresAt: ptr(5000), BalanceAfter: 170},
		{Kind: client.EventDeduction, ID: "d1", Timestamp: 1500, Amount: 70, BalanceAfter: 100,
			Allocations: []client.Allocation{{GrantID: "g0", Amount: 20}, {GrantID: "g2", Amount: 50}}},
		{Kind: client.EventExpiration, ID: "g0", Timestamp: 3000, BalanceAfter: 100},
		{Kind: client.EventExpiration, ID: "g2", Timestamp: 5000, BalanceAfter: 100},
	}
	wantPass(t, s.check(t, Options{}))

	// Allocations that no moment of the call explains.
	s.op(t, 4).Allocations = []history.Allocation{{GrantID: "g0", Amount: 20}, {GrantID: "g1", Amount: 50}}
	wantKinds(t, s.check(t, Options{}), KindNonlinearizable)
}

func TestVisualization(t *testing.T) {
	s := base()
	s.op(t, 4).Allocations = []history.Allocation{{GrantID: "g1", Amount: 70}}
	s.add(history.Op{Client: 2, Kind: history.Grant, ID: "g9", Amount: 1, Timestamp: 1, Invoke: 51, Return: 52, Outcome: history.Failed, Error: "closed"})
	dir := t.TempDir()
	r := s.check(t, Options{VisualizeDir: dir})
	wantKinds(t, r, KindNonlinearizable)
	if len(r.Files) != 1 || r.Files[0] != filepath.Join(dir, "u.html") {
		t.Fatalf("files %v", r.Files)
	}
	b, err := os.ReadFile(r.Files[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"deduct d1 70", "grant g1 100", "failed: grant g9"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("visualization lacks %q", want)
		}
	}
}

func TestFinalJSONRoundTrip(t *testing.T) {
	s := base()
	f := Final{Events: map[string][]client.Event{"u": s.events, "empty": {}}}
	path := filepath.Join(t.TempDir(), "final.json")
	if err := f.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	g, err := ReadFinal(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Events) != 2 || len(g.Events["empty"]) != 0 {
		t.Fatalf("users %v", g.Events)
	}
	wantPass(t, Check(s.ops, g, Options{}))
	// And a change survives the trip: the checker sees it.
	g.Events["u"][0].Amount = 99
	if r := Check(s.ops, g, Options{}); len(r.Anomalies) == 0 {
		t.Fatal("a changed final history passed")
	}
}
