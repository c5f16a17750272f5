package actorcluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/ration/ration/cluster/actorcluster/actorpb"
	"github.com/ration/ration/service"
)

// Failures of a request to an actor. All are retryable (they wrap
// service.ErrUnavailable); the router tries again with the same ids.
var (
	// ErrUnreachable: the connection to the node was lost with the request
	// in flight, or could not be made.
	ErrUnreachable = errors.New("actorcluster: node unreachable")
	// ErrTimeout: no reply within the attempt's timeout; the outcome of a
	// write is unknown, and its retry tells.
	ErrTimeout = errors.New("actorcluster: no reply in time")
	// ErrGone: the actor had stopped (passivated, or its node stopped
	// leading the shard); the request was not delivered.
	ErrGone = errors.New("actorcluster: actor gone")
)

// caller sends requests to actors, local or remote, and waits for the
// reply, the caller's context, or the loss of the connection to the
// actor's node, whichever comes first. protoactor only ends a request by
// its timeout: a request in flight to a node that was killed would wait it
// out, where a broken gRPC connection fails at once.
type caller struct {
	sys *actor.ActorSystem

	mu   sync.Mutex
	lost map[string]chan struct{} // by address, closed when its endpoint terminates
}

func newCaller(sys *actor.ActorSystem) *caller {
	return &caller{sys: sys, lost: map[string]chan struct{}{}}
}

func (c *caller) lostCh(addr string) chan struct{} {
	if addr == c.sys.Address() {
		return nil // local: no connection to lose
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.lost[addr]
	if !ok {
		ch = make(chan struct{})
		c.lost[addr] = ch
	}
	return ch
}

// terminated fails every request in flight to addr.
func (c *caller) terminated(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.lost[addr]; ok {
		close(ch)
		delete(c.lost, addr)
	}
}

type result struct {
	v   any
	err error
}

// request sends req to pid and waits for its Reply, at most timeout.
func (c *caller) request(ctx context.Context, pid *actor.PID, req *actorpb.Request, timeout time.Duration) (*actorpb.Reply, error) {
	timeout = max(timeout, time.Millisecond)
	lost := c.lostCh(pid.Address)
	f := c.sys.Root.RequestFuture(pid, req, timeout)
	// The future completes by itself, at the latest on its timeout, so
	// this goroutine never outlives the attempt.
	ch := make(chan result, 1)
	go func() {
		v, err := f.Result()
		ch <- result{v, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-lost:
		return nil, service.Unavailable(fmt.Errorf("%w: %s", ErrUnreachable, pid.Address))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	switch {
	case errors.Is(r.err, actor.ErrTimeout):
		return nil, service.Unavailable(fmt.Errorf("%w (%v, %s)", ErrTimeout, timeout, pid.Address))
	case errors.Is(r.err, actor.ErrDeadLetter):
		return nil, service.Unavailable(fmt.Errorf("%w: %s", ErrGone, pid))
	case r.err != nil:
		return nil, service.Unavailable(fmt.Errorf("actorcluster: request to %s: %v", pid, r.err))
	}
	rep, ok := r.v.(*actorpb.Reply)
	if !ok {
		return nil, service.Unavailable(fmt.Errorf("actorcluster: %s answered a %T", pid, r.v))
	}
	return rep, nil
}
