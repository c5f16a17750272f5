package main

import (
	"slices"

	"github.com/ration/ration/bench/report"
)

// config is one system configuration to start, with the rows to run on
// it in order.
type config struct {
	system string
	layout string // Ration only
	nodes  int
	rows   []rowSpec
}

// rowSpec is one row before it is run. An open-loop row's rate is half
// the best closed-loop write rate of the rows before it.
type rowSpec struct {
	load    string
	clients int
}

// loads says which loads each system offers.
var loads = map[string][]string{
	report.Ration:   {report.LoadWrite, report.LoadAlone, report.LoadBatch, report.LoadRead, report.LoadStale, report.LoadOpen},
	report.Etcd:     {report.LoadWrite, report.LoadCAS, report.LoadRead, report.LoadOpen},
	report.Postgres: {report.LoadWrite, report.LoadRead, report.LoadOpen},
}

// plan lists the configurations and rows o asks for. The quick plan is
// the 64-client rows of Ration on 3 nodes and etcd with 3 members; the
// full plan adds 1 node, PostgreSQL, the concurrency sweep of writes and
// the open-loop row.
func plan(o options) []config {
	var out []config
	nodes, systems := o.nodes, o.systems
	if o.quick {
		nodes = []int{3}
		systems = slices.DeleteFunc(slices.Clone(systems), func(s string) bool { return s == report.Postgres })
	}
	for _, n := range nodes {
		for _, s := range systems {
			switch {
			case s == report.Postgres && n != 1:
				continue
			case s == report.Ration:
				for _, l := range o.layouts {
					out = append(out, config{system: s, layout: l, nodes: n, rows: rows(o, s, n)})
				}
			default:
				out = append(out, config{system: s, nodes: n, rows: rows(o, s, n)})
			}
		}
	}
	return out
}

// rows are a configuration's rows: first every load at o.clients, then
// the sweep's other client counts of writes, then the open loop.
func rows(o options, system string, nodes int) []rowSpec {
	var out []rowSpec
	for _, l := range loads[system] {
		// Stale reads differ from linearizable ones only with replicas
		// to choose from.
		// The comparison without coalescing is for the full run.
		if l == report.LoadOpen || (l == report.LoadStale && nodes == 1) || (l == report.LoadAlone && o.quick) {
			continue
		}
		out = append(out, rowSpec{load: l, clients: o.clients})
	}
	if o.quick {
		return out
	}
	for _, c := range o.sweep {
		if c != o.clients {
			out = append(out, rowSpec{load: report.LoadWrite, clients: c})
		}
	}
	return append(out, rowSpec{load: report.LoadOpen, clients: slices.Max(append(o.sweep, o.clients))})
}
