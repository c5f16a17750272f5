package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"testing"
)

// Vectors is the shared contract file, ../shared/vectors/ledger-v1.json.
type Vectors struct {
	Format    string `json:"format"`
	Semantics string `json:"semantics"`
	Scenarios []struct {
		Name  string `json:"name"`
		User  string `json:"user"`
		Steps []struct {
			Op        string `json:"op"`
			ID        string `json:"id"`
			Amount    int64  `json:"amount"`
			Timestamp int64  `json:"timestamp"`
			ExpiresAt *int64 `json:"expires_at"`
			Priority  *int32 `json:"priority"`
			At        int64  `json:"at"`
			Balance   int64  `json:"balance"`
			Expect    string `json:"expect"`
		} `json:"steps"`
	} `json:"scenarios"`
}

const sharedVectors = "../../shared/vectors/ledger-v1.json"

func loadVectors(t testing.TB) Vectors {
	data, err := os.ReadFile("testdata/ledger-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var v Vectors
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	if v.Format != "credit-ledger-vectors/1" {
		t.Fatalf("unknown vectors format %q", v.Format)
	}
	return v
}

func TestVectorsCopyIsCurrent(t *testing.T) {
	shared, err := os.ReadFile(sharedVectors)
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("shared vectors not present beside the repo")
	}
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.ReadFile("testdata/ledger-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shared, ours) {
		t.Fatalf("testdata/ledger-v1.json differs from %s: copy it again", sharedVectors)
	}
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrInvalidArgument):
		return "invalid"
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrInsufficientCredits):
		return "insufficient"
	}
	return "error: " + err.Error()
}

func TestVectors(t *testing.T) {
	v := loadVectors(t)
	for _, sc := range v.Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			l := New()
			for i, st := range sc.Steps {
				var err error
				switch st.Op {
				case "grant":
					op := Grant{ID: st.ID, Amount: st.Amount, Timestamp: st.Timestamp, ExpiresAt: Never}
					if st.ExpiresAt != nil {
						op.ExpiresAt = *st.ExpiresAt
					}
					if st.Priority != nil {
						op.Priority = *st.Priority
					}
					_, err = l.Grant(op)
				case "deduct":
					_, err = l.Deduct(Deduction{ID: st.ID, Amount: st.Amount, Timestamp: st.Timestamp})
				case "balance":
					if got := l.Balance(st.At); got != st.Balance {
						t.Fatalf("step %d: balance at %d = %d, want %d", i, st.At, got, st.Balance)
					}
					var sum int64
					for _, g := range l.Breakdown(st.At) {
						sum += g.Remaining
					}
					if sum != st.Balance {
						t.Fatalf("step %d: breakdown at %d sums to %d, want %d", i, st.At, sum, st.Balance)
					}
				default:
					t.Fatalf("step %d: unknown op %q", i, st.Op)
				}
				if got := outcome(err); got != st.Expect {
					t.Fatalf("step %d (%s %s): got %s (%v), want %s", i, st.Op, st.ID, got, err, st.Expect)
				}
				checkInvariants(t, l)
			}
			// The encoding must answer the same after a round trip.
			restored := roundTrip(t, l)
			for _, st := range sc.Steps {
				if got, want := restored.Balance(st.At), l.Balance(st.At); got != want {
					t.Fatalf("restored ledger: balance at %d = %d, original says %d", st.At, got, want)
				}
			}
			assertSameHistory(t, restored, l)
		})
	}
}
