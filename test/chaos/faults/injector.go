package faults

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ration/ration/test/chaos/netns"
	"github.com/ration/ration/test/chaos/nodes"
)

// Network is what the injector does to the network (netns.Net).
type Network interface {
	Partition(ctx context.Context, connected func(a, b int) bool, ports ...netns.Port) error
	Delay(ctx context.Context, i int, s netns.Slowdown) (netns.Shaping, error)
	Loss(ctx context.Context, i int, p float64) (netns.Shaping, error)
	Heal(ctx context.Context) error
}

// Cluster is what the injector does to the nodes (nodes.Cluster).
type Cluster interface {
	Size() int
	ID(i int) string
	State(i int) nodes.State
	Start(i int) error
	Kill(i int) error
	Pause(i int) error
	Resume(i int) error
	Shard(ctx context.Context, shard uint32) (leader int, replicas []int, err error)
	SetClock(ctx context.Context, i int, offset time.Duration) error
}

// Record is one injected fault: what, on whom, how, and when. End is
// when it was healed (zero if it never took effect).
type Record struct {
	Kind   string
	Target string
	Detail string
	Start  time.Time
	End    time.Time
}

// Injector injects the steps of a schedule.
type Injector struct {
	Net     Network
	Cluster Cluster
	// Shards is the cluster's shard count. HotShard, if set, names the
	// shard the workload uses most so far (false: not known yet). "The
	// leader" of a step is the leader of that shard or of a shard the
	// step picks.
	Shards   int
	HotShard func() (uint32, bool)
	// GossipPort is the port the gossip partition cuts. RaftPort and
	// ActorPort (protoactor remote, the forwarding hop) are the node to
	// node data plane, which the raft partition cuts.
	GossipPort, RaftPort, ActorPort int
	Logger                          *slog.Logger

	mu      sync.Mutex
	records []Record
	notes   []string
	jumped  map[int]bool
}

// Records are the faults injected so far.
func (in *Injector) Records() []Record {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.records)
}

// Notes are remarks for the report: fallbacks used, faults skipped.
func (in *Injector) Notes() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.notes)
}

func (in *Injector) note(s string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !slices.Contains(in.notes, s) {
		in.notes = append(in.notes, s)
	}
}

func (in *Injector) log() *slog.Logger {
	if in.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return in.Logger
}

// Run injects steps, each at start+At and healed after its Hold, until
// the steps are done or ctx ends (the fault in progress is then healed
// at once). A fault that fails to inject is recorded with the error and
// the run goes on: the cluster is what is under test, not the harness.
func (in *Injector) Run(ctx context.Context, start time.Time, steps []Step) error {
	for _, st := range steps {
		if !sleepUntil(ctx, start.Add(st.At)) {
			return ctx.Err()
		}
		if st.Kind == Quiet {
			continue
		}
		in.Inject(ctx, st)
	}
	return nil
}

// Inject applies one step: the fault, its hold, its heal. It returns the
// record, also kept in Records.
func (in *Injector) Inject(ctx context.Context, st Step) Record {
	rec := Record{Kind: string(st.Kind), Start: time.Now()}
	heal, err := in.apply(ctx, st, &rec)
	if err != nil {
		rec.Detail = strings.TrimPrefix(rec.Detail+"; failed: "+err.Error(), "; ")
		in.log().Warn("fault failed", "kind", st.Kind, "target", rec.Target, "err", err)
	} else {
		in.log().Info("fault", "kind", st.Kind, "target", rec.Target, "detail", rec.Detail, "hold", st.Hold)
	}
	if heal != nil {
		sleepUntil(ctx, rec.Start.Add(st.Hold))
		// Heal even when the run is being cancelled: nothing may stay
		// cut, frozen or down.
		if err := heal(context.WithoutCancel(ctx)); err != nil {
			rec.Detail += "; heal failed: " + err.Error()
			in.log().Warn("heal failed", "kind", st.Kind, "err", err)
		}
		rec.End = time.Now()
	}
	in.mu.Lock()
	in.records = append(in.records, rec)
	in.mu.Unlock()
	return rec
}

// apply injects st and returns how to heal it. heal is non-nil whenever
// something may have been changed, even if err is not nil.
func (in *Injector) apply(ctx context.Context, st Step, rec *Record) (heal func(context.Context) error, err error) {
	n := in.Cluster.Size()
	switch st.Kind {
	case KillLeader, KillRandom, SnapshotCatchup:
		i, how := in.target(ctx, st)
		rec.Target, rec.Detail = in.Cluster.ID(i), fmt.Sprintf("%s; down %v", how, st.Hold.Round(time.Millisecond))
		// Started again at the heal even if the kill failed: a node found
		// down had crashed (Crashes says so), and the run goes on whole.
		return func(context.Context) error { return in.Cluster.Start(i) }, in.Cluster.Kill(i)

	case KillAll:
		rec.Target, rec.Detail = "all", fmt.Sprintf("down %v", st.Hold.Round(time.Millisecond))
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = in.Cluster.Kill(i) })
		}
		wg.Wait()
		return in.startAll, errors.Join(errs...)

	case PauseLeader:
		i, how := in.target(ctx, st)
		rec.Target, rec.Detail = in.Cluster.ID(i), fmt.Sprintf("%s; frozen %v", how, st.Hold.Round(time.Millisecond))
		if err := in.Cluster.Pause(i); err != nil {
			return nil, err
		}
		return func(context.Context) error { return in.Cluster.Resume(i) }, nil

	case PartitionOne, PartitionGossip, PartitionRaft:
		i, how := in.target(ctx, st)
		var ports []netns.Port
		switch st.Kind {
		case PartitionGossip:
			ports = []netns.Port{netns.TCP(in.GossipPort), netns.UDP(in.GossipPort)}
			how += "; gossip cut, raft up"
		case PartitionRaft:
			ports = []netns.Port{netns.TCP(in.RaftPort)}
			if in.ActorPort != 0 {
				ports = append(ports, netns.TCP(in.ActorPort))
			}
			how += "; raft and actor ports cut, gossip up"
		}
		rec.Target, rec.Detail = in.Cluster.ID(i), how
		err := in.Net.Partition(ctx, func(a, b int) bool { return a != i && b != i }, ports...)
		return in.Net.Heal, err

	case PartitionMajority:
		minority := slices.Clone(st.Minority)
		how := "random minority"
		if st.Leader {
			if l, lhow := in.target(ctx, st); !slices.Contains(minority, l) && len(minority) > 0 {
				// Swap the leader in for the minority's first member.
				minority[0] = l
				slices.Sort(minority)
				how = lhow + " in the minority"
			}
		}
		var majority []int
		for i := range n {
			if !slices.Contains(minority, i) {
				majority = append(majority, i)
			}
		}
		rec.Target = in.ids(majority) + " | " + in.ids(minority)
		rec.Detail = how
		err := in.Net.Partition(ctx, func(a, b int) bool {
			return slices.Contains(minority, a) == slices.Contains(minority, b)
		})
		return in.Net.Heal, err

	case PartitionRing:
		rec.Target, rec.Detail = "all", ringDetail(n, in.Cluster.ID)
		return in.Net.Heal, in.Net.Partition(ctx, RingConnected(n))

	case Delay:
		i, how := in.target(ctx, st)
		rec.Target = in.Cluster.ID(i)
		sh, err := in.Net.Delay(ctx, i, netns.Slowdown{Latency: st.Latency, Rate: st.Rate})
		switch sh {
		case netns.Netem:
			rec.Detail = fmt.Sprintf("%s; netem delay %v", how, st.Latency)
		default:
			rec.Detail = fmt.Sprintf("%s; tbf rate %s, queue up to %v (no netem)", how, st.Rate, st.Latency)
			in.note("delay: tc netem is not available in this kernel; used an htb/tbf rate limit (queueing delay) instead")
		}
		return in.Net.Heal, err

	case Loss:
		i, how := in.target(ctx, st)
		rec.Target = in.Cluster.ID(i)
		sh, err := in.Net.Loss(ctx, i, st.Loss)
		rec.Detail = fmt.Sprintf("%s; %.0f%% of packets to and from the other nodes dropped via %s", how, st.Loss*100, sh)
		if sh == netns.IptablesStatistic {
			in.note("loss: tc netem is not available in this kernel; used iptables -m statistic random drops instead")
		}
		return in.Net.Heal, err

	case ClockJump:
		i := st.Node % n
		rec.Target, rec.Detail = in.Cluster.ID(i), fmt.Sprintf("clock %+v", st.Offset)
		err := in.Cluster.SetClock(ctx, i, st.Offset)
		if errors.Is(err, nodes.ErrNoClockHook) {
			rec.Detail = "skipped: the node binary has no chaos clock (build it with -tags chaos)"
			in.note("clock-jump skipped: the node binary was built without -tags chaos")
			return nil, nil
		}
		in.mu.Lock()
		if in.jumped == nil {
			in.jumped = map[int]bool{}
		}
		in.jumped[i] = true
		in.mu.Unlock()
		return func(ctx context.Context) error {
			if err := in.Cluster.SetClock(ctx, i, 0); err != nil {
				return err
			}
			in.mu.Lock()
			delete(in.jumped, i)
			in.mu.Unlock()
			return nil
		}, err
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownKind, st.Kind)
}

// target resolves a step's node: a shard's leader, a follower for a
// snapshot catch-up, or the step's random node; how says which.
func (in *Injector) target(ctx context.Context, st Step) (int, string) {
	n := in.Cluster.Size()
	random := st.Node % n
	if !st.Leader && st.Kind != SnapshotCatchup {
		return random, "random node"
	}
	shard, which := st.ShardPick%uint32(max(in.Shards, 1)), "shard"
	if st.HotShard && in.HotShard != nil {
		if hot, ok := in.HotShard(); ok {
			shard, which = hot, "hot shard"
		}
	}
	leader, replicas, err := in.shard(ctx, shard)
	if st.Kind == SnapshotCatchup {
		var followers []int
		for _, r := range replicas {
			if r != leader {
				followers = append(followers, r)
			}
		}
		if len(followers) == 0 {
			return random, fmt.Sprintf("no follower of %s %d known, random node", which, shard)
		}
		return followers[st.Node%len(followers)], fmt.Sprintf("follower of %s %d", which, shard)
	}
	if err != nil {
		return random, fmt.Sprintf("no leader of %s %d known, random node", which, shard)
	}
	return leader, fmt.Sprintf("leader of %s %d", which, shard)
}

// shard asks for a shard's leader for a little while: right after a
// fault the cluster may be electing.
func (in *Injector) shard(ctx context.Context, shard uint32) (int, []int, error) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		leader, replicas, err := in.Cluster.Shard(qctx, shard)
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return leader, replicas, err
		}
		sleepUntil(ctx, time.Now().Add(200*time.Millisecond))
	}
}

func (in *Injector) startAll(context.Context) error {
	var errs []error
	for i := range in.Cluster.Size() {
		errs = append(errs, in.Cluster.Start(i))
	}
	return errors.Join(errs...)
}

// HealAll undoes whatever may be left: the network healed, frozen nodes
// thawed, shifted clocks put back, nodes that are down started.
func (in *Injector) HealAll(ctx context.Context) error {
	errs := []error{in.Net.Heal(ctx)}
	in.mu.Lock()
	jumped := in.jumped
	in.jumped = nil
	in.mu.Unlock()
	for i := range in.Cluster.Size() {
		switch in.Cluster.State(i) {
		case nodes.Paused:
			errs = append(errs, in.Cluster.Resume(i))
		case nodes.Down:
			errs = append(errs, in.Cluster.Start(i))
		}
		if jumped[i] {
			errs = append(errs, in.Cluster.SetClock(ctx, i, 0))
		}
	}
	return errors.Join(errs...)
}

func (in *Injector) ids(idx []int) string {
	var s []string
	for _, i := range idx {
		s = append(s, in.Cluster.ID(i))
	}
	return strings.Join(s, ",")
}

// ringDetail lists what every node sees in a ring partition.
func ringDetail(n int, id func(int) string) string {
	conn := RingConnected(n)
	var parts []string
	for a := range n {
		var sees []string
		for b := range n {
			if b != a && conn(a, b) {
				sees = append(sees, id(b))
			}
		}
		parts = append(parts, id(a)+" sees "+strings.Join(sees, ","))
	}
	return strings.Join(parts, "; ")
}

// sleepUntil waits until t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
