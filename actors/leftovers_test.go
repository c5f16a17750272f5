package actors

import (
	"context"
	"testing"
	"time"

	"github.com/ration/ration/actors/actorstest"
	"github.com/ration/ration/ledger"
)

// heldBarrier is a replica whose read barriers wait until released, so an
// actor can be kept inside a request while others queue behind it.
type heldBarrier struct {
	*actorstest.Replica
	entered chan struct{}
	release chan struct{}
}

func (h *heldBarrier) ReadBarrier(ctx context.Context, shard uint32) error {
	select {
	case h.entered <- struct{}{}:
	default:
	}
	select {
	case <-h.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.Replica.ReadBarrier(ctx, shard)
}

// A request that reaches an actor's mailbox after its poison pill (routed
// to it just before PassivateShard forgot it, while the actor was busy) is
// answered as a dead letter once the actor stops, and call sends it again
// to a fresh activation. protoactor drops the user messages still queued
// when an actor stops; without an answer the request would wait out its
// whole deadline, and a batch member's wait holds its shard's gather.
func TestRequestQueuedBehindPassivationIsResent(t *testing.T) {
	rep := &heldBarrier{Replica: actorstest.NewReplica(1), entered: make(chan struct{}, 1), release: make(chan struct{})}
	d := newDir(t, rep, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := d.Grant(ctx, "u", ledger.Grant{ID: "g1", Amount: 5, ExpiresAt: ledger.Never})
		first <- err
	}()
	<-rep.entered // the fresh actor is inside its first request's barrier
	old, err := d.activate("u")
	if err != nil {
		t.Fatal(err)
	}
	d.PassivateShard(0) // forgets the actor; its poison pill queues behind the grant
	// A request that looked the actor up before the passivation lands
	// behind the pill (Send queues it at once).
	done := make(chan *reply, 1)
	d.sys.Root.Send(old, &request{ctx: ctx, kind: opBalance, done: done})
	close(rep.release)
	if err := <-first; err != nil {
		t.Fatalf("grant: %v", err)
	}
	select {
	case r := <-done:
		if r != deadLetterReply {
			t.Fatalf("request queued behind the poison pill answered %+v, want a dead letter (the actor was passivating)", r)
		}
	case <-ctx.Done():
		t.Fatal("request queued behind the poison pill was never answered")
	}
	// call sends such a request again, to a fresh activation.
	b, err := d.Balance(ctx, "u", 0, false)
	if err != nil || b.Balance != 5 {
		t.Fatalf("balance: %+v %v", b, err)
	}
}
