// Command ration-bench runs Ration, etcd and PostgreSQL side by side on
// this machine under the same load and reports the ratios the throughput
// issue sets as targets (`make bench`, `make bench-quick`; see
// docs/BENCHMARKS.md).
//
// Each configuration (Ration with 1 or 3 nodes per raft log layout, etcd
// with 1 or 3 members, PostgreSQL) is started fresh, given the same users
// and opening balances, driven by the one load generator (bench/load) row
// after row, and stopped. Every process runs in its own process group and
// is stopped at the end, on failure and on Ctrl-C.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ration/ration/bench/charts"
	"github.com/ration/ration/bench/etcd"
	"github.com/ration/ration/bench/load"
	"github.com/ration/ration/bench/postgres"
	"github.com/ration/ration/bench/procs"
	"github.com/ration/ration/bench/ration"
	"github.com/ration/ration/bench/report"
)

// initialCredits is every user's opening balance: far more than a run
// deducts (at most 10 per deduction).
const initialCredits = 1 << 40

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the harness; it returns the exit status: 0, 1 for a failed run,
// 2 for bad flags.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, a second one kills the harness at once (its
	// processes die with it: procs sets a parent-death signal).
	go func() { <-ctx.Done(); stop() }()
	if o.from != "" {
		err = renderFrom(o)
	} else {
		err = measure(ctx, o, args, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

// measure runs the plan, prints the report and writes what o asks for.
func measure(ctx context.Context, o options, args []string, stdout, stderr io.Writer) error {
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	g := procs.NewGroup(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})))
	// Deferred first, so it runs last: after any configuration's own stop.
	defer func() {
		if err := g.Close(10 * time.Second); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
		}
	}()
	if err := checkLayouts(ctx, o); err != nil {
		return err
	}
	bins, err := findBinaries(ctx, o, stderr)
	if err != nil {
		return err
	}
	r := report.Run{
		Date:     time.Now(),
		Command:  strings.Join(append([]string{os.Args[0]}, args...), " "),
		Machine:  report.DescribeMachine(os.TempDir()),
		Versions: versions(ctx, o, bins),
		Settings: fmt.Sprintf("%v measured after %v of warmup; %s users, each deduction 1-10 credits of a large opening balance; the clients run in the harness, on the same machine",
			o.duration, o.warmup, report.Rate(float64(o.users))),
		Layouts: o.layouts,
	}
	users := make([]string, o.users)
	for i := range users {
		users[i] = fmt.Sprintf("bench-u%d", i)
	}
	for _, c := range plan(o) {
		rows, err := runConfig(ctx, g, o, bins, c, users, stderr)
		r.Rows = append(r.Rows, rows...)
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", ctx.Err())
		}
		if err != nil {
			r.Failures = append(r.Failures, fmt.Sprintf("%s: %v", describe(c), err))
			fmt.Fprintf(stderr, "bench: %s failed: %v\n", describe(c), err)
		}
	}
	fmt.Fprintln(stdout)
	if err := report.Text(stdout, r); err != nil {
		return err
	}
	if err := writeOutputs(o, r); err != nil {
		return err
	}
	if len(r.Failures) > 0 {
		return fmt.Errorf("%d configuration(s) failed; docs left unchanged", len(r.Failures))
	}
	return nil
}

func describe(c config) string {
	return charts.Series(report.Row{System: c.system, Layout: c.layout, Nodes: c.nodes})
}

// checkLayouts fails early when a layout is asked of nodes that cannot
// take one, rather than after the other systems have run.
func checkLayouts(ctx context.Context, o options) error {
	if !slices.Contains(o.systems, report.Ration) {
		return nil
	}
	if _, err := os.Stat(o.nodeBinary); err != nil {
		return fmt.Errorf("node binary: %w (run make build)", err)
	}
	for _, l := range o.layouts {
		if l == layoutDefault {
			continue
		}
		ok, err := ration.SupportsLayout(ctx, o.nodeBinary)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: -layouts %s needs it; -layouts default runs the node's own layout", ration.ErrNoLayoutFlag, l)
		}
	}
	return nil
}

// versions names what ran: the Ration commit, etcd, PostgreSQL.
func versions(ctx context.Context, o options, bins binaries) []string {
	v := []string{"ration " + gitDescribe(ctx)}
	if bins.etcd != "" {
		v = append(v, etcd.Version(ctx, bins.etcd))
	}
	if bins.postgresBin != "" {
		v = append(v, postgres.Version(ctx, bins.postgresBin))
	}
	return v
}

func gitDescribe(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "(commit unknown)"
	}
	return strings.TrimSpace(string(out))
}

// runConfig starts c, runs its rows and stops it. It returns the rows
// measured before any failure.
func runConfig(ctx context.Context, g *procs.Group, o options, bins binaries, c config, users []string, log io.Writer) ([]report.Row, error) {
	fmt.Fprintf(log, "bench: starting %s\n", describe(c))
	srv, ops, err := start(ctx, g, o, bins, c)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	if err := srv.Prepare(ctx, users, initialCredits); err != nil {
		return nil, err
	}
	var rows []report.Row
	for i, spec := range c.rows {
		row := report.Row{
			System: c.system, Layout: c.layout, Nodes: c.nodes, Load: spec.load,
			Op: ops[spec.load].name, Clients: spec.clients, OpsPerCall: ops[spec.load].perCall,
		}
		lo := load.Options{Concurrency: spec.clients, Warmup: o.warmup, Duration: o.duration, Seed: uint64(i + 1)}
		if spec.load == report.LoadOpen {
			row.Rate = report.BestWriteRate(rows, c.system, c.layout, c.nodes) / 2
			if row.Rate <= 0 {
				return rows, errors.New("open loop: no write rate measured to take half of")
			}
			lo.Rate = row.Rate
		}
		res, err := load.Run(ctx, lo, ops[spec.load].call)
		if err != nil {
			return rows, err
		}
		if err := srv.Exited(); err != nil {
			return rows, err
		}
		row = report.FromResult(row, res)
		rows = append(rows, row)
		fmt.Fprintf(log, "bench: %s %s %s: %s ops/s, p50 %s, p99 %s, %d errors\n", describe(c), row.Load, clientsText(row),
			report.Rate(row.OpsPerSec), report.Latency(row.P50), report.Latency(row.P99), row.Errors)
		if row.FirstError != "" {
			fmt.Fprintf(log, "bench:   first error: %s\n", row.FirstError)
		}
	}
	return rows, nil
}

func clientsText(r report.Row) string {
	if r.Rate > 0 {
		return fmt.Sprintf("open loop at %s/s", report.Rate(r.Rate))
	}
	return fmt.Sprintf("%d clients", r.Clients)
}

// writeOutputs writes the JSON results always (when asked), and the docs
// section and charts only for a complete, full run.
func writeOutputs(o options, r report.Run) error {
	if o.jsonOut != "" {
		if err := os.MkdirAll(filepath.Dir(o.jsonOut), 0o755); err != nil {
			return err
		}
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if o.quick || len(r.Failures) > 0 {
		return nil
	}
	return render(o, r)
}

// renderFrom renders a saved run.
func renderFrom(o options) error {
	b, err := os.ReadFile(o.from)
	if err != nil {
		return err
	}
	var r report.Run
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", o.from, err)
	}
	return render(o, r)
}

// render draws the charts and rewrites the docs' generated section.
func render(o options, r report.Run) error {
	var cs []report.Chart
	if o.chartDir != "" {
		if err := os.MkdirAll(o.chartDir, 0o755); err != nil {
			return err
		}
		docDir := o.chartDir
		if o.docs != "" {
			docDir = filepath.Dir(o.docs)
		}
		var err error
		if cs, err = charts.All(r.Rows, o.chartDir, docDir); err != nil {
			return err
		}
	}
	if o.docs == "" {
		return nil
	}
	doc, err := os.ReadFile(o.docs)
	if err != nil {
		return err
	}
	out, err := report.ReplaceSection(string(doc), report.Markdown(r, cs))
	if err != nil {
		return fmt.Errorf("%s: %w", o.docs, err)
	}
	return os.WriteFile(o.docs, []byte(out), 0o644)
}
