package report

import (
	"fmt"
	"time"
)

// Target is one of the throughput issue's goals, evaluated on a run.
type Target struct {
	Name   string `json:"name"`
	Layout string `json:"layout"`
	// Ours and Peer are the compared figures as text; Peer is empty for
	// an absolute goal.
	Ours string `json:"ours"`
	Peer string `json:"peer,omitempty"`
	// Ratio is ours over the peer's (for latency: the peer's over ours, so
	// above 1 is better either way); 0 for an absolute goal.
	Ratio float64 `json:"ratio,omitempty"`
	Goal  string  `json:"goal"`
	Met   bool    `json:"met"`
}

// metric is what a goal compares.
type metric int

const (
	throughput metric = iota // ours ≥ factor × peer's ops/s
	p99Ratio                 // ours p99 ≤ peer's p99
	p99Bound                 // ours p99 ≤ bound
)

// goal is a target before it meets a run. Ours is a Ration row (its
// layout is filled per layout); Peer is unset for p99Bound.
type goal struct {
	name   string
	ours   Key
	peer   Key
	metric metric
	factor float64
	bound  time.Duration
}

func ration(nodes int, load string) Key {
	return Key{System: Ration, Nodes: nodes, Load: load, Clients: 64}
}

func peer(system string, nodes int, load string) Key {
	return Key{System: system, Nodes: nodes, Load: load, Clients: 64}
}

// goals are the targets, in its order.
var goals = []goal{
	{name: "3 nodes, 1 deduction per call, 64 clients vs etcd 3 members Put", ours: ration(3, LoadWrite), peer: peer(Etcd, 3, LoadWrite), metric: throughput, factor: 1},
	{name: "… its p99 vs etcd 3 members Put p99", ours: ration(3, LoadWrite), peer: peer(Etcd, 3, LoadWrite), metric: p99Ratio},
	{name: "3 nodes, 1 deduction per call vs etcd 3 members CAS ledger", ours: ration(3, LoadWrite), peer: peer(Etcd, 3, LoadCAS), metric: throughput, factor: 4},
	{name: "1 node, 1 deduction per call vs etcd 1 member Put", ours: ration(1, LoadWrite), peer: peer(Etcd, 1, LoadWrite), metric: throughput, factor: 1},
	{name: "1 node, 1 deduction per call vs PostgreSQL ledger", ours: ration(1, LoadWrite), peer: peer(Postgres, 1, LoadWrite), metric: throughput, factor: 2},
	{name: "3 nodes, Batch of 64 (deductions/s) vs etcd 3 members Put", ours: ration(3, LoadBatch), peer: peer(Etcd, 3, LoadWrite), metric: throughput, factor: 5},
	{name: "… p99 per Batch call", ours: ration(3, LoadBatch), metric: p99Bound, bound: 100 * time.Millisecond},
	{name: "1 node, linearizable balance reads vs etcd 1 member linearizable Get", ours: ration(1, LoadRead), peer: peer(Etcd, 1, LoadRead), metric: throughput, factor: 1.5},
	{name: "3 nodes, linearizable balance reads vs etcd 3 members linearizable Get", ours: ration(3, LoadRead), peer: peer(Etcd, 3, LoadRead), metric: throughput, factor: 1.5},
	{name: "3 nodes, stale balance reads vs etcd 3 members linearizable Get", ours: ration(3, LoadStale), peer: peer(Etcd, 3, LoadRead), metric: throughput, factor: 3},
	{name: "1 node, p99 at half its best write rate (open loop)", ours: ration(1, LoadOpen), metric: p99Bound, bound: 20 * time.Millisecond},
	{name: "3 nodes, p99 at half its best write rate (open loop)", ours: ration(3, LoadOpen), metric: p99Bound, bound: 50 * time.Millisecond},
}

// Targets evaluates every goal whose rows the run has, for each layout
// in the order given.
func Targets(rows []Row, layouts []string) []Target {
	var out []Target
	for _, layout := range layouts {
		for _, g := range goals {
			k := g.ours
			k.Layout = layout
			ours, ok := Find(rows, k)
			if !ok {
				continue
			}
			var p Row
			if g.metric != p99Bound {
				if p, ok = Find(rows, g.peer); !ok {
					continue
				}
			}
			out = append(out, g.evaluate(layout, ours, p))
		}
	}
	return out
}

func (g goal) evaluate(layout string, ours, peer Row) Target {
	t := Target{Name: g.name, Layout: layout}
	switch g.metric {
	case throughput:
		t.Ours, t.Peer = Rate(ours.OpsPerSec)+"/s", Rate(peer.OpsPerSec)+"/s"
		t.Ratio = ratio(ours.OpsPerSec, peer.OpsPerSec)
		t.Goal = fmt.Sprintf("≥ %.1f×", g.factor)
		t.Met = t.Ratio >= g.factor
	case p99Ratio:
		t.Ours, t.Peer = "p99 "+Latency(ours.P99), "p99 "+Latency(peer.P99)
		t.Ratio = ratio(float64(peer.P99), float64(ours.P99))
		t.Goal = "p99 ≤ peer's"
		t.Met = ours.P99 <= peer.P99
	case p99Bound:
		t.Ours = "p99 " + Latency(ours.P99)
		t.Goal = "p99 ≤ " + Latency(g.bound)
		t.Met = ours.P99 <= g.bound
	}
	// A row whose calls failed has not shown the figure it reports.
	if ours.Errors > 0 || peer.Errors > 0 {
		t.Met = false
	}
	return t
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
