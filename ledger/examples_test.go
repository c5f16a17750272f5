package ledger

import (
	"errors"
	"testing"
)

// The worked examples of docs/semantics.md, with the details the doc
// promises.
func TestLateDeductionRefusalNamesTheVictim(t *testing.T) {
	l := New()
	mustOK(t)(l.Grant(Grant{ID: "g", Amount: 10, Timestamp: 0, ExpiresAt: Never}))
	mustOK(t)(l.Deduct(Deduction{ID: "d2", Amount: 8, Timestamp: 10}))
	_, err := l.Deduct(Deduction{ID: "d1", Amount: 5, Timestamp: 5})
	var ice *InsufficientCreditsError
	if !errors.As(err, &ice) || !errors.Is(err, ErrInsufficientCredits) {
		t.Fatalf("got %v, want insufficient credits", err)
	}
	if ice.DeductionID != "d2" || ice.At != 10 || ice.Shortfall != 3 {
		t.Fatalf("got %+v, want d2 at 10 short by 3", ice)
	}
	if b := l.Balance(5); b != 10 {
		t.Fatalf("refused deduction changed the balance: %d", b)
	}
	res, err := l.Deduct(Deduction{ID: "d1b", Amount: 2, Timestamp: 5})
	if err != nil || len(res.Allocations) != 1 || res.Allocations[0] != (Allocation{"g", 2}) {
		t.Fatalf("d1b: %+v %v", res, err)
	}
	if l.Balance(7) != 8 || l.Balance(10) != 0 {
		t.Fatalf("balances %d %d", l.Balance(7), l.Balance(10))
	}
}

func TestRefusedIDStaysFreeAndRetriesAreDuplicates(t *testing.T) {
	l := New()
	if _, err := l.Deduct(Deduction{ID: "d", Amount: 5, Timestamp: 50}); !errors.Is(err, ErrInsufficientCredits) {
		t.Fatalf("got %v", err)
	}
	mustOK(t)(l.Grant(Grant{ID: "g", Amount: 5, Timestamp: 10, ExpiresAt: 60}))
	r, err := l.Deduct(Deduction{ID: "d", Amount: 5, Timestamp: 50})
	if err != nil || r.Duplicate {
		t.Fatalf("%+v %v", r, err)
	}
	r, err = l.Deduct(Deduction{ID: "d", Amount: 5, Timestamp: 50})
	if err != nil || !r.Duplicate || len(r.Allocations) != 1 {
		t.Fatalf("retry: %+v %v", r, err)
	}
	_, err = l.Deduct(Deduction{ID: "d", Amount: 4, Timestamp: 50})
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.ID != "d" || ce.Kind != KindDeduction {
		t.Fatalf("got %v, want conflict on d", err)
	}
	_, err = l.Grant(Grant{ID: "g", Amount: 5, Timestamp: 10, ExpiresAt: Never})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("grant with other expiry: %v", err)
	}
	var ia *InvalidArgumentError
	if _, err := l.Grant(Grant{ID: "x", Amount: 1, Timestamp: 10, ExpiresAt: 10}); !errors.As(err, &ia) || ia.Field != "expires_at" {
		t.Fatalf("got %v", err)
	}
	if _, err := l.Grant(Grant{ID: "big", Amount: Never, Timestamp: 0, ExpiresAt: Never}); !errors.As(err, &ia) || ia.Field != "amount" {
		t.Fatalf("overflowing total: %v", err)
	}
	if l.Version() != 2 {
		t.Fatalf("version %d, want 2", l.Version())
	}
}

func TestBreakdownAndScheduledExpiry(t *testing.T) {
	l := New()
	mustOK(t)(l.Grant(Grant{ID: "promo", Amount: 10, Timestamp: 0, ExpiresAt: 100, Priority: 1}))
	mustOK(t)(l.Grant(Grant{ID: "paid", Amount: 10, Timestamp: 0, ExpiresAt: Never}))
	mustOK(t)(l.Deduct(Deduction{ID: "d", Amount: 5, Timestamp: 10}))
	bd := l.Breakdown(50)
	if len(bd) != 2 || bd[0].ID != "paid" || bd[0].Remaining != 5 || bd[1].ID != "promo" || bd[1].Remaining != 10 {
		t.Fatalf("breakdown %+v", bd)
	}
	// A future balance includes the scheduled expiration.
	if l.Balance(100) != 5 {
		t.Fatalf("balance at 100 = %d", l.Balance(100))
	}
	evs, _, _, _ := l.History(0, 1000, 0, 10)
	last := evs[len(evs)-1]
	if last.Kind != KindExpiration || last.ID != "promo" || last.Amount != 10 || last.BalanceAfter != 5 {
		t.Fatalf("scheduled expiration %+v", last)
	}
}

func mustOK(t *testing.T) func(Result, error) {
	return func(_ Result, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}
