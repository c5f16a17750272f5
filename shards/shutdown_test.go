package shards

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A future raft never answers (one queued for its FSM goroutine when it
// shut down) must not hold Shutdown forever.
func TestShutdownLeavesUnansweredFutures(t *testing.T) {
	h := &Host{}
	stuck := &group{pipeline: pipeline{pipelineDone: make(chan struct{})}}
	done := &group{pipeline: pipeline{pipelineDone: make(chan struct{})}}
	close(done.pipelineDone)
	never := make(chan struct{})
	h.wg.Go(func() { <-never })
	defer close(never)

	start := time.Now()
	if n := h.awaitStragglers(context.Background(), []*group{stuck, done}, 50*time.Millisecond); n != 2 {
		t.Fatalf("left %d waiters, want 2 (one completer, one host goroutine)", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("waited %v for stragglers", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n := h.awaitStragglers(ctx, []*group{stuck}, time.Hour); n == 0 {
		t.Fatal("a cancelled context reported no stragglers")
	}
}

func TestShutdownWaitsForAnsweredFutures(t *testing.T) {
	h := &Host{}
	g := &group{pipeline: pipeline{pipelineDone: make(chan struct{})}}
	go func() { time.Sleep(20 * time.Millisecond); close(g.pipelineDone) }()
	if n := h.awaitStragglers(context.Background(), []*group{g}, time.Minute); n != 0 {
		t.Fatalf("left %d waiters of a completer that ended", n)
	}
}

type neverFuture struct{}

func (neverFuture) Error() error { select {} }

func TestAwaitUntilStops(t *testing.T) {
	stop := make(chan struct{})
	close(stop)
	if err := awaitUntil(neverFuture{}, stop); err != raft.ErrRaftShutdown {
		t.Fatalf("awaitUntil = %v, want ErrRaftShutdown", err)
	}
}
