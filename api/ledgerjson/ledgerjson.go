// Package ledgerjson is the JSON form of a user's balance and history: the
// bodies of the HTTP API (httpapi), what rationctl prints with -o json, and
// the chaos checker's final.json. One set of types keeps the three from
// drifting apart. Times are Unix milliseconds and amounts whole credits,
// both as JSON integers; a grant that never expires has a null or absent
// expires_at, as docs/semantics.md and the README's API table say.
package ledgerjson

import "encoding/json"

// Event kinds, as the "kind" field spells them.
const (
	KindGrant      = "grant"
	KindDeduction  = "deduction"
	KindExpiration = "expiration"
)

// Allocation is what one grant paid towards a deduction.
type Allocation struct {
	GrantID string `json:"grant_id"`
	Amount  int64  `json:"amount"`
}

// GrantBalance is one grant's share of a balance. Every field is always
// written: expires_at is null for a grant that never expires.
type GrantBalance struct {
	ID        string `json:"id"`
	Remaining int64  `json:"remaining"`
	ExpiresAt *int64 `json:"expires_at"`
	Priority  int32  `json:"priority"`
	Timestamp int64  `json:"timestamp"`
}

// Balance is a user's balance at an instant and the grants it is made of,
// in the order the next deduction would draw from them.
type Balance struct {
	User    string         `json:"user"`
	At      int64          `json:"at"`
	Balance int64          `json:"balance"`
	Grants  []GrantBalance `json:"grants"`
}

// MarshalJSON writes no grants as [], never null.
func (b Balance) MarshalJSON() ([]byte, error) {
	type plain Balance
	if b.Grants == nil {
		b.Grants = []GrantBalance{}
	}
	return json.Marshal(plain(b))
}

// Event is one entry of a user's history. Which of the kind-specific
// fields are written depends on Kind, not on their values: a grant has
// priority (0 too) and expires_at (left out when it never expires), a
// deduction has allocations ([] when it has none), an expiration neither.
type Event struct {
	Kind      string
	ID        string
	Timestamp int64
	// Amount is what was granted, deducted, or forfeited by an expiration.
	Amount       int64
	ExpiresAt    *int64 // grants; nil: never
	Priority     int32  // grants
	Allocations  []Allocation
	BalanceAfter int64
}

// eventJSON is Event on the wire: a nil field is left out.
type eventJSON struct {
	Kind         string        `json:"kind"`
	ID           string        `json:"id"`
	Timestamp    int64         `json:"timestamp"`
	Amount       int64         `json:"amount"`
	ExpiresAt    *int64        `json:"expires_at,omitempty"`
	Priority     *int32        `json:"priority,omitempty"`
	Allocations  *[]Allocation `json:"allocations,omitempty"`
	BalanceAfter int64         `json:"balance_after"`
}

// MarshalJSON writes the fields of e's kind (see Event).
func (e Event) MarshalJSON() ([]byte, error) {
	w := eventJSON{Kind: e.Kind, ID: e.ID, Timestamp: e.Timestamp, Amount: e.Amount, BalanceAfter: e.BalanceAfter}
	switch e.Kind {
	case KindGrant:
		w.ExpiresAt, w.Priority = e.ExpiresAt, &e.Priority
	case KindDeduction:
		allocs := e.Allocations
		if allocs == nil {
			allocs = []Allocation{}
		}
		w.Allocations = &allocs
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads what MarshalJSON writes; absent fields are zero.
func (e *Event) UnmarshalJSON(data []byte) error {
	var w eventJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*e = Event{Kind: w.Kind, ID: w.ID, Timestamp: w.Timestamp, Amount: w.Amount, ExpiresAt: w.ExpiresAt, BalanceAfter: w.BalanceAfter}
	if w.Priority != nil {
		e.Priority = *w.Priority
	}
	if w.Allocations != nil {
		e.Allocations = *w.Allocations
	}
	return nil
}
