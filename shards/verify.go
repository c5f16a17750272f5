package shards

import (
	"context"
	"sync"
)

// verifier coalesces the leadership checks of concurrent linearizable
// reads. A reader joins the next round; a round starts only after the one
// before it ends, so every reader's round began after the reader arrived
// (after it recorded its read index), which is what read-index reads need.
// One VerifyLeader through raft's leader loop then serves every reader that
// arrived while the previous one ran, instead of one each.
type verifier struct {
	mu      sync.Mutex
	next    *verifyRound
	running bool
}

type verifyRound struct {
	done chan struct{}
	err  error
}

// verifyLeader returns raft's verdict on a VerifyLeader started after the
// call.
func (g *group) verifyLeader(ctx context.Context) error {
	v := &g.verify
	v.mu.Lock()
	r := v.next
	if r == nil {
		r = &verifyRound{done: make(chan struct{})}
		v.next = r
	}
	if !v.running {
		v.running = true
		go g.runVerifier()
	}
	v.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *group) runVerifier() {
	v := &g.verify
	for {
		v.mu.Lock()
		r := v.next
		v.next = nil
		if r == nil {
			v.running = false
			v.mu.Unlock()
			return
		}
		v.mu.Unlock()
		r.err = g.raft.VerifyLeader().Error()
		close(r.done)
	}
}
