// Package report holds what a benchmark run measured, compares Ration's
// rows with their peers' against the throughput issue's targets, and
// renders both as text for the terminal and as the generated section of
// docs/BENCHMARKS.md.
package report

import (
	"math"
	"time"

	"github.com/ration/ration/bench/load"
)

// Systems.
const (
	Ration   = "ration"
	Etcd     = "etcd"
	Postgres = "postgres"
)

// Loads. Every row's calls carry one operation, except LoadBatch's.
const (
	LoadWrite = "write" // one write per call, closed loop
	// LoadAlone is LoadWrite with every call sent alone: Ration's client
	// without coalescing (client.Options.MaxInflight < 0), to show
	// what coalescing concurrent calls into Batch calls brings.
	LoadAlone = "write-alone"
	LoadBatch = "batch" // a batch of writes per call, closed loop
	LoadCAS   = "cas"   // etcd: read, then compare-and-swap, per deduction
	LoadRead  = "read"  // linearizable read
	LoadStale = "stale" // read any replica may answer
	LoadOpen  = "open"  // writes at half the system's best write rate, open loop
)

// Row is one measured configuration and load.
type Row struct {
	System string `json:"system"`
	// Layout is Ration's raft log layout ("default" when the node's own
	// default was used); empty for the other systems.
	Layout  string `json:"layout,omitempty"`
	Nodes   int    `json:"nodes"`
	Load    string `json:"load"`
	Op      string `json:"op"` // what one call does, e.g. "Deduct", "Put"
	Clients int    `json:"clients"`
	// Rate is the open loop's scheduled calls per second, 0 for a closed
	// loop.
	Rate        float64       `json:"rate,omitempty"`
	OpsPerCall  int           `json:"ops_per_call"`
	OpsPerSec   float64       `json:"ops_per_sec"`
	CallsPerSec float64       `json:"calls_per_sec"`
	P50         time.Duration `json:"p50_ns"`
	P99         time.Duration `json:"p99_ns"`
	P999        time.Duration `json:"p999_ns"`
	Max         time.Duration `json:"max_ns"`
	Errors      int64         `json:"errors"`
	FirstError  string        `json:"first_error,omitempty"`
	// CDF is the call latency at the quantiles of CDFQuantiles.
	CDF []Point `json:"cdf"`
}

// Point is one point of a latency distribution.
type Point struct {
	Q       float64       `json:"q"`
	Latency time.Duration `json:"latency_ns"`
}

// CDFQuantiles are the quantiles a row keeps for the latency charts:
// every percent, then finer towards the tail.
func CDFQuantiles() []float64 {
	var qs []float64
	for i := 1; i <= 99; i++ {
		qs = append(qs, float64(i)/100)
	}
	return append(qs, 0.995, 0.999, 0.9995, 0.9999, 1)
}

// FromResult fills r's measurements from a load run.
func FromResult(r Row, res load.Result) Row {
	r.OpsPerSec = res.OpsPerSec()
	r.CallsPerSec = res.CallsPerSec()
	h := res.Latency
	r.P50 = time.Duration(h.Quantile(0.5))
	r.P99 = time.Duration(h.Quantile(0.99))
	r.P999 = time.Duration(h.Quantile(0.999))
	r.Max = time.Duration(h.Max())
	r.Errors = res.Errors
	if res.FirstError != nil {
		r.FirstError = res.FirstError.Error()
	}
	r.CDF = nil
	if h.Count() > 0 {
		for _, q := range CDFQuantiles() {
			r.CDF = append(r.CDF, Point{Q: q, Latency: time.Duration(h.Quantile(q))})
		}
	}
	return r
}

// Key picks a row out of a run's rows.
type Key struct {
	System  string
	Layout  string // matched only for Ration
	Nodes   int
	Load    string
	Clients int // ignored for LoadOpen
}

// Find returns the row for k.
func Find(rows []Row, k Key) (Row, bool) {
	for _, r := range rows {
		if r.System == k.System && r.Nodes == k.Nodes && r.Load == k.Load &&
			(k.System != Ration || r.Layout == k.Layout) &&
			(k.Load == LoadOpen || r.Clients == k.Clients) {
			return r, true
		}
	}
	return Row{}, false
}

// BestWriteRate is the highest closed-loop one-write-per-call rate of a
// system's configuration: the "maximum rate" its open-loop row runs at
// half of. It is 0 if there is none.
func BestWriteRate(rows []Row, system, layout string, nodes int) float64 {
	best := 0.0
	for _, r := range rows {
		if r.System == system && r.Layout == layout && r.Nodes == nodes && r.Load == LoadWrite {
			best = math.Max(best, r.OpsPerSec)
		}
	}
	return best
}
