package actors

import (
	"context"

	"github.com/ration/ration/ledger"
)

// WriteResult is the outcome of an accepted grant or deduction.
type WriteResult struct {
	// Duplicate is true when the operation had been applied before, with
	// the same fields, and this request changed nothing. When an attempt's
	// outcome was unknown (a reply lost inside the cluster) and the
	// operation is then found applied, it is reported as this request's,
	// though a concurrent retry may have applied it: either way it was
	// applied exactly once.
	Duplicate bool
	// Version is the number of operations in the user's log after it.
	Version uint64
	// Allocations of a deduction, in the current history.
	Allocations []ledger.Allocation
}

// Grant adds credits to a user.
func (d *Directory) Grant(ctx context.Context, user string, g ledger.Grant) (WriteResult, error) {
	r, err := d.call(ctx, user, &request{kind: opGrant, grant: g})
	if err != nil {
		return WriteResult{}, err
	}
	return WriteResult{Duplicate: r.duplicate, Version: r.version}, nil
}

// Deduct consumes a user's credits.
func (d *Directory) Deduct(ctx context.Context, user string, op ledger.Deduction) (WriteResult, error) {
	r, err := d.call(ctx, user, &request{kind: opDeduct, deduction: op})
	if err != nil {
		return WriteResult{}, err
	}
	return WriteResult{Duplicate: r.duplicate, Version: r.version, Allocations: r.allocs}, nil
}

// BalanceResult is a user's balance at a timestamp with its breakdown.
type BalanceResult struct {
	Balance int64
	Grants  []ledger.GrantBalance
	Version uint64
}

// Balance reads a user's balance at at. A linearizable read (stale false)
// reflects every write acknowledged before it started; a stale read
// answers from this node's replica without asking the leader.
func (d *Directory) Balance(ctx context.Context, user string, at int64, stale bool) (BalanceResult, error) {
	if none, err := d.absent(ctx, user, stale); err != nil {
		return BalanceResult{}, err
	} else if none {
		l := ledger.New()
		return BalanceResult{Balance: l.Balance(at), Grants: l.Breakdown(at)}, nil
	}
	r, err := d.call(ctx, user, &request{kind: opBalance, at: at, stale: stale})
	if err != nil {
		return BalanceResult{}, err
	}
	return BalanceResult{Balance: r.balance, Grants: r.grants, Version: r.version}, nil
}

// Page is a page of a user's history.
type Page struct {
	Events   []ledger.Event
	Next     int64
	NextSkip int
	More     bool
	Version  uint64
}

// History reads a page of a user's events with from <= timestamp < to,
// skipping skip events stamped exactly from (see ledger.History).
func (d *Directory) History(ctx context.Context, user string, from, to int64, skip, limit int, stale bool) (Page, error) {
	if none, err := d.absent(ctx, user, stale); err != nil {
		return Page{}, err
	} else if none {
		var p Page
		p.Events, p.Next, p.NextSkip, p.More = ledger.New().History(from, to, skip, limit)
		return p, nil
	}
	r, err := d.call(ctx, user, &request{kind: opHistory, from: from, to: to, skip: skip, limit: limit, stale: stale})
	if err != nil {
		return Page{}, err
	}
	return Page{Events: r.events, Next: r.next, NextSkip: r.nextSkip, More: r.more, Version: r.version}, nil
}

// absent reports whether a read of user can be answered as that of a user
// with no operations, without activating an actor: a read of a made-up
// name then costs a version lookup (and a read barrier, if linearizable)
// instead of an actor that lives until its idle timeout. A user with an
// actor, or with operations on the local replica, is not absent; neither
// is one whose shard this node holds no replica of.
func (d *Directory) absent(ctx context.Context, user string, stale bool) (bool, error) {
	if !ledger.ValidID(user) {
		return false, invalidUser()
	}
	// The replica first: a user with operations, every read but those of
	// new or made-up names, is told apart without the directory's lock.
	shard := d.rep.ShardOf(user)
	if v, ok := d.rep.Version(shard, user); !ok || v > 0 {
		return false, nil
	}
	d.mu.Lock()
	_, active := d.acts.byUser[user]
	d.mu.Unlock()
	if active {
		return false, nil
	}
	if !stale {
		// As an actor's read does: the local replica must hold every write
		// acknowledged before this read began, the user's first included.
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d.opts.RequestTimeout)
			defer cancel()
		}
		if err := d.rep.ReadBarrier(ctx, shard); err != nil {
			return false, err
		}
		if v, ok := d.rep.Version(shard, user); !ok || v > 0 {
			return false, nil
		}
	}
	d.met.absent.Inc()
	return true, nil
}
