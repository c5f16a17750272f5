package faults

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ration/ration/test/chaos/netns"
	"github.com/ration/ration/test/chaos/nodes"
)

// fakeNet keeps the cut pairs and the calls.
type fakeNet struct {
	mu    sync.Mutex
	cut   map[[2]int][]netns.Port
	calls []string
	n     int
}

func (f *fakeNet) Partition(_ context.Context, connected func(a, b int) bool, ports ...netns.Port) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for a := range f.n {
		for b := a + 1; b < f.n; b++ {
			if !connected(a, b) {
				f.cut[[2]int{a, b}] = ports
			}
		}
	}
	f.calls = append(f.calls, "partition")
	return nil
}

func (f *fakeNet) Delay(_ context.Context, i int, s netns.Slowdown) (netns.Shaping, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("delay %d %v", i, s.Latency))
	return netns.TBF, nil
}

func (f *fakeNet) Loss(_ context.Context, i int, p float64) (netns.Shaping, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("loss %d %v", i, p))
	return netns.IptablesStatistic, nil
}

func (f *fakeNet) Heal(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.cut)
	f.calls = append(f.calls, "heal")
	return nil
}

// fakeCluster is n nodes whose shards are all led by leader.
type fakeCluster struct {
	mu      sync.Mutex
	states  []nodes.State
	clocks  []time.Duration
	leader  int
	noClock bool
	calls   []string
}

func newFakes(n, leader int) (*fakeNet, *fakeCluster) {
	return &fakeNet{cut: map[[2]int][]netns.Port{}, n: n},
		&fakeCluster{states: make([]nodes.State, n), clocks: make([]time.Duration, n), leader: leader}
}

func (f *fakeCluster) Size() int       { return len(f.states) }
func (f *fakeCluster) ID(i int) string { return fmt.Sprintf("n%d", i+1) }
func (f *fakeCluster) State(i int) nodes.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.states[i]
}

func (f *fakeCluster) set(i int, call string, from, to nodes.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("%s %d", call, i))
	if f.states[i] != from {
		return fmt.Errorf("%s of n%d in state %v", call, i+1, f.states[i])
	}
	f.states[i] = to
	return nil
}

func (f *fakeCluster) Start(i int) error {
	if f.State(i) != nodes.Down {
		return nil
	}
	return f.set(i, "start", nodes.Down, nodes.Running)
}
func (f *fakeCluster) Kill(i int) error   { return f.set(i, "kill", f.State(i), nodes.Down) }
func (f *fakeCluster) Pause(i int) error  { return f.set(i, "pause", nodes.Running, nodes.Paused) }
func (f *fakeCluster) Resume(i int) error { return f.set(i, "resume", nodes.Paused, nodes.Running) }

func (f *fakeCluster) Shard(context.Context, uint32) (int, []int, error) {
	return f.leader, []int{0, 1, 2}, nil
}

func (f *fakeCluster) SetClock(_ context.Context, i int, d time.Duration) error {
	if f.noClock {
		return nodes.ErrNoClockHook
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clocks[i] = d
	f.calls = append(f.calls, fmt.Sprintf("clock %d %v", i, d))
	return nil
}

func running(f *fakeCluster) {
	for i := range f.states {
		f.states[i] = nodes.Running
	}
}

func injector(n *fakeNet, c *fakeCluster) *Injector {
	return &Injector{Net: n, Cluster: c, Shards: 8, HotShard: func() (uint32, bool) { return 5, true }, GossipPort: 7946, RaftPort: 7000, ActorPort: 7001}
}

const hold = 20 * time.Millisecond

func TestRingPartitionCutsNonNeighbours(t *testing.T) {
	net, cl := newFakes(5, 0)
	running(cl)
	in := injector(net, cl)
	var during map[[2]int][]netns.Port
	in.Net = &observingNet{fakeNet: net, seen: &during}
	rec := in.Inject(context.Background(), Step{Kind: PartitionRing, Hold: hold})
	want := map[[2]int]bool{{0, 2}: true, {0, 3}: true, {1, 3}: true, {1, 4}: true, {2, 4}: true}
	if len(during) != len(want) {
		t.Fatalf("cut %v, want %v", during, want)
	}
	for p, ports := range during {
		if !want[p] || ports != nil {
			t.Fatalf("cut %v (ports %v), want %v all ports", p, ports, want)
		}
	}
	if len(net.cut) != 0 || rec.End.IsZero() {
		t.Fatalf("not healed: %v, end %v", net.cut, rec.End)
	}
	if !strings.Contains(rec.Detail, "n1 sees n2,n5") {
		t.Fatalf("detail %q", rec.Detail)
	}
}

func maps(m map[[2]int][]netns.Port) map[[2]int][]netns.Port {
	out := map[[2]int][]netns.Port{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestPortPartitionsCutOnlyTheirPorts(t *testing.T) {
	for kind, want := range map[Kind][]netns.Port{
		PartitionGossip: {netns.TCP(7946), netns.UDP(7946)},
		PartitionRaft:   {netns.TCP(7000), netns.TCP(7001)},
		PartitionOne:    nil,
	} {
		net, cl := newFakes(3, 2)
		running(cl)
		in := injector(net, cl)
		var seen map[[2]int][]netns.Port
		net2 := &observingNet{fakeNet: net, seen: &seen}
		in.Net = net2
		rec := in.Inject(context.Background(), Step{Kind: kind, Leader: true, HotShard: true, Hold: hold})
		// The leader (node 3) is cut from both others, nothing else.
		if len(seen) != 2 || !slices.Equal(seen[[2]int{0, 2}], want) || !slices.Equal(seen[[2]int{1, 2}], want) {
			t.Fatalf("%s: cut %v, want n3 cut on %v", kind, seen, want)
		}
		if rec.Target != "n3" || !strings.Contains(rec.Detail, "leader of hot shard 5") {
			t.Fatalf("%s: record %+v", kind, rec)
		}
	}
}

// observingNet copies the cut at each partition.
type observingNet struct {
	*fakeNet
	seen *map[[2]int][]netns.Port
}

func (o *observingNet) Partition(ctx context.Context, connected func(a, b int) bool, ports ...netns.Port) error {
	err := o.fakeNet.Partition(ctx, connected, ports...)
	o.mu.Lock()
	*o.seen = maps(o.cut)
	o.mu.Unlock()
	return err
}

func TestMajorityPartitionPutsTheLeaderInTheMinority(t *testing.T) {
	net, cl := newFakes(5, 4)
	running(cl)
	in := injector(net, cl)
	var seen map[[2]int][]netns.Port
	in.Net = &observingNet{fakeNet: net, seen: &seen}
	rec := in.Inject(context.Background(), Step{Kind: PartitionMajority, Leader: true, Minority: []int{0, 1}, Hold: hold})
	// The leader replaces the minority's first member.
	if rec.Target != "n1,n3,n4 | n2,n5" {
		t.Fatalf("target %q", rec.Target)
	}
	for p := range seen {
		if inMinority(rec.Target, p[0]) == inMinority(rec.Target, p[1]) {
			t.Fatalf("cut %v inside a side (target %s)", p, rec.Target)
		}
	}
	if len(seen) != 6 { // 3 x 2
		t.Fatalf("%d pairs cut, want 6: %v", len(seen), seen)
	}
}

func inMinority(target string, i int) bool {
	_, minority, _ := strings.Cut(target, " | ")
	return slices.Contains(strings.Split(minority, ","), fmt.Sprintf("n%d", i+1))
}

func TestKillsRestartAndPausesThaw(t *testing.T) {
	net, cl := newFakes(3, 1)
	running(cl)
	in := injector(net, cl)
	ctx := context.Background()

	rec := in.Inject(ctx, Step{Kind: KillLeader, Leader: true, HotShard: true, Hold: hold})
	if rec.Target != "n2" || cl.State(1) != nodes.Running || !slices.Equal(cl.calls, []string{"kill 1", "start 1"}) {
		t.Fatalf("kill-leader: %+v, calls %v", rec, cl.calls)
	}
	cl.calls = nil
	in.Inject(ctx, Step{Kind: KillAll, Hold: hold})
	for i := range 3 {
		if cl.State(i) != nodes.Running {
			t.Fatalf("n%d %v after kill-all", i+1, cl.State(i))
		}
	}
	if len(cl.calls) != 6 {
		t.Fatalf("kill-all calls %v", cl.calls)
	}
	cl.calls = nil
	rec = in.Inject(ctx, Step{Kind: PauseLeader, Leader: true, Hold: hold})
	if !slices.Equal(cl.calls, []string{"pause 1", "resume 1"}) || rec.End.Sub(rec.Start) < hold {
		t.Fatalf("pause: %+v, calls %v", rec, cl.calls)
	}
	// A snapshot catch-up takes a follower down, never the leader.
	for node := range 3 {
		cl.calls = nil
		rec = in.Inject(ctx, Step{Kind: SnapshotCatchup, Node: node, Hold: hold})
		if rec.Target == "n2" || len(cl.calls) != 2 || !strings.Contains(rec.Detail, "follower") {
			t.Fatalf("snapshot-catchup with node %d: %+v, calls %v", node, rec, cl.calls)
		}
	}
	if len(in.Records()) != 6 {
		t.Fatalf("%d records, want 6", len(in.Records()))
	}
}

func TestClockJumpAndItsAbsence(t *testing.T) {
	net, cl := newFakes(3, 0)
	running(cl)
	in := injector(net, cl)
	ctx := context.Background()
	rec := in.Inject(ctx, Step{Kind: ClockJump, Node: 2, Offset: -time.Hour, Hold: hold})
	if !slices.Equal(cl.calls, []string{"clock 2 -1h0m0s", "clock 2 0s"}) || rec.Target != "n3" {
		t.Fatalf("clock calls %v, record %+v", cl.calls, rec)
	}
	cl.noClock = true
	rec = in.Inject(ctx, Step{Kind: ClockJump, Node: 1, Offset: time.Hour, Hold: hold})
	if !strings.HasPrefix(rec.Detail, "skipped") || !rec.End.IsZero() {
		t.Fatalf("record without a clock hook: %+v", rec)
	}
	if notes := in.Notes(); len(notes) != 1 || !strings.Contains(notes[0], "clock-jump skipped") {
		t.Fatalf("notes %v", notes)
	}
}

func TestDelayAndLossNoteTheFallback(t *testing.T) {
	net, cl := newFakes(3, 0)
	running(cl)
	in := injector(net, cl)
	ctx := context.Background()
	rec := in.Inject(ctx, Step{Kind: Delay, Node: 1, Latency: 300 * time.Millisecond, Rate: "256kbit", Hold: hold})
	if rec.Target != "n2" || !strings.Contains(rec.Detail, "tbf") {
		t.Fatalf("delay record %+v", rec)
	}
	rec = in.Inject(ctx, Step{Kind: Loss, Node: 2, Loss: 0.2, Hold: hold})
	if !strings.Contains(rec.Detail, "20%") || !strings.Contains(rec.Detail, string(netns.IptablesStatistic)) {
		t.Fatalf("loss record %+v", rec)
	}
	if len(in.Notes()) != 2 {
		t.Fatalf("notes %v", in.Notes())
	}
	if !slices.Equal(net.calls, []string{"delay 1 300ms", "heal", "loss 2 0.2", "heal"}) {
		t.Fatalf("calls %v", net.calls)
	}
}

func TestRunFollowsTheScheduleAndHealsOnCancel(t *testing.T) {
	net, cl := newFakes(3, 0)
	running(cl)
	in := injector(net, cl)
	steps := []Step{
		{At: 0, Kind: Quiet},
		{At: 30 * time.Millisecond, Kind: PartitionOne, Node: 1, Hold: 20 * time.Millisecond},
		{At: 80 * time.Millisecond, Kind: PauseLeader, Leader: true, Hold: time.Hour},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := in.Run(ctx, start, steps); err != nil {
		t.Fatal(err)
	}
	recs := in.Records()
	if len(recs) != 2 {
		t.Fatalf("records %+v", recs)
	}
	if d := recs[0].Start.Sub(start); d < 30*time.Millisecond {
		t.Fatalf("first fault %v after start, want >= 30ms", d)
	}
	// The hour-long pause was cut short by the context and healed.
	if cl.State(0) != nodes.Running || recs[1].End.IsZero() || recs[1].End.Sub(start) > time.Second {
		t.Fatalf("pause not healed at cancel: %+v, state %v", recs[1], cl.State(0))
	}
}

func TestHealAll(t *testing.T) {
	net, cl := newFakes(3, 0)
	running(cl)
	in := injector(net, cl)
	ctx := context.Background()
	cl.states[0], cl.states[2] = nodes.Paused, nodes.Down
	if err := in.HealAll(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if cl.State(i) != nodes.Running {
			t.Fatalf("n%d %v after HealAll", i+1, cl.State(i))
		}
	}
	if !slices.Contains(net.calls, "heal") {
		t.Fatal("network not healed")
	}
}
