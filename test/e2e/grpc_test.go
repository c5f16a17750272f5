package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ration/ration/client"
)

// The gRPC API of a real node through the Go client: every call, typed
// errors with their details, concurrent clients and retries racing.
func TestGRPCThroughClient(t *testing.T) {
	p := newProc(t)
	p.start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.New(ctx, client.Options{Endpoints: []string{p.grpcAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Grant(ctx, "gc", client.Grant{ID: "g1", Amount: 100, Timestamp: 0, ExpiresAt: client.Int64(1000)}); err != nil {
		t.Fatal(err)
	}
	d, err := c.Deduct(ctx, "gc", client.Deduction{ID: "d1", Amount: 30, Timestamp: 10})
	if err != nil || d.Duplicate || len(d.Allocations) != 1 || d.Allocations[0].GrantID != "g1" {
		t.Fatalf("deduct: %+v %v", d, err)
	}
	_, err = c.Deduct(ctx, "gc", client.Deduction{ID: "d2", Amount: 80, Timestamp: 5})
	var ice *client.InsufficientCreditsError
	if !errors.As(err, &ice) || ice.DeductionID != "d1" || ice.Shortfall != 10 {
		t.Fatalf("insufficient: %v", err)
	}
	if _, err := c.Grant(ctx, "gc", client.Grant{ID: "g1", Amount: 99}); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("conflict: %v", err)
	}
	var iae *client.InvalidArgumentError
	if _, err := c.Grant(ctx, "gc", client.Grant{ID: "bad id", Amount: 1}); !errors.As(err, &iae) || iae.Field != "id" {
		t.Fatalf("invalid: %v", err)
	}
	b, err := c.Balance(ctx, "gc", client.Int64(500))
	if err != nil || b.Balance != 70 || len(b.Grants) != 1 {
		t.Fatalf("balance: %+v %v", b, err)
	}
	var kinds []string
	for ev, err := range c.AllEvents(ctx, "gc", client.EventsQuery{Limit: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, fmt.Sprint(ev.Kind))
	}
	if len(kinds) != 3 {
		t.Fatalf("events: %v", kinds)
	}
	res, err := c.Batch(ctx, []client.Op{
		client.DeductOp("gc", client.Deduction{ID: "b1", Amount: 1, Timestamp: 20}),
		client.GrantOp("gc2", client.Grant{ID: "g", Amount: 5}),
	})
	if err != nil || res[0].Deduct == nil || res[1].Grant == nil {
		t.Fatalf("batch: %+v %v", res, err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.NodeID != "e2e" || len(st.Shards) != 8 {
		t.Fatalf("status: %+v %v", st, err)
	}

	// Concurrent clients, each id sent by two goroutines at once: every id
	// applies once, and the balance accounts for exactly the applied ones.
	if _, err := c.Grant(ctx, "race", client.Grant{ID: "g", Amount: 1000}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				id := fmt.Sprintf("r-%d-%d", w/2, i)
				if _, err := c.Deduct(ctx, "race", client.Deduction{ID: id, Amount: 1, Timestamp: int64(i)}); err != nil {
					t.Errorf("%s: %v", id, err)
				}
			}
		}(w)
	}
	wg.Wait()
	b, err = c.Balance(ctx, "race", client.Int64(100))
	if err != nil || b.Balance != 1000-160 {
		t.Fatalf("race balance %+v %v, want %d", b, err, 1000-160)
	}
}
