package workload

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/test/chaos/history"
)

// worker is one client: a loop of calls, one at a time.
type worker struct {
	id    int
	cfg   Config
	c     *client.Client
	rec   *history.Recorder
	est   *estimates
	users []string
	rng   *rand.Rand

	grants, deducts int // ids issued
	ops             int // calls made
	// unknown holds, per user, writes whose outcome is unknown: they are
	// sent again when the client next picks that user, until one attempt
	// is answered, as a scheduler that lost a reply would. The answer also
	// bounds when the first attempt took effect: left unanswered, such a
	// write could be linearized anywhere up to the end of the run, and
	// the linearizability search grows with every one of them.
	unknown map[string][]history.Op
	// later holds answered writes to send again after some calls.
	later []resend
}

type resend struct {
	op  history.Op
	due int // w.ops at which to send it
}

func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		w.one(ctx)
	}
}

// draws are the random numbers of one operation, drawn all at once so
// that the choice of every later operation does not depend on what the
// cluster answered.
type draws struct {
	user, kind, sub, when, amount, expiry, prio, resend, delay float64
}

func (w *worker) draw() draws {
	f := w.rng.Float64
	return draws{user: f(), kind: f(), sub: f(), when: f(), amount: f(), expiry: f(), prio: f(), resend: f(), delay: f()}
}

// between maps u in [0, 1) to an integer in [lo, hi].
func between(u float64, lo, hi int64) int64 { return lo + int64(u*float64(hi-lo+1)) }

// Shares of the mix.
const (
	grantShare  = 0.25 // of all calls
	deductShare = 0.35
	// The rest are balance reads: now, in the past, in the future.
	readNowShare  = 0.5
	readPastShare = 0.3

	lateShare     = 0.2                  // of writes, back-dated
	maxLate       = int64(3 * 60 * 1000) // ms
	expiringShare = 0.3                  // of grants, expire in 2..20 s
	laterShare    = 0.15                 // of grants, expire in 1..10 min
	prioShare     = 0.3                  // of grants, with a priority 0..3
	maxPast       = int64(5 * 60 * 1000) // ms, for reads
	maxFuture     = int64(30 * 1000)     // ms, for reads
	greedyShare   = 0.2                  // of deductions, sized above the balance
	maxResendWait = 10                   // calls before an answered write is sent again
)

// pickUser maps u in [0, 1) to a user: the hot ones take HotShare of it.
func (w *worker) pickUser(u float64) string {
	hot, share := w.cfg.HotUsers, w.cfg.HotShare
	cold := len(w.users) - hot
	var i int
	switch {
	case hot == 0 || cold == 0:
		i = int(u * float64(len(w.users)))
	case u < share:
		i = int(u / share * float64(hot))
	default:
		i = hot + int((u-share)/(1-share)*float64(cold))
	}
	return w.users[min(i, len(w.users)-1)]
}

func (w *worker) one(ctx context.Context) {
	d := w.draw()
	w.ops++
	user := w.pickUser(d.user)
	if pending := w.unknown[user]; len(pending) > 0 {
		delete(w.unknown, user)
		for _, op := range pending {
			// A failed attempt was not applied, but says nothing of the
			// earlier one: send it again too.
			if done := w.write(ctx, op, true); done.Outcome == history.Unknown || done.Outcome == history.Failed {
				w.unknown[user] = append(w.unknown[user], op)
			}
		}
	}
	for i := 0; i < len(w.later); {
		if r := w.later[i]; r.due <= w.ops {
			w.later = append(w.later[:i], w.later[i+1:]...)
			w.write(ctx, r.op, true)
			continue
		}
		i++
	}

	now := w.cfg.Now().UnixMilli()
	ts := now
	if d.when < lateShare {
		ts -= between(d.when/lateShare, 0, maxLate)
	}
	var op history.Op
	switch {
	case d.kind < grantShare:
		w.grants++
		op = history.Op{Kind: history.Grant, ID: fmt.Sprintf("g-%d-%d", w.id, w.grants),
			Amount: between(d.amount, 10, 1000), Timestamp: ts}
		switch {
		case d.expiry < expiringShare:
			op.ExpiresAt = client.Int64(now + between(d.expiry/expiringShare, 2000, 20_000))
		case d.expiry < expiringShare+laterShare:
			op.ExpiresAt = client.Int64(now + between((d.expiry-expiringShare)/laterShare, 60_000, 600_000))
		}
		if d.prio < prioShare {
			op.Priority = int32(between(d.prio/prioShare, 0, 3))
		}
	case d.kind < grantShare+deductShare:
		w.deducts++
		op = history.Op{Kind: history.Deduct, ID: fmt.Sprintf("d-%d-%d", w.id, w.deducts),
			Amount: w.deductAmount(user, d.amount), Timestamp: ts}
	default:
		op = history.Op{Kind: history.Balance}
		switch u := d.sub; {
		case u < readNowShare:
		case u < readNowShare+readPastShare:
			op.At = client.Int64(now - between((u-readNowShare)/readPastShare, 0, maxPast))
		default:
			op.At = client.Int64(now + between((u-readNowShare-readPastShare)/(1-readNowShare-readPastShare), 0, maxFuture))
		}
		op.User, op.Client = user, w.id
		w.read(ctx, op)
		return
	}
	op.User, op.Client = user, w.id
	done := w.write(ctx, op, false)
	if done.Outcome != history.Unknown && done.Outcome != history.Failed && d.resend < w.cfg.Resend {
		w.later = append(w.later, resend{op: op, due: w.ops + 1 + int(d.delay*maxResendWait)})
	}
}

// deductAmount sizes a deduction from the user's estimated balance: most
// take a part of it, some more than all of it, so that a share is refused.
func (w *worker) deductAmount(user string, u float64) int64 {
	bal := w.est.get(user)
	switch {
	case bal <= 0:
		return between(u, 10, 200)
	case u < greedyShare:
		return bal + between(u/greedyShare, 1, max(bal/2, 100))
	}
	return max(1, int64(float64(bal)*(0.05+0.45*(u-greedyShare)/(1-greedyShare))))
}

// callContext is the context of one call: it outlives ctx, so that a call
// in flight when the run ends is finished and recorded, but not the
// client's own bound on the call.
func (w *worker) callContext(ctx context.Context) (context.Context, context.CancelFunc, *callInfo) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.RetryBudget+w.cfg.AttemptTimeout+5*time.Second)
	cctx, ci := withCallInfo(cctx)
	return cctx, cancel, ci
}

func (ci *callInfo) fill(op *history.Op) {
	op.Attempts = int(ci.attempts.Load())
	if n := ci.node.Load(); n != nil {
		op.Node = *n
	}
}

// write sends a grant or deduction and records it. A resend keeps the
// op's id and fields.
func (w *worker) write(ctx context.Context, op history.Op, resend bool) history.Op {
	op.Resend = resend
	op.Duplicate, op.Allocations, op.Insufficient, op.Error = false, nil, nil, ""
	cctx, cancel, ci := w.callContext(ctx)
	defer cancel()
	op.Invoke = w.cfg.Now().UnixNano()
	var err error
	switch op.Kind {
	case history.Grant:
		var res client.GrantResult
		res, err = w.c.Grant(cctx, op.User, client.Grant{ID: op.ID, Amount: op.Amount, Timestamp: op.Timestamp,
			ExpiresAt: op.ExpiresAt, Priority: op.Priority})
		op.Duplicate = res.Duplicate
	case history.Deduct:
		var res client.DeductResult
		res, err = w.c.Deduct(cctx, op.User, client.Deduction{ID: op.ID, Amount: op.Amount, Timestamp: op.Timestamp})
		op.Duplicate = res.Duplicate
		for _, a := range res.Allocations {
			op.Allocations = append(op.Allocations, history.Allocation{GrantID: a.GrantID, Amount: a.Amount})
		}
	}
	op.Return = w.cfg.Now().UnixNano()
	ci.fill(&op)
	op.Outcome, op.Insufficient = writeOutcome(err, ci.sent.Load())
	op.Error = errorText(err)
	if op.Outcome == history.Unknown {
		op.Return = 0
		if !resend {
			w.unknown[op.User] = append(w.unknown[op.User], op)
		}
	}
	w.rec.Add(op)
	if op.Outcome == history.OK && !op.Duplicate {
		switch op.Kind {
		case history.Grant:
			if now := w.cfg.Now().UnixMilli(); op.Timestamp <= now && (op.ExpiresAt == nil || *op.ExpiresAt > now) {
				w.est.add(op.User, op.Amount)
			}
		case history.Deduct:
			w.est.add(op.User, -op.Amount)
		}
	}
	return op
}

// read asks for a balance and records it; a failed read is recorded as
// Failed and tells the checkers nothing.
func (w *worker) read(ctx context.Context, op history.Op) {
	cctx, cancel, ci := w.callContext(ctx)
	defer cancel()
	op.Invoke = w.cfg.Now().UnixNano()
	res, err := w.c.Balance(cctx, op.User, op.At)
	op.Return = w.cfg.Now().UnixNano()
	ci.fill(&op)
	if err != nil {
		op.Outcome, op.Error = history.Failed, errorText(err)
		w.rec.Add(op)
		return
	}
	op.Outcome = history.OK
	op.ResultAt = client.Int64(res.At)
	op.Balance = res.Balance
	for _, g := range res.Grants {
		op.Grants = append(op.Grants, history.GrantBalance{ID: g.ID, Remaining: g.Remaining, ExpiresAt: g.ExpiresAt,
			Priority: g.Priority, Timestamp: g.Timestamp})
	}
	w.rec.Add(op)
	if op.At == nil {
		w.est.set(op.User, op.Balance)
	}
}
