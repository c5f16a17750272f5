package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ration/ration/bench/report"
)

// Layout names: "default" passes no layout flag to the nodes.
const (
	layoutDefault = "default"
	layoutShared  = "shared"
	layoutBolt    = "bolt"
)

// options are the harness's flags.
type options struct {
	quick      bool
	layouts    []string
	systems    []string
	nodes      []int
	sweep      []int
	clients    int
	batch      int
	users      int
	warmup     time.Duration
	duration   time.Duration
	nodeBinary string
	docs       string
	chartDir   string
	jsonOut    string
	from       string
	install    bool
	verbose    bool
}

// errUsage marks a flag error (exit status 2).
var errUsage = errors.New("usage")

// parseOptions reads args (without the program name).
func parseOptions(args []string, stderr io.Writer) (options, error) {
	o := options{}
	fs := flag.NewFlagSet("ration-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var layouts, systems, nodes, sweep string
	fs.BoolVar(&o.quick, "quick", false, "only the 64-client rows of Ration on 3 nodes and etcd with 3 members; print, do not write docs or charts")
	fs.StringVar(&layouts, "layouts", "shared,bolt", "Ration raft log layouts, comma-separated: shared, bolt, or default (pass no --raft-log-store)")
	fs.StringVar(&systems, "systems", "ration,etcd,postgres", "systems to run, comma-separated")
	fs.StringVar(&nodes, "nodes", "1,3", "cluster sizes for Ration and etcd (PostgreSQL runs one server)")
	fs.StringVar(&sweep, "sweep", "1,8,64,256", "client counts of the concurrency sweep of one write per call")
	fs.IntVar(&o.clients, "clients", 64, "clients of the fixed-concurrency rows")
	fs.IntVar(&o.batch, "batch", 64, "deductions per Ration Batch call")
	fs.IntVar(&o.users, "users", 1000, "distinct users (keys)")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "unmeasured load before each row's window")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "each row's measured window")
	fs.StringVar(&o.nodeBinary, "node-binary", "bin/ration-node", "the ration-node executable (make build)")
	fs.StringVar(&o.docs, "docs", "", "markdown file whose generated section to rewrite, e.g. docs/BENCHMARKS.md")
	fs.StringVar(&o.chartDir, "charts", "", "directory for the PNG charts, e.g. docs/bench")
	fs.StringVar(&o.jsonOut, "json", "", "file to write the results to as JSON")
	fs.StringVar(&o.from, "from", "", "render docs and charts from this results JSON instead of running")
	fs.BoolVar(&o.install, "install", true, "apt-get install etcd-server and postgresql when missing")
	fs.BoolVar(&o.verbose, "v", false, "log process starts and stops")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	var err error
	if o.layouts, err = parseList(layouts, []string{layoutDefault, layoutShared, layoutBolt}); err != nil {
		return o, fmt.Errorf("%w: -layouts: %v", errUsage, err)
	}
	if o.systems, err = parseList(systems, []string{report.Ration, report.Etcd, report.Postgres}); err != nil {
		return o, fmt.Errorf("%w: -systems: %v", errUsage, err)
	}
	if o.nodes, err = parseCounts(nodes, 1, 7); err != nil {
		return o, fmt.Errorf("%w: -nodes: %v", errUsage, err)
	}
	if o.sweep, err = parseCounts(sweep, 1, 4096); err != nil {
		return o, fmt.Errorf("%w: -sweep: %v", errUsage, err)
	}
	return o, o.validate()
}

func (o options) validate() error {
	switch {
	case o.clients < 1 || o.clients > 4096:
		return fmt.Errorf("%w: -clients must be 1 to 4096", errUsage)
	case o.batch < 1 || o.batch > 1000:
		return fmt.Errorf("%w: -batch must be 1 to 1000", errUsage)
	case o.users < 1:
		return fmt.Errorf("%w: -users must be positive", errUsage)
	case o.warmup < 0 || o.duration <= 0:
		return fmt.Errorf("%w: -warmup must not be negative and -duration must be positive", errUsage)
	case o.from != "" && o.docs == "" && o.chartDir == "":
		return fmt.Errorf("%w: -from needs -docs or -charts", errUsage)
	}
	return nil
}

// parseList splits a comma-separated list of names, each one of allowed,
// dropping repeats and keeping the order given.
func parseList(s string, allowed []string) ([]string, error) {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !slices.Contains(allowed, part) {
			return nil, fmt.Errorf("%q is not one of %s", part, strings.Join(allowed, ", "))
		}
		if !slices.Contains(out, part) {
			out = append(out, part)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("empty")
	}
	return out, nil
}

// parseCounts splits a comma-separated list of integers in [lo, hi],
// sorted and without repeats.
func parseCounts(s string, lo, hi int) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%q is not an integer from %d to %d", part, lo, hi)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("empty")
	}
	slices.Sort(out)
	return out, nil
}
