package actors

import (
	"context"
	"testing"
	"time"

	"github.com/ration/ration/actors/actorstest"
	"github.com/ration/ration/ledger"
)

// The planted no-idempotency bug applies a re-sent write again: the
// re-sent grant and deduction each count twice and show twice, under their
// own ids, in the history. Run with -tags chaos,chaosbug_noidempotency to
// see the bug; without, the same test shows that re-sends are duplicates.
func TestBugNoIdempotency(t *testing.T) {
	rep := actorstest.NewReplica(4)
	d := newDir(t, rep, time.Minute)
	ctx := context.Background()
	const user = "resender"
	g := ledger.Grant{ID: "g1", Amount: 100, Timestamp: 10, ExpiresAt: ledger.Never}
	ded := ledger.Deduction{ID: "d1", Amount: 30, Timestamp: 20}
	for i, write := range []func() (WriteResult, error){
		func() (WriteResult, error) { return d.Grant(ctx, user, g) },
		func() (WriteResult, error) { return d.Grant(ctx, user, g) },
		func() (WriteResult, error) { return d.Deduct(ctx, user, ded) },
		func() (WriteResult, error) { return d.Deduct(ctx, user, ded) },
	} {
		res, err := write()
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		resend := i%2 == 1
		if want := resend && !plantedNoIdempotency; res.Duplicate != want {
			t.Errorf("write %d: duplicate=%v, want %v", i, res.Duplicate, want)
		}
		for _, a := range res.Allocations {
			if a.GrantID != "g1" {
				t.Errorf("write %d: allocation from %q, want the grant's own id g1", i, a.GrantID)
			}
		}
	}

	want := int64(70)
	wantEvents := []string{"g1", "d1"}
	wantVersion := uint64(2)
	if plantedNoIdempotency {
		want, wantEvents, wantVersion = 140, []string{"g1", "g1", "d1", "d1"}, 4
	}
	b, err := d.Balance(ctx, user, 30, false)
	if err != nil {
		t.Fatal(err)
	}
	if b.Balance != want {
		t.Errorf("balance %d, want %d", b.Balance, want)
	}
	for _, gb := range b.Grants {
		if gb.ID != "g1" {
			t.Errorf("breakdown shows grant %q, want g1", gb.ID)
		}
	}
	p, err := d.History(ctx, user, 0, 100, 0, 100, false)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range p.Events {
		got = append(got, e.ID)
	}
	if len(got) != len(wantEvents) {
		t.Fatalf("history %v, want %v", got, wantEvents)
	}
	for i := range got {
		if got[i] != wantEvents[i] {
			t.Fatalf("history %v, want %v", got, wantEvents)
		}
	}
	// The replicated log holds every copy: the bug is in the state, not
	// only in the replies.
	if v, _ := rep.LogSince(rep.ShardOf(user), user, 0); v != wantVersion {
		t.Errorf("replicated version %d, want %d", v, wantVersion)
	}
}
