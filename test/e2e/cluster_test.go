package e2e

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/internal/contract"
)

// newCluster starts n real nodes on 127.0.0.1 that join each other and
// form the shards together.
func newCluster(t *testing.T, n int, extra ...string) []*proc {
	procs := clusterProcs(t, n, extra...)
	startAll(procs)
	return procs
}

// clusterProcs makes n nodes that join each other, not started yet.
func clusterProcs(t *testing.T, n int, extra ...string) []*proc {
	var procs []*proc
	for i := 0; i < n; i++ {
		p := newProc(t, extra...)
		p.id = "node" + strconv.Itoa(i+1)
		procs = append(procs, p)
	}
	var seeds []string
	for _, p := range procs {
		seeds = append(seeds, "127.0.0.1:"+strconv.Itoa(p.ports[2]))
	}
	for _, p := range procs {
		p.extra = append(p.extra, "--join", strings.Join(seeds, ","), "--bootstrap-expect", strconv.Itoa(n))
	}
	return procs
}

// startAll starts the nodes together: each waits for the others before
// forming.
func startAll(procs []*proc) {
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.start() }()
	}
	wg.Wait()
}

// The vectors through a 3-node cluster, each step sent to another node in
// turn: every answer must be the one the shard's leader gives.
func TestVectorsThroughThreeNodeCluster(t *testing.T) {
	procs := newCluster(t, 3)
	v, err := contract.Load()
	if err != nil {
		t.Fatal(err)
	}
	var bases []string
	for _, p := range procs {
		bases = append(bases, p.base())
	}
	if err := contract.Replay(httpc, bases, v, "c-", 4); err != nil {
		for _, p := range procs {
			t.Logf("%s log:\n%s", p.id, p.log())
		}
		t.Fatal(err)
	}
	// Every node sees the same leader for every shard, and each shard has
	// three voters.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var leaders []string
	for i, p := range procs {
		st := statusOf(ctx, t, p)
		if len(st.Nodes) != 3 {
			t.Fatalf("%s sees %d nodes", p.id, len(st.Nodes))
		}
		for j, s := range st.Shards {
			if len(s.Voters) != 3 {
				t.Fatalf("%s: shard %d has voters %v", p.id, s.ID, s.Voters)
			}
			if i == 0 {
				leaders = append(leaders, s.Leader)
			} else if leaders[j] != s.Leader {
				t.Fatalf("shard %d: %s says leader %s, node1 says %s", s.ID, p.id, s.Leader, leaders[j])
			}
		}
	}
}

// Killing a node that leads shards, under load: writes resume on the
// survivors, and no acknowledged write is lost, before or after the dead
// node comes back.
func TestClusterFailoverLosesNoAcknowledgedWrite(t *testing.T) {
	procs := newCluster(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []ack, 2)
	for _, p := range procs[1:] {
		go func() { done <- writeLoad(ctx, p.base(), 8, "f-"+p.id) }()
	}
	time.Sleep(time.Second)
	killed := time.Now()
	procs[0].kill9()
	// Probe every user until a write to each succeeds through node2.
	var resumed time.Duration
	for u := 0; u < 20; u++ {
		for i := 0; ; i++ {
			url := procs[1].base() + "/v1/users/probe-u" + strconv.Itoa(u) + "/grants"
			status, _, err := post(context.Background(), url, `{"id":"p`+strconv.Itoa(i)+`","amount":1,"timestamp":0}`)
			if err == nil && status == 200 {
				break
			}
			if time.Since(killed) > 60*time.Second {
				t.Fatalf("writes did not resume within 60s: %d %v", status, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	resumed = time.Since(killed)
	time.Sleep(time.Second)
	cancel()
	acks := append(<-done, <-done...)
	t.Logf("writes to 20 users resumed %v after kill -9 of node1; %d writes acknowledged", resumed.Round(time.Millisecond), len(acks))
	// Every acknowledged write is still there, read back through node3
	// while node1 is down, then through node1 once it is back.
	checkAcksVia(t, acks, procs[2].base())
	procs[0].start()
	checkAcksVia(t, acks, procs[0].base())
	checkReplicasConverge(t, procs)
}

// checkAcksVia resends every acknowledged write through base: each must
// come back as a duplicate.
func checkAcksVia(t *testing.T, acks []ack, base string) {
	t.Helper()
	lost := 0
	for _, a := range acks {
		i := strings.Index(a.url, "/v1/")
		status, body, err := post(context.Background(), base+a.url[i:], a.body)
		if err != nil || status != 200 || !strings.Contains(body, `"duplicate":true`) {
			lost++
			if lost < 5 {
				t.Errorf("acknowledged write lost via %s: %s %s -> %d %s %v", base, a.url, a.body, status, body, err)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged writes lost", lost, len(acks))
	}
}

// SIGTERM to one node of three while clients write through the other two:
// it hands its shards over and leaves, and no request fails.
func TestGracefulRemovalFailsNoRequest(t *testing.T) {
	procs := newCluster(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		acks   []ack
		failed int
	}
	done := make(chan result, 2)
	for _, p := range procs[1:] {
		go func() {
			a, f := writeLoadCounting(ctx, p.base(), 8, "g-"+p.id)
			done <- result{a, f}
		}()
	}
	time.Sleep(time.Second)
	if err := procs[0].stop(30 * time.Second); err != nil {
		t.Fatalf("node1 did not stop cleanly: %v\n%s", err, procs[0].log())
	}
	time.Sleep(2 * time.Second)
	cancel()
	r1, r2 := <-done, <-done
	acks := append(r1.acks, r2.acks...)
	if failed := r1.failed + r2.failed; failed > 0 {
		t.Fatalf("%d requests failed while node1 left gracefully (%d acknowledged)\n%s", failed, len(acks), procs[0].log())
	}
	t.Logf("%d writes acknowledged, none failed, while node1 left gracefully", len(acks))
	checkAcksVia(t, acks, procs[1].base())
	checkReplicasConverge(t, procs[1:])
}

// Five nodes, three replicas per shard: most nodes hold no replica of a
// given shard and must find its leader from placement alone. The vectors,
// each step through another node in turn, must all be answered right.
func TestVectorsThroughFiveNodeCluster(t *testing.T) {
	procs := newCluster(t, 5)
	v, err := contract.Load()
	if err != nil {
		t.Fatal(err)
	}
	var bases []string
	for _, p := range procs {
		bases = append(bases, p.base())
	}
	if err := contract.Replay(httpc, bases, v, "five-", 4); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := statusOf(ctx, t, procs[4])
	if len(st.Nodes) != 5 {
		t.Fatalf("node5 sees %d nodes", len(st.Nodes))
	}
	for _, s := range st.Shards {
		if len(s.Voters) != 3 {
			t.Fatalf("shard %d has voters %v, want 3 of 5 nodes", s.ID, s.Voters)
		}
	}
}

// checkReplicasConverge waits until every replica of every shard, on the
// given nodes, has applied the same index, and requires their state
// hashes to be equal then. Equal indexes with different hashes would mean
// a replica diverged.
func checkReplicasConverge(t *testing.T, procs []*proc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type replica struct {
		node    string
		applied uint64
		hash    string
	}
	for {
		byShard := map[uint32][]replica{}
		for _, p := range procs {
			st := statusOf(ctx, t, p, client.WithStateHashes())
			for _, s := range st.Shards {
				byShard[s.ID] = append(byShard[s.ID], replica{p.id, s.AppliedIndex, string(s.StateHash)})
			}
		}
		converged := true
		for shard, rs := range byShard {
			for _, r := range rs[1:] {
				if r.applied != rs[0].applied {
					converged = false
				} else if r.hash != rs[0].hash {
					t.Fatalf("shard %d diverged: %s and %s both applied %d with different state", shard, rs[0].node, r.node, r.applied)
				}
			}
		}
		if converged {
			t.Logf("every replica of %d shards converged to the same state", len(byShard))
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("replicas did not converge: %+v", byShard)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// statusOf asks one node for its view of the cluster.
func statusOf(ctx context.Context, t *testing.T, p *proc, opts ...client.StatusOption) client.ClusterStatus {
	t.Helper()
	c, err := client.New(ctx, client.Options{Endpoints: []string{p.grpcAddr()}, TLS: p.grpcTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(ctx, opts...)
	if err != nil {
		t.Fatalf("%s status: %v", p.id, err)
	}
	return st
}
