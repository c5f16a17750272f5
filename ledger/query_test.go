package ledger

import (
	"errors"
	"math"
	"testing"
)

// At MaxInt64 a grant without expiry is still usable: the breakdown
// agrees with the balance there, as everywhere (it used to list nothing
// while the balance counted the grant).
func TestBreakdownAtTheLastInstant(t *testing.T) {
	l := New()
	for _, g := range []Grant{
		{ID: "forever", Amount: 50, Timestamp: 0, ExpiresAt: Never},
		{ID: "late", Amount: 7, Timestamp: math.MaxInt64 - 1, ExpiresAt: Never},
		{ID: "ends", Amount: 9, Timestamp: 5, ExpiresAt: 100},
	} {
		if _, err := l.Grant(g); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Deduct(Deduction{ID: "d", Amount: 3, Timestamp: 10}); err != nil {
		t.Fatal(err)
	}
	for _, at := range []int64{10, 100, math.MaxInt64 - 1, math.MaxInt64} {
		var sum int64
		for _, g := range l.Breakdown(at) {
			sum += g.Remaining
		}
		if b := l.Balance(at); sum != b {
			t.Errorf("at %d: breakdown sums to %d, balance %d: %+v", at, sum, b, l.Breakdown(at))
		}
	}
	if b := l.Balance(math.MaxInt64); b != 57 {
		t.Fatalf("balance at MaxInt64: %d, want 57", b)
	}
}

// A grant stamped MaxInt64 can never be used; the error names the
// timestamp, not the expiry the caller may not even have given.
func TestGrantAtTheLastInstantBlamesTimestamp(t *testing.T) {
	_, err := New().Grant(Grant{ID: "g", Amount: 1, Timestamp: math.MaxInt64, ExpiresAt: Never})
	var ia *InvalidArgumentError
	if !errors.As(err, &ia) || ia.Field != "timestamp" {
		t.Fatalf("grant at MaxInt64: %v, want invalid timestamp", err)
	}
}
