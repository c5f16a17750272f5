package docker

import (
	"cmp"
	"context"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ration/ration/client"
)

// readyTimeout bounds every wait for /readyz: generous, because a slow
// machine should report a slow number, not a timeout.
const readyTimeout = 90 * time.Second

// stopTimeout is docker stop's grace period before SIGKILL.
const stopTimeout = 30

// The dev StatefulSet, as containers: it forms, survives a kill -9 and a
// rolling restart, and a pod recreated on a new IP rejoins, all under
// load, with no acknowledged write lost and, for the graceful
// operations, no request failing beyond the client's retry budget.
func TestDevStatefulSetInDocker(t *testing.T) {
	if os.Getenv("RATION_DOCKER_TEST") != "1" {
		t.Skip("needs Docker and the image: run `make docker-test` (sets RATION_DOCKER_TEST=1)")
	}
	image := cmp.Or(os.Getenv("RATION_IMAGE"), "ration:dev")
	size := mustDocker(t, "image", "inspect", "--format", "{{.Size}}", image)
	if b, err := strconv.ParseInt(size, 10, 64); err == nil {
		t.Logf("image %s: %d bytes (%.1f MiB)", image, b, float64(b)/(1<<20))
	}

	tmpl := loadTemplate(t)
	c := newCluster(t, image, tmpl)

	// Start: all pods at once (podManagementPolicy: Parallel), each timed
	// from its docker run to its first 200 on /readyz, on an empty volume.
	startup := make([]time.Duration, len(c.nodes))
	ips := make([]string, len(c.nodes))
	for i := range c.nodes {
		ips[i] = c.allocIP()
	}
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Go(func() {
			began := time.Now()
			c.run(n, ips[i])
			c.waitReady(n, readyTimeout)
			startup[i] = time.Since(began)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	slowest := time.Duration(0)
	for i, d := range startup {
		t.Logf("%s: docker run to ready, empty data dir: %v", c.nodes[i].name, d.Round(time.Millisecond))
		slowest = max(slowest, d)
	}
	t.Logf("cluster formed: slowest docker run to ready %v (target < 5s: %v)", slowest.Round(time.Millisecond), slowest < 5*time.Second)

	l := startLoad(c, 6, 2)
	time.Sleep(3 * time.Second)

	// (a) kill -9 one node, start it again on the same volume and IP (a
	// container restart within the pod).
	l.setPhase("kill")
	victim := c.nodes[0]
	mustDocker(t, "kill", victim.name)
	time.Sleep(2 * time.Second)
	began := time.Now()
	mustDocker(t, "start", victim.name)
	c.waitReady(victim, readyTimeout)
	t.Logf("%s: killed; docker start to ready %v", victim.name, time.Since(began).Round(time.Millisecond))
	time.Sleep(tmpl.minReady)

	// (b) a rolling restart, highest ordinal first as the StatefulSet
	// controller does, waiting for each to be ready and minReadySeconds.
	l.setPhase("rolling")
	for i := len(c.nodes) - 1; i >= 0; i-- {
		n := c.nodes[i]
		began := time.Now()
		mustDocker(t, "stop", "-t", strconv.Itoa(stopTimeout), n.name)
		stopped := time.Since(began)
		if code := exitCode(t, n.name); code != 0 {
			t.Errorf("%s: exit code %d after SIGTERM, want 0 (a clean shutdown within %ds)", n.name, code, stopTimeout)
		}
		began = time.Now()
		mustDocker(t, "start", n.name)
		c.waitReady(n, readyTimeout)
		t.Logf("%s: stopped in %v; docker start to ready %v", n.name, stopped.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
		time.Sleep(tmpl.minReady)
	}

	// (c) the pod is deleted and recreated, as a rolling update or a
	// drain does: same volume, new IP. Peers must find it at its new
	// address.
	l.setPhase("reschedule")
	moved := c.nodes[1]
	began = time.Now()
	mustDocker(t, "stop", "-t", strconv.Itoa(stopTimeout), moved.name)
	mustDocker(t, "rm", moved.name)
	oldIP := moved.currentIP()
	c.run(moved, c.allocIP())
	c.waitReady(moved, readyTimeout)
	l.swapGRPC()
	t.Logf("%s: recreated on a new IP (was %s, now %s); stop to ready %v", moved.name, oldIP, moved.currentIP(), time.Since(began).Round(time.Millisecond))
	time.Sleep(tmpl.minReady)

	l.setPhase("after")
	time.Sleep(2 * time.Second)
	acks := l.stop()
	l.report(t, map[string]bool{"steady": true, "rolling": true, "reschedule": true, "after": true})
	verifyAcks(t, c, acks)
	t.Logf("%d acknowledged writes, every one still there", len(acks))
	checkConverged(t, c)
}

// checkConverged asks every node for the cluster's status: each must see
// every node alive, and agree on each shard's leader and voters.
func checkConverged(t *testing.T, c *cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var leaders []string
	for i, n := range c.nodes {
		cl, err := client.New(ctx, client.Options{Endpoints: []string{n.addr(n.cfg.GRPCPort)}})
		if err != nil {
			t.Fatal(err)
		}
		st, err := cl.Status(ctx)
		_ = cl.Close()
		if err != nil {
			t.Fatalf("%s: status: %v", n.name, err)
		}
		alive := 0
		for _, m := range st.Nodes {
			if m.State == "alive" {
				alive++
			}
		}
		if alive != len(c.nodes) {
			t.Errorf("%s sees %d alive nodes of %d: %+v", n.name, alive, len(c.nodes), st.Nodes)
		}
		for j, s := range st.Shards {
			if len(s.Voters) != len(c.nodes) {
				t.Errorf("%s: shard %d has voters %v", n.name, s.ID, s.Voters)
			}
			if i == 0 {
				leaders = append(leaders, s.Leader)
			} else if j < len(leaders) && leaders[j] != s.Leader {
				t.Errorf("shard %d: %s says leader %q, %s says %q", s.ID, n.name, s.Leader, c.nodes[0].name, leaders[j])
			}
		}
	}
}
