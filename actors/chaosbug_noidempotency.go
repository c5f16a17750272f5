//go:build chaos && chaosbug_noidempotency

package actors

import (
	"strconv"
	"strings"

	"github.com/ration/ration/ledger"
)

// A planted bug for the chaos harness (chaos/DESIGN.md): idempotency is
// switched off. A write whose id was already applied, with the same
// fields, is applied again as a new operation instead of being answered as
// a duplicate: a re-sent grant adds its credits twice, a re-sent deduction
// takes them twice, and the history lists the event twice.
//
// The ledger refuses two events with one id, so the second copy is logged
// under an internal id, the original plus againMark and a counter, and
// every reply shows the original id again: what a client sees is exactly
// what a ledger without idempotency would answer.

const plantedNoIdempotency = true

const againMark = "@again."

// applyAgain turns a duplicate into a new operation under a fresh internal
// id, changing req so that the proposal carries that id.
func applyAgain(l *ledger.Ledger, req *request, res ledger.Result, err error) (ledger.Result, error) {
	if err != nil || !res.Duplicate {
		return res, err
	}
	base := req.grant.ID
	if req.kind == opDeduct {
		base = req.deduction.ID
	}
	for k := 1; ; k++ {
		id := base + againMark + strconv.Itoa(k)
		if !ledger.ValidID(id) {
			return res, err // too long to mangle: answered as a duplicate after all
		}
		var again ledger.Result
		var aerr error
		if req.kind == opGrant {
			g := req.grant
			g.ID = id
			if again, aerr = l.Grant(g); aerr == nil && !again.Duplicate {
				req.grant = g
			}
		} else {
			d := req.deduction
			d.ID = id
			if again, aerr = l.Deduct(d); aerr == nil && !again.Duplicate {
				req.deduction = d
			}
		}
		// An earlier re-send took this copy's id: try the next one.
		if aerr == nil && again.Duplicate {
			continue
		}
		return again, aerr
	}
}

// showIDs puts the original ids back into a reply.
func showIDs(r *reply) *reply {
	for i := range r.events {
		e := &r.events[i]
		e.ID = original(e.ID)
		for j := range e.Allocations {
			e.Allocations[j].GrantID = original(e.Allocations[j].GrantID)
		}
	}
	for i := range r.grants {
		r.grants[i].ID = original(r.grants[i].ID)
	}
	for i := range r.allocs {
		r.allocs[i].GrantID = original(r.allocs[i].GrantID)
	}
	for _, b := range r.batch {
		for j := range b.Allocations {
			b.Allocations[j].GrantID = original(b.Allocations[j].GrantID)
		}
	}
	return r
}

func original(id string) string {
	if base, _, found := strings.Cut(id, againMark); found {
		return base
	}
	return id
}
