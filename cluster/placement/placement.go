// Package placement decides which nodes hold each shard's replicas. It is
// pure: the same inputs give the same answer on every node, in every
// process and release, so nodes agree on placement without talking about
// it. See DESIGN.md.
package placement

import (
	"cmp"
	"slices"
	"time"

	"github.com/ration/ration/cluster/membership"
)

// DefaultDeadGrace is how long a dead member keeps its replicas when
// Eligible is given no grace period.
const DefaultDeadGrace = 30 * time.Second

// ReplicaSet returns the nodes that should hold shard's replicas:
// min(replicas, distinct nodes) of them, by rendezvous (highest random
// weight) hashing, highest weight first. The first is the preferred
// leader. The answer depends only on the set of nodes, not on their order
// or repetitions; empty ids are ignored, as no node can have one.
//
// Rendezvous hashing moves no more than it must: a node joining takes a
// replica only where it outranks a holder, and a node leaving hands its
// replicas to the next-ranked node, leaving every other shard alone.
func ReplicaSet(shard uint32, nodes []string, replicas int) []string {
	if replicas <= 0 || len(nodes) == 0 {
		return nil
	}
	ranked := make([]weighted, 0, len(nodes))
	for _, n := range nodes {
		if n != "" {
			ranked = append(ranked, weighted{w: weight(shard, n), node: n})
		}
	}
	// Equal ids have equal weights, so after sorting duplicates are
	// adjacent; ties between distinct ids (a 2^-64 event) go to the
	// smaller id so the order stays total.
	slices.SortFunc(ranked, func(a, b weighted) int {
		if c := cmp.Compare(b.w, a.w); c != 0 {
			return c
		}
		return cmp.Compare(a.node, b.node)
	})
	ranked = slices.CompactFunc(ranked, func(a, b weighted) bool { return a.node == b.node })
	out := make([]string, 0, min(replicas, len(ranked)))
	for _, r := range ranked[:min(replicas, len(ranked))] {
		out = append(out, r.node)
	}
	return out
}

type weighted struct {
	w    uint64
	node string
}

// weight is the rendezvous score of node for shard: FNV-1a 64 over the
// shard (4 bytes, big-endian) then the node id, finished by splitmix64.
// FNV alone mixes its last bytes poorly (ids such as ration-1, ration-2
// differ only there), which splitmix64's avalanche repairs. Both are fixed
// functions: placement must agree across nodes and releases, so this can
// never be hash/maphash (seeded per process) nor change without a
// migration.
func weight(shard uint32, node string) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for _, b := range [4]byte{byte(shard >> 24), byte(shard >> 16), byte(shard >> 8), byte(shard)} {
		h ^= uint64(b)
		h *= prime64
	}
	for i := 0; i < len(node); i++ {
		h ^= uint64(node[i])
		h *= prime64
	}
	return splitmix64(h)
}

// splitmix64 is the finaliser of Steele, Lea and Flood's SplitMix64.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Plan is what must change for a shard to go from its current replica set
// to its target.
type Plan struct {
	Shard uint32
	// Current is the replica set given to Diff, duplicates removed.
	Current []string
	// Target is ReplicaSet over the eligible nodes; Target[0] is the
	// preferred leader.
	Target []string
	// Add lists the target nodes missing from Current, in Target order.
	Add []string
	// Remove lists the current nodes not in Target, in Current order.
	Remove []string
}

// Changed reports whether the plan adds or removes anything.
func (p Plan) Changed() bool { return len(p.Add) > 0 || len(p.Remove) > 0 }

// Diff compares shard's current replica set with its target over the
// eligible nodes.
//
// It only says where placement should end up. Whoever carries it out must
// keep the shard available on the way: add (and let catch up) before
// removing, never remove a majority at once, and not act on a Target that
// is empty or smaller than a quorum of Current, which is what a node
// cut off from its peers would compute.
func Diff(shard uint32, current []string, eligible []string, replicas int) Plan {
	p := Plan{Shard: shard, Target: ReplicaSet(shard, eligible, replicas)}
	for _, n := range current {
		if n != "" && !slices.Contains(p.Current, n) {
			p.Current = append(p.Current, n)
		}
	}
	for _, n := range p.Target {
		if !slices.Contains(p.Current, n) {
			p.Add = append(p.Add, n)
		}
	}
	for _, n := range p.Current {
		if !slices.Contains(p.Target, n) {
			p.Remove = append(p.Remove, n)
		}
	}
	return p
}

// Eligible returns, sorted, the ids of the members that may hold
// replicas at time now:
//   - Alive and Suspect members: suspicion is often a slow node, and
//     moving a shard's data costs far more than waiting for the verdict;
//   - Dead members until they have been dead longer than deadGrace
//     (DefaultDeadGrace when deadGrace <= 0): a restart or a rescheduled
//     pod comes back within it and keeps its replicas;
//   - not Left members: they said they are gone.
//
// Since is the observer's clock, so nodes may disagree for a moment at the
// edge of the grace period; only one node (the shard's leader) should act
// on the result.
func Eligible(members []membership.Member, now time.Time, deadGrace time.Duration) []string {
	if deadGrace <= 0 {
		deadGrace = DefaultDeadGrace
	}
	out := make([]string, 0, len(members))
	for _, m := range members {
		switch m.State {
		case membership.Alive, membership.Suspect:
		case membership.Dead:
			if now.Sub(m.Since) > deadGrace {
				continue
			}
		default:
			continue
		}
		if m.NodeID != "" {
			out = append(out, m.NodeID)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// NextExpiry returns when the earliest grace period of a Dead member still
// eligible at now runs out, so a caller can re-plan then: membership sends
// no notification when a grace period ends. ok is false when no grace
// period is running.
func NextExpiry(members []membership.Member, now time.Time, deadGrace time.Duration) (at time.Time, ok bool) {
	if deadGrace <= 0 {
		deadGrace = DefaultDeadGrace
	}
	for _, m := range members {
		if m.State != membership.Dead || now.Sub(m.Since) > deadGrace {
			continue
		}
		// Eligible keeps a member at exactly deadGrace; it drops out just
		// after.
		end := m.Since.Add(deadGrace + time.Nanosecond)
		if !ok || end.Before(at) {
			at, ok = end, true
		}
	}
	return at, ok
}

// Leaders returns a preferred leader for each shard, given each shard's
// target replica set (ReplicaSet's answer, highest weight first): the
// member of the set that leads the fewest of the shards before it, ties to
// the higher-ranked. Shards are visited in order, so the answer depends
// only on sets, and every node that sees the same members agrees.
//
// Why not sets[s][0]: the first of each set is balanced only in
// expectation, and with few shards it is far off (3 shards on 3 nodes are
// led by 3 distinct nodes in only 2 cases out of 9). A leader does the
// shard's proposing, fsyncs first and answers its clients, so an uneven
// spread makes one node the whole cluster's bottleneck. Greedy counting
// gives every node of a full cluster its share to within one shard. An
// empty set gets "".
func Leaders(sets [][]string) []string {
	out := make([]string, len(sets))
	led := map[string]int{}
	for s, set := range sets {
		best := ""
		for _, n := range set {
			if best == "" || led[n] < led[best] {
				best = n
			}
		}
		if best != "" {
			led[best]++
		}
		out[s] = best
	}
	return out
}
