package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/shards"
	"github.com/ration/ration/test/chaos/check"
	"github.com/ration/ration/test/chaos/faults"
	"github.com/ration/ration/test/chaos/history"
	"github.com/ration/ration/test/chaos/netns"
	"github.com/ration/ration/test/chaos/nodes"
	"github.com/ration/ration/test/chaos/report"
	"github.com/ration/ration/test/chaos/workload"
)

// checkCrashes is the runner's own check, next to report's: no node
// exited unless the harness made it.
const checkCrashes = "crashes"

// Timing of the run's phases.
const (
	readyTimeout = 90 * time.Second // the cluster's first start
	tail         = 5 * time.Second  // workload after the final heal
	workloadStop = 20 * time.Second // for in-flight calls to give up
)

// artifacts are the files of an earlier run in the output directory,
// removed first so that nothing stale is mistaken for this run's.
var artifacts = []string{"history.jsonl", "final.json", "report.json", "timeline.svg", "schedule.txt", "porcupine"}

// run is one chaos run. A nil error means a verdict (code 0 or 1); an
// error means the harness could not get to one.
func run(ctx context.Context, o options, log *slog.Logger) (string, int, error) {
	if os.Geteuid() != 0 {
		return "", exitHarness, errors.New("must run as root (network namespaces, iptables)")
	}
	kinds, skipped, err := faults.ParseKinds(o.faults, o.nodes)
	if err != nil {
		return "", exitHarness, err
	}
	binary, err := filepath.Abs(o.binary)
	if err != nil {
		return "", exitHarness, err
	}
	if _, err := os.Stat(binary); err != nil {
		return "", exitHarness, fmt.Errorf("node binary: %w (make build?)", err)
	}
	for _, a := range artifacts {
		if err := os.RemoveAll(filepath.Join(o.out, a)); err != nil {
			return "", exitHarness, err
		}
	}
	var notes []string
	for _, s := range skipped {
		notes = append(notes, "fault skipped: "+s)
	}

	// Network: leftovers of dead runs first, then ours, always removed
	// at the end unless -keep.
	cleaned, err := netns.CleanupStale(ctx, o.prefix, log)
	if err != nil {
		log.Warn("cleaning leftovers", "err", err)
	}
	if len(cleaned) > 0 {
		log.Info("removed leftovers of earlier runs", "runs", cleaned)
	}
	net, err := netns.Create(ctx, netns.Config{Prefix: o.prefix, Nodes: o.nodes, Logger: log})
	if err != nil {
		return "", exitHarness, err
	}
	defer func() {
		if o.keep {
			var nss []string
			for _, nd := range net.Nodes {
				nss = append(nss, nd.NS)
			}
			log.Info("keeping the network (-keep): inspect with ip netns exec <namespace> ...; the next run removes it",
				"namespaces", strings.Join(nss, ","), "bridge", net.Bridge, "subnet", net.Subnet())
			return
		}
		if err := net.Close(context.WithoutCancel(ctx)); err != nil {
			log.Warn("removing the network", "err", err)
		}
	}()

	cluster, err := nodes.New(ctx, nodes.Config{
		Binary: binary, Dir: o.out, Net: net,
		Shards: o.shards, Replicas: o.replicas,
		SnapshotThreshold: o.snapshotThreshold, SnapshotInterval: o.snapshotInterval, TrailingLogs: o.trailingLogs,
		ShutdownTimeout: 2 * time.Second, // teardown, not a check: keep it short
		LogLevel:        o.nodeLevel, Logger: log,
		Args: append([]string{"--idle-passivation", o.idlePassivation.String()}, strings.Fields(o.nodeArgs)...),
	})
	if err != nil {
		return "", exitHarness, err
	}
	var closeOnce sync.Once
	closeCluster := func() { closeOnce.Do(func() { _ = cluster.Close() }) }
	defer closeCluster()

	t0 := time.Now()
	if err := cluster.StartAll(); err != nil {
		return "", exitHarness, err
	}
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	err = cluster.WaitAllReady(rctx)
	cancel()
	if err != nil {
		return "", exitHarness, fmt.Errorf("cluster not ready (see %s/n*/node.log): %w", o.out, err)
	}
	log.Info("cluster ready", "nodes", o.nodes, "after", time.Since(t0).Round(time.Millisecond))

	rec, err := history.NewRecorder(filepath.Join(o.out, "history.jsonl"))
	if err != nil {
		return "", exitHarness, err
	}
	recClosed := false
	defer func() {
		if !recClosed {
			rec.Close()
		}
	}()

	// Workload.
	wcfg := workload.Config{
		Seed: o.seed, Clients: o.clients, Users: o.users, HotUsers: o.hot,
		Endpoints: cluster.Endpoints(), Resend: o.resend,
		UserPrefix: fmt.Sprintf("u-%d-", o.seed), Now: time.Now, Logger: log,
	}
	started := time.Now()
	wl := startWorkload(ctx, wcfg, rec)
	defer wl.cancel()

	// Faults.
	steps := faults.Schedule(o.seed, o.nodes, kinds, o.duration)
	if err := writeSchedule(filepath.Join(o.out, "schedule.txt"), o, kinds, steps); err != nil {
		log.Warn("writing the schedule", "err", err)
	}
	inj := &faults.Injector{
		Net: net, Cluster: cluster, Shards: o.shards,
		HotShard:   hotShard(wcfg.UserPrefix, o.hot, o.shards),
		GossipPort: nodes.GossipPort, RaftPort: nodes.RaftPort, ActorPort: nodes.ActorPort, Logger: log,
	}
	log.Info("faults start", "steps", len(steps), "kinds", len(kinds), "duration", o.duration)
	_ = inj.Run(ctx, started, steps)
	sleepCtx(ctx, time.Until(started.Add(o.duration)))
	if ctx.Err() != nil {
		_ = inj.HealAll(context.WithoutCancel(ctx))
		return "", exitHarness, fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}

	// Final heal and liveness, with the workload still going.
	if err := inj.HealAll(ctx); err != nil {
		log.Warn("final heal", "err", err)
		notes = append(notes, "final heal: "+err.Error())
	}
	healed := time.Now()
	log.Info("final heal done; probing every shard")
	probes, err := probeAll(ctx, cluster.Endpoints(), o, healed)
	if err != nil {
		return "", exitHarness, err
	}
	sleepCtx(ctx, time.Until(healed.Add(tail)))
	notes = append(notes, wl.stop()...)
	stopped := time.Now()
	if err := rec.Close(); err != nil {
		log.Warn("closing the history", "err", err)
	}
	recClosed = true
	ops := rec.Ops()
	log.Info("workload stopped", "ops", len(ops))

	// Let the cluster settle, then compare replicas and read the final
	// state.
	rctx, cancel = context.WithTimeout(ctx, o.converge)
	if err := cluster.WaitAllReady(rctx); err != nil {
		notes = append(notes, "not every node ready after the run: "+err.Error())
	}
	cancel()
	hashOK, hashDetail := awaitConvergence(ctx, func(ctx context.Context) map[string]client.ClusterStatus {
		return byNodeID(cluster.Statuses(ctx, client.WithStateHashes()))
	}, o.shards, o.converge)
	log.Info("state hashes", "pass", hashOK, "detail", hashDetail)

	fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	final, err := readFinal(fctx, cluster.Endpoints(), ops, log)
	cancel()
	if err != nil {
		notes = append(notes, "final state incomplete: "+err.Error())
	}
	if err := final.WriteFile(filepath.Join(o.out, "final.json")); err != nil {
		log.Warn("writing final.json", "err", err)
	}
	actors := actorNote(ctx, cluster)
	crashes := cluster.Crashes()
	// The cluster's work is done: stop it so the checker has the CPU.
	closeCluster()
	notes = append(notes, snapshotNotes(cluster)...)
	notes = append(notes, actors)
	notes = append(notes, inj.Notes()...)
	notes = append(notes, recoveryNote(inj.Records(), ops))

	log.Info("checking", "ops", len(ops), "users", len(final.Events))
	res := check.Check(ops, final, check.Options{Timeout: o.checkTimeout, VisualizeDir: filepath.Join(o.out, "porcupine")})
	// Warnings do not fail a run: they are answers that are allowed but
	// worth a look (e.g. a router's own retry answering "duplicate").
	for _, w := range res.Warnings {
		notes = append(notes, fmt.Sprintf("warning: %s %s: %s", w.Kind, w.User, w.Detail))
	}

	var faulted []report.Fault
	for _, f := range inj.Records() {
		faulted = append(faulted, report.Fault(f))
	}
	return verdict(o, o.nodes, outcome{
		ops: ops, res: res, started: started, stopped: stopped, probes: probes,
		hashOK: hashOK, hashDetail: hashDetail, notes: notes, faults: faulted,
		extra: map[string]report.CheckResult{checkCrashes: crashCheck(crashes)},
	})
}

// outcome is what a run gathered for its verdict.
type outcome struct {
	ops        []history.Op
	res        check.Result
	started    time.Time
	stopped    time.Time
	probes     []probeResult
	hashOK     bool
	hashDetail string
	notes      []string
	faults     []report.Fault
	extra      map[string]report.CheckResult
}

// verdict judges a run, writes its report, and returns the summary line
// and the exit code.
func verdict(o options, nodes int, g outcome) (string, int, error) {
	okWrites := 0
	for _, op := range g.ops {
		if op.Outcome == history.OK && (op.Kind == history.Grant || op.Kind == history.Deduct) {
			okWrites++
		}
	}
	elapsed := g.stopped.Sub(g.started)
	throughput := float64(okWrites) / elapsed.Seconds()
	liveOK, liveDetail := livenessVerdict(g.probes, o.liveness)
	r := report.Report{
		Seed: o.seed, Nodes: nodes, Duration: o.duration, Started: g.started,
		Ops: len(g.ops), OKWrites: okWrites, Anomalies: g.res.Anomalies, Throughput: throughput,
		Checks: map[string]report.CheckResult{
			report.CheckLinearizability: linCheck(g.res),
			report.CheckInvariants:      invCheck(g.res),
			report.CheckStateHashes:     {Pass: g.hashOK, Detail: g.hashDetail},
			report.CheckLiveness:        {Pass: liveOK, Detail: liveDetail},
			report.CheckThroughput: {Pass: throughput >= o.minThroughput, Detail: fmt.Sprintf(
				"%.1f acknowledged writes/s over %v (%d), minimum %.1f", throughput, elapsed.Round(time.Second), okWrites, o.minThroughput)},
		},
		Faults: g.faults,
		Notes:  g.notes,
	}
	maps.Copy(r.Checks, g.extra)
	r.Pass = true
	for _, c := range r.Checks {
		r.Pass = r.Pass && c.Pass
	}
	if err := report.Write(o.out, r, g.ops); err != nil {
		return "", exitHarness, err
	}
	code := exitPass
	if !r.Pass {
		code = exitFail
		printFailure(os.Stderr, r)
	}
	return report.Summary(r), code, nil
}

// maxPrinted bounds the anomalies a failed run prints; report.json has
// them all. CI keeps only the log, so the first ones must be in it.
const maxPrinted = 5

// printFailure writes what failed, and the first anomalies, to w.
func printFailure(w io.Writer, r report.Report) {
	for _, name := range slices.Sorted(maps.Keys(r.Checks)) {
		if c := r.Checks[name]; !c.Pass {
			fmt.Fprintf(w, "chaos: check %s failed: %s\n", name, c.Detail)
		}
	}
	for i, a := range r.Anomalies {
		if i == maxPrinted {
			fmt.Fprintf(w, "chaos: %d more anomalies in report.json\n", len(r.Anomalies)-maxPrinted)
			break
		}
		d := a.Detail
		if len(d) > 1000 {
			d = d[:1000] + "..."
		}
		fmt.Fprintf(w, "chaos: anomaly %s %s: %s\n", a.Kind, a.User, d)
	}
}

func linCheck(res check.Result) report.CheckResult {
	n := 0
	for _, a := range res.Anomalies {
		if a.Kind == check.KindNonlinearizable || a.Kind == check.KindUnknownLinearizability {
			n++
		}
	}
	d := fmt.Sprintf("%d users, %d ops; slowest user %v", res.UsersChecked, res.OpsChecked, res.Slowest.Round(time.Millisecond))
	if n > 0 {
		d = fmt.Sprintf("%d users not linearizable (or undecided); %s; see porcupine/", n, d)
	}
	return report.CheckResult{Pass: res.Linearizable && n == 0, Detail: d}
}

func invCheck(res check.Result) report.CheckResult {
	n := 0
	for _, a := range res.Anomalies {
		if a.Kind != check.KindNonlinearizable && a.Kind != check.KindUnknownLinearizability && a.Kind != check.KindVisualization {
			n++
		}
	}
	if res.Invariants && n == 0 {
		return report.CheckResult{Pass: true, Detail: fmt.Sprintf("final histories of %d users consistent with the calls", res.UsersChecked)}
	}
	return report.CheckResult{Pass: false, Detail: fmt.Sprintf("%d invariant anomalies", n)}
}

func crashCheck(cs []nodes.Crash) report.CheckResult {
	if len(cs) == 0 {
		return report.CheckResult{Pass: true, Detail: "no node exited on its own"}
	}
	var s []string
	for _, c := range cs {
		s = append(s, fmt.Sprintf("%s at %s: %s", c.Node, c.At.Format(time.TimeOnly), c.Err))
	}
	return report.CheckResult{Pass: false, Detail: "nodes exited on their own: " + strings.Join(s, "; ")}
}

// hotShard is the shard most of the workload's hot users are on (users
// 0 to hot-1), so that "the leader" faults aim where the traffic is.
func hotShard(prefix string, hot, n int) func() (uint32, bool) {
	if hot == 0 {
		return nil
	}
	count := make([]int, n)
	for i := range hot {
		count[shards.ShardOf(workload.UserName(prefix, i), n)]++
	}
	best := uint32(slices.Index(count, slices.Max(count)))
	return func() (uint32, bool) { return best, true }
}

// probeAll times a write on every shard after the heal.
func probeAll(ctx context.Context, endpoints []string, o options, healed time.Time) ([]probeResult, error) {
	c, err := client.New(ctx, client.Options{Endpoints: endpoints, Timeout: time.Second, RetryBudget: -1})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	users := probeUsers(fmt.Sprintf("probe-%d-", o.seed), o.shards)
	// Keep probing past the limit, so a slow shard's time is known.
	return probe(ctx, c, users, healed, 3*o.liveness), nil
}

// readFinal reads every user's history after the run, retrying users
// whose read fails for a little while.
func readFinal(ctx context.Context, endpoints []string, ops []history.Op, log *slog.Logger) (check.Final, error) {
	final := check.Final{Events: map[string][]client.Event{}}
	c, err := client.New(ctx, client.Options{Endpoints: endpoints, Timeout: 5 * time.Second, RetryBudget: 10 * time.Second})
	if err != nil {
		return final, err
	}
	defer c.Close()
	var users []string
	for _, op := range ops {
		if !slices.Contains(users, op.User) {
			users = append(users, op.User)
		}
	}
	slices.Sort(users)
	var errs []error
	for _, u := range users {
		var last error
		for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
			f, err := check.FetchFinal(ctx, c, []string{u})
			if err == nil {
				final.Events[u] = f.Events[u]
				last = nil
				break
			}
			last = err
			log.Warn("reading final events", "user", u, "attempt", attempt+1, "err", err)
		}
		if last != nil {
			errs = append(errs, last)
		}
	}
	return final, errors.Join(errs...)
}

// recoveryNote says how soon after each heal the workload had a write
// acknowledged again: informative, not a check (the liveness check is
// the final heal's, per shard).
func recoveryNote(recs []faults.Record, ops []history.Op) string {
	var acks []int64
	for _, op := range ops {
		if op.Outcome == history.OK && op.Kind != history.Balance {
			acks = append(acks, op.Return)
		}
	}
	slices.Sort(acks)
	var worst time.Duration
	worstKind, n := "", 0
	for _, r := range recs {
		if r.End.IsZero() {
			continue
		}
		i, _ := slices.BinarySearch(acks, r.End.UnixNano())
		if i == len(acks) {
			continue // the run ended first
		}
		n++
		if d := time.Duration(acks[i] - r.End.UnixNano()); d > worst {
			worst, worstKind = d, r.Kind+" on "+r.Target
		}
	}
	if n == 0 {
		return "recovery: no healed fault followed by an acknowledged write"
	}
	return fmt.Sprintf("recovery: after each of %d heals a write was acknowledged within %v (slowest after %s)",
		n, worst.Round(time.Millisecond), worstKind)
}

// snapshotNotes tells how many raft snapshots the nodes' stores hold at
// the end (raft keeps the last two per shard), as evidence that the low
// thresholds made raft snapshot during the run. Raft logs at warn level
// in the nodes, so installs from a leader cannot be counted from logs.
func snapshotNotes(c *nodes.Cluster) []string {
	held := 0
	for i := range c.Size() {
		dirs, _ := filepath.Glob(filepath.Join(c.DataDir(i), "shards", "*", "snapshots", "*"))
		held += len(dirs)
	}
	return []string{fmt.Sprintf("raft snapshots held in the nodes' stores at the end: %d", held)}
}

func writeSchedule(path string, o options, kinds []faults.Kind, steps []faults.Step) error {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %d nodes, %v, kinds %v\n", o.seed, o.nodes, o.duration, kinds)
	for _, st := range steps {
		fmt.Fprintln(&b, st)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// runningWorkload is a workload started in the background.
type runningWorkload struct {
	cancel context.CancelFunc
	done   chan error
}

func startWorkload(ctx context.Context, cfg workload.Config, rec *history.Recorder) *runningWorkload {
	wctx, cancel := context.WithCancel(ctx)
	w := &runningWorkload{cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- workload.Run(wctx, cfg, rec) }()
	return w
}

// stop ends the workload and waits for its in-flight calls to give up, at
// most workloadStop; it returns notes for the report on anything odd.
func (w *runningWorkload) stop() []string {
	w.cancel()
	select {
	case err := <-w.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			return []string{"workload: " + err.Error()}
		}
		return nil
	case <-time.After(workloadStop):
		return []string{fmt.Sprintf("workload did not stop within %v", workloadStop)}
	}
}
