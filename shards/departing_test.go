package shards

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// loud records the log records above INFO.
type loud struct {
	mu   sync.Mutex
	recs []string
}

func (l *loud) Enabled(context.Context, slog.Level) bool { return true }

func (l *loud) Handle(_ context.Context, r slog.Record) error {
	if r.Level > slog.LevelInfo {
		l.mu.Lock()
		l.recs = append(l.recs, fmt.Sprintf("%s %s", r.Level, r.Message))
		l.mu.Unlock()
	}
	return nil
}

func (l *loud) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *loud) WithGroup(string) slog.Handler      { return l }

func (l *loud) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.recs...)
}

// departingCluster is cluster with a Departing that says whatever gone
// says, and every node's log recorded in rec.
func departingCluster(t *testing.T, shards int, gone func(raft.ServerID) bool, rec *loud) []*node {
	t.Helper()
	return clusterWith(t, shards, func(cfg *Config, peers []raft.Server) {
		cfg.Logger = slog.New(rec)
		cfg.Departing = func(id raft.ServerID, addr raft.ServerAddress) bool {
			for _, p := range peers {
				if (id != "" && p.ID == id) || (addr != "" && p.Address == addr) {
					return gone(p.ID)
				}
			}
			return false
		}
	})
}

// A cluster whose nodes all announced that they are stopping, then stop
// at once, logs nothing above INFO: each fails to reach the others, as
// expected, and no group hands its leadership to a node that is going too.
func TestStoppingTogetherLogsNoFailures(t *testing.T) {
	const shards = 4
	var stopping atomic.Bool
	rec := &loud{}
	nodes := departingCluster(t, shards, func(raft.ServerID) bool { return stopping.Load() }, rec)
	// What the nodes logged while forming (fast timeouts on a loaded
	// machine may cost an election) is not this test's business.
	before := len(rec.lines())

	stopping.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			if err := n.host.TransferLeadership(ctx); err != nil {
				t.Errorf("%s: transfer: %v", n.id, err)
			}
			if err := n.host.Shutdown(ctx); err != nil {
				t.Errorf("%s: shutdown: %v", n.id, err)
			}
		})
	}
	wg.Wait()
	if l := rec.lines()[before:]; len(l) > 0 {
		t.Fatalf("stopping together logged above INFO:\n%v", l)
	}
}

// A leader hands its shard to a voter that stays, never to one that
// announced it is going; with no voter staying it keeps the shard.
func TestTransferLeadershipSkipsDepartingVoters(t *testing.T) {
	var goneMu sync.Mutex
	gone := map[raft.ServerID]bool{}
	isGone := func(id raft.ServerID) bool { goneMu.Lock(); defer goneMu.Unlock(); return gone[id] }
	nodes := departingCluster(t, 1, isGone, &loud{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for range 3 { // raft's own choice would pick either follower
		leader, followers := leaderOf(t, nodes, 0)
		goneMu.Lock()
		clear(gone)
		gone[raft.ServerID(followers[0].id)] = true
		goneMu.Unlock()
		if err := leader.host.TransferLeadership(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the old leader to step down", func() bool { return !leader.host.IsLeader(0) })
		if next, _ := leaderOf(t, nodes, 0); next != followers[1] {
			t.Fatalf("leadership went to %s; %s was departing, %s staying", next.id, followers[0].id, followers[1].id)
		}
	}

	leader, followers := leaderOf(t, nodes, 0)
	goneMu.Lock()
	for _, f := range followers {
		gone[raft.ServerID(f.id)] = true
	}
	goneMu.Unlock()
	if err := leader.host.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	if !leader.host.IsLeader(0) {
		t.Fatalf("%s gave its shard away although every other voter is departing", leader.id)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
