package routing

import (
	"context"
	"testing"

	"github.com/ration/ration/ledger"
)

// The planted stale-reads bug answers a linearizable read on a node that
// holds a replica from that replica. Every fake node's replica is its
// own, so the follower's is empty: the read misses the leader's grant.
// Run with -tags chaos,chaosbug_stalereads to see the bug; without, the
// same test shows that nothing changed.
func TestBugStaleReads(t *testing.T) {
	for _, holds := range []bool{true, false} {
		w, nodes := newWorld(t, 2)
		const user = "stale-reader"
		shard := nodes[0].router.loc.ShardOf(user)
		leader, follower := nodes[0], nodes[1]
		if w.leaders[shard] != "a" {
			leader, follower = follower, leader
		}
		follower.router.opts.Replicas = replicasOf(follower, holds)
		ctx := context.Background()
		if _, err := leader.router.Grant(ctx, user, ledger.Grant{ID: "g", Amount: 10, Timestamp: 1, ExpiresAt: ledger.Never}); err != nil {
			t.Fatal(err)
		}
		lin, err := follower.router.Balance(ctx, user, 5, false)
		if err != nil {
			t.Fatal(err)
		}
		stale, err := follower.router.Balance(ctx, user, 5, true)
		if err != nil {
			t.Fatal(err)
		}
		want := int64(10)
		if plantedStaleReads && holds {
			want = 0 // the follower's own, empty replica
		}
		if lin.Balance != want {
			t.Errorf("planted=%v holds replica=%v: linearizable balance on the follower is %d, want %d", plantedStaleReads, holds, lin.Balance, want)
		}
		wantStale := int64(10) // from the leader
		if holds {
			wantStale = 0 // from the follower's own, empty replica
		}
		if stale.Balance != wantStale {
			t.Errorf("holds replica=%v: stale read %d, want %d", holds, stale.Balance, wantStale)
		}
	}
}
