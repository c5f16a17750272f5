package rebalance

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ration/ration/cluster/membership"
	"github.com/ration/ration/cluster/placement"
)

// fakeHost leads every shard it hosts with a non-empty configuration and
// applies configuration changes at once; it records them.
type fakeHost struct {
	mu      sync.Mutex
	id      string
	shards  int
	confs   map[uint32]*raft.Configuration
	leads   map[uint32]bool
	log     []string
	removed []uint32
}

func newFakeHost(id string, shards int) *fakeHost {
	return &fakeHost{id: id, shards: shards, confs: map[uint32]*raft.Configuration{}, leads: map[uint32]bool{}}
}

func (f *fakeHost) NodeID() string { return f.id }
func (f *fakeHost) Shards() int    { return f.shards }
func (f *fakeHost) Hosted() []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint32
	for s := range f.confs {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}
func (f *fakeHost) AddGroup(_ context.Context, s uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.confs[s] = &raft.Configuration{}
	f.log = append(f.log, fmt.Sprintf("open %d", s))
	return nil
}
func (f *fakeHost) RemoveGroup(_ context.Context, s uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.confs, s)
	f.removed = append(f.removed, s)
	return nil
}
func (f *fakeHost) Configuration(s uint32) (raft.Configuration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.confs[s].Clone(), nil
}
func (f *fakeHost) IsLeader(s uint32) bool { f.mu.Lock(); defer f.mu.Unlock(); return f.leads[s] }
func (f *fakeHost) IsReady(s uint32) bool  { return f.IsLeader(s) }
func (f *fakeHost) Indexes(uint32) (uint64, uint64, error) {
	return 1000, 1000, nil
}
func (f *fakeHost) set(s uint32, id string, suf raft.ServerSuffrage) {
	c := f.confs[s]
	for i := range c.Servers {
		if string(c.Servers[i].ID) == id {
			c.Servers[i].Suffrage = suf
			return
		}
	}
	c.Servers = append(c.Servers, raft.Server{ID: raft.ServerID(id), Suffrage: suf})
}
func (f *fakeHost) AddNonvoter(_ context.Context, s uint32, id, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set(s, id, raft.Nonvoter)
	f.log = append(f.log, fmt.Sprintf("%d add %s", s, id))
	return nil
}
func (f *fakeHost) PromoteVoter(_ context.Context, s uint32, id, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set(s, id, raft.Voter)
	f.log = append(f.log, fmt.Sprintf("%d promote %s", s, id))
	return nil
}
func (f *fakeHost) RemoveServer(_ context.Context, s uint32, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.confs[s]
	c.Servers = slices.DeleteFunc(c.Servers, func(x raft.Server) bool { return string(x.ID) == id })
	f.log = append(f.log, fmt.Sprintf("%d remove %s", s, id))
	return nil
}
func (f *fakeHost) TransferLeadershipOf(_ context.Context, s uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leads[s] = false
	f.log = append(f.log, fmt.Sprintf("%d transfer", s))
	return nil
}
func (f *fakeHost) TransferLeadershipTo(_ context.Context, s uint32, id, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leads[s] = false
	f.log = append(f.log, fmt.Sprintf("%d transfer to %s", s, id))
	return nil
}
func (f *fakeHost) takeLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.log
	f.log = nil
	return l
}

type fakeMembers struct{ ms []membership.Member }

func (m *fakeMembers) Members() []membership.Member { return slices.Clone(m.ms) }
func (m *fakeMembers) Subscribe() (<-chan struct{}, func()) {
	return make(chan struct{}), func() {}
}

func alive(ids ...string) []membership.Member {
	var out []membership.Member
	for _, id := range ids {
		out = append(out, membership.Member{Meta: membership.Meta{NodeID: id, RaftAddr: id + ":1"}, State: membership.Alive})
	}
	return out
}

// shardWhere finds a shard whose target over nodes excludes out and
// includes self.
func shardWhere(t *testing.T, nodes []string, self, out string) uint32 {
	for s := uint32(0); s < 1000; s++ {
		ts := placement.ReplicaSet(s, nodes, 3)
		if slices.Contains(ts, self) && !slices.Contains(ts, out) {
			return s
		}
	}
	t.Fatal("no such shard")
	return 0
}

func voters(ids ...string) *raft.Configuration {
	c := &raft.Configuration{}
	for _, id := range ids {
		c.Servers = append(c.Servers, raft.Server{ID: raft.ServerID(id), Suffrage: raft.Voter})
	}
	return c
}

// The leader moves a replica in the safe order, one change per pass:
// add the new member as a nonvoter, promote it, then remove the old one.
func TestSafeOrder(t *testing.T) {
	nodes := []string{"a", "b", "c", "d"}
	shard := shardWhere(t, nodes, "a", "c")
	target := placement.ReplicaSet(shard, nodes, 3)
	h := newFakeHost("a", int(shard)+1)
	h.confs[shard] = voters("a", "b", "c", "d")
	// Start from the three of a, b, c, d that are not the newcomer.
	newcomer := ""
	for _, id := range target {
		if id != "a" && id != "b" {
			newcomer = id
		}
	}
	if newcomer == "" {
		newcomer = "d"
	}
	var start []string
	for _, id := range nodes {
		if id != newcomer {
			start = append(start, id)
		}
	}
	h.confs[shard] = voters(start...)
	h.leads[shard] = true
	now := time.Unix(1000, 0)
	members := &fakeMembers{alive(nodes...)}
	// A newcomer that announced it is stopping gets no replica.
	i := slices.IndexFunc(members.ms, func(m membership.Member) bool { return m.NodeID == newcomer })
	members.ms[i].Stopping = true
	r := New(Config{Host: h, Members: members,
		AppliedIndex: func(context.Context, membership.Member, uint32) (uint64, error) { return 999, nil },
		Now:          func() time.Time { return now }})
	var got []string
	for range 3 {
		now = now.Add(time.Second)
		r.Reconcile(context.Background())
		got = append(got, h.takeLog()...)
	}
	if add := fmt.Sprintf("%d add %s", shard, newcomer); slices.Contains(got, add) {
		t.Fatalf("%s while %s is stopping: %v", add, newcomer, got)
	}
	members.ms[i].Stopping = false
	for range 6 {
		now = now.Add(time.Second)
		r.Reconcile(context.Background())
		got = append(got, h.takeLog()...)
	}
	var want []string
	for s := uint32(0); s < shard; s++ {
		if slices.Contains(placement.ReplicaSet(s, nodes, 3), "a") {
			want = append(want, fmt.Sprintf("open %d", s))
		}
	}
	want = append(want, fmt.Sprintf("%d add %s", shard, newcomer), fmt.Sprintf("%d promote %s", shard, newcomer))
	for _, id := range start {
		if !slices.Contains(target, id) {
			want = append(want, fmt.Sprintf("%d remove %s", shard, id))
		}
	}
	// Opening groups is not rate-limited; compare the changes of shard.
	var changes []string
	for _, l := range got {
		if !slices.Contains(want[:len(want)-3], l) {
			changes = append(changes, l)
		}
	}
	if !slices.Equal(changes, want[len(want)-3:]) {
		t.Fatalf("changes %v, want %v", changes, want[len(want)-3:])
	}
	if r.Moving(shard) {
		t.Fatal("still moving after reaching the target")
	}
}

// A leader that is not in the target hands the leadership over instead
// of removing itself; a Suspect member is never removed; a Dead one only
// after the grace period; and the bucket bounds changes per second.
func TestLeaderLeavesLastAndGrace(t *testing.T) {
	nodes := []string{"a", "b", "c", "d"}
	// A shard whose target over a..d excludes a (the leader).
	var shard uint32
	for s := uint32(0); ; s++ {
		if !slices.Contains(placement.ReplicaSet(s, nodes, 3), "a") {
			shard = s
			break
		}
	}
	target := placement.ReplicaSet(shard, nodes, 3)
	h := newFakeHost("a", int(shard)+1)
	for s := uint32(0); s < uint32(h.shards); s++ {
		h.confs[s] = voters(append([]string{"a"}, target...)...)
	}
	h.leads[shard] = true
	now := time.Unix(1000, 0)
	r := New(Config{Host: h, Members: &fakeMembers{alive(nodes...)}, Now: func() time.Time { return now }})
	r.Reconcile(context.Background())
	if got := h.takeLog(); !slices.Equal(got, []string{fmt.Sprintf("%d transfer", shard)}) {
		t.Fatalf("got %v, want a leadership transfer", got)
	}

	// Suspect and Dead within grace: nothing removed.
	h2 := newFakeHost("a", 1)
	h2.confs[0] = voters("a", "b", "c")
	h2.leads[0] = true
	ms := alive("a", "b", "c")
	ms[1].State = membership.Suspect
	ms[2].State, ms[2].Since = membership.Dead, now
	m := &fakeMembers{ms}
	r2 := New(Config{Host: h2, Members: m, DeadGrace: 10 * time.Second, Now: func() time.Time { return now }})
	for range 5 {
		now = now.Add(time.Second)
		r2.Reconcile(context.Background())
	}
	if got := h2.takeLog(); len(got) != 0 {
		t.Fatalf("changes within the grace period: %v", got)
	}
	now = now.Add(10 * time.Second)
	r2.Reconcile(context.Background())
	if got := h2.takeLog(); !slices.Equal(got, []string{"0 remove c"}) {
		t.Fatalf("after the grace period: %v, want c removed", got)
	}

	// Rate limit: 8 shards each needing a change, one pass, burst 2.
	h3 := newFakeHost("a", 8)
	for s := uint32(0); s < 8; s++ {
		h3.confs[s] = voters("a")
		h3.leads[s] = true
	}
	r3 := New(Config{Host: h3, Members: &fakeMembers{alive("a", "b")}, MaxMoving: 8, Now: func() time.Time { return now }})
	r3.Reconcile(context.Background())
	if got := h3.takeLog(); len(got) != 2 {
		t.Fatalf("one pass made %d changes, want 2 (burst): %v", len(got), got)
	}
	// The bucket refills at 2/s, up to the burst.
	for _, step := range []struct {
		after time.Duration
		want  int
	}{{0, 0}, {500 * time.Millisecond, 1}, {time.Minute, 2}} {
		now = now.Add(step.after)
		r3.Reconcile(context.Background())
		if got := h3.takeLog(); len(got) != step.want {
			t.Fatalf("a pass %v later made %d changes, want %d: %v", step.after, len(got), step.want, got)
		}
	}
}

// A replica removed from its group closes it, but a fresh group that has
// not heard from a leader yet stays.
func TestRemoveGroupOnlyAfterMembership(t *testing.T) {
	four, nine, shard := droppedFromD()
	target := placement.ReplicaSet(shard, four, 3)
	h := newFakeHost("d", int(shard)+1)
	h.confs[shard] = &raft.Configuration{} // just opened
	now := time.Unix(1000, 0)
	m := &fakeMembers{alive(four...)}
	r := New(Config{Host: h, Members: m, Replicas: 3, Now: func() time.Time { return now }})
	r.Reconcile(context.Background())
	m.ms = alive(nine...) // d leaves the target before any leader contact
	r.Reconcile(context.Background())
	if len(h.removed) != 0 {
		t.Fatal("removed a group that no leader has contacted")
	}
	m.ms = alive(four...)
	h.confs[shard] = voters(target...)
	r.Reconcile(context.Background())
	if len(h.removed) != 0 {
		t.Fatal("removed a group that includes this node")
	}
	// Now d leaves the target and the leader removes it.
	m.ms = alive(nine...)
	var others []string
	for _, id := range target {
		if id != "d" {
			others = append(others, id)
		}
	}
	h.confs[shard] = voters(others...)
	r.Reconcile(context.Background())
	if !slices.Equal(h.removed, []uint32{shard}) {
		t.Fatalf("removed %v, want shard %d", h.removed, shard)
	}
}

// Target reports the replica set the latest pass aimed at, with the
// pass's eligibility: a member that left keeps its replicas for the grace
// period, as in the moves themselves.
func TestTarget(t *testing.T) {
	nodes := []string{"a", "b", "c", "d"}
	h := newFakeHost("a", 4)
	now := time.Unix(1000, 0)
	m := &fakeMembers{alive(nodes...)}
	r := New(Config{Host: h, Members: m, Replicas: 3, DeadGrace: 10 * time.Second, Now: func() time.Time { return now }})
	if got := r.Target(0); got != nil {
		t.Fatalf("target before any pass: %v, want nil", got)
	}
	r.Reconcile(context.Background())
	for s := uint32(0); s < 4; s++ {
		if got, want := r.Target(s), placement.ReplicaSet(s, nodes, 3); !slices.Equal(got, want) {
			t.Errorf("shard %d: target %v, want %v", s, got, want)
		}
	}
	// A shard whose target includes d; d leaves.
	shard := shardWhere(t, nodes, "d", "")
	m.ms[3].State, m.ms[3].Since = membership.Left, now
	now = now.Add(time.Second)
	r.Reconcile(context.Background())
	if got, want := r.Target(shard), placement.ReplicaSet(shard, nodes, 3); !slices.Equal(got, want) {
		t.Errorf("within the grace: target %v, want %v (d kept)", got, want)
	}
	now = now.Add(10 * time.Second)
	r.Reconcile(context.Background())
	if got, want := r.Target(shard), placement.ReplicaSet(shard, nodes[:3], 3); !slices.Equal(got, want) {
		t.Errorf("after the grace: target %v, want %v", got, want)
	}
}

// A replica that placement drops, and that never got the configuration
// removing it (raft sends it once, best effort), still lists itself. It
// closes its group only on the word of a member that leads the shard, and
// asks at most every askLeaderEvery.
func TestDroppedReplicaAsksTheLeader(t *testing.T) {
	four, nine, shard := droppedFromD()
	h := newFakeHost("d", int(shard)+1)
	h.confs[shard] = voters(placement.ReplicaSet(shard, four, 3)...) // still lists d
	leader := placement.ReplicaSet(shard, nine, 3)[0]
	var (
		leads   bool
		servers = placement.ReplicaSet(shard, nine, 3)
		asked   int
	)
	now := time.Unix(1000, 0)
	r := New(Config{Host: h, Members: &fakeMembers{alive(nine...)}, Replicas: 3, Now: func() time.Time { return now },
		LeaderReplicas: func(_ context.Context, m membership.Member, s uint32) ([]string, bool, error) {
			asked++
			if s != shard {
				t.Errorf("asked about shard %d", s)
			}
			if m.NodeID == leader {
				return servers, leads, nil
			}
			return nil, false, nil
		}})

	// No member says it leads: keep the group, however long.
	r.Reconcile(context.Background())
	if len(h.removed) != 0 || asked == 0 {
		t.Fatalf("removed %v after asking %d members, with no leader", h.removed, asked)
	}
	// A leader that still lists d: keep it.
	leads, servers = true, append(slices.Clone(servers), "d")
	now = now.Add(askLeaderEvery)
	r.Reconcile(context.Background())
	if len(h.removed) != 0 {
		t.Fatal("removed a group its leader still lists")
	}
	// The leader dropped d, but it was asked a moment ago: wait.
	servers = placement.ReplicaSet(shard, nine, 3)
	before := asked
	now = now.Add(time.Second)
	r.Reconcile(context.Background())
	if len(h.removed) != 0 || asked != before {
		t.Fatalf("asked again after 1s (%d asks) or removed %v", asked-before, h.removed)
	}
	now = now.Add(askLeaderEvery)
	r.Reconcile(context.Background())
	if !slices.Equal(h.removed, []uint32{shard}) {
		t.Fatalf("removed %v, want shard %d once its leader no longer lists d", h.removed, shard)
	}
}

// droppedFromD finds a shard that placement over four nodes gives d and
// over nine nodes does not.
func droppedFromD() (four, nine []string, shard uint32) {
	four = []string{"a", "b", "c", "d"}
	nine = []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}
	for ; ; shard++ {
		if slices.Contains(placement.ReplicaSet(shard, four, 3), "d") && !slices.Contains(placement.ReplicaSet(shard, nine, 3), "d") {
			return four, nine, shard
		}
	}
}

// A leader whose shard is placed as it should be hands the leadership to
// the shard's preferred leader (placement.Leaders), but only after leading
// it for LeaderSettle, and only to a voter that is alive and caught up.
func TestPreferredLeader(t *testing.T) {
	nodes := []string{"a", "b", "c"}
	sets := make([][]string, 3)
	for s := range sets {
		sets[s] = placement.ReplicaSet(uint32(s), nodes, 3)
	}
	leaders := placement.Leaders(sets)
	var want []string
	for s, l := range leaders {
		if l != "a" {
			want = append(want, fmt.Sprintf("%d transfer to %s", s, l))
		}
	}
	if len(want) != 2 {
		t.Fatalf("Leaders %v: want a, b and c to lead one shard each", leaders)
	}
	run := func(members []membership.Member, applied uint64, settle time.Duration) []string {
		h := newFakeHost("a", 3)
		for s := range uint32(3) {
			h.confs[s] = voters(sets[s]...)
			for i := range h.confs[s].Servers {
				h.confs[s].Servers[i].Address = raft.ServerAddress(h.confs[s].Servers[i].ID + ":1")
			}
			h.leads[s] = true
		}
		now := time.Unix(1000, 0)
		r := New(Config{Host: h, Members: &fakeMembers{members}, LeaderSettle: settle,
			AppliedIndex: func(context.Context, membership.Member, uint32) (uint64, error) { return applied, nil },
			Now:          func() time.Time { return now }})
		for range 9 {
			r.Reconcile(context.Background())
			now = now.Add(time.Second)
		}
		if got := h.takeLog(); len(got) > 0 {
			t.Fatalf("transferred before LeaderSettle: %v", got)
		}
		for range 5 {
			now = now.Add(time.Second)
			r.Reconcile(context.Background())
		}
		return h.takeLog()
	}
	if got := run(alive(nodes...), 1000, 10*time.Second); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// Lagging more than MaxLag (64) behind the commit index (1000).
	if got := run(alive(nodes...), 900, 10*time.Second); len(got) > 0 {
		t.Fatalf("transferred to a lagging voter: %v", got)
	}
	ms := alive(nodes...)
	ms[1].State, ms[2].State = membership.Suspect, membership.Suspect
	if got := run(ms, 1000, 10*time.Second); len(got) > 0 {
		t.Fatalf("transferred to a suspect member: %v", got)
	}
	ms = alive(nodes...)
	ms[1].Stopping, ms[2].Stopping = true, true
	if got := run(ms, 1000, 10*time.Second); len(got) > 0 {
		t.Fatalf("transferred to a member that is stopping: %v", got)
	}
	if got := run(alive(nodes...), 1000, -1); len(got) > 0 {
		t.Fatalf("transferred with leader balancing off: %v", got)
	}
}
