package node_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/node"
	"github.com/ration/ration/shards"
)

func gossips(ms []*member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.gossip())
	}
	return out
}

// recordedCount is what m's data dir records as its shard count, "" if
// nothing.
func recordedCount(t *testing.T, m *member) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.dir, "shard-count"))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// A single node records its shard count; restarted with another --shards
// it refuses to start, naming both; restarted without --shards it takes
// the recorded count, not the default, and serves every balance it held.
func TestSingleNodeKeepsItsShardCount(t *testing.T) {
	m := newMember(t, 1)
	m.startWith(t, nil, 1, "--shards", "8")
	t.Cleanup(func() { m.stop(t) })
	waitReady(t, m)
	want := ledgerState{}
	write(t, []*member{m}, want, "r1", 16)
	m.stop(t)
	if got := recordedCount(t, m); got != "8" {
		t.Fatalf("data dir records %q shards, want 8", got)
	}

	err := m.tryStart(nil, 1, "--shards", "16")
	if !errors.Is(err, shards.ErrShardCountMismatch) {
		t.Fatalf("restart with --shards 16 on a data dir of 8: %v", err)
	}
	for _, want := range []string{"records 8 shards", "--shards is set to 16"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	m.startWith(t, nil, 1) // --shards unset: its default gives way
	if got := m.n.Host().Shards(); got != 8 {
		t.Fatalf("restarted without --shards: %d shards, want the recorded 8", got)
	}
	waitReady(t, m)
	check(t, []*member{m}, want)
}

// A node with a new data dir and no --shards that joins a cluster of
// another count than its default takes the cluster's, records it, and
// serves every user's balance as the others do; a node whose --shards
// contradicts the cluster's is refused before it opens any shard.
func TestJoinerTakesClusterShardCount(t *testing.T) {
	ms := startCluster(t, 3) // --shards 8, not the default
	want := ledgerState{}
	write(t, ms, want, "r1", 24)

	n4 := newMember(t, 4)
	n4.startWith(t, gossips(ms), 3) // --shards unset
	t.Cleanup(func() { n4.stop(t) })
	if got := n4.n.Host().Shards(); got != testShards {
		t.Fatalf("n4 runs %d shards, want the cluster's %d", got, testShards)
	}
	if got := recordedCount(t, n4); got != "8" {
		t.Errorf("n4's data dir records %q shards, want 8", got)
	}
	all := slices.Concat(ms, []*member{n4})
	// n4 hosts nothing yet: it reaches every user through the others.
	check(t, all, want)
	write(t, all, want, "r2", 24)
	check(t, all, want)
	// Then placement gives it replicas, which hold the same users.
	waitFor(t, 60*time.Second, "placement of 4 nodes", func() (bool, string) { return placed(all, ids(all)) })
	check(t, all, want)
	waitFor(t, 10*time.Second, "replicas converged", func() (bool, string) { return converged(all) })

	n5 := newMember(t, 5)
	err := n5.tryStart(gossips(ms), 3, "--shards", "16")
	if err == nil {
		n5.stop(t)
		t.Fatal("n5 with --shards 16 started in a cluster of 8")
	}
	if !errors.Is(err, node.ErrShardCountConflict) {
		t.Fatalf("n5 with --shards 16: %v, want ErrShardCountConflict", err)
	}
	for _, want := range []string{"--shards is set to 16", "announce 8 (n1, n2, n3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if got := recordedCount(t, n5); got != "" {
		t.Errorf("the refused n5 recorded %q shards", got)
	}
	check(t, all, want)
}
