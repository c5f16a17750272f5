package shards

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/protobuf/proto"

	"github.com/ration/ration/raftfsm"
	"github.com/ration/ration/raftfsm/raftpb"
	"github.com/ration/ration/raftlog"
)

func TestShardOfIsStable(t *testing.T) {
	// Pinned values (FNV-1a 64 as hash/fnv computes it, mod 32): if these
	// change, users move between shards.
	for user, want := range map[string]uint32{"alice": 7, "bob": 20, "user-000001": 18, "": 5} {
		if got := ShardOf(user, 32); got != want {
			t.Errorf("ShardOf(%q, 32) = %d, want %d", user, got, want)
		}
	}
	if ShardOf("alice", 1) != 0 || ShardOf("alice", 0) != 0 {
		t.Error("one shard must hold everyone")
	}
	counts := make([]int, 8)
	for i := range 8000 {
		counts[ShardOf(fmt.Sprintf("user-%d", i), 8)]++
	}
	for s, c := range counts {
		if c < 800 || c > 1200 {
			t.Errorf("shard %d got %d of 8000 users", s, c)
		}
	}
}

func TestSingleNodeBecomesReady(t *testing.T) {
	n := singleNode(t, fastConfig(4))
	h := n.host
	if !h.Ready() {
		t.Fatal("not ready after WaitReady")
	}
	st := h.Status()
	if len(st) != 4 {
		t.Fatalf("%d statuses", len(st))
	}
	for i, s := range st {
		if s.Shard != uint32(i) || s.State != "Leader" || !s.Ready || s.LeaderID != "n1" || s.LeaderAddr != n.addr {
			t.Errorf("status %+v", s)
		}
		if len(s.Voters) != 1 || s.Voters[0] != "n1" {
			t.Errorf("voters %v", s.Voters)
		}
		if !h.IsLeader(uint32(i)) {
			t.Errorf("IsLeader(%d) false", i)
		}
		if id, addr := h.Leader(uint32(i)); id != "n1" || addr != n.addr {
			t.Errorf("Leader(%d) = %s %s", i, id, addr)
		}
	}
	for _, s := range []string{layoutFile, "raftlog", "shards/3/snapshots"} {
		if _, err := os.Stat(filepath.Join(n.dir, s)); err != nil {
			t.Error(err)
		}
	}

	// A subscriber learns the present first.
	got := make(chan ShardLeadership, 8)
	unsub := h.Subscribe(func(ev ShardLeadership) { got <- ev })
	defer unsub()
	for want := range uint32(4) {
		select {
		case ev := <-got:
			if ev.Shard != want || !ev.Leader || ev.Term == 0 {
				t.Errorf("event %+v, want leader of %d", ev, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no replay of current leadership")
		}
	}
	if h.FSM(4) != nil || h.IsLeader(4) {
		t.Error("shard 4 is not hosted")
	}
	if err := h.ReadBarrier(context.Background(), 9); !errors.Is(err, ErrNotHosted) {
		t.Errorf("ReadBarrier(9): %v", err)
	}
}

func TestProposeChecksVersions(t *testing.T) {
	n := singleNode(t, fastConfig(4))
	h := n.host
	if r := propose(t, h, grant("alice", 0, "g1", 100)); !r.Applied || r.Version != 1 {
		t.Fatalf("first grant: %+v", r)
	}
	if r := propose(t, h, grant("alice", 0, "g2", 100)); r.Applied || r.Version != 1 {
		t.Fatalf("stale grant: %+v", r)
	}
	if r := propose(t, h, deduct("alice", 1, "d1", 30)); !r.Applied || r.Version != 2 {
		t.Fatalf("deduction: %+v", r)
	}
	if _, err := h.Propose(context.Background(), grant("bad user", 0, "g", 1)); !errors.Is(err, raftfsm.ErrInvalidOp) {
		t.Fatalf("invalid op: %v", err)
	}
	fsm := h.FSM(ShardOf("alice", 4))
	v, ops := fsm.Log("alice")
	if v != 2 || len(ops) != 2 || ops[0].Grant.ID != "g1" || ops[1].Deduction.ID != "d1" {
		t.Fatalf("log: v%d %+v", v, ops)
	}

	// Nothing is proposed once its caller's context is done, even when
	// the op reaches the queue first (a select between a free queue slot
	// and a done context picks either): a caller past its deadline may
	// have answered its client already.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel2()
	for i := range 200 {
		for _, c := range []struct {
			ctx  context.Context
			want error
		}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
			_, err := h.Propose(c.ctx, grant("bob", 0, fmt.Sprintf("g%d", i), 1))
			if !errors.Is(err, c.want) || errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("propose with a done context: %v, want %v and not proposed", err, c.want)
			}
		}
	}
	if v, ops := h.FSM(ShardOf("bob", 4)).Log("bob"); v != 0 || len(ops) != 0 {
		t.Fatalf("bob's log after proposals with done contexts: v%d %+v", v, ops)
	}
}

// TestGroupCommit runs 64 proposers at once and checks that entries carry
// several ops each and that every op is applied exactly once.
func TestGroupCommit(t *testing.T) {
	const (
		workers = 64
		perUser = 40
	)
	h, m := recordingNode(t, 4, 0)
	inParallel(t, workers, func(w int) error {
		user := fmt.Sprintf("user-%d", w)
		for v := range uint64(perUser) {
			res, err := h.Propose(context.Background(), grant(user, v, fmt.Sprintf("g%d", v), 1))
			if err != nil {
				return err
			}
			if !res.Applied || res.Version != v+1 {
				return fmt.Errorf("%s v%d: %+v", user, v, res)
			}
		}
		return nil
	})
	for w := range workers {
		user := fmt.Sprintf("user-%d", w)
		if v := h.FSM(ShardOf(user, 4)).Version(user); v != perUser {
			t.Fatalf("%s at version %d", user, v)
		}
	}
	if mb := m.maxBatch(); mb < 2 {
		t.Fatalf("largest entry had %d ops: no group commit", mb)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.outcomes[OutcomeApplied] != workers*perUser {
		t.Fatalf("outcomes %v", m.outcomes)
	}
	t.Logf("%d entries for %d ops, largest %d", len(m.batches), workers*perUser, slicesMax(m.batches))
}

func slicesMax(s []int) int {
	best := 0
	for _, v := range s {
		best = max(best, v)
	}
	return best
}

func TestReadBarrierSeesWrites(t *testing.T) {
	n := singleNode(t, fastConfig(4))
	h := n.host
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 20 {
		user := fmt.Sprintf("reader-%d", i)
		propose(t, h, grant(user, 0, "g", 5))
		s := ShardOf(user, 4)
		if err := h.ReadBarrier(ctx, s); err != nil {
			t.Fatal(err)
		}
		if v := h.FSM(s).Version(user); v != 1 {
			t.Fatalf("after barrier, %s at version %d", user, v)
		}
	}
}

func TestRestartKeepsState(t *testing.T) {
	n := newNode(t, "n1", t.TempDir())
	cfg := fastConfig(4)
	cfg.Bootstrap = true
	n.start(cfg)
	t.Cleanup(n.stop)
	waitReady(t, n.host)
	users := writeSome(t, n.host, 30, 3)
	before := hashes(n.host)

	n.restart()
	waitReady(t, n.host)
	if got := hashes(n.host); !equalHashes(got, before) {
		t.Fatal("state differs after restart")
	}
	for u, v := range users {
		if got := n.host.FSM(ShardOf(u, 4)).Version(u); got != v {
			t.Fatalf("%s at version %d after restart, want %d", u, got, v)
		}
	}
	// And the restarted node takes writes at the right versions.
	for u, v := range users {
		if r := propose(t, n.host, grant(u, v, "after-restart", 1)); !r.Applied {
			t.Fatalf("%s: %+v", u, r)
		}
		break
	}
}

func TestSnapshotThenRestart(t *testing.T) {
	n := newNode(t, "n1", t.TempDir())
	cfg := fastConfig(4)
	cfg.Bootstrap = true
	cfg.TrailingLogs = 1 // so the log really is truncated by a snapshot
	n.start(cfg)
	t.Cleanup(n.stop)
	waitReady(t, n.host)

	writeSome(t, n.host, 20, 2)
	for s := range uint32(4) {
		if err := n.host.Snapshot(s); err != nil {
			t.Fatalf("snapshot of %d: %v", s, err)
		}
	}
	writeSomeMore(t, n.host, "more", 10)
	before := hashes(n.host)

	snaps, _ := filepath.Glob(filepath.Join(n.dir, "shards", "*", "snapshots", "*", "state.bin"))
	if len(snaps) != 4 {
		t.Fatalf("snapshots on disk: %v", snaps)
	}
	n.restart()
	waitReady(t, n.host)
	if got := hashes(n.host); !equalHashes(got, before) {
		t.Fatal("state differs after snapshot and restart")
	}
}

// TestAcknowledgedOpsAreInTheLog reads raft.db after a clean shutdown: every
// op Propose acknowledged must be in a committed entry on disk. A crash
// test needs another process; this checks the same property of the write
// path, that acknowledgement follows the durable log write.
func TestAcknowledgedOpsAreInTheLog(t *testing.T) {
	for _, ls := range []LogStore{LogStoreShared, LogStoreBolt} {
		t.Run(string(ls), func(t *testing.T) { acknowledgedOpsAreInTheLog(t, ls) })
	}
}

func acknowledgedOpsAreInTheLog(t *testing.T, ls LogStore) {
	n := newNode(t, "n1", t.TempDir())
	cfg := fastConfig(2)
	cfg.Bootstrap = true
	cfg.LogStore = ls
	n.start(cfg)
	t.Cleanup(n.stop)
	waitReady(t, n.host)

	acked := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 10 {
				op := grant(fmt.Sprintf("durable-%d", w), uint64(i), fmt.Sprintf("g%d", i), 1)
				if res, err := n.host.Propose(context.Background(), op); err == nil && res.Applied {
					mu.Lock()
					acked[op.User+"/"+op.Grant.ID] = true
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	n.stop()

	found := map[string]bool{}
	for s := range uint32(2) {
		store, closeStore := openLogForTest(t, n.dir, ls, s)
		first, _ := store.FirstIndex()
		last, _ := store.LastIndex()
		for i := first; i <= last && last > 0; i++ {
			var l raft.Log
			if err := store.GetLog(i, &l); err != nil {
				t.Fatal(err)
			}
			if l.Type != raft.LogCommand || len(l.Data) == 0 || l.Data[0] != raftfsm.TypeBatch {
				continue
			}
			var b raftpb.Batch
			if err := proto.Unmarshal(l.Data[1:], &b); err != nil {
				t.Fatal(err)
			}
			for _, op := range b.Ops {
				if g := op.GetGrant(); g != nil {
					found[op.User+"/"+g.Id] = true
				}
			}
		}
		closeStore()
	}
	if len(acked) != 80 {
		t.Fatalf("%d ops acknowledged, want 80", len(acked))
	}
	for k := range acked {
		if !found[k] {
			t.Fatalf("acknowledged op %s is not in the %s raft log", k, ls)
		}
	}
}

// openLogForTest opens shard's raft log in a stopped node's data dir.
func openLogForTest(t *testing.T, dataDir string, ls LogStore, shard uint32) (raft.LogStore, func()) {
	t.Helper()
	if ls == LogStoreBolt {
		store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dataDir, "shards", fmt.Sprint(shard), "raft.db")})
		if err != nil {
			t.Fatal(err)
		}
		return store, func() { store.Close() }
	}
	engine, err := raftlog.Open(raftlog.Options{Dir: filepath.Join(dataDir, "raftlog")})
	if err != nil {
		t.Fatal(err)
	}
	g, err := engine.Group(shard)
	if err != nil {
		t.Fatal(err)
	}
	return g, func() { g.Close(); engine.Close() }
}

func TestShutdownFailsNewProposalsAndLeavesNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	n := newNode(t, "n1", t.TempDir())
	cfg := fastConfig(3)
	cfg.Bootstrap = true
	n.start(cfg)
	waitReady(t, n.host)
	writeSome(t, n.host, 5, 1)
	h := n.host
	_ = h.ReadBarrier(context.Background(), 0)
	unsub := h.Subscribe(func(ShardLeadership) {})
	defer unsub()
	n.stop()

	if _, err := h.Propose(context.Background(), grant("late", 0, "g", 1)); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("propose after shutdown: %v", err)
	}
	if err := h.ReadBarrier(context.Background(), 0); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("read barrier after shutdown: %v", err)
	}
	if err := h.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > base {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		t.Fatalf("%d goroutines after shutdown, %d before:\n%s", g, base, filterStacks(stacks))
	}
}

// filterStacks drops the testing framework's own goroutines.
func filterStacks(all string) string {
	var keep []string
	for _, g := range strings.Split(all, "\n\n") {
		if strings.Contains(g, "testing.") && !strings.Contains(g, "shards") {
			continue
		}
		keep = append(keep, g)
	}
	return strings.Join(keep, "\n\n")
}

// writeSome proposes ops for users, ops each, and returns their versions.
func writeSome(t testing.TB, h *Host, users, ops int) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for u := range users {
		user := fmt.Sprintf("user-%d", u)
		for v := range uint64(ops) {
			var op raftfsm.Op
			if v%2 == 0 {
				op = grant(user, v, fmt.Sprintf("g%d", v), 10)
			} else {
				op = deduct(user, v, fmt.Sprintf("d%d", v), 3)
			}
			if r := propose(t, h, op); !r.Applied {
				t.Fatalf("%s v%d: %+v", user, v, r)
			}
		}
		out[user] = uint64(ops)
	}
	return out
}

func writeSomeMore(t testing.TB, h *Host, prefix string, users int) {
	t.Helper()
	for u := range users {
		user := fmt.Sprintf("%s-%d", prefix, u)
		if r := propose(t, h, grant(user, 0, "g", 1)); !r.Applied {
			t.Fatalf("%s: %+v", user, r)
		}
	}
}

func equalHashes(a, b map[uint32][32]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// The proposer takes no proposal whose caller's deadline has passed, even
// before the caller noticed and withdrew it: the caller may have answered
// its client already.
func TestClaimSkipsExpiredProposals(t *testing.T) {
	live := &proposal{ctx: context.Background()}
	past, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	// A deadline the runtime has not acted on yet looks like this: Err is
	// still nil, but the deadline is behind us.
	late := &proposal{ctx: lateCtx{Context: context.Background(), deadline: time.Now().Add(-time.Millisecond)}}
	batch := claim(nil, live)
	batch = claim(batch, &proposal{ctx: past})
	batch = claim(batch, late)
	if len(batch) != 1 || batch[0] != live {
		t.Fatalf("claimed %d proposals, want only the live one", len(batch))
	}
	if late.state.Load() != stateCancelled {
		t.Fatalf("expired proposal left in state %d, want cancelled", late.state.Load())
	}
}

// lateCtx has a deadline in the past whose timer has not fired.
type lateCtx struct {
	context.Context
	deadline time.Time
}

func (c lateCtx) Deadline() (time.Time, bool) { return c.deadline, true }
