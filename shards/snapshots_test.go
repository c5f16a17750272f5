package shards

import (
	"path/filepath"
	"testing"
	"time"
)

func TestSnapshotDue(t *testing.T) {
	for _, tt := range []struct {
		since, state, min uint64
		want              bool
	}{
		{0, 0, 100, false}, {100, 0, 100, false}, {101, 0, 100, true},
		{101, 1200, 100, false}, {151, 1200, 100, true}, {1 << 20, 10 << 20, 1 << 20, false}, {1<<20 + 1, 8 << 20, 1 << 20, true},
	} {
		if got := snapshotDue(tt.since, tt.state, tt.min); got != tt.want {
			t.Errorf("snapshotDue(%d, %d, %d) = %v", tt.since, tt.state, tt.min, got)
		}
	}
}

// A group whose applied ops outgrow SnapshotOps snapshots by itself, long
// before raft's own threshold of entries would have it, and the state
// survives a restart from that snapshot.
func TestSnapshotBySize(t *testing.T) {
	n := newNode(t, "n1", t.TempDir())
	cfg := fastConfig(1)
	cfg.Bootstrap = true
	cfg.SnapshotThreshold = 1 << 30 // raft alone would never snapshot
	cfg.SnapshotOps = 50
	n.start(cfg)
	t.Cleanup(n.stop)
	waitReady(t, n.host)

	snaps := func() []string {
		s, _ := filepath.Glob(filepath.Join(n.dir, "shards", "*", "snapshots", "*", "state.bin"))
		return s
	}
	writeSome(t, n.host, 10, 4) // 40 ops: not yet due
	time.Sleep(2 * snapshotCheck)
	if s := snaps(); len(s) != 0 {
		t.Fatalf("snapshot after 40 ops with SnapshotOps 50: %v", s)
	}
	writeSomeMore(t, n.host, "more", 20) // 60 ops
	deadline := time.Now().Add(5 * snapshotCheck)
	for len(snaps()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no snapshot after 60 ops with SnapshotOps 50")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if since, state := n.host.FSM(0).OpsSinceSnapshot(); since != 0 || state != 60 {
		t.Fatalf("after the snapshot: %d ops since, %d in the state; want 0 and 60", since, state)
	}
	before := hashes(n.host)
	n.restart()
	waitReady(t, n.host)
	if got := hashes(n.host); !equalHashes(got, before) {
		t.Fatal("state differs after restart from the snapshot")
	}
	if since, state := n.host.FSM(0).OpsSinceSnapshot(); since != 0 || state != 60 {
		t.Fatalf("after restart: %d ops since, %d in the state; want 0 and 60", since, state)
	}
}
