package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

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
// on it, raftfsm/DESIGN.md "Chains"), and the first runs of all the users
// of a shard go into one raft entry. Shards run in parallel. This node
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
// proposed together through a gather.
func (d *Directory) batchShard(ctx context.Context, shard uint32, ops []BatchOp, idx []int, out []BatchResult) {
	release, err := d.collect(ctx, shard)
	if err != nil {
		for _, i := range idx {
			out[i].Err = err
		}
		return
	}
	users := map[string]bool{}
	for _, i := range idx {
		users[ops[i].User] = true
	}
	g := newGather(d.rep, len(users), release)
	g.chain = d.opts.Chain == nil || d.opts.Chain(shard)
	done := make(chan struct{})
	go func() {
		defer close(done)
		EachPart(idx, func(i int) string { return ops[i].User }, func(user string, mine []int) {
			req := &request{kind: opBatch, member: &member{g: g}, batch: make([]BatchOp, len(mine))}
			for k, i := range mine {
				req.batch[k] = ops[i]
			}
			rep, err := d.call(ctx, user, req)
			// An actor that never took the request (stopped, timed out)
			// must not hold up the others.
			req.member.leave()
			for k, i := range mine {
				if err != nil {
					out[i].Err = err
				} else {
					out[i] = rep.batch[k]
				}
			}
		})
	}()
	g.collect(ctx)
	<-done
}

// collect takes shard's collection turn: only one gather per shard waits
// for its members at a time. That is what keeps gathers from deadlocking:
// a member actor that is waiting inside a gather for its run's result
// holds its turn, so two gathers waiting for each other's members would
// wait for ever. With one collecting gather per shard, every other gather
// a member can be waiting in has already proposed and will be answered by
// raft. release ends the turn (the gather calls it once it proposes).
func (d *Directory) collect(ctx context.Context, shard uint32) (release func(), err error) {
	d.mu.Lock()
	turn, ok := d.collecting[shard]
	if !ok {
		turn = make(chan struct{}, 1)
		d.collecting[shard] = turn
	}
	d.mu.Unlock()
	select {
	case turn <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-turn }) }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("actors: shard %d: batch not started: %w", shard, ctx.Err())
	}
}

// A gather collects the first run of ops of each user of one shard's part
// of a batch and proposes them all in one raft entry, once every user's
// actor has handed its run in or left, or the batch's context has ended.
// Runs handed in after that are proposed on their own.
type gather struct {
	rep     Replica
	release func()
	full    chan struct{} // closed when no member is missing
	chain   bool          // members may chain their ops (Options.Chain)

	mu      sync.Mutex
	missing int
	runs    []*run
	done    bool
}

type run struct {
	ops  []raftfsm.Op
	res  []raftfsm.OpResult
	err  error
	done chan struct{}
}

func newGather(rep Replica, members int, release func()) *gather {
	g := &gather{rep: rep, release: release, full: make(chan struct{}), missing: members}
	if members == 0 {
		close(g.full)
	}
	return g
}

// member is one user's place in a gather: it joins with a run or leaves,
// once.
type member struct {
	g    *gather
	used atomic.Bool
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
	r := &run{ops: ops, done: make(chan struct{})}
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

func (g *gather) arrivedLocked() {
	if g.missing--; g.missing == 0 {
		close(g.full)
	}
}

// collect waits until no member is missing or ctx ends, then proposes the
// runs handed in, as few entries as raftfsm.MaxBatchOps allows (one for
// any Batch call), and answers each.
func (g *gather) collect(ctx context.Context) {
	select {
	case <-g.full:
	case <-ctx.Done():
	}
	g.mu.Lock()
	g.done = true
	runs := g.runs
	g.mu.Unlock()
	g.release()
	var wg sync.WaitGroup
	for len(runs) > 0 {
		n, size := 0, 0
		for n < len(runs) && (n == 0 || size+len(runs[n].ops) <= raftfsm.MaxBatchOps) {
			size += len(runs[n].ops)
			n++
		}
		chunk := runs[:n]
		runs = runs[n:]
		wg.Go(func() { g.propose(ctx, chunk, size) })
	}
	wg.Wait()
}

func (g *gather) propose(ctx context.Context, runs []*run, size int) {
	ops := make([]raftfsm.Op, 0, size)
	for _, r := range runs {
		ops = append(ops, r.ops...)
	}
	res, err := g.rep.ProposeBatch(ctx, ops)
	for _, r := range runs {
		if err != nil {
			r.err = err
		} else {
			r.res, res = res[:len(r.ops):len(r.ops)], res[len(r.ops):]
		}
		close(r.done)
	}
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
		if run := a.prepare(ops[i:], res[i:], req.member.g.chain); len(run) > 0 {
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
		if r, err = applyAgain(a.l, req, r, err); err != nil || r.Duplicate {
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
