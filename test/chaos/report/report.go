// Package report writes what a chaos run found: a one-line summary, a JSON
// report and a timeline picture of the run's traffic and faults.
package report

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ration/ration/test/chaos/check"
	"github.com/ration/ration/test/chaos/history"
)

// Fault is one injected fault. End is zero for an instantaneous one.
type Fault struct {
	Kind   string    `json:"kind"`
	Target string    `json:"target"`
	Detail string    `json:"detail,omitempty"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end,omitzero"`
}

// CheckResult is the verdict of one check.
type CheckResult struct {
	Pass   bool   `json:"pass"`
	Detail string `json:"detail,omitempty"`
}

// Names of the checks a run reports.
const (
	CheckLinearizability = "linearizability"
	CheckInvariants      = "invariants"
	CheckStateHashes     = "state-hashes"
	CheckLiveness        = "liveness"
	CheckThroughput      = "throughput"
)

// Report is a run's result.
type Report struct {
	Pass       bool                   `json:"pass"`
	Seed       int64                  `json:"seed"`
	Nodes      int                    `json:"nodes"`
	Duration   time.Duration          `json:"-"` // as "duration" in seconds, see MarshalJSON
	Started    time.Time              `json:"started"`
	Ops        int                    `json:"ops"`
	OKWrites   int                    `json:"ok_writes"`
	Faults     []Fault                `json:"faults"`
	Anomalies  []check.Anomaly        `json:"anomalies"`
	Checks     map[string]CheckResult `json:"checks"`
	Throughput float64                `json:"throughput"` // acknowledged ops/s over the run
	Notes      []string               `json:"notes,omitempty"`
}

// reportJSON adds the duration in seconds, which people and jq read
// better than nanoseconds.
type reportJSON struct {
	plain
	DurationSeconds float64 `json:"duration_s"`
}

type plain Report

// MarshalJSON writes the report with its duration in seconds.
func (r Report) MarshalJSON() ([]byte, error) {
	return json.Marshal(reportJSON{plain: plain(r), DurationSeconds: r.Duration.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Report) UnmarshalJSON(b []byte) error {
	var j reportJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Report(j.plain)
	r.Duration = time.Duration(j.DurationSeconds * float64(time.Second))
	return nil
}

// Failed is the names of the failed checks, sorted.
func (r Report) Failed() []string {
	var out []string
	for name, c := range r.Checks {
		if !c.Pass {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Summary is one line: "PASS seed=7 nodes=3 duration=150s ops=12345
// ok-writes=5000 faults=24 anomalies=0 throughput=82.3/s", or FAIL with
// the failed checks and the first anomaly.
func Summary(r Report) string {
	var b strings.Builder
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "%s seed=%d nodes=%d duration=%s ops=%d ok-writes=%d faults=%d anomalies=%d throughput=%.1f/s",
		verdict, r.Seed, r.Nodes, r.Duration.Round(time.Second), r.Ops, r.OKWrites, len(r.Faults), len(r.Anomalies), r.Throughput)
	if failed := r.Failed(); len(failed) > 0 {
		fmt.Fprintf(&b, " failed=%s", strings.Join(failed, ","))
	}
	if !r.Pass && len(r.Anomalies) > 0 {
		a := r.Anomalies[0]
		fmt.Fprintf(&b, " first-anomaly=%s/%s", a.Kind, a.User)
	}
	return b.String()
}

// Write saves the report as dir/report.json and the timeline as
// dir/timeline.svg.
func Write(dir string, r Report, ops []history.Op) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "timeline.svg"), Timeline(r, ops), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// Read loads a report.json.
func Read(path string) (Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Report{}, fmt.Errorf("report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return Report{}, fmt.Errorf("report: %s: %w", path, err)
	}
	return r, nil
}
