package check

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ration/ration/test/chaos/history"
)

// call is an op as the model takes it.
type call struct {
	op *history.Op
	// applied marks a write of unknown outcome that the final history
	// holds: it took effect at some point after it was invoked (by this
	// call or another one with its id). Without a final history an
	// unknown write may or may not have taken effect.
	applied bool
	part    part
}

// part splits a write answered as a duplicate into the two moments it may
// span: an earlier attempt applied it, and the last one read it back, with
// a deduction's allocations as of then. Other ops can come between, so one
// linearization point cannot explain both. The earlier attempt may be the
// client's or the server's own: a node retries a forwarded write whose
// outcome it does not know, and its retry finds the write applied.
type part int8

const (
	whole  part = iota
	effect      // applies the write if it is not there yet
	answer      // the write is there; a deduction's allocations are its current ones
)

// errStep is the cheap refusal of a step when no explanation is wanted:
// porcupine tries many steps that fail.
var errStep = errors.New("step refused")

// step applies op to s. It returns the next state, or an error saying why
// op cannot happen in s (a detailed one only if why is set).
//
// A write whose outcome is unknown is applied if it can be (its id is free
// and, for a deduction, the history stays feasible) and otherwise changes
// nothing. Not applying it at all is covered by linearizing it last: its
// return is open-ended, so nothing has to follow it, and nothing after it
// observes it. That makes the model deterministic, which porcupine checks
// much faster than the power-set construction of a nondeterministic one.
// (Check narrows unknown writes further with the final history; see
// calls.)
func (m *model) step(s *state, c call, why bool) (*state, error) {
	op := c.op
	fail := func(format string, args ...any) (*state, error) {
		if !why {
			return nil, errStep
		}
		return nil, fmt.Errorf(format, args...)
	}
	switch op.Kind {
	case history.Balance:
		return m.stepBalance(s, op, fail)
	case history.Grant, history.Deduct:
		return m.stepWrite(s, c, fail)
	}
	return fail("unknown op kind %q", op.Kind)
}

type failFunc func(format string, args ...any) (*state, error)

func (m *model) stepBalance(s *state, op *history.Op, fail failFunc) (*state, error) {
	at, ok := readInstant(op)
	if !ok {
		return fail("balance read without an instant")
	}
	bal, grants := m.view(s).balanceAt(at)
	if bal != op.Balance {
		return fail("balance at %d is %d, read %d", at, bal, op.Balance)
	}
	if d := diffBreakdown(grants, op.Grants); d != "" {
		return fail("breakdown at %d: %s", at, d)
	}
	return s, nil
}

func (m *model) stepWrite(s *state, c call, fail failFunc) (*state, error) {
	op := c.op
	if op.Outcome == history.Failed {
		return s, nil
	}
	w := writeOf(op)
	kind := string(op.Kind)
	outcome, mustApply := op.Outcome, c.applied
	if c.part == effect {
		outcome, mustApply = history.Unknown, true
	}
	if bad := invalid(w, s.granted); bad != "" {
		if outcome == history.Invalid || outcome == history.Unknown {
			return s, nil
		}
		return fail("%s %s is invalid (%s) but was answered %s", kind, w.id, bad, outcome)
	}
	v := m.view(s)
	prev, prevID := v.find(w.grant, w.id)
	if c.part == answer && prev == nil {
		return fail("%s %s answered duplicate but it is not applied", kind, w.id)
	}
	switch outcome {
	case history.Invalid:
		return fail("%s %s is valid but was refused as invalid", kind, w.id)
	case history.Conflict:
		if prev != nil && !prev.sameFields(w) {
			return s, nil
		}
		return fail("%s %s answered conflict but %s", kind, w.id, idState(prev))
	}
	if prev != nil {
		switch {
		case !prev.sameFields(w):
			if outcome == history.Unknown {
				return s, nil
			}
			return fail("%s %s answered %s but the id is applied with other fields", kind, w.id, outcome)
		case outcome == history.Unknown:
			return s, nil
		case outcome == history.Refused:
			return fail("%s %s refused but it is already applied", kind, w.id)
		case !op.Duplicate:
			return fail("%s %s answered ok (not a duplicate) but it is already applied", kind, w.id)
		case w.grant:
			return s, nil
		}
		allocs, _ := v.allocations(prevID, false)
		if d := diffAllocations(allocs, op.Allocations); d != "" {
			return fail("deduct %s (duplicate): allocations %s", w.id, d)
		}
		return s, nil
	}
	// The id is free.
	ns := m.with(s, w, v)
	if w.grant {
		if outcome == history.Refused {
			return fail("grant %s refused as insufficient", w.id)
		}
		return ns, nil
	}
	allocs, short := m.view(ns).allocations(ns.w, true)
	switch outcome {
	case history.Unknown:
		switch {
		case short == nil:
			return ns, nil
		case mustApply:
			return fail("deduct %s of unknown outcome, which the final history holds, is infeasible here: %s at %d would be short by %d",
				w.id, short.id, short.at, short.shortfall)
		}
		return s, nil
	case history.Refused:
		if short == nil {
			return fail("deduct %s refused but it is feasible (would take %s)", w.id, fmtAllocations(allocs))
		}
		if in := op.Insufficient; in != nil && (in.DeductionID != short.id || in.At != short.at || in.Shortfall != short.shortfall) {
			return fail("deduct %s refused naming %s at %d short by %d; reference: %s at %d short by %d",
				w.id, in.DeductionID, in.At, in.Shortfall, short.id, short.at, short.shortfall)
		}
		return s, nil
	}
	if short != nil {
		return fail("deduct %s accepted but infeasible: %s at %d would be short by %d", w.id, short.id, short.at, short.shortfall)
	}
	if d := diffAllocations(allocs, op.Allocations); d != "" {
		return fail("deduct %s: allocations %s", w.id, d)
	}
	return ns, nil
}

func idState(prev *write) string {
	if prev == nil {
		return "the id is free"
	}
	return "the id is applied with the same fields"
}

// readInstant is the instant a balance read is for: the requested one, or
// the server's now that it reported.
func readInstant(op *history.Op) (int64, bool) {
	switch {
	case op.At != nil:
		return *op.At, true
	case op.ResultAt != nil:
		return *op.ResultAt, true
	}
	return 0, false
}

func diffAllocations(want, got []history.Allocation) string {
	if slices.Equal(want, got) {
		return ""
	}
	return fmt.Sprintf("reported %s, reference %s", fmtAllocations(got), fmtAllocations(want))
}

func fmtAllocations(as []history.Allocation) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = fmt.Sprintf("%s:%d", a.GrantID, a.Amount)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func diffBreakdown(want, got []history.GrantBalance) string {
	same := len(want) == len(got)
	for i := 0; same && i < len(want); i++ {
		a, b := want[i], got[i]
		same = a.ID == b.ID && a.Remaining == b.Remaining && a.Priority == b.Priority &&
			a.Timestamp == b.Timestamp && eqPtr(a.ExpiresAt, b.ExpiresAt)
	}
	if same {
		return ""
	}
	return fmt.Sprintf("reported %s, reference %s", fmtBreakdown(got), fmtBreakdown(want))
}

func fmtBreakdown(gs []history.GrantBalance) string {
	parts := make([]string, len(gs))
	for i, g := range gs {
		parts[i] = fmt.Sprintf("%s:%d", g.ID, g.Remaining)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func eqPtr(a, b *int64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
