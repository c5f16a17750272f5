package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ration/ration/ledger"
	"github.com/ration/ration/raftfsm"
)

// BatchOp is one write of a batch: exactly one of Grant and Deduction.
type BatchOp struct {
	User      string
	Grant     *ledger.Grant
	Deduction *ledger.Deduction
}

// BatchResult is the outcome of one op of a batch.
type BatchResult struct {
	WriteResult
	Err error
}

// ErrSkipped is the result of an op that was not attempted because an
// earlier op of the same user in the batch ended without an answer (its
// outcome unknown, or no leader): the user's ops apply in order, so it
// waits for that one. Retry both, in order, with the same ids.
var ErrSkipped = errors.New("actors: not attempted: an earlier operation of the same user ended without an answer")

// Batch runs ops, each as if sent alone and not atomically, and returns one
// result per op. Ops of one user apply in the order given. Each shard's
// ops are proposed together: every user's actor validates its ops against
// its cache as a run (the first with the cache's version, the rest chained
// on it, raftfsm/DESIGN.md "Chains"), and the first runs of the users of a
// shard go into one raft entry, with those of the other batches that reach
// the shard meanwhile (batchShard). Shards run in parallel. This node
// must lead the shards (the router sends each shard's part to its leader);
// elsewhere the ops fail as not leader.
func (d *Directory) Batch(ctx context.Context, ops []BatchOp) []BatchResult {
	out := make([]BatchResult, len(ops))
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.opts.RequestTimeout)
		defer cancel()
	}
	valid := make([]int, 0, len(ops))
	for i, op := range ops {
		if out[i].Err = checkBatchOp(op); out[i].Err == nil {
			valid = append(valid, i)
		}
	}
	EachPart(valid, func(i int) uint32 { return d.rep.ShardOf(ops[i].User) }, func(s uint32, idx []int) {
		d.batchShard(ctx, s, ops, idx, out)
	})
	return out
}

// EachPart groups the indexes idx by key, keeping their order, and runs
// part on each group, all at once; it returns when every part has.
func EachPart[K comparable](idx []int, key func(i int) K, part func(k K, idx []int)) {
	groups := map[K][]int{}
	var keys []K
	for _, i := range idx {
		k := key(i)
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], i)
	}
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() { part(k, groups[k]) })
	}
	wg.Wait()
}

// Indexes is 0 to n-1.
func Indexes(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

func checkBatchOp(op BatchOp) error {
	if !ledger.ValidID(op.User) {
		return invalidUser()
	}
	if (op.Grant == nil) == (op.Deduction == nil) {
		return &ledger.InvalidArgumentError{Field: "op", Reason: "exactly one of grant and deduct must be set"}
	}
	return nil
}

// batchShard runs the ops idx of ops, all of users of shard: each user's
// ops go to the user's actor as one request, and their first runs are
// proposed together with those of the shard's other batches through the
// shard's gathers (enter). A user already in the open gather takes a place
// in the one queued behind it, so one batch's part may be proposed in
// several entries, each user's ops still in one request, in order.
func (d *Directory) batchShard(ctx context.Context, shard uint32, ops []BatchOp, idx []int, out []BatchResult) {
	mine := map[string][]int{}
	var users []string
	for _, i := range idx {
		u := ops[i].User
		if _, ok := mine[u]; !ok {
			users = append(users, u)
		}
		mine[u] = append(mine[u], i)
	}
	chain := d.opts.Chain == nil || d.opts.Chain(shard)
	firstRun := func(u string) int {
		if !chain {
			return 1
		}
		return min(len(mine[u]), raftfsm.MaxBatchOps)
	}
	var wg sync.WaitGroup
	for _, pl := range d.enter(shard, users, firstRun) {
		members := make([]*member, len(pl.users))
		for k := range members {
			members[k] = &member{g: pl.g, chain: chain}
		}
		wg.Go(func() {
			// Members of a queued gather send their requests once the
			// gather before it has sealed (enter says why).
			if err := pl.g.opened(ctx); err != nil {
				err = fmt.Errorf("actors: shard %d: batch not started: %w", shard, err)
				for k, u := range pl.users {
					members[k].leave()
					for _, i := range mine[u] {
						out[i].Err = err
					}
				}
				return
			}
			for k, u := range pl.users {
				wg.Go(func() { d.batchUser(ctx, u, members[k], ops, mine[u], out) })
			}
		})
	}
	wg.Wait()
}

// batchUser sends the user's ops idx of ops to its actor as one request,
// as member m of a gather, and puts the results in out.
func (d *Directory) batchUser(ctx context.Context, user string, m *member, ops []BatchOp, idx []int, out []BatchResult) {
	req := &request{kind: opBatch, member: m, batch: make([]BatchOp, len(idx))}
	for k, i := range idx {
		req.batch[k] = ops[i]
	}
	rep, err := d.call(ctx, user, req)
	// An actor that never took the request (stopped, timed out) must not
	// hold up the others.
	m.leave()
	for k, i := range idx {
		if err != nil {
			out[i].Err = err
		} else {
			out[i] = rep.batch[k]
		}
	}
}

// placed is some users of a batch part given places in gather g.
type placed struct {
	g     *gather
	users []string
}

// enter gives users places in shard's gathers: the open one (the oldest
// not sealed), else the one queued behind it, and so on, opening gathers
// as needed, and returns the places in queue order. A user is at most
// once in a gather, and a gather takes users while it has room for their
// first runs (firstRun, gather.add).
//
// Members of the open gather send their requests at once; members of a
// queued gather only once the gather before it has opened and sealed. That
// is what keeps gathers from deadlocking: a user is at most once in a
// gather, so its actor holds no turn in it, and the requests ahead of its
// request in its mailbox are single writes or members of gathers that
// sealed before, which wait for nothing but raft (or their callers'
// deadlines). So every member of the open gather arrives, it seals, and
// the next opens. Queuing a place, rather than waiting for the seal and
// entering again, is what keeps a batch part from losing the race to new
// arrivals gather after gather: it waits for one seal at most, or one per
// gather that is full.
func (d *Directory) enter(shard uint32, users []string, firstRun func(string) int) []placed {
	d.gathersMu.Lock()
	defer d.gathersMu.Unlock()
	g := d.gathers[shard]
	for g != nil && g.sealed() {
		g = g.next
	}
	if g == nil {
		g = d.newGather(nil)
	}
	d.gathers[shard] = g
	var out []placed
	for len(users) > 0 {
		in, rest, ok := g.add(users, firstRun)
		if ok && len(in) > 0 {
			out = append(out, placed{g, in})
			users = rest
		}
		if len(users) == 0 {
			break
		}
		if g.next == nil {
			g.next = d.newGather(g)
		}
		g = g.next
	}
	return out
}

// newGather starts a gather queued behind prev (nil: open at once).
func (d *Directory) newGather(prev *gather) *gather {
	g := newGather(d.rep, prev)
	go g.collect()
	return g
}

// A gather collects the first run of ops of users of one shard, from any
// number of batches, and proposes them all in one raft entry once every
// member (user) has handed its run in or left. It seals then: users that
// enter after go into the next gather. Runs handed in after that (a member
// that left) are proposed on their own.
type gather struct {
	rep  Replica
	full chan struct{} // closed when it seals: no member is missing
	// open is closed when its members may send their requests: once the
	// gather queued before it has opened and sealed (at once if none), so
	// gathers open one at a time, in queue order, even when a queued
	// gather seals early because all its members left. next is the
	// gather queued behind it; Directory.gathersMu guards it.
	open chan struct{}
	next *gather

	mu      sync.Mutex
	members map[string]bool
	ops     int // the most ops its members' first runs can have
	missing int
	runs    []*run
	done    bool // sealed
}

type run struct {
	ctx  context.Context // its caller's
	ops  []raftfsm.Op
	res  []raftfsm.OpResult
	err  error
	done chan struct{}
}

func newGather(rep Replica, prev *gather) *gather {
	g := &gather{rep: rep, full: make(chan struct{}), open: make(chan struct{}), members: map[string]bool{}}
	if prev == nil {
		close(g.open)
		return g
	}
	// Only the channels: a long queue's sealed gathers must not be kept
	// alive by their successors.
	opened, sealed := prev.open, prev.full
	go func() {
		<-opened
		<-sealed
		close(g.open)
	}()
	return g
}

// sealed reports whether the gather has sealed (takes no more members).
func (g *gather) sealed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.done
}

// opened waits until the gather's members may send their requests (open).
// It returns ctx's error if ctx ends first.
func (g *gather) opened(ctx context.Context) error {
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// add makes members of the users that are not members yet, while the
// gather has room for their first runs (firstRun), and returns them and
// the others; ok is false, and nobody added, once it has sealed.
//
// The room is raftfsm.MaxBatchOps: a full gather takes nobody else, so
// that arrivals cannot keep it open for ever (it seals once its members
// are in), and its runs fit in one entry. An empty gather takes any user
// (a first run is at most MaxBatchOps), so every batch part gets in.
func (g *gather) add(users []string, firstRun func(string) int) (in, rest []string, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return nil, nil, false
	}
	for _, u := range users {
		n := firstRun(u)
		if g.members[u] || (g.ops > 0 && g.ops+n > raftfsm.MaxBatchOps) {
			rest = append(rest, u)
			continue
		}
		g.members[u] = true
		g.ops += n
		g.missing++
		in = append(in, u)
	}
	return in, rest, true
}

// member is one user's place in a gather: it joins with a run or leaves,
// once.
type member struct {
	g     *gather
	chain bool // its ops may be chained (Options.Chain)
	used  atomic.Bool
}

// propose proposes ops: through the gather the first time, alone after.
func (m *member) propose(ctx context.Context, ops []raftfsm.Op) ([]raftfsm.OpResult, error) {
	if m.used.Swap(true) {
		return m.g.rep.ProposeBatch(ctx, ops)
	}
	return m.g.join(ctx, ops)
}

// leave gives up the member's place if it has not joined.
func (m *member) leave() {
	if !m.used.Swap(true) {
		m.g.leave()
	}
}

func (g *gather) join(ctx context.Context, ops []raftfsm.Op) ([]raftfsm.OpResult, error) {
	r := &run{ctx: ctx, ops: ops, done: make(chan struct{})}
	g.mu.Lock()
	if g.done {
		g.mu.Unlock()
		return g.rep.ProposeBatch(ctx, ops)
	}
	g.runs = append(g.runs, r)
	g.arrivedLocked()
	g.mu.Unlock()
	// collect answers every run it took, whatever happens.
	<-r.done
	return r.res, r.err
}

func (g *gather) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.done {
		g.arrivedLocked()
	}
}

// arrivedLocked counts a member in; the last one seals the gather. A
// member always comes in or leaves: its call ends by its deadline.
func (g *gather) arrivedLocked() {
	if g.missing--; g.missing == 0 {
		g.done, g.members = true, nil
		close(g.full)
	}
}

// collect waits until the gather seals, then proposes the runs handed in,
// as few entries as raftfsm.MaxBatchOps allows (one, as add keeps room),
// and answers each.
func (g *gather) collect() {
	<-g.full
	g.mu.Lock()
	runs := g.runs
	g.runs = nil
	g.mu.Unlock()
	var wg sync.WaitGroup
	for len(runs) > 0 {
		n, size := 0, 0
		for n < len(runs) && (n == 0 || size+len(runs[n].ops) <= raftfsm.MaxBatchOps) {
			size += len(runs[n].ops)
			n++
		}
		chunk := runs[:n]
		runs = runs[n:]
		wg.Go(func() { g.propose(chunk, size) })
	}
	wg.Wait()
}

// propose proposes runs in one entry, but never a run past its own
// caller's deadline (docs/NOTES.md, "No write starts past its sender's
// deadline"): a run whose caller's context has ended is answered with
// that, not proposed; the others are proposed under proposalContext.
func (g *gather) propose(runs []*run, size int) {
	live := make([]*run, 0, len(runs))
	for _, r := range runs {
		if err := ended(r.ctx); err != nil {
			r.err = fmt.Errorf("actors: not proposed: %w", err)
			close(r.done)
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := proposalContext(live)
	defer cancel()
	ops := make([]raftfsm.Op, 0, size)
	for _, r := range live {
		ops = append(ops, r.ops...)
	}
	res, err := g.rep.ProposeBatch(ctx, ops)
	for _, r := range live {
		if err != nil {
			r.err = err
		} else {
			r.res, res = res[:len(r.ops):len(r.ops)], res[len(r.ops):]
		}
		close(r.done)
	}
}

// proposalContext is the context of one entry holding runs of several
// callers. It ends at the earliest of their deadlines: the proposer
// (shards.claim) then drops the entry rather than start any run past its
// caller's deadline. A caller's cancellation (its client went away) does
// not end it: the others' runs are in the same entry, and would fail with
// it; the gone caller has its answer already (its call returned), and its
// run, once proposed, is like any write whose caller stopped waiting (its
// outcome is unknown to it). Only when every caller has gone does it end,
// as nobody waits for the entry then. Its values are the first run's.
//
// The cost: a run with a long deadline shares the shortest deadline of its
// entry; if the entry outlives that, the run fails as unknown, and its
// actor decides it again on the committed log (batch), within its own
// deadline.
func proposalContext(runs []*run) (context.Context, context.CancelFunc) {
	var first time.Time
	for _, r := range runs {
		if d, ok := r.ctx.Deadline(); ok && (first.IsZero() || d.Before(first)) {
			first = d
		}
	}
	base := context.WithoutCancel(runs[0].ctx)
	var ctx context.Context
	var cancel context.CancelFunc
	if first.IsZero() {
		ctx, cancel = context.WithCancel(base)
	} else {
		ctx, cancel = context.WithDeadline(base, first)
	}
	var left atomic.Int64
	left.Store(int64(len(runs)))
	stops := make([]func() bool, len(runs))
	for i, r := range runs {
		stops[i] = context.AfterFunc(r.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// ended is why ctx may not start a write any more: it is done, or its
// deadline has passed and its timer not fired yet.
func ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// batch runs one user's ops of a batch, in order, in the actor's turn.
// Runs of ops the cache accepts as new are proposed together (prepare). An
// op that the cache refuses or finds a duplicate of, and the first op of a
// run that did not apply, go through write, on the committed cache: so
// refusals still take a read barrier, duplicates are of committed ops, and
// retries are bounded as for single writes. After an op that ends without
// an answer, the user's later ops are skipped.
func (a *userActor) batch(req *request) *reply {
	ctx, ops := req.ctx, req.batch
	res := make([]BatchResult, len(ops))
	tried := make([]bool, len(ops)) // proposed, outcome unknown
	i := 0
	for i < len(ops) {
		if err := a.sync(ctx, a.l == nil); err != nil {
			res[i] = BatchResult{Err: err}
			i++
			break
		}
		if run := a.prepare(ops[i:], res[i:], req.member.chain); len(run) > 0 {
			out, err := req.member.propose(ctx, run)
			k := 0
			for err == nil && k < len(run) && out[k].Applied {
				k++
			}
			a.version += uint64(k)
			if i += k; k == len(run) {
				continue
			}
			// The cache holds ops that did not apply.
			a.drop(dropReason(err, out, k))
			if err == nil && out[k].Err != nil {
				res[i] = BatchResult{Err: fmt.Errorf("actors: replica refused a validated op: %w", out[k].Err)}
				i++
				break
			}
			for j := i; err != nil && j < i+len(run)-k; j++ {
				tried[j] = true
			}
		}
		res[i] = a.single(ctx, ops[i], tried[i])
		if i++; !answered(res[i-1].Err) {
			break
		}
	}
	for ; i < len(ops); i++ {
		res[i] = BatchResult{Err: ErrSkipped}
	}
	return &reply{batch: res}
}

func dropReason(err error, out []raftfsm.OpResult, k int) string {
	switch {
	case err != nil:
		return "propose-failed"
	case out[k].Err != nil:
		return "invalid"
	}
	return "version-mismatch"
}

// prepare applies ops to the cache, in order, for as long as the cache
// accepts each as new, and returns them as a run to propose: the first
// with the cache's version, the others chained on the one before. It
// stops before the first op refused or found a duplicate. res gets each
// accepted op's version and allocations, as they will be once the run is
// committed. Without chain, a run is one op.
func (a *userActor) prepare(ops []BatchOp, res []BatchResult, chain bool) []raftfsm.Op {
	most := raftfsm.MaxBatchOps
	if !chain {
		most = 1
	}
	var run []raftfsm.Op
	for k, op := range ops {
		if len(run) == most {
			break
		}
		req := singleRequest(op)
		var r ledger.Result
		var err error
		if req.kind == opGrant {
			r, err = a.l.Grant(req.grant)
		} else {
			r, err = a.l.Deduct(req.deduction)
		}
		if err != nil || r.Duplicate {
			break
		}
		v := a.version + uint64(len(run))
		res[k].WriteResult = WriteResult{Version: v + 1, Allocations: slices.Clone(r.Allocations)}
		rop := raftfsm.Op{User: a.user, ExpectedVersion: v, Chained: len(run) > 0}
		if req.kind == opGrant {
			rop.Grant = &req.grant
		} else {
			rop.Deduction = &req.deduction
		}
		run = append(run, rop)
	}
	return run
}

// single runs one op of a batch as a write of its own: the path that
// answers duplicates and refusals.
func (a *userActor) single(ctx context.Context, op BatchOp, proposed bool) BatchResult {
	req := singleRequest(op)
	req.ctx = ctx
	r := a.write(req, proposed)
	if r.err != nil {
		return BatchResult{Err: r.err}
	}
	return BatchResult{WriteResult: WriteResult{Duplicate: r.duplicate, Version: r.version, Allocations: r.allocs}}
}

func singleRequest(op BatchOp) *request {
	if op.Grant != nil {
		return &request{kind: opGrant, grant: *op.Grant}
	}
	return &request{kind: opDeduct, deduction: *op.Deduction}
}

// answered reports whether err is an answer about the op (or none): the
// next op of the user may go ahead. Anything else may still be applied,
// or never was: the user's later ops wait for its retry.
func answered(err error) bool {
	return err == nil || errors.Is(err, ledger.ErrInvalidArgument) || errors.Is(err, ledger.ErrConflict) ||
		errors.Is(err, ledger.ErrInsufficientCredits)
}
