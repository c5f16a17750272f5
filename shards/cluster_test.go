package shards

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// cluster starts three nodes; n[0] bootstraps every group with all three
// as voters, the others start empty and are brought in by the leader.
func cluster(t *testing.T, shards int) []*node {
	return clusterWith(t, shards, nil)
}

// clusterWith is cluster with each node's Config adjusted by adjust, if
// set, which learns every node's raft server.
func clusterWith(t *testing.T, shards int, adjust func(*Config, []raft.Server)) []*node {
	t.Helper()
	nodes := make([]*node, 3)
	var peers []raft.Server
	for i := range nodes {
		nodes[i] = newNode(t, fmt.Sprintf("n%d", i+1), t.TempDir())
		peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(nodes[i].id), Address: raft.ServerAddress(nodes[i].addr)})
	}
	for i, n := range nodes {
		cfg := fastConfig(shards)
		if adjust != nil {
			adjust(&cfg, peers)
		}
		if i == 0 {
			cfg.Bootstrap, cfg.Peers = true, peers
		}
		n.start(cfg)
		t.Cleanup(n.stop)
	}
	for _, n := range nodes {
		waitReady(t, n.host)
	}
	return nodes
}

// leaderOf finds the node leading shard, as all nodes agree.
func leaderOf(t *testing.T, nodes []*node, shard uint32) (*node, []*node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var leader *node
		var followers []*node
		agree := true
		for _, n := range nodes {
			if n.host.IsLeader(shard) && n.host.Ready() {
				leader = n
			} else {
				followers = append(followers, n)
			}
		}
		if leader != nil {
			for _, f := range followers {
				if id, _ := f.host.Leader(shard); id != leader.id {
					agree = false
				}
			}
			if agree {
				return leader, followers
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no agreed leader for shard %d", shard)
	return nil, nil
}

func TestThreeNodeCluster(t *testing.T) {
	const shards = 2
	nodes := cluster(t, shards)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for s := range uint32(shards) {
		leader, followers := leaderOf(t, nodes, s)
		// A follower may hear of the leader (a heartbeat) before it has
		// the configuration entry.
		for _, n := range nodes {
			deadline := time.Now().Add(10 * time.Second)
			for len(n.host.Status()[s].Voters) != 3 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if v := n.host.Status()[s].Voters; len(v) != 3 {
				t.Errorf("%s shard %d voters %v", n.id, s, v)
			}
		}
		user := userIn(s, shards, "cluster-user-")

		// Writes go through the leader.
		for v := range uint64(10) {
			if r := propose(t, leader.host, grant(user, v, fmt.Sprintf("g%d", v), 5)); !r.Applied {
				t.Fatalf("v%d: %+v", v, r)
			}
		}
		if r := propose(t, leader.host, grant(user, 3, "stale", 5)); r.Applied || r.Version != 10 {
			t.Fatalf("stale op: %+v", r)
		}

		// A follower refuses, naming the leader.
		_, err := followers[0].host.Propose(ctx, grant(user, 10, "via-follower", 1))
		var nle *NotLeaderError
		if !errors.As(err, &nle) || !errors.Is(err, ErrNotLeader) {
			t.Fatalf("propose on follower: %v", err)
		}
		if nle.LeaderID != leader.id || nle.LeaderAddr != leader.addr || nle.Shard != s {
			t.Fatalf("hint %+v, leader %s at %s", nle, leader.id, leader.addr)
		}
		if err := followers[1].host.ReadBarrier(ctx, s); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("read barrier on follower: %v", err)
		}

		// The leader serves linearizable reads.
		if err := leader.host.ReadBarrier(ctx, s); err != nil {
			t.Fatal(err)
		}
		if v := leader.host.FSM(s).Version(user); v != 10 {
			t.Fatalf("leader at version %d after barrier", v)
		}
	}

	// Every replica converges on the same state.
	for s := range uint32(shards) {
		leader, _ := leaderOf(t, nodes, s)
		want := leader.host.FSM(s).StateHash()
		target := leader.host.FSM(s).AppliedIndex()
		for _, n := range nodes {
			if err := n.host.FSM(s).WaitApplied(ctx, target); err != nil {
				t.Fatalf("%s shard %d: %v", n.id, s, err)
			}
			if got := n.host.FSM(s).StateHash(); got != want {
				t.Fatalf("%s shard %d: StateHash differs from the leader's", n.id, s)
			}
		}
	}
}

// TestLeaderFailover stops the leader of a shard and checks that another
// node takes over with every acknowledged write, tells subscribers, and
// serves reads and writes.
func TestLeaderFailover(t *testing.T) {
	nodes := cluster(t, 1)
	leader, followers := leaderOf(t, nodes, 0)
	user := "failover-user"
	for v := range uint64(5) {
		propose(t, leader.host, grant(user, v, fmt.Sprintf("g%d", v), 1))
	}

	events := make(chan ShardLeadership, 16)
	for _, f := range followers {
		f.host.Subscribe(func(ev ShardLeadership) { events <- ev })
	}
	leader.stop()

	remaining := followers
	newLeader, _ := leaderOf(t, remaining, 0)
	select {
	case ev := <-events:
		if !ev.Leader || ev.Shard != 0 {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no leadership event on the new leader")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := newLeader.host.ReadBarrier(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if v := newLeader.host.FSM(0).Version(user); v != 5 {
		t.Fatalf("new leader has version %d, want 5", v)
	}
	if r := propose(t, newLeader.host, grant(user, 5, "g5", 1)); !r.Applied {
		t.Fatalf("write on new leader: %+v", r)
	}
}

// TestQuorumLoss stops both followers of a shard, so that the leader can
// append but not commit: proposals must end (no hang) with an error saying
// whether they may have been written, and a caller whose context expires
// while waiting learns that the op may still commit.
func TestQuorumLoss(t *testing.T) {
	nodes := cluster(t, 1)
	leader, followers := leaderOf(t, nodes, 0)
	propose(t, leader.host, grant("q", 0, "g0", 1))
	for _, f := range followers {
		f.stop()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	_, err := leader.host.Propose(ctx, grant("q", 1, "g1", 1))
	cancel()
	switch {
	case errors.Is(err, ErrOutcomeUnknown):
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, raft.ErrLeadershipLost) {
			t.Fatalf("outcome unknown without its cause: %v", err)
		}
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader):
		// The leader stepped down first (lease timeout); nothing written.
	default:
		t.Fatalf("propose without quorum: %v", err)
	}

	errs := make(chan error, 20)
	for i := range 20 {
		go func() {
			_, err := leader.host.Propose(context.Background(), grant(fmt.Sprintf("q%d", i), 0, "g", 1))
			errs <- err
		}()
	}
	time.Sleep(20 * time.Millisecond)
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := leader.host.Shutdown(sctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	for range 20 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrOutcomeUnknown) && !errors.Is(err, ErrNotLeader) &&
				!errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrShuttingDown) {
				t.Errorf("propose during quorum loss and shutdown: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a proposal hung through Shutdown")
		}
	}
}
