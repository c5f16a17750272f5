package shards

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ration/ration/raftfsm"
)

// A proposal is one Propose or ProposeBatch call in flight: ops that go
// into one raft entry together, in order. Its state decides, between the
// proposer and a caller whose context ended, whether they were proposed.
type proposal struct {
	ops   []raftfsm.Op
	ctx   context.Context // the caller's: past its deadline nothing is proposed
	start time.Time
	state atomic.Uint32
	done  chan struct{} // closed once res and err are set
	res   []raftfsm.OpResult
	err   error
}

const (
	statePending uint32 = iota
	stateProposed
	stateCancelled
)

// flight is one raft entry awaiting its result.
type flight struct {
	f     raft.ApplyFuture
	props []*proposal
	ops   int // the entry's, over every proposal
}

// pipeline is a group's group-commit machinery: the queue of proposals, the
// proposer that turns them into entries, and the completer that hands the
// entries' results back in log order.
type pipeline struct {
	maxBatch     int
	queue        chan *proposal
	inflight     chan *flight
	stopPropose  chan struct{}
	stopOnce     sync.Once
	started      bool
	pipelineDone chan struct{} // closed when the completer has finished
}

func (p *pipeline) init(cfg Config) {
	p.maxBatch = cfg.MaxBatchOps
	p.queue = make(chan *proposal, cfg.QueueDepth)
	// The completer waits on one flight while the channel holds the rest.
	p.inflight = make(chan *flight, max(cfg.MaxInflight-1, 0))
	p.stopPropose = make(chan struct{})
	p.pipelineDone = make(chan struct{})
}

func (p *pipeline) start(g *group) {
	p.started = true
	go g.propose()
	go g.complete()
}

// stopProposing makes the proposer fail what is queued and exit; the
// completer exits once the entries in flight have resolved.
func (p *pipeline) stopProposing() {
	p.stopOnce.Do(func() {
		close(p.stopPropose)
		if !p.started {
			close(p.pipelineDone)
		}
	})
}

// Propose replicates op through the raft group of its user's shard and
// returns its result: Applied, or refused for a version mismatch (err nil
// in both cases; see raftfsm.OpResult). Errors:
//
//   - ErrNotLeader (*NotLeaderError, with the leader's address) or
//     ErrNoLeader: nothing was written; retry at the leader or later.
//   - ErrOutcomeUnknown: the op was handed to raft but its fate is unknown
//     (leadership lost, shutdown, or ctx ended while waiting; the error
//     also wraps the cause). Re-read the user's version before retrying.
//   - ctx's error alone: ctx ended before the op was proposed.
//   - ErrShuttingDown, ErrNotHosted, raftfsm.ErrInvalidOp.
//
// Ops are queued per shard; a proposer goroutine packs every op waiting in
// the queue (up to MaxBatchOps) into one raft entry and keeps up to
// MaxInflight entries in raft at once, so concurrent callers share log
// writes and fsyncs.
func (h *Host) Propose(ctx context.Context, op raftfsm.Op) (raftfsm.OpResult, error) {
	res, err := h.ProposeBatch(ctx, []raftfsm.Op{op})
	if err != nil {
		return raftfsm.OpResult{}, err
	}
	return res[0], res[0].Err
}

// ProposeBatch replicates ops, all of users of one shard, in one raft
// entry, in order, and returns one result per op (an op refused by the
// field checks has its Err set). The entry may carry other callers' ops
// before or after them, never between. Chained ops (raftfsm.Op.Chained)
// must follow an op of their user in ops. At most raftfsm.MaxBatchOps ops;
// an entry holds more than MaxBatchOps only when one call brings them.
// Errors are Propose's, for all the ops together.
func (h *Host) ProposeBatch(ctx context.Context, ops []raftfsm.Op) ([]raftfsm.OpResult, error) {
	if err := raftfsm.ValidateBatch(ops); err != nil {
		return nil, fmt.Errorf("shards: propose: %w", err)
	}
	shard := ShardOf(ops[0].User, h.cfg.Shards)
	for i := range ops[1:] {
		if s := ShardOf(ops[i+1].User, h.cfg.Shards); s != shard {
			return nil, fmt.Errorf("shards: propose: %w: op %d is of shard %d, op 0 of shard %d", raftfsm.ErrInvalidOp, i+1, s, shard)
		}
	}
	g, err := h.group(shard)
	if err != nil {
		return nil, err
	}
	if h.isClosing() {
		return nil, fmt.Errorf("shards: shard %d: %w", g.id, ErrShuttingDown)
	}
	start := time.Now()
	fail := func(err error) ([]raftfsm.OpResult, error) {
		h.metrics.proposalsDone(g.id, len(ops), outcomeOf(false, err), time.Since(start))
		return nil, err
	}
	// Not authoritative (raft.Apply is), but spares a follower the queue.
	if g.raft.State() != raft.Leader {
		return fail(g.notLeader())
	}
	p := &proposal{ops: ops, ctx: ctx, start: start, done: make(chan struct{})}
	if err := h.enqueue(ctx, g, p); err != nil {
		return fail(err)
	}
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
	}
	// The proposer cancels what it finds expired, so cancelled by
	// either side means not proposed.
	if p.state.CompareAndSwap(statePending, stateCancelled) || p.state.Load() == stateCancelled {
		err := fmt.Errorf("shards: shard %d: not proposed: %w", g.id, ctx.Err())
		h.metrics.proposalsDone(g.id, len(ops), OutcomeCanceled, time.Since(start))
		return nil, err
	}
	select {
	case <-p.done: // the result raced the cancellation
		return p.res, p.err
	default:
		return nil, outcomeUnknown(g.id, ctx.Err())
	}
}

func (h *Host) enqueue(ctx context.Context, g *group, p *proposal) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed || g.removed {
		return fmt.Errorf("shards: shard %d: %w", g.id, ErrShuttingDown)
	}
	select {
	case g.queue <- p:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shards: shard %d: op not proposed: %w", g.id, ctx.Err())
	case <-h.closing:
		return fmt.Errorf("shards: shard %d: %w", g.id, ErrShuttingDown)
	}
}

// propose is the proposer goroutine.
func (g *group) propose() {
	defer close(g.inflight)
	// carry is a proposal taken from the queue that did not fit in the
	// entry before: it starts the next one.
	var carry *proposal
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-g.queue:
			case <-g.stopPropose:
				g.failQueued()
				return
			}
		}
		batch := make([]*proposal, 0, min(len(g.queue)+1, g.maxBatch))
		batch = claim(batch, first)
		// A proposal is never split: one that is larger than MaxBatchOps
		// alone makes the entry larger.
		limit, n := max(g.maxBatch, len(first.ops)), len(first.ops)
		// Take what is already queued, without waiting for more: under
		// light load an op goes out alone at once, under heavy load the
		// queue fills while raft writes and the next entry takes it all.
	drain:
		for n < limit {
			select {
			case p := <-g.queue:
				if n+len(p.ops) > limit {
					carry = p
					break drain
				}
				before := len(batch)
				if batch = claim(batch, p); len(batch) > before {
					n += len(p.ops)
				}
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			g.submit(batch)
		}
	}
}

// claim appends p unless its caller gave up first, or its deadline has
// passed. Its caller may not have noticed yet (the context's timer fires
// late, and a select between a full queue and a done context picks either),
// but nothing is proposed past its deadline: a caller that gave up may
// have answered its client, and its client may have been told "no" by a
// later attempt (cluster/routing waits out open attempts for that).
func claim(batch []*proposal, p *proposal) []*proposal {
	if expired(p.ctx) {
		p.state.CompareAndSwap(statePending, stateCancelled)
		return batch
	}
	if p.state.CompareAndSwap(statePending, stateProposed) {
		return append(batch, p)
	}
	return batch
}

func expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

func (g *group) submit(batch []*proposal) {
	var ops []raftfsm.Op
	if len(batch) == 1 {
		ops = batch[0].ops
	} else {
		for _, p := range batch {
			ops = append(ops, p.ops...)
		}
	}
	data, err := raftfsm.EncodeBatch(ops)
	if err != nil {
		// Propose validated every op; this is a bug, but a local one.
		g.failAll(batch, fmt.Errorf("shards: shard %d: encode: %w", g.id, err))
		return
	}
	// Timeout 0: wait for raft to take the entry. raft answers every
	// entry, with ErrNotLeader if it is not the leader, and stops waiting
	// at shutdown, so this cannot hang; meanwhile the queue fills up and
	// the next entry carries more.
	f := g.raft.Apply(data, 0)
	g.h.metrics.batchProposed(g.id, len(ops))
	g.inflight <- &flight{f: f, props: batch, ops: len(ops)}
}

// complete is the completer goroutine: it resolves entries in log order,
// which is the order raft resolves them in.
func (g *group) complete() {
	defer close(g.pipelineDone)
	for fl := range g.inflight {
		if err := fl.f.Error(); err != nil {
			g.failAll(fl.props, g.applyError(err))
			continue
		}
		switch r := fl.f.Response().(type) {
		case []raftfsm.OpResult:
			if len(r) != fl.ops {
				g.failAll(fl.props, fmt.Errorf("shards: shard %d: entry %d: %d results for %d ops", g.id, fl.f.Index(), len(r), fl.ops))
				continue
			}
			for _, p := range fl.props {
				g.finish(p, r[:len(p.ops):len(p.ops)], nil)
				r = r[len(p.ops):]
			}
		case error:
			g.failAll(fl.props, fmt.Errorf("shards: shard %d: entry %d refused: %w", g.id, fl.f.Index(), r))
		default:
			g.failAll(fl.props, fmt.Errorf("shards: shard %d: entry %d: unexpected response %T", g.id, fl.f.Index(), r))
		}
	}
}

func (g *group) failAll(props []*proposal, err error) {
	for _, p := range props {
		g.finish(p, nil, err)
	}
}

// applyError maps the error of an ApplyFuture.
func (g *group) applyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		// raft refuses entries it did not append with this error.
		return g.notLeader()
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: shard %d: %w", ErrNoLeader, g.id, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return outcomeUnknown(g.id, ErrShuttingDown)
	}
	// ErrLeadershipLost, and anything new: the entry may be in the log.
	return outcomeUnknown(g.id, err)
}

func (g *group) finish(p *proposal, res []raftfsm.OpResult, err error) {
	p.res, p.err = res, err
	d := time.Since(p.start)
	if err != nil {
		g.h.metrics.proposalsDone(g.id, len(p.ops), outcomeOf(false, err), d)
	}
	for _, r := range res {
		g.h.metrics.proposalDone(g.id, outcomeOf(r.Applied, r.Err), d)
	}
	close(p.done)
}

// failQueued fails every queued proposal; the Host is closed, so nothing
// is queued after it.
func (g *group) failQueued() {
	err := fmt.Errorf("shards: shard %d: %w", g.id, ErrShuttingDown)
	for {
		select {
		case p := <-g.queue:
			if p.state.CompareAndSwap(statePending, stateProposed) {
				g.finish(p, nil, err)
			}
		default:
			return
		}
	}
}
