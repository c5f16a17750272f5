package actors

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ration/ration/ledger"
	"github.com/ration/ration/raftfsm"
)

// ErrNoReplica: this node holds no replica of the user's shard (any more),
// so it cannot answer a stale read from its own state.
var ErrNoReplica = errors.New("actors: no local replica of the shard")

// UserLogs is one shard's replicated per-user logs (*raftfsm.Shard).
type UserLogs interface {
	LogSince(user string, from uint64) (uint64, []raftfsm.LoggedOp)
}

// Replicas are this node's replicas of the shards, leader or follower.
type Replicas interface {
	ShardOf(user string) uint32
	// Replica is this node's replica of shard, if it holds one that
	// serves reads.
	Replica(shard uint32) (UserLogs, bool)
}

// DefaultViews is how many users' read-only ledgers Views keeps.
const DefaultViews = 4096

// Views answers stale reads from this node's own replica of a user's
// shard, without the user's actor (which only runs on the shard's leader)
// and without asking the leader: so a follower answers even while the
// shard has no leader. Each read brings a read-only ledger of the user up
// to the replica's log (the log is append-only, so only the new ops are
// replayed) and answers from it. The ledgers of the most recently read
// users are kept, up to a bound; a replica whose log is shorter than a
// kept ledger (rebuilt from scratch after a move) makes it start over.
//
// Every answer is the user's ledger at some version the replica applied:
// a real state of the ledger, possibly missing recent writes.
type Views struct {
	reps     Replicas
	max      int
	maxBytes int64
	met      viewMetrics

	mu     sync.Mutex
	lru    list.List // of *view, most recently read first
	byUser map[string]*list.Element
	bytes  int64 // the views' ledgers' memory bounds, summed
}

type view struct {
	user  string
	shard uint32
	elem  *list.Element
	bytes int64 // its ledger's memory bound when last read (guarded by Views.mu)

	mu      sync.Mutex // serialises reads: the ledger caches as it answers
	l       *ledger.Ledger
	version uint64
}

type viewMetrics struct {
	reads   prometheus.Counter
	replays prometheus.Counter
}

// NewViews returns views over reps keeping up to max users' ledgers
// (DefaultViews if max <= 0) whose memory bounds (ledger.MemoryBound) sum
// to at most maxBytes (no bound if maxBytes <= 0). reg may be nil.
func NewViews(reps Replicas, max int, maxBytes int64, reg prometheus.Registerer) *Views {
	if max <= 0 {
		max = DefaultViews
	}
	v := &Views{reps: reps, max: max, maxBytes: maxBytes, byUser: map[string]*list.Element{}}
	v.met = viewMetrics{
		reads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ration_replica_reads_total", Help: "Stale reads answered from this node's own replica without the leader.",
		}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ration_replica_view_rebuilds_total", Help: "Read-only ledgers rebuilt from the start of a user's log (first read, evicted, or replica rebuilt).",
		}),
	}
	if reg != nil {
		reg.MustRegister(v.met.reads, v.met.replays)
	}
	return v
}

// Hosts reports whether this node holds a replica of shard that serves
// reads.
func (v *Views) Hosts(shard uint32) bool {
	_, ok := v.reps.Replica(shard)
	return ok
}

// Balance is the user's balance at at, from this node's replica.
func (v *Views) Balance(ctx context.Context, user string, at int64) (BalanceResult, error) {
	var r BalanceResult
	err := v.read(ctx, user, func(w *view) {
		r = BalanceResult{Balance: w.l.Balance(at), Grants: w.l.Breakdown(at), Version: w.version}
	})
	return r, err
}

// History is a page of the user's history, from this node's replica (see
// Directory.History).
func (v *Views) History(ctx context.Context, user string, from, to int64, skip, limit int) (Page, error) {
	var p Page
	err := v.read(ctx, user, func(w *view) {
		p.Events, p.Next, p.NextSkip, p.More = w.l.History(from, to, skip, limit)
		p.Version = w.version
	})
	return p, err
}

// read brings the user's view up to the replica and runs answer on it.
func (v *Views) read(ctx context.Context, user string, answer func(*view)) error {
	if !ledger.ValidID(user) {
		return invalidUser()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if v.absent(user) {
		// A user with no operations gets an empty ledger's answer, and
		// keeps no view: reads of made-up names cost next to nothing.
		v.met.reads.Inc()
		answer(&view{user: user, l: ledger.New()})
		return nil
	}
	w := v.view(user)
	w.mu.Lock()
	defer w.mu.Unlock()
	logs, ok := v.reps.Replica(w.shard)
	if !ok {
		// The shard moved away: its ledger would only hold memory until
		// the LRU got to it, and a later replica starts over anyway.
		w.l, w.version = nil, 0
		v.resize(w, 0)
		return fmt.Errorf("%w: shard %d", ErrNoReplica, w.shard)
	}
	if w.l == nil {
		w.l, w.version = ledger.New(), 0
		v.met.replays.Inc()
	}
	ver, ops := logs.LogSince(user, w.version)
	if ver < w.version {
		// The replica holds less than the view: it was rebuilt (the shard
		// moved away and back). Start over from what it holds now.
		w.l, w.version = ledger.New(), 0
		v.met.replays.Inc()
		ver, ops = logs.LogSince(user, 0)
	}
	if err := replay(w.l, ops); err != nil {
		at := w.version
		w.l, w.version = nil, 0
		v.resize(w, 0)
		return fmt.Errorf("actors: user %s: view at version %d: %w", user, at, err)
	}
	w.version = ver
	v.met.reads.Inc()
	answer(w)
	v.resize(w, w.l.MemoryBound())
	return nil
}

// absent reports whether the user has no view and no operations in this
// node's replica of its shard.
func (v *Views) absent(user string) bool {
	v.mu.Lock()
	_, kept := v.byUser[user]
	v.mu.Unlock()
	if kept {
		return false
	}
	logs, ok := v.reps.Replica(v.reps.ShardOf(user))
	if !ok {
		return false // the read reports ErrNoReplica
	}
	ver, _ := logs.LogSince(user, math.MaxUint64)
	return ver == 0
}

// resize records w's ledger's memory bound and evicts beyond the bounds.
func (v *Views) resize(w *view, bytes int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e, ok := v.byUser[w.user]; ok && e == w.elem {
		v.bytes += bytes - w.bytes
		w.bytes = bytes
		v.evict(w.elem)
	}
}

// evict removes the least recently read views while there are more than
// max or they weigh more than maxBytes, sparing keep. v.mu is held.
func (v *Views) evict(keep *list.Element) {
	for e := v.lru.Back(); e != nil && (v.lru.Len() > v.max || v.maxBytes > 0 && v.bytes > v.maxBytes); {
		old := e
		e = e.Prev()
		if old == keep {
			continue
		}
		w := v.lru.Remove(old).(*view)
		delete(v.byUser, w.user)
		v.bytes -= w.bytes
	}
}

// view returns the user's view, making it the most recently used, and
// evicts the least recently used beyond the bound.
func (v *Views) view(user string) *view {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e, ok := v.byUser[user]; ok {
		v.lru.MoveToFront(e)
		return e.Value.(*view)
	}
	w := &view{user: user, shard: v.reps.ShardOf(user)}
	w.elem = v.lru.PushFront(w)
	v.byUser[user] = w.elem
	v.evict(w.elem)
	return w
}

// replay applies logged ops, in order, to l. Every logged op was accepted
// on exactly the prefix before it, so it is accepted again; an error means
// the log and the ledger disagree.
func replay(l *ledger.Ledger, ops []raftfsm.LoggedOp) error {
	for i, op := range ops {
		var err error
		switch {
		case op.Grant != nil:
			_, err = l.Grant(*op.Grant)
		case op.Deduction != nil:
			_, err = l.Deduct(*op.Deduction)
		}
		if err != nil {
			return fmt.Errorf("logged op %d after the cache does not replay: %w", i, errors.Join(err, errReplay))
		}
	}
	return nil
}
