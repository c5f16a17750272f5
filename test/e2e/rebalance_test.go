package e2e

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/cluster/placement"
)

// A fourth node joins a 3-node cluster under load: it bootstraps nothing,
// the shards' leaders move about a quarter of the replica slots to it
// (nonvoter, catch-up, promotion, removal of the old replica), and no
// acknowledged write is lost or applied twice.
func TestJoiningNodeReceivesShardsUnderLoad(t *testing.T) {
	procs := newCluster(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan []ack, 2)
	for _, p := range procs[:2] {
		go func() { done <- writeLoad(ctx, p.base(), 8, "rb-"+p.id) }()
	}
	time.Sleep(time.Second)

	p4 := newProc(t)
	p4.id = "node4"
	p4.extra = slices.Clone(procs[0].extra) // the same --join and --bootstrap-expect 3
	joined := time.Now()
	p4.start()
	all := append(slices.Clone(procs), p4)

	ids := []string{"node1", "node2", "node3", "node4"}
	const shards = 8
	want, moved := placementAfterJoin(shards, ids)
	t.Logf("placement moves %d of %d replica slots to node4", moved, shards*3)

	// Wait until every node hosts exactly its target shards, and every
	// shard's leader has exactly the target voters.
	waitPlaced(ctx, t, all, want, "replicas not moved")
	settled := time.Since(joined)
	t.Logf("node4 joined; %d replica slots moved to it and every shard had its target voters %v after the start", moved, settled.Round(time.Millisecond))

	// Every move was one nonvoter addition, one promotion and one removal
	// by the shards' leaders, and node4 opened a group per replica it got.
	counts := clusterRebalanceCounts(t, all)
	t.Logf("rebalance changes: %v", counts)
	if counts["node4/open_group"] != moved || counts["add_nonvoter"] != moved || counts["promote"] != moved || counts["remove"] != moved {
		t.Errorf("want %d of each of open_group (node4), add_nonvoter, promote, remove", moved)
	}

	// Keep writing a moment on the new configuration, through node4 too.
	go func() { done <- writeLoad(ctx, p4.base(), 4, "rb-node4") }()
	time.Sleep(time.Second)
	cancel()
	acks := append(append(<-done, <-done...), <-done...)
	t.Logf("%d writes acknowledged during and after the moves", len(acks))
	if len(acks) == 0 {
		t.Fatal("no write acknowledged")
	}
	checkAcksVia(t, acks, p4.base())
	checkReplicasConverge(t, all)
}

// placed reports whether the cluster has reached want.
func placed(ctx context.Context, t *testing.T, procs []*proc, want map[uint32][]string) (bool, string) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hosts := map[uint32][]string{}
	leaders := map[uint32]client.Shard{}
	for _, p := range procs {
		st, err := statusNoFatal(cctx, p)
		if err != nil {
			return false, err.Error()
		}
		for _, s := range st.Shards {
			hosts[s.ID] = append(hosts[s.ID], p.id)
			if s.Leader == p.id && strings.HasPrefix(s.State, "Leader") {
				leaders[s.ID] = s
			}
		}
	}
	for s, w := range want {
		h := slices.Sorted(slices.Values(hosts[s]))
		ws := slices.Sorted(slices.Values(w))
		if !slices.Equal(h, ws) {
			return false, fmt.Sprintf("shard %d hosted on %v, want %v", s, h, ws)
		}
		l, ok := leaders[s]
		if !ok {
			return false, fmt.Sprintf("shard %d has no leader", s)
		}
		v := slices.Sorted(slices.Values(l.Voters))
		r := slices.Sorted(slices.Values(l.Replicas))
		if !slices.Equal(v, ws) || !slices.Equal(r, ws) {
			return false, fmt.Sprintf("shard %d: voters %v replicas %v, want %v", s, v, r, ws)
		}
	}
	return true, ""
}

// rebalanceCounts reads ration_rebalance_changes_total by kind.
func rebalanceCounts(t *testing.T, p *proc) map[string]int {
	t.Helper()
	resp, err := httpc.Get(p.base() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, `ration_rebalance_changes_total{kind="`)
		if !ok {
			continue
		}
		kind, val, _ := strings.Cut(rest, `"} `)
		n, _ := strconv.Atoi(val)
		out[kind] = n
	}
	return out
}

func statusNoFatal(ctx context.Context, p *proc) (client.ClusterStatus, error) {
	c, err := client.New(ctx, client.Options{Endpoints: []string{p.grpcAddr()}})
	if err != nil {
		return client.ClusterStatus{}, err
	}
	defer c.Close()
	return c.Status(ctx)
}

// A node of four dies for good: once --dead-node-grace has passed, the
// shards it held get a new third replica on the survivors and lose the
// dead one, under load, and no acknowledged write is lost.
func TestDeadNodeReplicasMoveAfterGrace(t *testing.T) {
	// A short --dead-node-grace, which also shows the flag reaches the
	// reconciler: with the default 30s nothing would move in time.
	const grace = 8 * time.Second
	procs := newCluster(t, 4, "--dead-node-grace", grace.String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan []ack, 2)
	for _, p := range procs[1:3] {
		go func() { done <- writeLoad(ctx, p.base(), 8, "dd-"+p.id) }()
	}
	time.Sleep(time.Second)
	procs[0].kill9()
	killed := time.Now()
	survivors := procs[1:]
	ids := []string{"node2", "node3", "node4"}
	want := map[uint32][]string{}
	moved := 0
	for s := uint32(0); s < 8; s++ {
		want[s] = ids
		if slices.Contains(placement.ReplicaSet(s, []string{"node1", "node2", "node3", "node4"}, 3), "node1") {
			moved++
		}
	}
	// Nothing moves within the grace period.
	time.Sleep(grace - 3*time.Second)
	total := 0
	for _, p := range survivors {
		for k, v := range rebalanceCounts(t, p) {
			if k != "open_group" {
				total += v
			}
		}
	}
	if total != 0 {
		t.Fatalf("%d rebalance changes within the dead grace", total)
	}
	waitPlaced(ctx, t, survivors, want, "replicas of the dead node not moved")
	t.Logf("%d shards re-replicated %v after kill -9 (dead grace %v)", moved, time.Since(killed).Round(time.Millisecond), grace)
	if since := time.Since(killed); since < grace {
		t.Fatalf("replicas moved %v after the kill, within the %v grace", since, grace)
	}
	time.Sleep(time.Second)
	cancel()
	acks := append(<-done, <-done...)
	t.Logf("%d writes acknowledged", len(acks))
	checkAcksVia(t, acks, procs[3].base())
	checkReplicasConverge(t, survivors)
}

// waitPlaced waits up to 60 s for procs to reach want (see placed), and
// fails the test with every node's log if they do not.
func waitPlaced(ctx context.Context, t *testing.T, procs []*proc, want map[uint32][]string, what string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, why := placed(ctx, t, procs, want)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range procs {
				t.Logf("%s log:\n%s", p.id, p.log())
			}
			t.Fatalf("%s within 60s: %s", what, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// placementAfterJoin is where placement puts each shard once the last of
// ids has joined the others, and how many replica slots that moves.
func placementAfterJoin(shards uint32, ids []string) (map[uint32][]string, int) {
	want := map[uint32][]string{}
	moved := 0
	for s := range shards {
		want[s] = placement.ReplicaSet(s, ids, 3)
		before := placement.ReplicaSet(s, ids[:len(ids)-1], 3)
		for _, id := range want[s] {
			if !slices.Contains(before, id) {
				moved++
			}
		}
	}
	return want, moved
}

// clusterRebalanceCounts sums rebalanceCounts over procs by kind, and
// keeps each node's own under "<node>/<kind>".
func clusterRebalanceCounts(t *testing.T, procs []*proc) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, p := range procs {
		for k, v := range rebalanceCounts(t, p) {
			counts[p.id+"/"+k] = v
			counts[k] += v
		}
	}
	return counts
}
