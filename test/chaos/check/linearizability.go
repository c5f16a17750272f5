package check

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/ration/ration/client"
	"github.com/ration/ration/test/chaos/history"
)

// linResult is the linearizability verdict on one user's ops.
type linResult struct {
	ops      int
	anomaly  *Anomaly
	file     string
	fileErr  error
	duration time.Duration
}

// calls are the ops of one user that constrain linearizability, as the
// model takes them. Failed calls are dropped (writes definitely not
// applied, reads that told nothing), and so are reads without an instant.
//
// A write of unknown outcome is narrowed with the final history, which is
// one more linearizable read, after every call: if the write is not there
// it never took effect and is dropped; if it is, it took effect at some
// point after it was invoked. Left open both ways, every unknown write
// would be tried at every step of the search, each try explored until a
// later read refutes it, and long histories would time out.
//
// An unknown write whose id an earlier call had already been answered ok
// for is dropped too: the write had taken effect, so this one changes
// nothing wherever it goes, and kept, it would only widen the search.
func calls(ops []history.Op, final []client.Event, haveFinal bool) []*call {
	answered := map[writeKey]int64{} // earliest return of an ok answer
	for i := range ops {
		op := &ops[i]
		if op.Kind != history.Balance && op.Outcome == history.OK {
			k := writeKey{op.Kind == history.Grant, op.ID}
			if r, ok := answered[k]; !ok || op.Return < r {
				answered[k] = op.Return
			}
		}
	}
	inFinal := map[writeKey]bool{}
	for _, e := range final {
		switch e.Kind {
		case client.EventGrant:
			inFinal[writeKey{true, e.ID}] = true
		case client.EventDeduction:
			inFinal[writeKey{false, e.ID}] = true
		}
	}
	var out []*call
	for i := range ops {
		op := &ops[i]
		switch {
		case op.Outcome == history.Failed:
			continue
		case op.Kind == history.Balance:
			if _, ok := readInstant(op); !ok || op.Outcome != history.OK {
				continue
			}
		case op.Outcome == history.Unknown && haveFinal:
			k := writeKey{op.Kind == history.Grant, op.ID}
			if r, ok := answered[k]; !inFinal[k] || ok && r < op.Invoke {
				continue
			}
			out = append(out, &call{op: op, applied: true})
			continue
		case op.Outcome == history.OK && op.Duplicate:
			out = append(out, &call{op: op, part: effect}, &call{op: op, part: answer})
			continue
		}
		out = append(out, &call{op: op})
	}
	return out
}

// operations turns calls into porcupine's form. A write of unknown outcome
// returns after every other op: it may take effect at any time after it
// was invoked. Or rather, before the first later call with its id that
// was answered ok: that one found it applied (a duplicate) or applied it,
// after which the unknown one changes nothing wherever it goes.
//
// A grant is also known to have taken effect by the return of any call
// that shows it: a read that lists it, a deduction that drew from it.
func operations(cs []*call) []porcupine.Operation {
	var last int64
	okAfter := map[writeKey][]*history.Op{}
	seen := map[string][]int64{} // grant id: returns of calls that show it
	for _, c := range cs {
		op := c.op
		last = max(last, op.Invoke, op.Return)
		if op.Outcome != history.OK {
			continue
		}
		switch op.Kind {
		case history.Balance:
			for _, g := range op.Grants {
				seen[g.ID] = append(seen[g.ID], op.Return)
			}
		default:
			k := writeKey{op.Kind == history.Grant, op.ID}
			okAfter[k] = append(okAfter[k], op)
			for _, a := range op.Allocations {
				seen[a.GrantID] = append(seen[a.GrantID], op.Return)
			}
		}
	}
	out := make([]porcupine.Operation, len(cs))
	for i, c := range cs {
		op := c.op
		ret := op.Return
		if op.Outcome == history.Unknown || ret < op.Invoke {
			ret = last + 1
			for _, l := range okAfter[writeKey{op.Kind == history.Grant, op.ID}] {
				if l.Invoke > op.Invoke {
					ret = min(ret, l.Return)
				}
			}
			if op.Kind == history.Grant {
				// A call that shows the grant but returned before it was
				// sent is a violation; leave it for the search to find.
				for _, r := range seen[op.ID] {
					if r > op.Invoke {
						ret = min(ret, r)
					}
				}
			}
		}
		out[i] = porcupine.Operation{ClientId: max(op.Client, 0), Input: c, Output: c, Call: op.Invoke, Return: ret, Metadata: op}
	}
	return out
}

func (m *model) porcupine(base int64) porcupine.Model {
	return porcupine.Model{
		Init: func() any { return empty },
		Step: func(st, in, _ any) (bool, any) {
			next := m.next(st.(*state), in.(*call))
			return next != nil, next
		},
		// States are interned: equal states are the same pointer.
		Equal: func(a, b any) bool { return a == b },
		Hash:  func(st any) uint64 { return st.(*state).sum[0] },
		DescribeOperation: func(in, _ any) string {
			return describeCall(in.(*call), base)
		},
		DescribeState: func(st any) string { return m.describeState(st.(*state)) },
		DescribeOperationMetadata: func(md any) string {
			op := md.(*history.Op)
			s := fmt.Sprintf("seq %d, client %d", op.Seq, op.Client)
			if op.Node != "" {
				s += ", node " + op.Node
			}
			if op.Attempts > 1 {
				s += fmt.Sprintf(", %d attempts", op.Attempts)
			}
			if op.Error != "" {
				s += ", error: " + op.Error
			}
			return s
		},
	}
}

// checkUser runs porcupine on one user's ops. On a violation it writes the
// visualization into dir (if set) and explains where the search got stuck.
func checkUser(user string, all []history.Op, final []client.Event, haveFinal bool, timeout time.Duration, dir string) linResult {
	start := time.Now()
	ops := calls(all, final, haveFinal)
	res := linResult{}
	for i, c := range ops {
		if i == 0 || c.op != ops[i-1].op {
			res.ops++
		}
	}
	if len(ops) == 0 {
		return res
	}
	base := timeBase(ops)
	hist := operations(ops)
	verdict := porcupine.CheckOperationsTimeout(newModel().porcupine(base), hist, timeout)
	switch verdict {
	case porcupine.Ok:
		res.duration = time.Since(start)
		return res
	case porcupine.Unknown:
		res.anomaly = &Anomaly{Kind: KindUnknownLinearizability, User: user,
			Detail: fmt.Sprintf("porcupine gave up after %v on %d ops", timeout, len(ops))}
		res.duration = time.Since(start)
		return res
	}
	// Illegal: search again, recording partial linearizations, to explain
	// and draw it.
	m := newModel()
	pm := m.porcupine(base)
	_, info := porcupine.CheckOperationsVerbose(pm, hist, timeout)
	res.anomaly = &Anomaly{Kind: KindNonlinearizable, User: user, Detail: explain(m, ops, info, base)}
	if dir != "" {
		info.AddAnnotations(annotations(all, base))
		res.file = filepath.Join(dir, fileName(user)+".html")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			res.fileErr = err
		} else if err := porcupine.VisualizePath(pm, info, res.file); err != nil {
			res.fileErr = err
		}
		if res.fileErr != nil {
			res.file = ""
		}
	}
	res.duration = time.Since(start)
	return res
}

// explain names the ops that no linearization could take next: it replays
// the longest linearizable prefix porcupine found and asks the model why
// each of the earliest ops left out cannot follow it.
func explain(m *model, ops []*call, info porcupine.LinearizationInfo, base int64) string {
	var longest []int
	for _, part := range info.PartialLinearizations() {
		for _, lin := range part {
			if len(lin) > len(longest) {
				longest = lin
			}
		}
	}
	st := empty
	done := make([]bool, len(ops))
	for _, i := range longest {
		next, err := m.step(st, *ops[i], true)
		if err != nil {
			// Not expected: porcupine found this prefix with the same model.
			return fmt.Sprintf("%d ops; replaying the longest linearizable prefix failed: %v", len(ops), err)
		}
		st, done[i] = next, true
	}
	var left []int
	for i := range ops {
		if !done[i] {
			left = append(left, i)
		}
	}
	slices.SortFunc(left, func(a, b int) int { return cmp.Compare(ops[a].op.Invoke, ops[b].op.Invoke) })
	var why []string
	for _, i := range left[:min(3, len(left))] {
		_, err := m.step(st, *ops[i], true)
		reason := "it could follow, but nothing after it could"
		if err != nil {
			reason = err.Error()
		}
		why = append(why, fmt.Sprintf("seq %d (%s): %s", ops[i].op.Seq, describeCall(ops[i], base), reason))
	}
	return fmt.Sprintf("no linearization of %d ops; the longest linearizable prefix has %d (state: %s); next candidates: %s",
		len(ops), len(longest), m.describeState(st), strings.Join(why, "; "))
}

// annotations mark, on the clients' lanes, the ops the check left out
// (failed calls) so that a reader sees the whole picture.
func annotations(all []history.Op, base int64) []porcupine.Annotation {
	var out []porcupine.Annotation
	for _, op := range all {
		if op.Outcome != history.Failed {
			continue
		}
		end := op.Return
		if end < op.Invoke {
			end = op.Invoke
		}
		out = append(out, porcupine.Annotation{
			ClientId: max(op.Client, 0), Start: op.Invoke, End: end,
			Description:     "failed: " + describeOp(&op, base),
			Details:         fmt.Sprintf("seq %d, not checked: %s", op.Seq, op.Error),
			BackgroundColor: "#dddddd",
		})
	}
	return out
}

// timeBase is the start of the user's timestamps, so that descriptions
// show short offsets instead of 13-digit Unix milliseconds.
func timeBase(cs []*call) int64 {
	base := int64(math.MaxInt64)
	for _, c := range cs {
		op := c.op
		if op.Kind != history.Balance {
			base = min(base, op.Timestamp)
		} else if at, ok := readInstant(op); ok {
			base = min(base, at)
		}
	}
	if base == math.MaxInt64 {
		return 0
	}
	return base
}

func rel(t, base int64) string {
	return fmt.Sprintf("%+.3fs", float64(t-base)/1000)
}

func describeCall(c *call, base int64) string {
	s := describeOp(c.op, base)
	switch {
	case c.applied:
		s += " (in the final history)"
	case c.part == effect:
		s += " (effect of an earlier attempt)"
	case c.part == answer:
		s += " (answer of the last attempt)"
	}
	return s
}

func describeOp(op *history.Op, base int64) string {
	var b strings.Builder
	switch op.Kind {
	case history.Grant:
		fmt.Fprintf(&b, "grant %s %d @%s", op.ID, op.Amount, rel(op.Timestamp, base))
		if op.ExpiresAt != nil {
			fmt.Fprintf(&b, " exp %s", rel(*op.ExpiresAt, base))
		}
		if op.Priority != 0 {
			fmt.Fprintf(&b, " p%d", op.Priority)
		}
	case history.Deduct:
		fmt.Fprintf(&b, "deduct %s %d @%s", op.ID, op.Amount, rel(op.Timestamp, base))
	case history.Balance:
		at, _ := readInstant(op)
		if op.At == nil {
			fmt.Fprintf(&b, "balance now=%s", rel(at, base))
		} else {
			fmt.Fprintf(&b, "balance @%s", rel(at, base))
		}
		fmt.Fprintf(&b, " -> %d %s", op.Balance, fmtBreakdown(op.Grants))
		return b.String()
	}
	if op.Resend {
		b.WriteString(" (resend)")
	}
	fmt.Fprintf(&b, " -> %s", op.Outcome)
	if op.Duplicate {
		b.WriteString(" dup")
	}
	if len(op.Allocations) > 0 {
		b.WriteString(" " + fmtAllocations(op.Allocations))
	}
	return b.String()
}

func (m *model) describeState(s *state) string {
	v := m.view(s)
	var granted, deducted int64
	for _, g := range v.grants {
		granted += m.t.ws[g].amount
	}
	for _, d := range v.deds {
		deducted += m.t.ws[d].amount
	}
	return fmt.Sprintf("%d grants (%d), %d deductions (%d)", len(v.grants), granted, len(v.deds), deducted)
}

// fileName keeps a user id usable as a file name. Ids are already limited
// to A-Z a-z 0-9 . _ : @ -; ':' is the one some file systems refuse.
func fileName(user string) string {
	return strings.NewReplacer(":", "_", "/", "_").Replace(user)
}
