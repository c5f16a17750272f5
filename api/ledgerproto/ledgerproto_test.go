package ledgerproto

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/ledger"
)

func TestEvents(t *testing.T) {
	exp := int64(9000)
	in := []ledger.Event{
		{Kind: ledger.KindGrant, ID: "g1", Timestamp: 1000, Amount: 10, ExpiresAt: ledger.Never, BalanceAfter: 10},
		{Kind: ledger.KindGrant, ID: "g2", Timestamp: 1000, Amount: 5, ExpiresAt: exp, Priority: -1, BalanceAfter: 15},
		{Kind: ledger.KindDeduction, ID: "d1", Timestamp: 2000, Amount: 7, ExpiresAt: ledger.Never,
			Allocations: []ledger.Allocation{{GrantID: "g2", Amount: 5}, {GrantID: "g1", Amount: 2}}, BalanceAfter: 8},
		{Kind: ledger.KindExpiration, ID: "g2", Timestamp: exp, Amount: 0, ExpiresAt: ledger.Never, BalanceAfter: 8},
	}
	want := []*rationv1.Event{
		{Kind: rationv1.EventKind_EVENT_KIND_GRANT, Id: "g1", Timestamp: 1000, Amount: 10, BalanceAfter: 10},
		{Kind: rationv1.EventKind_EVENT_KIND_GRANT, Id: "g2", Timestamp: 1000, Amount: 5, ExpiresAt: &exp, Priority: -1, BalanceAfter: 15},
		{Kind: rationv1.EventKind_EVENT_KIND_DEDUCTION, Id: "d1", Timestamp: 2000, Amount: 7,
			Allocations: []*rationv1.Allocation{{GrantId: "g2", Amount: 5}, {GrantId: "g1", Amount: 2}}, BalanceAfter: 8},
		{Kind: rationv1.EventKind_EVENT_KIND_EXPIRATION, Id: "g2", Timestamp: exp, BalanceAfter: 8},
	}
	got := Events(in)
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("event %d: got %v, want %v", i, got[i], want[i])
		}
		if back := LedgerEvent(got[i]); !reflect.DeepEqual(back, in[i]) {
			t.Errorf("event %d back: got %+v, want %+v", i, back, in[i])
		}
	}
	// Fields of another kind are not carried.
	odd := Event(ledger.Event{Kind: ledger.KindExpiration, ID: "x", ExpiresAt: exp, Priority: 3, Allocations: []ledger.Allocation{{GrantID: "g", Amount: 1}}})
	if odd.ExpiresAt != nil || odd.Priority != 0 || len(odd.Allocations) != 0 {
		t.Errorf("expiration carries another kind's fields: %v", odd)
	}
	// A deduction without allocations reads back with an empty list, not nil.
	if d := LedgerEvent(&rationv1.Event{Kind: rationv1.EventKind_EVENT_KIND_DEDUCTION}); d.Allocations == nil {
		t.Error("deduction read back with nil allocations")
	}
}

func TestGrantBalances(t *testing.T) {
	exp := int64(9000)
	in := []ledger.GrantBalance{
		{ID: "a", Remaining: 3, ExpiresAt: ledger.Never, Priority: 0, Timestamp: 1},
		{ID: "b", Remaining: 4, ExpiresAt: exp, Priority: 2, Timestamp: 2},
	}
	got := GrantBalances(in)
	if got[0].ExpiresAt != nil || got[1].GetExpiresAt() != exp || got[1].GetPriority() != 2 || got[1].GetRemaining() != 4 {
		t.Fatalf("got %v", got)
	}
	for i, g := range got {
		if back := LedgerGrantBalance(g); back != in[i] {
			t.Errorf("grant %d back: got %+v, want %+v", i, back, in[i])
		}
	}
}
