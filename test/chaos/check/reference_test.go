package check

import (
	"testing"

	"github.com/ration/ration/internal/contract"
	"github.com/ration/ration/test/chaos/history"
)

// TestReferenceAgreesWithContract replays the shared contract vectors
// through the checker's reference model: a checker with a wrong model
// would flag correct runs (or pass wrong ones).
func TestReferenceAgreesWithContract(t *testing.T) {
	v, err := contract.Load()
	if err != nil {
		t.Fatal(err)
	}
	steps := 0
	for _, sc := range v.Scenarios {
		m := newModel()
		s := empty
		for i, st := range sc.Steps {
			steps++
			if st.Op == "balance" {
				if got, _ := m.view(s).balanceAt(st.At); got != st.Balance {
					t.Fatalf("%s step %d: balance at %d = %d, want %d", sc.Name, i, st.At, got, st.Balance)
				}
				continue
			}
			op := &history.Op{Kind: history.Kind(st.Op), ID: st.ID, Amount: st.Amount, Timestamp: st.Timestamp,
				ExpiresAt: st.ExpiresAt, Outcome: history.Unknown}
			if st.Priority != nil {
				op.Priority = *st.Priority
			}
			w := writeOf(op)
			prev, _ := m.view(s).find(w.grant, w.id)
			var got string
			switch {
			case invalid(w, s.granted) != "":
				got = "invalid"
			case prev != nil && !prev.sameFields(w):
				got = "conflict"
			case prev != nil:
				got = "ok"
			default:
				// An unknown outcome is applied exactly when it can be.
				next, err := m.step(s, call{op: op}, true)
				if err != nil {
					t.Fatalf("%s step %d: %v", sc.Name, i, err)
				}
				got = "insufficient"
				if next != s {
					got, s = "ok", next
				}
			}
			if got != st.Expect {
				t.Fatalf("%s step %d (%s %s %d at %d): reference says %s, contract %s",
					sc.Name, i, st.Op, st.ID, st.Amount, st.Timestamp, got, st.Expect)
			}
		}
	}
	t.Logf("%d scenarios, %d steps agree", len(v.Scenarios), steps)
}

// TestDrawOrder pins the draw order and the half-open validity with the
// examples of docs/semantics.md.
func TestDrawOrder(t *testing.T) {
	exp := func(v int64) *int64 { return &v }
	type step struct {
		op   history.Op
		want []history.Allocation // for deductions
	}
	cases := []struct {
		name  string
		steps []step
		at    int64
		bal   int64
	}{
		{"expiring first", []step{
			{op: history.Op{Kind: history.Grant, ID: "long", Amount: 10, Timestamp: 0, ExpiresAt: exp(1000)}},
			{op: history.Op{Kind: history.Grant, ID: "short", Amount: 10, Timestamp: 0, ExpiresAt: exp(100)}},
			{op: history.Op{Kind: history.Deduct, ID: "d", Amount: 10, Timestamp: 50}, want: []history.Allocation{{GrantID: "short", Amount: 10}}},
		}, 99, 10},
		{"priority beats expiry", []step{
			{op: history.Op{Kind: history.Grant, ID: "promo", Amount: 10, Timestamp: 0, ExpiresAt: exp(100), Priority: 1}},
			{op: history.Op{Kind: history.Grant, ID: "paid", Amount: 10, Timestamp: 0}},
			{op: history.Op{Kind: history.Deduct, ID: "d", Amount: 5, Timestamp: 10}, want: []history.Allocation{{GrantID: "paid", Amount: 5}}},
		}, 100, 5},
		{"half-open", []step{
			{op: history.Op{Kind: history.Grant, ID: "g", Amount: 3, Timestamp: 10, ExpiresAt: exp(20)}},
		}, 20, 0},
	}
	for _, c := range cases {
		m := newModel()
		s := empty
		for _, st := range c.steps {
			op := st.op
			op.Outcome, op.Allocations = history.OK, st.want
			next, err := m.step(s, call{op: &op}, true)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			s = next
		}
		if got, _ := m.view(s).balanceAt(c.at); got != c.bal {
			t.Errorf("%s: balance at %d = %d, want %d", c.name, c.at, got, c.bal)
		}
	}
}
