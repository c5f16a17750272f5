package check

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ration/ration/client"
	"github.com/ration/ration/test/chaos/history"
)

// maxReplayReports bounds the replay mismatches reported per user: after
// the first few, the rest are usually consequences.
const maxReplayReports = 3

// writeKey names a write: grant and deduction ids are separate namespaces.
type writeKey struct {
	grant bool
	id    string
}

func (k writeKey) String() string {
	if k.grant {
		return "grant " + k.id
	}
	return "deduct " + k.id
}

// invariants checks one user's final history against what the clients
// were told, and replays it through the reference model.
func invariants(user string, ops []history.Op, events []client.Event, present bool) []Anomaly {
	var out []Anomaly
	add := func(kind, format string, args ...any) {
		out = append(out, Anomaly{Kind: kind, User: user, Detail: fmt.Sprintf(format, args...)})
	}
	for _, op := range ops {
		if op.Kind == history.Balance && op.Outcome == history.OK {
			if op.Balance < 0 {
				add(KindNegativeBalance, "seq %d read balance %d", op.Seq, op.Balance)
			}
			for _, g := range op.Grants {
				if g.Remaining < 0 {
					add(KindNegativeBalance, "seq %d read grant %s with %d left", op.Seq, g.ID, g.Remaining)
				}
			}
		}
	}

	// What the clients were told, per write.
	told := map[writeKey][]history.Op{}
	var keys []writeKey
	for _, op := range ops {
		if op.Kind == history.Balance {
			continue
		}
		k := writeKey{grant: op.Kind == history.Grant, id: op.ID}
		if _, ok := told[k]; !ok {
			keys = append(keys, k)
		}
		told[k] = append(told[k], op)
	}
	if !present {
		for _, k := range keys {
			if len(filterOutcome(told[k], history.OK)) > 0 {
				add(KindMissingUser, "the final state has no history for the user, who has acknowledged writes")
				break
			}
		}
		return out
	}

	// What the final history holds, per write.
	final := map[writeKey][]int{}
	expirations := map[string][]int{}
	for i, e := range events {
		switch e.Kind {
		case client.EventGrant:
			final[writeKey{true, e.ID}] = append(final[writeKey{true, e.ID}], i)
		case client.EventDeduction:
			final[writeKey{false, e.ID}] = append(final[writeKey{false, e.ID}], i)
		case client.EventExpiration:
			expirations[e.ID] = append(expirations[e.ID], i)
		default:
			add(KindReplayMismatch, "event %d has unknown kind %v", i, e.Kind)
			return out
		}
	}
	dupFree := true
	for k, idx := range final {
		if len(idx) > 1 {
			add(KindDuplicateApply, "%s appears %d times in the final history (events %v)", k, len(idx), idx)
			dupFree = false
		}
	}
	for id, idx := range expirations {
		if len(idx) > 1 {
			add(KindDuplicateApply, "grant %s expires %d times in the final history (events %v)", id, len(idx), idx)
			dupFree = false
		}
	}

	for _, k := range keys {
		okOps := filterOutcome(told[k], history.OK)
		unknown := filterOutcome(told[k], history.Unknown)
		idx, in := final[k]
		switch {
		case len(okOps) > 0 && !in:
			add(KindLostWrite, "%s was acknowledged (seq %s) but is not in the final history", k, seqs(okOps))
		case len(okOps) > 0:
			if d := fieldDiff(okOps[0], events[idx[0]]); d != "" {
				add(KindMismatchedWrite, "%s acknowledged (seq %s) is in the final history with other fields: %s", k, seqs(okOps), d)
			}
		case len(unknown) > 0 && in:
			if d := fieldDiff(unknown[0], events[idx[0]]); d != "" {
				add(KindMismatchedWrite, "%s of unknown outcome (seq %s) is in the final history with other fields: %s", k, seqs(unknown), d)
			}
		case in:
			add(KindPhantomWrite, "%s is in the final history but every call for it was refused or failed (seq %s: %s)",
				k, seqs(told[k]), outcomes(told[k]))
		}
	}
	for k := range final {
		if _, ok := told[k]; !ok {
			add(KindPhantomWrite, "%s is in the final history but no client ever sent it", k)
		}
	}

	if dupFree {
		out = append(out, replayFinal(user, events)...)
	}
	return out
}

// replayFinal replays the final history through the reference model, in
// the order it lists the events, and compares every derived value.
func replayFinal(user string, events []client.Event) []Anomaly {
	var out []Anomaly
	add := func(kind, format string, args ...any) {
		out = append(out, Anomaly{Kind: kind, User: user, Detail: fmt.Sprintf(format, args...)})
	}
	for i, e := range events {
		if e.BalanceAfter < 0 {
			add(KindNegativeBalance, "event %d (%v %s at %d) leaves balance %d", i, e.Kind, e.ID, e.Timestamp, e.BalanceAfter)
		}
	}

	t := &table{}
	grants := map[string]wid{}
	var writes []wid
	for _, e := range events {
		switch e.Kind {
		case client.EventGrant:
			w := &write{grant: true, id: e.ID, amount: e.Amount, ts: e.Timestamp, exp: never, prio: e.Priority}
			if e.ExpiresAt != nil {
				w.exp = *e.ExpiresAt
			}
			grants[e.ID] = t.add(w)
			writes = append(writes, grants[e.ID])
		case client.EventDeduction:
			writes = append(writes, t.add(&write{id: e.ID, amount: e.Amount, ts: e.Timestamp}))
		}
	}

	// The listing must be in replay order, and expire exactly the grants
	// that expire, when they do.
	rank := map[client.EventKind]int8{client.EventExpiration: evExpire, client.EventGrant: evGrant, client.EventDeduction: evDeduct}
	seq := make([]event, 0, len(events))
	expired := map[string]bool{}
	k := 0
	for i, e := range events {
		if i > 0 {
			p := events[i-1]
			if e.Timestamp < p.Timestamp || e.Timestamp == p.Timestamp && rank[e.Kind] < rank[p.Kind] {
				add(KindReplayMismatch, "event %d (%v %s at %d) is listed after event %d (%v %s at %d)",
					i, e.Kind, e.ID, e.Timestamp, i-1, p.Kind, p.ID, p.Timestamp)
				return out
			}
		}
		switch e.Kind {
		case client.EventExpiration:
			g, ok := grants[e.ID]
			switch {
			case !ok:
				add(KindReplayMismatch, "event %d expires grant %s, which is not in the history", i, e.ID)
				return out
			case t.ws[g].exp != e.Timestamp:
				add(KindReplayMismatch, "event %d expires grant %s at %d, but it expires at %d", i, e.ID, e.Timestamp, t.ws[g].exp)
				return out
			}
			expired[e.ID] = true
			seq = append(seq, event{kind: evExpire, ts: e.Timestamp, w: g})
		default:
			seq = append(seq, event{kind: rank[e.Kind], ts: e.Timestamp, w: writes[k]})
			k++
		}
	}
	for id, g := range grants {
		if exp := t.ws[g].exp; exp != never && !expired[id] {
			add(KindReplayMismatch, "grant %s expires at %d but the history lists no expiration", id, exp)
			return out
		}
	}

	wk := &walker{t: t}
	reports := 0
	mismatch := func(format string, args ...any) bool {
		add(KindReplayMismatch, format, args...)
		reports++
		return reports < maxReplayReports
	}
	for i, e := range seq {
		ev := events[i]
		allocs, short, forfeited := wk.step(e, true)
		id := t.ws[e.w].id
		switch {
		case short > 0:
			add(KindReplayMismatch, "deduction %s at %d cannot be met: short by %d (the final history is infeasible)", id, e.ts, short)
			return out
		case e.kind == evDeduct && !slices.Equal(allocs, fromClient(ev.Allocations)):
			if !mismatch("deduction %s at %d: history lists allocations %s, replay gives %s",
				id, e.ts, fmtAllocations(fromClient(ev.Allocations)), fmtAllocations(allocs)) {
				return out
			}
		case e.kind == evExpire && ev.Amount != forfeited:
			if !mismatch("expiration of %s at %d: history lists %d forfeited, replay gives %d", id, e.ts, ev.Amount, forfeited) {
				return out
			}
		}
		if ev.BalanceAfter != wk.bal {
			if !mismatch("event %d (%v %s at %d): history lists balance %d after it, replay gives %d",
				i, ev.Kind, ev.ID, ev.Timestamp, ev.BalanceAfter, wk.bal) {
				return out
			}
		}
	}
	return out
}

// spuriousDuplicates finds writes answered as duplicates although no
// earlier call had sent their id.
func spuriousDuplicates(user string, ops []history.Op) []Anomaly {
	first := map[writeKey]int64{} // earliest invoke of each write
	for _, op := range ops {
		if op.Kind == history.Balance || op.Outcome == history.Failed {
			continue
		}
		k := writeKey{op.Kind == history.Grant, op.ID}
		if t, ok := first[k]; !ok || op.Invoke < t {
			first[k] = op.Invoke
		}
	}
	var out []Anomaly
	for _, op := range ops {
		if op.Kind == history.Balance || op.Outcome != history.OK || !op.Duplicate {
			continue
		}
		k := writeKey{op.Kind == history.Grant, op.ID}
		if first[k] == op.Invoke && op.Attempts == 1 {
			out = append(out, Anomaly{Kind: KindSpuriousDuplicate, User: user, Detail: fmt.Sprintf(
				"%s (seq %d, node %s) was answered as a duplicate to the only request that ever sent it", k, op.Seq, op.Node)})
		}
	}
	return out
}

func fromClient(as []client.Allocation) []history.Allocation {
	if len(as) == 0 {
		return nil
	}
	out := make([]history.Allocation, len(as))
	for i, a := range as {
		out[i] = history.Allocation{GrantID: a.GrantID, Amount: a.Amount}
	}
	return out
}

// fieldDiff compares what a call sent with the event the history holds.
func fieldDiff(op history.Op, e client.Event) string {
	var d []string
	if op.Amount != e.Amount {
		d = append(d, fmt.Sprintf("amount %d vs %d", op.Amount, e.Amount))
	}
	if op.Timestamp != e.Timestamp {
		d = append(d, fmt.Sprintf("timestamp %d vs %d", op.Timestamp, e.Timestamp))
	}
	if op.Kind == history.Grant {
		if !eqPtr(op.ExpiresAt, e.ExpiresAt) {
			d = append(d, fmt.Sprintf("expires_at %s vs %s", fmtPtr(op.ExpiresAt), fmtPtr(e.ExpiresAt)))
		}
		if op.Priority != e.Priority {
			d = append(d, fmt.Sprintf("priority %d vs %d", op.Priority, e.Priority))
		}
	}
	return strings.Join(d, ", ")
}

func fmtPtr(p *int64) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}

func filterOutcome(ops []history.Op, o history.Outcome) []history.Op {
	var out []history.Op
	for _, op := range ops {
		if op.Outcome == o {
			out = append(out, op)
		}
	}
	return out
}

func seqs(ops []history.Op) string {
	s := make([]string, len(ops))
	for i, op := range ops {
		s[i] = fmt.Sprint(op.Seq)
	}
	return strings.Join(s, ",")
}

func outcomes(ops []history.Op) string {
	s := make([]string, len(ops))
	for i, op := range ops {
		s[i] = string(op.Outcome)
	}
	return strings.Join(s, ",")
}
