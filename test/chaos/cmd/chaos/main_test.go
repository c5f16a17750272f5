package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/shards"
	"github.com/ration/ration/test/chaos/check"
	"github.com/ration/ration/test/chaos/report"
	"github.com/ration/ration/test/chaos/workload"
)

// status builds node id's status reporting one replica per entry of
// shards: {shard id, applied index, hash, leader, state}.
type rep struct {
	shard   uint32
	applied uint64
	hash    string
	leader  string
	state   string
}

func status(id string, voters []string, reps ...rep) client.ClusterStatus {
	st := client.ClusterStatus{NodeID: id}
	for _, r := range reps {
		st.Shards = append(st.Shards, client.Shard{
			ID: r.shard, Leader: r.leader, Voters: voters, Replicas: voters,
			AppliedIndex: r.applied, StateHash: []byte(r.hash), State: r.state,
		})
	}
	return st
}

var three = []string{"n1", "n2", "n3"}

func TestReplicasConverged(t *testing.T) {
	sts := map[string]client.ClusterStatus{
		"n1": status("n1", three, rep{0, 10, "a", "n1", "Leader"}, rep{1, 7, "b", "n2", "Follower"}),
		"n2": status("n2", three, rep{0, 10, "a", "n1", "Follower"}, rep{1, 7, "b", "n2", "Leader"}),
		"n3": status("n3", three, rep{0, 10, "a", "n1", "Follower"}, rep{1, 7, "b", "n2", "Follower"}),
	}
	pass, detail := hashVerdict(compareReplicas(sts, 2))
	if !pass {
		t.Fatalf("converged replicas judged bad: %s", detail)
	}
}

func TestReplicasDivergedLaggingOrMissing(t *testing.T) {
	for name, tc := range map[string]struct {
		sts      map[string]client.ClusterStatus
		diverged bool
		want     string
	}{
		"diverged": {map[string]client.ClusterStatus{
			"n1": status("n1", three, rep{0, 10, "a", "n1", "Leader"}),
			"n2": status("n2", three, rep{0, 10, "a", "n1", "Follower"}),
			"n3": status("n3", three, rep{0, 10, "X", "n1", "Follower"}),
		}, true, "DIVERGED"},
		"lagging": {map[string]client.ClusterStatus{
			"n1": status("n1", three, rep{0, 10, "a", "n1", "Leader"}),
			"n2": status("n2", three, rep{0, 10, "a", "n1", "Follower"}),
			"n3": status("n3", three, rep{0, 8, "c", "n1", "Follower"}),
		}, false, "not converged"},
		"voter missing": {map[string]client.ClusterStatus{
			"n1": status("n1", three, rep{0, 10, "a", "n1", "Leader"}),
			"n2": status("n2", three, rep{0, 10, "a", "n1", "Follower"}),
		}, false, "missing n3"},
		"no leader": {map[string]client.ClusterStatus{
			"n1": status("n1", three, rep{0, 10, "a", "", "Candidate"}),
			"n2": status("n2", three, rep{0, 10, "a", "", "Follower"}),
			"n3": status("n3", three, rep{0, 10, "a", "", "Follower"}),
		}, false, "no leader"},
	} {
		vs := compareReplicas(tc.sts, 1)
		pass, detail := hashVerdict(vs)
		if pass || vs[0].Diverged != tc.diverged || !strings.Contains(detail, tc.want) {
			t.Errorf("%s: pass=%v diverged=%v detail %q, want failure with %q", name, pass, vs[0].Diverged, detail, tc.want)
		}
	}
}

// A divergence that stays put is final at once; a lag that persists fails
// at the deadline; replicas that catch up pass.
func TestAwaitConvergence(t *testing.T) {
	ctx := context.Background()
	diverged := map[string]client.ClusterStatus{
		"n1": status("n1", three, rep{0, 10, "a", "n1", "Leader"}),
		"n2": status("n2", three, rep{0, 10, "a", "n1", "Follower"}),
		"n3": status("n3", three, rep{0, 10, "X", "n1", "Follower"}),
	}
	start := time.Now()
	pass, _ := awaitConvergence(ctx, func(context.Context) map[string]client.ClusterStatus { return diverged }, 1, time.Minute)
	if pass || time.Since(start) > 5*time.Second {
		t.Fatalf("divergence: pass=%v after %v", pass, time.Since(start))
	}

	calls := 0
	catchUp := func(context.Context) map[string]client.ClusterStatus {
		calls++
		applied := uint64(8)
		if calls >= 3 {
			applied = 10
		}
		return map[string]client.ClusterStatus{
			"n1": status("n1", three, rep{0, 10, "a", "n1", "Leader"}),
			"n2": status("n2", three, rep{0, 10, "a", "n1", "Follower"}),
			"n3": status("n3", three, rep{0, applied, map[bool]string{true: "a", false: "old"}[applied == 10], "n1", "Follower"}),
		}
	}
	if pass, detail := awaitConvergence(ctx, catchUp, 1, 10*time.Second); !pass {
		t.Fatalf("catch-up judged bad: %s", detail)
	}
	lagging := func(context.Context) map[string]client.ClusterStatus {
		return map[string]client.ClusterStatus{
			"n1": status("n1", three, rep{0, 10, "a", "n1", "Leader"}),
			"n2": status("n2", three, rep{0, 9, "b", "n1", "Follower"}),
			"n3": status("n3", three, rep{0, 10, "a", "n1", "Follower"}),
		}
	}
	if pass, _ := awaitConvergence(ctx, lagging, 1, time.Second); pass {
		t.Fatal("a lagging replica passed")
	}
}

func TestProbeUsersCoverEveryShard(t *testing.T) {
	users := probeUsers("probe-1-", 8)
	for s, u := range users {
		if got := shards.ShardOf(u, 8); got != uint32(s) {
			t.Fatalf("probe user %q for shard %d is on shard %d", u, s, got)
		}
	}
}

func TestLivenessVerdict(t *testing.T) {
	ok := []probeResult{{Shard: 0, After: time.Second}, {Shard: 1, After: 3 * time.Second}}
	if pass, detail := livenessVerdict(ok, 10*time.Second); !pass || !strings.Contains(detail, "3s") {
		t.Fatalf("pass=%v %q", pass, detail)
	}
	slow := []probeResult{{Shard: 0, After: time.Second}, {Shard: 1, After: 12 * time.Second}}
	if pass, _ := livenessVerdict(slow, 10*time.Second); pass {
		t.Fatal("a shard 12 s late passed")
	}
	never := []probeResult{{Shard: 0, After: -1, LastErr: "unavailable"}}
	if pass, detail := livenessVerdict(never, 10*time.Second); pass || !strings.Contains(detail, "unavailable") {
		t.Fatalf("a shard that never wrote: pass=%v %q", pass, detail)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-seed", "7", "-nodes", "5", "-duration", "90s"})
	if err != nil {
		t.Fatal(err)
	}
	if o.out != "out/chaos/5n-seed7" || o.seed != 7 || o.duration != 90*time.Second || o.minThroughput != 20 {
		t.Fatalf("options %+v", o)
	}
	for _, bad := range [][]string{{"-nodes", "0"}, {"-duration", "0s"}, {"-hot", "200"}, {"extra"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestHotShardIsWhereMostHotUsersAre(t *testing.T) {
	if hotShard("u-1-", 0, 8) != nil {
		t.Fatal("a hot shard without hot users")
	}
	got, ok := hotShard("u-1-", 5, 8)()
	count := map[uint32]int{}
	for i := range 5 {
		count[shards.ShardOf(workload.UserName("u-1-", i), 8)]++
	}
	for s, n := range count {
		if !ok || n > count[got] {
			t.Fatalf("hot shard %d has %d hot users, shard %d has %d", got, count[got], s, n)
		}
	}
}

// A failed run names its failed checks and its first anomalies in the log,
// which is all CI keeps.
func TestPrintFailure(t *testing.T) {
	r := report.Report{Checks: map[string]report.CheckResult{
		report.CheckInvariants:      {Pass: false, Detail: "1 invariant anomalies"},
		report.CheckStateHashes:     {Pass: true, Detail: "fine"},
		report.CheckLiveness:        {Pass: true},
		report.CheckLinearizability: {Pass: false, Detail: "1 users not linearizable"},
	}}
	for i := range maxPrinted + 2 {
		r.Anomalies = append(r.Anomalies, check.Anomaly{Kind: check.KindPhantomWrite, User: fmt.Sprintf("u-%d", i), Detail: "deduct d1 is in the final history"})
	}
	var b strings.Builder
	printFailure(&b, r)
	out := b.String()
	for _, want := range []string{
		"check invariants failed: 1 invariant anomalies", "check linearizability failed",
		"anomaly phantom-write u-0: deduct d1", fmt.Sprintf("anomaly phantom-write u-%d", maxPrinted-1), "2 more anomalies",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "state-hashes") || strings.Contains(out, fmt.Sprintf("u-%d:", maxPrinted)) {
		t.Errorf("output has a passed check or too many anomalies:\n%s", out)
	}
}
