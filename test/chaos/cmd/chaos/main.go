// Command chaos runs a cluster of real ration-node processes, each in its
// own network namespace, under a client workload while a seeded schedule
// of faults kills, freezes, partitions, slows and skews the nodes. It then
// heals everything and checks that every acknowledged write was kept and
// every answer was right (linearizability and invariants), that the
// replicas agree (state hashes), that the cluster serves again soon
// (liveness) and that it served at all (throughput).
//
//	go run ./test/chaos/cmd/chaos -binary bin/ration-node -seed 1 \
//	    -duration 150s -nodes 3 -faults all -out out/chaos/3n-seed1
//
// It prints one summary line and exits 0 on PASS, 1 on FAIL and 2 when
// the harness itself failed (not root, cluster never ready, ...). The
// output directory holds history.jsonl, final.json, report.json,
// timeline.svg, schedule.txt, porcupine/ (HTML of non-linearizable users),
// harness.log and n<i>/node.log. See ../../DESIGN.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ration/ration/test/chaos/faults"
)

// Exit codes.
const (
	exitPass    = 0
	exitFail    = 1
	exitHarness = 2
)

// options are the command line.
type options struct {
	// endpoints, if set, are the gRPC addresses of a cluster the harness
	// did not start (runExternal).
	endpoints []string
	binary    string
	seed      int64
	duration  time.Duration
	nodes     int
	faults    string
	out       string
	keep      bool
	prefix    string
	logLevel  string
	nodeLevel string
	nodeArgs  string

	clients, users, hot int
	resend              float64

	shards, replicas  int
	snapshotThreshold uint64
	trailingLogs      uint64
	snapshotInterval  time.Duration
	idlePassivation   time.Duration

	minThroughput float64
	liveness      time.Duration
	converge      time.Duration
	checkTimeout  time.Duration
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	var endpoints string
	fs.StringVar(&endpoints, "endpoints", "", "gRPC host:port list of a running cluster (e.g. a Kubernetes deployment) to check instead of starting one; faults then come from outside")
	fs.StringVar(&o.binary, "binary", "bin/ration-node", "ration-node binary (build with -tags chaos for clock jumps)")
	fs.Int64Var(&o.seed, "seed", 1, "seed of the fault schedule and the workload")
	fs.DurationVar(&o.duration, "duration", 150*time.Second, "how long faults are injected")
	fs.IntVar(&o.nodes, "nodes", 3, "number of nodes")
	fs.StringVar(&o.faults, "faults", "all", "all, or a comma-separated list of: "+kindList())
	fs.StringVar(&o.out, "out", "", "output directory (default out/chaos/<nodes>n-seed<seed>)")
	fs.BoolVar(&o.keep, "keep", false, "keep the network namespaces and bridge after the run, for debugging")
	fs.StringVar(&o.prefix, "prefix", "rch", "prefix of the namespaces, bridge and rules this harness creates")
	fs.StringVar(&o.logLevel, "log-level", "info", "harness log level")
	fs.StringVar(&o.nodeLevel, "node-log-level", "info", "nodes' --log-level")
	fs.StringVar(&o.nodeArgs, "node-args", "", "extra node flags, space-separated")
	fs.IntVar(&o.clients, "clients", 12, "concurrent workload clients")
	fs.IntVar(&o.users, "users", 100, "workload users")
	fs.IntVar(&o.hot, "hot", 5, "hot users among them")
	fs.Float64Var(&o.resend, "resend", 0.02, "fraction of answered writes re-sent with the same id")
	fs.IntVar(&o.shards, "shards", 8, "nodes' --shards")
	fs.IntVar(&o.replicas, "replicas", 3, "nodes' --replicas")
	fs.Uint64Var(&o.snapshotThreshold, "snapshot-threshold", 64, "nodes' --snapshot-threshold (low: snapshots all the time)")
	fs.Uint64Var(&o.trailingLogs, "trailing-logs", 32, "nodes' --raft-trailing-logs (low: a follower that was away catches up from a snapshot)")
	fs.DurationVar(&o.snapshotInterval, "snapshot-interval", 2*time.Second, "nodes' --snapshot-interval")
	fs.DurationVar(&o.idlePassivation, "idle-passivation", time.Second, "nodes' --idle-passivation (short: the actors of users that pause, as every user does during a fault, are passivated and activated again)")
	fs.Float64Var(&o.minThroughput, "min-throughput", 20, "acknowledged (OK) writes per second the run must average")
	fs.DurationVar(&o.liveness, "liveness", 10*time.Second, "every shard must take a write within this of the final heal")
	fs.DurationVar(&o.converge, "converge", 30*time.Second, "how long replicas may take to converge after the workload stops")
	fs.DurationVar(&o.checkTimeout, "check-timeout", 30*time.Second, "linearizability search budget per user")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if endpoints != "" {
		o.endpoints = strings.Split(endpoints, ",")
	}
	if o.out == "" {
		o.out = filepath.Join("out", "chaos", fmt.Sprintf("%dn-seed%d", o.nodes, o.seed))
	}
	switch {
	case o.nodes < 1:
		return o, errors.New("-nodes must be at least 1")
	case o.duration <= 0:
		return o, errors.New("-duration must be positive")
	case o.clients < 1 || o.users < 1 || o.hot < 0 || o.hot > o.users:
		return o, errors.New("-clients and -users must be positive, -hot at most -users")
	case o.idlePassivation <= 0:
		return o, errors.New("-idle-passivation must be positive")
	}
	return o, nil
}

func kindList() string {
	s := ""
	for i, k := range faults.All {
		if i > 0 {
			s += ", "
		}
		s += string(k)
	}
	return s
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(exitPass)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(exitHarness)
	}
	os.Exit(runMain(o))
}

// runMain runs the harness with its logging set up and returns the exit
// code.
func runMain(o options) int {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "chaos: -log-level:", err)
		return exitHarness
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return exitHarness
	}
	var logw io.Writer = os.Stderr
	lf, err := os.Create(filepath.Join(o.out, "harness.log"))
	if err == nil {
		defer lf.Close()
		logw = io.MultiWriter(os.Stderr, lf)
	}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: level}))

	// The first SIGINT/SIGTERM cancels the run, which then heals and
	// tears down; a second one is left to kill the harness, whose nodes
	// die with it (Pdeathsig) and whose namespaces the next run removes.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()

	runner := run
	if len(o.endpoints) > 0 {
		runner = runExternal
	}
	summary, code, err := runner(ctx, o, log)
	if err != nil {
		log.Error("harness failed", "err", err)
		fmt.Printf("ERROR seed=%d nodes=%d: %v\n", o.seed, o.nodes, err)
		return exitHarness
	}
	fmt.Println(summary)
	return code
}
