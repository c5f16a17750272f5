// Package actorstest provides an in-memory replica for tests of the actors
// and of the layers above them: proposals go straight through real
// raftfsm shards, one at a time, as a single-node raft would apply them,
// with fault injection.
package actorstest

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/ration/ration/raftfsm"
)

// ErrInjected is the failure the fault injection reports.
var ErrInjected = errors.New("actorstest: injected failure")

// Replica implements actors.Replica in memory.
type Replica struct {
	mu     sync.Mutex
	shards []*raftfsm.Shard
	index  uint64

	// FailBefore fails this many proposals without applying them.
	FailBefore atomic.Int32
	// LoseReply applies this many proposals, then reports failure.
	LoseReply atomic.Int32
	// Unavailable makes every call fail as a node without a leader would.
	Unavailable atomic.Bool
	Proposals   atomic.Int64
	// Entries counts the entries applied.
	Entries atomic.Int64
}

// NewReplica returns a replica of n shards.
func NewReplica(n int) *Replica {
	r := &Replica{}
	for i := 0; i < n; i++ {
		r.shards = append(r.shards, raftfsm.New(nil))
	}
	return r
}

// ShardOf hashes user to a shard.
func (r *Replica) ShardOf(user string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(user))
	return h.Sum32() % uint32(len(r.shards))
}

// Propose applies op through its shard's FSM.
func (r *Replica) Propose(ctx context.Context, op raftfsm.Op) (raftfsm.OpResult, error) {
	res, err := r.ProposeBatch(ctx, []raftfsm.Op{op})
	if err != nil {
		return raftfsm.OpResult{}, err
	}
	return res[0], nil
}

// ProposeBatch applies ops, all of one shard, as one entry of its FSM.
// Each call counts as one proposal (Proposals) and one entry (Entries);
// the fault injection counts calls too.
func (r *Replica) ProposeBatch(ctx context.Context, ops []raftfsm.Op) ([]raftfsm.OpResult, error) {
	r.Proposals.Add(1)
	if r.Unavailable.Load() {
		return nil, ErrInjected
	}
	if r.FailBefore.Add(-1) >= 0 {
		return nil, ErrInjected
	}
	data, err := raftfsm.EncodeBatch(ops)
	if err != nil {
		return nil, err
	}
	shard := r.ShardOf(ops[0].User)
	for _, op := range ops {
		if r.ShardOf(op.User) != shard {
			return nil, fmt.Errorf("actorstest: ops of shards %d and %d in one batch: %w", shard, r.ShardOf(op.User), raftfsm.ErrInvalidOp)
		}
	}
	r.mu.Lock()
	r.index++
	resp := r.shards[shard].FSM().Apply(&raft.Log{Index: r.index, Type: raft.LogCommand, Data: data})
	r.mu.Unlock()
	r.Entries.Add(1)
	if r.LoseReply.Add(-1) >= 0 {
		return nil, ErrInjected
	}
	switch v := resp.(type) {
	case []raftfsm.OpResult:
		return v, nil
	case error:
		return nil, v
	}
	return nil, fmt.Errorf("actorstest: unexpected response %T", resp)
}

// ReadBarrier succeeds at once: there is nothing to wait for in memory.
func (r *Replica) ReadBarrier(ctx context.Context, shard uint32) error {
	if r.Unavailable.Load() {
		return ErrInjected
	}
	return ctx.Err()
}

// LogSince reads a user's log from its shard.
func (r *Replica) LogSince(shard uint32, user string, from uint64) (uint64, []raftfsm.LoggedOp) {
	return r.shards[shard].LogSince(user, from)
}

// Version is the user's version in its shard.
func (r *Replica) Version(shard uint32, user string) (uint64, bool) {
	return r.shards[shard].Version(user), true
}

// Shard is the state machine of shard.
func (r *Replica) Shard(shard uint32) *raftfsm.Shard { return r.shards[shard] }
