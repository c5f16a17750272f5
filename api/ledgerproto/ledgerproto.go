// Package ledgerproto maps the ledger's history events, balances and
// allocations to the ration.v1 API's messages and back. The gRPC server
// (grpcapi) answers with these messages, the actor cluster
// (cluster/actorcluster) carries them from the leader's node to the node a
// request came in on, and the client's test server (client/clienttest)
// fakes the former; one mapping keeps the three alike.
//
// Functions named for a message build that message; those named Ledger...
// build the ledger's value from one.
package ledgerproto

import (
	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/ledger"
)

// Expiry is a grant's expires_at: absent (nil) for credits that never
// expire.
func Expiry(t int64) *int64 {
	if t == ledger.Never {
		return nil
	}
	return &t
}

// LedgerExpiry is the ledger's expiry of an expires_at.
func LedgerExpiry(t *int64) int64 {
	if t == nil {
		return ledger.Never
	}
	return *t
}

// Allocations are a deduction's allocations.
func Allocations(as []ledger.Allocation) []*rationv1.Allocation {
	out := make([]*rationv1.Allocation, len(as))
	for i, a := range as {
		out[i] = &rationv1.Allocation{GrantId: a.GrantID, Amount: a.Amount}
	}
	return out
}

// LedgerAllocations is the ledger's form of as, never nil.
func LedgerAllocations(as []*rationv1.Allocation) []ledger.Allocation {
	out := make([]ledger.Allocation, len(as))
	for i, a := range as {
		out[i] = ledger.Allocation{GrantID: a.GetGrantId(), Amount: a.GetAmount()}
	}
	return out
}

// GrantBalance is one grant's share of a balance.
func GrantBalance(g ledger.GrantBalance) *rationv1.GrantBalance {
	return &rationv1.GrantBalance{Id: g.ID, Remaining: g.Remaining, ExpiresAt: Expiry(g.ExpiresAt), Priority: g.Priority, Timestamp: g.Timestamp}
}

// LedgerGrantBalance is the ledger's form of g.
func LedgerGrantBalance(g *rationv1.GrantBalance) ledger.GrantBalance {
	return ledger.GrantBalance{ID: g.GetId(), Remaining: g.GetRemaining(), Timestamp: g.GetTimestamp(), ExpiresAt: LedgerExpiry(g.ExpiresAt), Priority: g.GetPriority()}
}

// GrantBalances are a balance's grants, in the same order.
func GrantBalances(gs []ledger.GrantBalance) []*rationv1.GrantBalance {
	out := make([]*rationv1.GrantBalance, len(gs))
	for i, g := range gs {
		out[i] = GrantBalance(g)
	}
	return out
}

// Event is one history event. Only the fields of its kind are set: a
// grant's expiry and priority, a deduction's allocations.
func Event(e ledger.Event) *rationv1.Event {
	pe := &rationv1.Event{Id: e.ID, Timestamp: e.Timestamp, Amount: e.Amount, BalanceAfter: e.BalanceAfter}
	switch e.Kind {
	case ledger.KindGrant:
		pe.Kind = rationv1.EventKind_EVENT_KIND_GRANT
		pe.ExpiresAt, pe.Priority = Expiry(e.ExpiresAt), e.Priority
	case ledger.KindDeduction:
		pe.Kind = rationv1.EventKind_EVENT_KIND_DEDUCTION
		pe.Allocations = Allocations(e.Allocations)
	case ledger.KindExpiration:
		pe.Kind = rationv1.EventKind_EVENT_KIND_EXPIRATION
	}
	return pe
}

// Events are a page of history, in the same order.
func Events(evs []ledger.Event) []*rationv1.Event {
	out := make([]*rationv1.Event, len(evs))
	for i, e := range evs {
		out[i] = Event(e)
	}
	return out
}

// LedgerEvent is the ledger's form of e. An event of a kind this release
// does not know (from a newer node) gets the ledger's zero kind,
// KindExpiration, which carries no kind-specific fields.
func LedgerEvent(e *rationv1.Event) ledger.Event {
	ev := ledger.Event{ID: e.GetId(), Timestamp: e.GetTimestamp(), Amount: e.GetAmount(), Priority: e.GetPriority(),
		BalanceAfter: e.GetBalanceAfter(), ExpiresAt: LedgerExpiry(e.ExpiresAt)}
	switch e.GetKind() {
	case rationv1.EventKind_EVENT_KIND_GRANT:
		ev.Kind = ledger.KindGrant
	case rationv1.EventKind_EVENT_KIND_DEDUCTION:
		ev.Kind = ledger.KindDeduction
		ev.Allocations = LedgerAllocations(e.GetAllocations())
	case rationv1.EventKind_EVENT_KIND_EXPIRATION:
		ev.Kind = ledger.KindExpiration
	}
	return ev
}
