package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/test/chaos/check"
	"github.com/ration/ration/test/chaos/history"
	"github.com/ration/ration/test/chaos/workload"
)

// runExternal checks a cluster the harness did not start, such as a
// Kubernetes deployment, through its gRPC endpoints: the workload runs for
// the duration while faults come from elsewhere (kubectl delete pod, a
// node drain, a NetworkPolicy, a chaos operator), then every check that
// needs no control of the processes runs as in a local run.
func runExternal(ctx context.Context, o options, log *slog.Logger) (string, int, error) {
	for _, a := range artifacts {
		if err := os.RemoveAll(filepath.Join(o.out, a)); err != nil {
			return "", exitHarness, err
		}
	}
	statuses := func(ctx context.Context) map[string]client.ClusterStatus {
		return externalStatuses(ctx, o.endpoints, log)
	}
	shardCount := 0
	for _, st := range statuses(ctx) {
		for _, s := range st.Shards {
			shardCount = max(shardCount, int(s.ID)+1)
		}
	}
	if shardCount == 0 {
		return "", exitHarness, fmt.Errorf("no endpoint of %v answered Admin.Status", o.endpoints)
	}
	o.shards = shardCount
	log.Info("external cluster", "endpoints", o.endpoints, "shards", shardCount)

	rec, err := history.NewRecorder(filepath.Join(o.out, "history.jsonl"))
	if err != nil {
		return "", exitHarness, err
	}
	defer rec.Close()
	// Users carry the start time too: a deployment outlives runs, and a
	// second run with the same seed must not find the first one's ids.
	prefix := fmt.Sprintf("u-%d-%d-", o.seed, time.Now().Unix())
	wcfg := workload.Config{
		Seed: o.seed, Clients: o.clients, Users: o.users, HotUsers: o.hot,
		Endpoints: o.endpoints, Resend: o.resend, UserPrefix: prefix, Now: time.Now, Logger: log,
	}
	started := time.Now()
	wl := startWorkload(ctx, wcfg, rec)
	defer wl.cancel()
	log.Info("workload running: inject faults now, and heal them before the end", "for", o.duration)
	sleepCtx(ctx, o.duration)
	if ctx.Err() != nil {
		return "", exitHarness, fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}

	// The operator's faults are over by now: writes must come back.
	healed := time.Now()
	probes, err := probeAll(ctx, o.endpoints, o, healed)
	if err != nil {
		return "", exitHarness, err
	}
	sleepCtx(ctx, time.Until(healed.Add(tail)))
	notes := wl.stop()
	stopped := time.Now()
	if err := rec.Close(); err != nil {
		log.Warn("closing the history", "err", err)
	}
	ops := rec.Ops()

	hashOK, hashDetail := awaitConvergence(ctx, statuses, o.shards, o.converge)
	fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	final, err := readFinal(fctx, o.endpoints, ops, log)
	cancel()
	if err != nil {
		notes = append(notes, "final state incomplete: "+err.Error())
	}
	if err := final.WriteFile(filepath.Join(o.out, "final.json")); err != nil {
		log.Warn("writing final.json", "err", err)
	}
	res := check.Check(ops, final, check.Options{Timeout: o.checkTimeout, VisualizeDir: filepath.Join(o.out, "porcupine")})
	for _, w := range res.Warnings {
		notes = append(notes, fmt.Sprintf("warning: %s %s: %s", w.Kind, w.User, w.Detail))
	}
	notes = append(notes, "external cluster: faults were injected outside the harness and are not in the report")

	return verdict(o, len(o.endpoints), outcome{
		ops: ops, res: res, started: started, stopped: stopped, probes: probes,
		hashOK: hashOK, hashDetail: hashDetail, notes: notes,
	})
}

// externalStatuses asks every endpoint, and then every node those list
// by its advertised gRPC address, for its view with state hashes: the
// state-hash check needs each replica's own report, and a Service address
// reaches only one pod per call. Nodes that do not answer are left out,
// as a down node would be.
func externalStatuses(ctx context.Context, endpoints []string, log *slog.Logger) map[string]client.ClusterStatus {
	out := map[string]client.ClusterStatus{}
	asked := map[string]bool{}
	for round := 0; round < 2; round++ {
		var todo []string
		for _, ep := range endpoints {
			if !asked[ep] {
				todo = append(todo, ep)
			}
		}
		for _, st := range out {
			for _, n := range st.Nodes {
				if _, known := out[n.ID]; !known && n.GRPCAddr != "" && !asked[n.GRPCAddr] {
					todo = append(todo, n.GRPCAddr)
				}
			}
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, ep := range todo {
			asked[ep] = true
			wg.Go(func() {
				st, err := statusOf(ctx, ep)
				if err != nil {
					log.Debug("status", "endpoint", ep, "err", err)
					return
				}
				mu.Lock()
				out[st.NodeID] = st
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	return out
}

func statusOf(ctx context.Context, endpoint string) (client.ClusterStatus, error) {
	c, err := client.New(ctx, client.Options{Endpoints: []string{endpoint}, Timeout: 3 * time.Second, RetryBudget: -1})
	if err != nil {
		return client.ClusterStatus{}, err
	}
	defer c.Close()
	return c.Status(ctx, client.WithStateHashes())
}
