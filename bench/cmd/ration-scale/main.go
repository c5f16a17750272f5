// Command ration-scale is the memory and restart benchmark of one node
// holding many users (`make bench-scale`, docs/BENCHMARKS.md "Scale"): it
// prints RSS during and after the load, size on disk, restart times after
// kill -9, and cold-read latencies, against issue 12's targets.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ration/ration/bench/procs"
	"github.com/ration/ration/bench/scale"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ration-scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := scale.Config{}
	fs.StringVar(&cfg.Binary, "node-binary", "bin/ration-node", "the node to run")
	fs.IntVar(&cfg.Users, "users", 1_000_000, "users of -events operations each")
	fs.IntVar(&cfg.Events, "events", 20, "operations per user: a grant, then deductions")
	fs.IntVar(&cfg.ColdUsers, "cold-users", 200, "users of -cold-events operations, read cold after the restart")
	fs.IntVar(&cfg.ColdEvents, "cold-events", 1000, "operations per cold user")
	fs.StringVar(&cfg.MemoryLimit, "memory-limit", "2GiB", "the node's --memory-limit")
	fs.IntVar(&cfg.Workers, "workers", 8, "concurrent Batch calls")
	fs.IntVar(&cfg.BatchSize, "batch", 1000, "operations per Batch call")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if cfg.Users < 1 || cfg.Events < 1 || cfg.ColdUsers < 2 || cfg.ColdEvents < 1 || cfg.Workers < 1 || cfg.BatchSize < 1 || cfg.BatchSize > 1000 {
		fmt.Fprintln(stderr, "ration-scale: -users, -events, -cold-events, -workers must be positive, -cold-users at least 2, -batch 1 to 1000")
		return 2
	}
	// The node runs in a temp directory: a relative path would be taken
	// from there.
	if abs, err := filepath.Abs(cfg.Binary); err == nil {
		cfg.Binary = abs
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg.Progress = func(format string, a ...any) { log.Info(fmt.Sprintf(format, a...)) }
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g := procs.NewGroup(log)
	defer g.Close(7 * time.Second)
	res, err := scale.Run(ctx, g, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "ration-scale:", err)
		return 1
	}
	report(stdout, cfg, res)
	return 0
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func report(w io.Writer, cfg scale.Config, r scale.Result) {
	ms := func(ns int64) string { return fmt.Sprintf("%.1f ms", float64(ns)/1e6) }
	fmt.Fprintf(w, "One node, --memory-limit %s: %d users x %d ops and %d users x %d ops through Batch of %d from %d workers\n\n",
		cfg.MemoryLimit, cfg.Users, cfg.Events, cfg.ColdUsers, cfg.ColdEvents, cfg.BatchSize, cfg.Workers)
	fmt.Fprintf(w, "| measure | value | target |\n|---|---|---|\n")
	fmt.Fprintf(w, "| load | %d ops in %v (%.0f ops/s) | |\n", r.Ops, r.LoadTime.Round(time.Second), float64(r.Ops)/r.LoadTime.Seconds())
	fmt.Fprintf(w, "| peak RSS during the load | %s | at most 2.5 GiB with --memory-limit 2GiB |\n", mib(r.PeakRSS))
	fmt.Fprintf(w, "| RSS 10 s after the load | %s | |\n", mib(r.SettledRSS))
	fmt.Fprintf(w, "| size on disk | %s (%.0f bytes per op) | |\n", mib(r.DiskBytes), float64(r.DiskBytes)/float64(max(r.Ops, 1)))
	fmt.Fprintf(w, "| restart after kill -9, to /readyz | %v | at most 10 s |\n", r.ToReady.Round(time.Millisecond))
	fmt.Fprintf(w, "| restart to a cold user's first read | %v | at most 10 s |\n", r.ToFirstRead.Round(time.Millisecond))
	fmt.Fprintf(w, "| cold reads (%d ops each), p50 / p99 / max | %s / %s / %s (%d reads, %d failed) | p99 at most 20 ms |\n",
		cfg.ColdEvents, ms(r.ColdRead.Quantile(0.5)), ms(r.ColdRead.Quantile(0.99)), ms(r.ColdRead.Max()), r.ColdRead.Count(), r.ColdReadErrs)
	fmt.Fprintf(w, "| RSS after the restart and the cold reads | %s | |\n", mib(r.RestartRSS))
}
