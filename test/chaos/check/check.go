// Package check decides whether a chaos run kept Ration's promises. It
// reads the run's record of client calls (package history) and the final
// state read after the cluster healed, and reports anomalies:
//
//   - linearizability: porcupine searches, per user, for an order of the
//     calls consistent with their real-time order in which every answer is
//     what the reference model (reference.go, written from the shared
//     reference model and independent of package ledger) gives;
//   - invariants of the final state: every acknowledged write is there
//     once with its fields, nothing refused or never sent is there, and
//     replaying it through the reference model gives the balances and
//     allocations it lists.
//
// The linearizability model's state is a user's accepted writes in
// linearization order; a step checks an op's answer against the reference
// replay of that state. How the calls become porcupine operations:
//
//   - Failed calls are dropped: the write was never sent, or the read told
//     nothing.
//   - A write of unknown outcome may take effect any time after it was
//     invoked. The final history, read after every call, says whether it
//     ever did: if not, it is dropped; if so, it must take effect exactly
//     once, before the first later call with its id that was answered ok
//     (which saw it, or applied it). Without a final history for the user
//     it may or may not take effect; the model stays deterministic by
//     applying it when it can and relying on porcupine to linearize it
//     last when it did not (nothing observes it there).
//   - A write answered as a duplicate is two operations: the effect of an
//     earlier attempt, and the answer of the last, with the deduction's
//     allocations as of then. The earlier attempt may be the client's or a
//     node's (the router retries a forwarded write whose outcome it does not
//     know), so the effect may fall inside the call itself. A duplicate
//     answered to the only call that ever sent the write is reported as a
//     warning (KindSpuriousDuplicate), not an anomaly: every promise about
//     the state holds, only the flag is imprecise.
//   - A refused deduction must be infeasible where it is linearized, and
//     the deduction and shortfall the server named must be the reference's.
//
// The search is kept fast by interning states (two states are equal when
// they hold the same grants and the same deductions in the same replay
// order; acceptance order matters only between deductions stamped alike),
// remembering every step's result, and replaying from snapshots that
// derived states share with their parents.
package check

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/ration/ration/test/chaos/history"
)

// Anomaly kinds.
const (
	// No order of a user's calls explains every answer.
	KindNonlinearizable = "nonlinearizable"
	// Porcupine ran out of time: the run cannot be called correct.
	KindUnknownLinearizability = "unknown-linearizability"
	// A write appears more than once in the final history.
	KindDuplicateApply = "duplicate-apply"
	// An acknowledged write is missing from the final history.
	KindLostWrite = "lost-write"
	// A write is in the final history although no client sent it, or
	// every call for it was refused or failed.
	KindPhantomWrite = "phantom-write"
	// A write is in the final history with fields other than those sent.
	KindMismatchedWrite = "mismatched-write"
	// The final history's balances, allocations or order disagree with a
	// replay through the reference model, or it is infeasible.
	KindReplayMismatch = "replay-mismatch"
	// A balance below zero was read or listed.
	KindNegativeBalance = "negative-balance"
	// A user with acknowledged writes is absent from the final state.
	KindMissingUser = "missing-user"
	// Writing a visualization failed (the verdict stands; the picture is
	// missing).
	KindVisualization = "visualization-error"

	// Warnings.

	// A write was answered as a duplicate although no earlier call had
	// sent its id: the write was applied once, by this very call, after a
	// retry inside the cluster.
	KindSpuriousDuplicate = "spurious-duplicate"
)

// Anomaly is one broken promise.
type Anomaly struct {
	Kind   string `json:"kind"`
	User   string `json:"user"`
	Detail string `json:"detail"` // human readable, names the op ids/seqs
}

func (a Anomaly) String() string { return fmt.Sprintf("%s %s: %s", a.Kind, a.User, a.Detail) }

// Options tunes Check.
type Options struct {
	// Timeout bounds porcupine's search per user; 0 means 30 s. A user
	// whose search runs out gets a second one four times as long; if that
	// runs out too, it is an anomaly (KindUnknownLinearizability).
	Timeout time.Duration
	// VisualizeDir, if set, receives porcupine's HTML visualization of
	// every user whose calls are not linearizable.
	VisualizeDir string
	// Parallel is how many users are checked at once; 0 means GOMAXPROCS.
	Parallel int
}

// Result is the verdict.
type Result struct {
	Anomalies    []Anomaly
	UsersChecked int
	OpsChecked   int      // ops given to the linearizability checker
	Files        []string // visualizations written
	// Linearizable and Invariants say which of the two checks found no
	// anomaly, for reports that show them apart.
	Linearizable bool
	Invariants   bool
	// Slowest is the longest linearizability check of one user.
	Slowest time.Duration
	// Warnings are findings that break no promise about the state (see
	// KindSpuriousDuplicate); they do not fail a run.
	Warnings []Anomaly
}

// DefaultTimeout is Options.Timeout's default.
const DefaultTimeout = 30 * time.Second

// undecidedRetry multiplies Options.Timeout for the second try of a user
// whose search gave up.
const undecidedRetry = 4

// Check runs both checks on every user the ops touch.
func Check(ops []history.Op, final Final, opts Options) Result {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Parallel <= 0 {
		opts.Parallel = runtime.GOMAXPROCS(0)
	}
	byUser := map[string][]history.Op{}
	for _, op := range ops {
		byUser[op.User] = append(byUser[op.User], op)
	}
	users := make([]string, 0, len(byUser))
	for u := range byUser {
		users = append(users, u)
	}
	slices.Sort(users)

	lin := make([]linResult, len(users))
	check := func(idx []int, timeout time.Duration) {
		var wg sync.WaitGroup
		next := make(chan int)
		for range min(opts.Parallel, len(idx)) {
			wg.Go(func() {
				for i := range next {
					evs, ok := final.Events[users[i]]
					lin[i] = checkUser(users[i], byUser[users[i]], evs, ok, timeout, opts.VisualizeDir)
				}
			})
		}
		for _, i := range idx {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	all := make([]int, len(users))
	for i := range all {
		all[i] = i
	}
	check(all, opts.Timeout)
	// A search that gave up decided nothing. Histories that take long
	// are rare (a burst of concurrent calls on one user), so the few
	// users it happens to get one longer try before it counts.
	var undecided []int
	for i, l := range lin {
		if l.anomaly != nil && l.anomaly.Kind == KindUnknownLinearizability {
			undecided = append(undecided, i)
		}
	}
	check(undecided, undecidedRetry*opts.Timeout)

	res := Result{UsersChecked: len(users), Linearizable: true, Invariants: true}
	for i, l := range lin {
		res.OpsChecked += l.ops
		res.Slowest = max(res.Slowest, l.duration)
		if l.anomaly != nil {
			res.Anomalies = append(res.Anomalies, *l.anomaly)
			res.Linearizable = false
		}
		if l.file != "" {
			res.Files = append(res.Files, l.file)
		}
		if l.fileErr != nil {
			res.Anomalies = append(res.Anomalies, Anomaly{Kind: KindVisualization, User: users[i], Detail: l.fileErr.Error()})
		}
	}
	for _, u := range users {
		evs, present := final.Events[u]
		found := invariants(u, byUser[u], evs, present)
		if len(found) > 0 {
			res.Invariants = false
		}
		res.Anomalies = append(res.Anomalies, found...)
		res.Warnings = append(res.Warnings, spuriousDuplicates(u, byUser[u])...)
	}
	slices.SortStableFunc(res.Anomalies, func(a, b Anomaly) int {
		return cmp.Or(cmp.Compare(a.User, b.User), cmp.Compare(a.Kind, b.Kind))
	})
	return res
}
