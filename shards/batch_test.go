package shards

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/ration/ration/raftfsm"
)

func chain(op raftfsm.Op) raftfsm.Op {
	op.Chained = true
	return op
}

// recordingNode is a single node of shards shards with MaxBatchOps
// maxBatch (0: the default) whose metrics are recorded.
func recordingNode(t *testing.T, shards, maxBatch int) (*Host, *recMetrics) {
	m := &recMetrics{}
	cfg := fastConfig(shards)
	cfg.MaxBatchOps = maxBatch
	cfg.testSink = m
	return singleNode(t, cfg).host, m
}

// inParallel runs fn(0) to fn(workers-1) at once and fails t with their
// errors.
func inParallel(t *testing.T, workers int, fn func(w int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			if err := fn(w); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// One ProposeBatch call is one raft entry, however large, with one result
// per op, in order; a chain whose first op is stale is refused whole.
func TestProposeBatchIsOneEntry(t *testing.T) {
	h, m := recordingNode(t, 4, 4)
	ctx := context.Background()
	var ops []raftfsm.Op
	users := []string{userIn(1, 4, "a"), userIn(1, 4, "b"), userIn(1, 4, "c")}
	for _, u := range users {
		ops = append(ops, grant(u, 0, "g0", 10))
		for v := range uint64(3) {
			ops = append(ops, chain(deduct(u, v+1, fmt.Sprint("d", v), 1)))
		}
	}
	res, err := h.ProposeBatch(ctx, ops)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if want := uint64(i%4 + 1); !r.Applied || r.Version != want {
			t.Fatalf("op %d: %+v, want applied at version %d", i, r, want)
		}
	}
	m.mu.Lock()
	batches := append([]int(nil), m.batches...)
	m.mu.Unlock()
	if len(batches) != 1 || batches[0] != len(ops) {
		t.Fatalf("entries of %v ops for one call of %d (MaxBatchOps 4): want one entry", batches, len(ops))
	}

	// users[0] is at 4; a chain validated at 3 is refused whole.
	res, err = h.ProposeBatch(ctx, []raftfsm.Op{deduct(users[0], 3, "x", 1), chain(deduct(users[0], 4, "y", 1))})
	if err != nil || res[0].Applied || res[1].Applied || res[1].Version != 4 {
		t.Fatalf("stale chain: %+v, %v; want both refused at version 4", res, err)
	}

	for _, bad := range [][]raftfsm.Op{
		nil,
		{grant(userIn(0, 4, "a"), 0, "g", 1), grant(userIn(1, 4, "a"), 0, "g", 1)},
		{chain(grant(users[0], 4, "g", 1))},
		{grant(users[0], 4, "g", 1), chain(grant(users[1], 1, "g", 1))},
	} {
		if _, err := h.ProposeBatch(ctx, bad); !errors.Is(err, raftfsm.ErrInvalidOp) {
			t.Errorf("ProposeBatch(%d ops): %v, want ErrInvalidOp", len(bad), err)
		}
	}
}

// Concurrent calls share entries up to MaxBatchOps, but a call is never
// split between entries: with calls of three ops and MaxBatchOps 4, every
// entry carries exactly one call.
func TestProposeBatchNeverSplitsACall(t *testing.T) {
	h, m := recordingNode(t, 1, 4)
	const workers, rounds = 16, 10
	inParallel(t, workers, func(w int) error {
		user := fmt.Sprint("u", w)
		for r := range uint64(rounds) {
			v := 3 * r
			res, err := h.ProposeBatch(context.Background(), []raftfsm.Op{
				grant(user, v, fmt.Sprint("a", r), 1), chain(grant(user, v+1, fmt.Sprint("b", r), 1)), chain(grant(user, v+2, fmt.Sprint("c", r), 1)),
			})
			if err != nil {
				return err
			}
			if !res[0].Applied || !res[1].Applied || !res[2].Applied || res[2].Version != v+3 {
				return fmt.Errorf("%s round %d: %+v", user, r, res)
			}
		}
		return nil
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.batches) != workers*rounds {
		t.Fatalf("%d entries for %d calls", len(m.batches), workers*rounds)
	}
	for _, n := range m.batches {
		if n != 3 {
			t.Fatalf("an entry of %d ops: calls of 3 were split or merged past MaxBatchOps 4", n)
		}
	}
	if m.outcomes[OutcomeApplied] != workers*rounds*3 {
		t.Fatalf("outcomes %v", m.outcomes)
	}
}
