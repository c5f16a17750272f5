package shards

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A replica moves from one node to a fourth: the new node opens the group
// empty, the leader adds it as a nonvoter, promotes it, removes the old
// replica, which then closes its group. Every write survives, and Ready
// stays true on the new node while it is not yet a voter.
func TestMoveReplicaAtRuntime(t *testing.T) {
	nodes := cluster(t, 2)
	const shard = 1
	user := userIn(shard, 2, "mv")
	leader, followers := leaderOf(t, nodes, shard)
	var version uint64
	for i := range 20 {
		res := propose(t, leader.host, grant(user, version, "g"+string(rune('a'+i)), 1))
		version = res.Version
	}

	n4 := newNode(t, "n4", t.TempDir())
	n4.start(fastConfig(2) /* Hosted nil would mean all: give it none */)
	t.Cleanup(n4.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n4.host.AddGroup(ctx, shard); !errors.Is(err, ErrAlreadyHosted) {
		// fastConfig leaves Hosted nil: n4 hosts both shards unbootstrapped.
		t.Fatalf("AddGroup on a hosted shard: %v", err)
	}
	if err := n4.host.RemoveGroup(ctx, shard); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(n4.host.Hosted(), shard) {
		t.Fatal("still hosted after RemoveGroup")
	}
	if err := n4.host.AddGroup(ctx, shard); err != nil {
		t.Fatal(err)
	}
	if c, err := n4.host.Configuration(shard); err != nil || len(c.Servers) != 0 {
		t.Fatalf("fresh group configuration %v %v", c, err)
	}
	// Not a voter anywhere: Ready must not wait for these groups.
	if !n4.host.Ready() {
		t.Fatal("Ready waits for groups that no leader has contacted")
	}

	start := time.Now()
	if err := leader.host.AddNonvoter(ctx, shard, n4.id, n4.addr); err != nil {
		t.Fatal(err)
	}
	commit, _, _ := leader.host.Indexes(shard)
	for {
		_, applied, _ := n4.host.Indexes(shard)
		if applied >= commit {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("nonvoter did not catch up: %d < %d", applied, commit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := leader.host.PromoteVoter(ctx, shard, n4.id, n4.addr); err != nil {
		t.Fatal(err)
	}
	gone := followers[0]
	if err := leader.host.RemoveServer(ctx, shard, gone.id); err != nil {
		t.Fatal(err)
	}
	if err := leader.host.RemoveServer(ctx, shard, leader.id); err == nil {
		t.Fatal("a leader removed itself")
	}
	t.Logf("replica moved in %v", time.Since(start).Round(time.Millisecond))

	// The removed replica learns it is out of the configuration.
	for {
		c, err := gone.host.Configuration(shard)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(c.Servers, func(s raft.Server) bool { return string(s.ID) == gone.id }) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("removed replica still sees itself: %v", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := gone.host.RemoveGroup(ctx, shard); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(gone.dir, "shards", "1")); !os.IsNotExist(err) {
		t.Fatalf("shard directory left behind: %v", err)
	}
	if !gone.host.Ready() {
		t.Fatal("node not ready after RemoveGroup")
	}

	// Hand the leadership over, then write through the new configuration.
	if err := leader.host.TransferLeadershipOf(ctx, shard); err != nil {
		t.Fatal(err)
	}
	rest := []*node{n4, followers[1], leader}
	l2, _ := leaderOf(t, rest, shard)
	res := propose(t, l2.host, grant(user, version, "after", 1))
	if !res.Applied {
		t.Fatalf("write after the move: %+v", res)
	}
	// The new replica holds every write.
	for {
		_, applied, _ := n4.host.Indexes(shard)
		c2, _, _ := l2.host.Indexes(shard)
		if applied >= c2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("n4 did not apply the last write")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got, want := n4.host.FSM(shard).StateHash(), l2.host.FSM(shard).StateHash(); got != want {
		t.Fatal("new replica's state differs from the leader's")
	}
}
