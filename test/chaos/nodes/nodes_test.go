package nodes

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ration/ration/test/chaos/netns"
)

func needRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
}

// build compiles cmd/node, with tags if any.
func build(t *testing.T, tags string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ration-node")
	args := []string{"build", "-o", bin}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	out, err := exec.Command("go", append(args, "github.com/ration/ration/cmd/node")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func cluster(t *testing.T, bin string, size int) *Cluster {
	t.Helper()
	ctx := context.Background()
	if _, err := netns.CleanupStale(ctx, "rchn", nil); err != nil {
		t.Fatal(err)
	}
	nw, err := netns.Create(ctx, netns.Config{Prefix: "rchn", Nodes: size})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nw.Close(context.Background()) })
	c, err := New(ctx, Config{Binary: bin, Dir: t.TempDir(), Net: nw, Shards: 4, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := c.WaitAllReady(wctx); err != nil {
		for i := range size {
			b, _ := os.ReadFile(c.LogPath(i))
			t.Logf("%s:\n%s", c.ID(i), b)
		}
		t.Fatal(err)
	}
	return c
}

func TestClusterFaultsAndLeader(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	c := cluster(t, build(t, ""), 3)

	lead, err := c.Leader(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Freeze the leader: the others elect another one.
	if err := c.Pause(lead); err != nil {
		t.Fatal(err)
	}
	if c.State(lead) != Paused {
		t.Fatalf("state %v after Pause", c.State(lead))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if l, err := c.Leader(ctx, 0); err == nil && l != lead {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new leader while the old one is frozen")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := c.Resume(lead); err != nil {
		t.Fatal(err)
	}

	// kill -9 and restart on the same data.
	if err := c.Kill(lead); err != nil {
		t.Fatal(err)
	}
	if c.State(lead) != Down {
		t.Fatalf("state %v after Kill", c.State(lead))
	}
	if err := c.Kill(lead); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("second Kill: %v", err)
	}
	if err := c.Start(lead); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.WaitReady(wctx, lead); err != nil {
		t.Fatal(err)
	}
	if got := c.Crashes(); len(got) != 0 {
		t.Fatalf("harness-made exits counted as crashes: %v", got)
	}

	// An exit the harness did not ask for is a crash.
	victim := (lead + 1) % 3
	c.nodes[victim].mu.Lock()
	pid := c.nodes[victim].proc.Pid
	exited := c.nodes[victim].exited
	c.nodes[victim].mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	if got := c.Crashes(); len(got) != 1 || got[0].Node != c.ID(victim) {
		t.Fatalf("crashes %v, want one of %s", got, c.ID(victim))
	}

	// This binary has no chaos clock.
	if err := c.SetClock(ctx, lead, time.Hour); !errors.Is(err, ErrNoClockHook) {
		t.Fatalf("SetClock on an untagged binary: %v", err)
	}
}
