// Package faults decides which faults a chaos run injects and when (the
// schedule, a pure function of the seed), and injects them into the
// cluster (the Injector), recording each one with its start and end.
//
// A schedule is a sequence of slots of 5 to 10 s. Each slot holds one
// fault, healed before the slot ends, or nothing (a quiet period, so
// that the cluster shows it recovers and the workload makes progress).
// The kinds are dealt from a shuffled deck, so a run long enough to deal
// the deck once has seen every kind.
package faults

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Kind is a kind of fault.
type Kind string

const (
	// kill -9 of the leader of a shard, of a random node, or of every
	// node; then a restart on the same data.
	KillLeader Kind = "kill-leader"
	KillRandom Kind = "kill-random"
	KillAll    Kind = "kill-all"
	// SIGSTOP of a shard's leader, SIGCONT 2 to 10 s later.
	PauseLeader Kind = "pause-leader"
	// One node cut from all the others.
	PartitionOne Kind = "partition-one"
	// A majority and a minority that cannot reach each other.
	PartitionMajority Kind = "partition-majority"
	// Each node reaches only its ring neighbours: every node sees a
	// majority, but no two see the same one. Needs 5 nodes or more.
	PartitionRing Kind = "partition-ring"
	// One node's gossip cut, raft up; and the other way round.
	PartitionGossip Kind = "partition-gossip"
	PartitionRaft   Kind = "partition-raft"
	// One node's traffic to the others slowed, or partly dropped.
	Delay Kind = "delay"
	Loss  Kind = "loss"
	// A follower down long enough for the others to snapshot and compact
	// their logs past it, so that it may have to catch up from a snapshot.
	SnapshotCatchup Kind = "snapshot-catchup"
	// One node's wall clock shifted by an hour, then back.
	ClockJump Kind = "clock-jump"

	// Quiet is a slot without a fault.
	Quiet Kind = "quiet"
)

// All is every fault kind, in a fixed order.
var All = []Kind{
	KillLeader, KillRandom, KillAll, PauseLeader,
	PartitionOne, PartitionMajority, PartitionRing, PartitionGossip, PartitionRaft,
	Delay, Loss, SnapshotCatchup, ClockJump,
}

// RingMinNodes is the fewest nodes a ring partition makes sense with:
// below it, a node's neighbours plus itself are the whole cluster or not
// a majority.
const RingMinNodes = 5

// ErrUnknownKind is wrapped by ParseKinds for a name not in All.
var ErrUnknownKind = errors.New("faults: unknown fault kind")

// ParseKinds reads "all" or a comma-separated list of kinds. Kinds that
// cannot run with this many nodes are left out and named in skipped.
func ParseKinds(s string, nodes int) (kinds []Kind, skipped []string, err error) {
	var want []Kind
	if strings.TrimSpace(s) == "all" {
		want = All
	} else {
		for f := range strings.SplitSeq(s, ",") {
			k := Kind(strings.TrimSpace(f))
			if k == "" {
				continue
			}
			if !slices.Contains(All, k) {
				return nil, nil, fmt.Errorf("%w: %q (want all or some of %v)", ErrUnknownKind, k, All)
			}
			if !slices.Contains(want, k) {
				want = append(want, k)
			}
		}
	}
	for _, k := range want {
		if k == PartitionRing && nodes < RingMinNodes {
			skipped = append(skipped, fmt.Sprintf("%s needs %d nodes, have %d", k, RingMinNodes, nodes))
			continue
		}
		kinds = append(kinds, k)
	}
	return kinds, skipped, nil
}

// Slot bounds: a fault starts every MinGap to MaxGap, and heals at least
// Settle before the next one starts.
const (
	MinGap = 5 * time.Second
	MaxGap = 10 * time.Second
	Settle = time.Second
	// MinFinal is the shortest remainder of a run that gets a final
	// fault.
	MinFinal = 3 * time.Second
)

// Step is one slot of a schedule. The random choices are made here, so
// that a seed gives the same run; only "the leader" is looked up when the
// step is injected.
type Step struct {
	// At is when the fault starts, from the start of the schedule; the
	// next step starts at At+Gap.
	At  time.Duration
	Gap time.Duration
	// Kind is the fault, or Quiet.
	Kind Kind
	// Hold is how long the fault lasts before it is healed: how long a
	// killed node stays down, a paused one frozen, a partition up.
	Hold time.Duration
	// Final marks the last step, which fills the rest of the run (Gap
	// may be under MinGap) and is healed only when the run ends.
	Final bool

	// Leader: the fault targets the leader of a shard (the hot shard if
	// HotShard, else shard ShardPick mod the shard count) rather than
	// Node.
	Leader    bool
	HotShard  bool
	ShardPick uint32
	// Node is the random node (index) of a fault that takes one.
	Node int
	// Minority is the smaller side of a majority/minority partition.
	Minority []int
	// Clock jump.
	Offset time.Duration
	// Delay and loss.
	Latency time.Duration
	Rate    string
	Loss    float64
}

// Schedule is the steps of a run of the given duration, a pure function
// of its arguments. The first slot is quiet, so that the workload is
// going before the first fault; about one slot in six after it is quiet
// too (dealt with the faults). The rest of the run after the last whole
// slot, if at least MinFinal, is a Final fault held to the end.
func Schedule(seed int64, nodes int, kinds []Kind, duration time.Duration) []Step {
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(nodes)*0x9e3779b97f4a7c15))
	between := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		// Whole milliseconds, so that schedules print and compare simply.
		return lo + time.Duration(rng.Int64N(int64((hi-lo)/time.Millisecond)+1))*time.Millisecond
	}
	// Quiet slots are dealt from the deck too, one per six faults or so,
	// so that they never delay a kind's first appearance by much.
	quiets := max(1, (len(kinds)+3)/6)
	var deck []Kind
	deal := func() Kind {
		if len(deck) == 0 {
			deck = slices.Clone(kinds)
			for range quiets {
				deck = append(deck, Quiet)
			}
			rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
		}
		k := deck[0]
		deck = deck[1:]
		return k
	}
	var steps []Step
	for at := time.Duration(0); ; {
		st := Step{At: at, Gap: between(MinGap, MaxGap), Kind: Quiet}
		if len(steps) > 0 && len(kinds) > 0 {
			if st.Kind = deal(); st.Kind != Quiet {
				fill(&st, rng, nodes, between)
			}
		}
		if at+st.Gap > duration {
			// What is left of the run, if long enough, holds one more
			// fault that only the final heal ends, so that the liveness
			// check after that heal times a real recovery.
			if rest := duration - at; len(steps) > 0 && len(kinds) > 0 && rest >= MinFinal {
				k := st.Kind
				for k == Quiet {
					k = deal()
				}
				fin := Step{At: at, Gap: rest, Kind: k}
				fill(&fin, rng, nodes, between)
				fin.Hold, fin.Final = rest, true
				steps = append(steps, fin)
			}
			break
		}
		steps = append(steps, st)
		at += st.Gap
	}
	return steps
}

// fill makes the random choices of a fault step.
func fill(st *Step, rng *rand.Rand, nodes int, between func(lo, hi time.Duration) time.Duration) {
	maxHold := st.Gap - Settle
	hold := func(lo, hi time.Duration) time.Duration { return between(min(lo, maxHold), min(hi, maxHold)) }
	st.Node = rng.IntN(nodes)
	st.HotShard = rng.IntN(10) < 7
	st.ShardPick = rng.Uint32()
	switch st.Kind {
	case KillLeader:
		st.Leader, st.Hold = true, hold(2*time.Second, 4*time.Second)
	case KillRandom:
		st.Hold = hold(2*time.Second, 4*time.Second)
	case KillAll:
		st.Hold = hold(time.Second, 3*time.Second)
	case PauseLeader:
		st.Leader, st.Hold = true, hold(2*time.Second, 10*time.Second)
	case PartitionOne, PartitionGossip, PartitionRaft, Delay, Loss:
		st.Leader = rng.IntN(2) == 0
		st.Hold = hold(3*time.Second, maxHold)
	case PartitionMajority:
		// The leader goes to the minority half of the time; the rest of
		// the minority is random.
		st.Leader = rng.IntN(2) == 0
		st.Minority = rng.Perm(nodes)[:nodes/2]
		slices.Sort(st.Minority)
		st.Hold = hold(3*time.Second, maxHold)
	case PartitionRing:
		st.Hold = hold(3*time.Second, maxHold)
	case SnapshotCatchup:
		// As long as the slot allows: the longer the follower is away,
		// the more the others' logs move on without it.
		st.Leader = false
		st.Hold = maxHold
	case ClockJump:
		st.Offset = time.Hour
		if rng.IntN(2) == 0 {
			st.Offset = -time.Hour
		}
		st.Hold = hold(3*time.Second, maxHold)
	}
	switch st.Kind {
	case Delay:
		st.Latency = between(100*time.Millisecond, 500*time.Millisecond)
		st.Rate = []string{"128kbit", "256kbit", "512kbit"}[rng.IntN(3)]
	case Loss:
		st.Loss = float64(10+rng.IntN(31)) / 100
	}
}

// RingConnected says whether a and b are connected in a ring partition of
// n nodes: each node keeps the nodes within k places of it around the
// ring, k the smallest for which that (2k+1 nodes) is a majority. With 5
// nodes each node sees itself and its two neighbours: 3 of 5, a majority,
// and a different one for every node.
func RingConnected(n int) func(a, b int) bool {
	k := (n/2 + 1) / 2 // 2k+1 >= n/2+1
	return func(a, b int) bool {
		d := (a - b + n) % n
		return min(d, n-d) <= k
	}
}

// String is a one-line description of a step, for logs and the plan.
func (s Step) String() string {
	if s.Kind == Quiet {
		return fmt.Sprintf("%7.3fs quiet for %v", s.At.Seconds(), s.Gap)
	}
	target := fmt.Sprintf("node %d", s.Node+1)
	switch {
	case s.Kind == KillAll || s.Kind == PartitionRing:
		target = "all"
	case s.Kind == PartitionMajority:
		target = fmt.Sprintf("minority %v", s.Minority)
		if s.Leader {
			target += " + leader"
		}
	case s.Kind == SnapshotCatchup:
		target = "a follower"
	case s.Leader:
		target = "leader"
	}
	if s.Final {
		return fmt.Sprintf("%7.3fs %s (%s) until the final heal", s.At.Seconds(), s.Kind, target)
	}
	return fmt.Sprintf("%7.3fs %s (%s) hold %v", s.At.Seconds(), s.Kind, target, s.Hold)
}
