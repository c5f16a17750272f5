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

// A proposal is one Propose call in flight. Its state decides, between the
// proposer and a caller whose context ended, whether the op was proposed.
type proposal struct {
	op    raftfsm.Op
	ctx   context.Context // the caller's: past its deadline the op is not proposed
	start time.Time
	state atomic.Uint32
	done  chan struct{} // closed once res and err are set
	res   raftfsm.OpResult
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
	if err := raftfsm.Validate(op); err != nil {
		return raftfsm.OpResult{}, fmt.Errorf("shards: propose: %w", err)
	}
	g, err := h.group(ShardOf(op.User, h.cfg.Shards))
	if err != nil {
		return raftfsm.OpResult{}, err
	}
	if h.isClosing() {
		return raftfsm.OpResult{}, fmt.Errorf("shards: shard %d: %w", g.id, ErrShuttingDown)
	}
	start := time.Now()
	// Not authoritative (raft.Apply is), but spares a follower the queue.
	if g.raft.State() != raft.Leader {
		err := g.notLeader()
		h.metrics.proposalDone(g.id, outcomeOf(false, err), time.Since(start))
		return raftfsm.OpResult{}, err
	}
	p := &proposal{op: op, ctx: ctx, start: start, done: make(chan struct{})}
	if err := h.enqueue(ctx, g, p); err != nil {
		h.metrics.proposalDone(g.id, outcomeOf(false, err), time.Since(start))
		return raftfsm.OpResult{}, err
	}
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
	}
	// The proposer cancels what it finds expired, so cancelled by
	// either side means not proposed.
	if p.state.CompareAndSwap(statePending, stateCancelled) || p.state.Load() == stateCancelled {
		err := fmt.Errorf("shards: shard %d: op not proposed: %w", g.id, ctx.Err())
		h.metrics.proposalDone(g.id, OutcomeCanceled, time.Since(start))
		return raftfsm.OpResult{}, err
	}
	select {
	case <-p.done: // the result raced the cancellation
		return p.res, p.err
	default:
		return raftfsm.OpResult{}, outcomeUnknown(g.id, ctx.Err())
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
	for {
		var first *proposal
		select {
		case first = <-g.queue:
		case <-g.stopPropose:
			g.failQueued()
			return
		}
		batch := make([]*proposal, 0, min(len(g.queue)+1, g.maxBatch))
		batch = claim(batch, first)
		// Take what is already queued, without waiting for more: under
		// light load an op goes out alone at once, under heavy load the
		// queue fills while raft writes and the next entry takes it all.
	drain:
		for range g.maxBatch - 1 {
			select {
			case p := <-g.queue:
				batch = claim(batch, p)
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
	ops := make([]raftfsm.Op, len(batch))
	for i, p := range batch {
		ops[i] = p.op
	}
	data, err := raftfsm.EncodeBatch(ops)
	if err != nil {
		// Propose validated every op; this is a bug, but a local one.
		for _, p := range batch {
			g.finish(p, raftfsm.OpResult{}, fmt.Errorf("shards: shard %d: encode: %w", g.id, err))
		}
		return
	}
	// Timeout 0: wait for raft to take the entry. raft answers every
	// entry, with ErrNotLeader if it is not the leader, and stops waiting
	// at shutdown, so this cannot hang; meanwhile the queue fills up and
	// the next entry carries more.
	f := g.raft.Apply(data, 0)
	g.h.metrics.batchProposed(g.id, len(batch))
	g.inflight <- &flight{f: f, props: batch}
}

// complete is the completer goroutine: it resolves entries in log order,
// which is the order raft resolves them in.
func (g *group) complete() {
	defer close(g.pipelineDone)
	for fl := range g.inflight {
		if err := fl.f.Error(); err != nil {
			err = g.applyError(err)
			for _, p := range fl.props {
				g.finish(p, raftfsm.OpResult{}, err)
			}
			continue
		}
		switch r := fl.f.Response().(type) {
		case []raftfsm.OpResult:
			if len(r) == len(fl.props) {
				for i, p := range fl.props {
					g.finish(p, r[i], r[i].Err)
				}
				continue
			}
			err := fmt.Errorf("shards: shard %d: entry %d: %d results for %d ops", g.id, fl.f.Index(), len(r), len(fl.props))
			for _, p := range fl.props {
				g.finish(p, raftfsm.OpResult{}, err)
			}
		case error:
			err := fmt.Errorf("shards: shard %d: entry %d refused: %w", g.id, fl.f.Index(), r)
			for _, p := range fl.props {
				g.finish(p, raftfsm.OpResult{}, err)
			}
		default:
			err := fmt.Errorf("shards: shard %d: entry %d: unexpected response %T", g.id, fl.f.Index(), r)
			for _, p := range fl.props {
				g.finish(p, raftfsm.OpResult{}, err)
			}
		}
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

func (g *group) finish(p *proposal, res raftfsm.OpResult, err error) {
	p.res, p.err = res, err
	g.h.metrics.proposalDone(g.id, outcomeOf(res.Applied, err), time.Since(p.start))
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
				g.finish(p, raftfsm.OpResult{}, err)
			}
		default:
			return
		}
	}
}
