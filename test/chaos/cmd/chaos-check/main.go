// Command chaos-check checks a saved chaos run again: it reads the run
// directory's history.jsonl and final.json (and report.json, if there),
// runs the linearizability and invariant checks, and prints the summary
// line. It exits 0 if the run passes, 1 if it fails, 2 on an error.
//
//	go run ./test/chaos/cmd/chaos-check [-timeout 30s] [-visualize DIR] [-out DIR] RUN_DIR
//
// Useful after a soak, to re-check with a longer timeout, or to check a
// history by hand after changing the checker.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ration/ration/test/chaos/check"
	"github.com/ration/ration/test/chaos/history"
	"github.com/ration/ration/test/chaos/report"
	"github.com/ration/ration/test/chaos/workload"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("chaos-check", flag.ContinueOnError)
	fl.SetOutput(stderr)
	timeout := fl.Duration("timeout", check.DefaultTimeout, "linearizability search timeout per user")
	visualize := fl.String("visualize", "", "write porcupine visualizations of failing users here (default RUN_DIR/porcupine)")
	out := fl.String("out", "", "write report.json and timeline.svg of the new verdict here")
	parallel := fl.Int("parallel", 0, "users checked at once (0: GOMAXPROCS)")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: chaos-check [flags] RUN_DIR")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() != 1 {
		fl.Usage()
		return 2
	}
	dir := fl.Arg(0)
	if *visualize == "" {
		*visualize = filepath.Join(dir, "porcupine")
	}

	ops, err := readHistory(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		fmt.Fprintln(stderr, "chaos-check:", err)
		return 2
	}
	final, err := check.ReadFinal(filepath.Join(dir, "final.json"))
	if err != nil {
		fmt.Fprintln(stderr, "chaos-check:", err)
		return 2
	}
	r, err := report.Read(filepath.Join(dir, "report.json"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r = fromHistory(ops)
	case err != nil:
		fmt.Fprintln(stderr, "chaos-check:", err)
		return 2
	}

	start := time.Now()
	res := check.Check(ops, final, check.Options{Timeout: *timeout, VisualizeDir: *visualize, Parallel: *parallel})
	r = withVerdict(r, res)
	fmt.Fprintln(stdout, report.Summary(r))
	fmt.Fprintf(stderr, "checked %d users, %d ops in %v (slowest user %v); %s\n",
		res.UsersChecked, res.OpsChecked, time.Since(start).Round(time.Millisecond), res.Slowest.Round(time.Millisecond), workload.StatsOf(ops))
	for _, a := range res.Anomalies {
		fmt.Fprintln(stderr, "  ", a)
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(stderr, "   warning:", w)
	}
	for _, f := range res.Files {
		fmt.Fprintln(stderr, "   visualization:", f)
	}
	if *out != "" {
		if err := report.Write(*out, r, ops); err != nil {
			fmt.Fprintln(stderr, "chaos-check:", err)
			return 2
		}
	}
	if !r.Pass {
		return 1
	}
	return 0
}

func readHistory(path string) ([]history.Op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return history.Read(f)
}

// fromHistory is the report of a run directory without report.json.
func fromHistory(ops []history.Op) report.Report {
	st := workload.StatsOf(ops)
	r := report.Report{Ops: st.Ops, OKWrites: st.OKWrites(), Checks: map[string]report.CheckResult{}}
	var first, last int64
	for _, op := range ops {
		if first == 0 || op.Invoke < first {
			first = op.Invoke
		}
		last = max(last, op.Invoke, op.Return)
	}
	if first > 0 {
		r.Started = time.Unix(0, first)
		r.Duration = time.Duration(last - first)
	}
	if s := r.Duration.Seconds(); s > 0 {
		var acked int
		for _, op := range ops {
			if op.Outcome == history.OK {
				acked++
			}
		}
		r.Throughput = float64(acked) / s
	}
	r.Notes = append(r.Notes, "re-checked without report.json: faults and the cluster checks are unknown")
	return r
}

// withVerdict replaces the report's checker verdicts with res.
func withVerdict(r report.Report, res check.Result) report.Report {
	if r.Checks == nil {
		r.Checks = map[string]report.CheckResult{}
	}
	var lin, inv int
	for _, a := range res.Anomalies {
		switch a.Kind {
		case check.KindNonlinearizable, check.KindUnknownLinearizability, check.KindVisualization:
			lin++
		default:
			inv++
		}
	}
	r.Checks[report.CheckLinearizability] = report.CheckResult{Pass: res.Linearizable,
		Detail: fmt.Sprintf("%d users, %d ops, %d anomalies, slowest user %v", res.UsersChecked, res.OpsChecked, lin, res.Slowest.Round(time.Millisecond))}
	r.Checks[report.CheckInvariants] = report.CheckResult{Pass: res.Invariants, Detail: fmt.Sprintf("%d anomalies", inv)}
	r.Anomalies = res.Anomalies
	r.Pass = len(r.Anomalies) == 0
	for _, c := range r.Checks {
		r.Pass = r.Pass && c.Pass
	}
	return r
}
