package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ration/ration/shards"
)

// The whole lifecycle on five nodes (8 shards, 3 replicas each), under
// load through nodes that are not the victims:
//
//  1. kill -9 of a node that leads a shard: writes to the shards it led
//     resume, no acknowledged write is lost; it comes back;
//  2. a sixth node joins: the shards that placement over six nodes gives
//     it move to it, one nonvoter, promotion and removal per moved replica;
//  3. SIGTERM of another node: it leaves, and no request fails;
//  4. every acknowledged write is still there, every replica of every
//     shard has the same state, and no write was applied twice: each
//     loaded user's history, read through two nodes, holds every
//     acknowledged write once, nothing the load did not send, and the
//     balance that history gives.
func TestFiveNodeLifecycle(t *testing.T) {
	const (
		nShards = 8 // proc.start passes --shards 8
		writers = 4 // per load node
	)
	start := time.Now()
	procs := newCluster(t, 5)
	byID := map[string]*proc{}
	for _, p := range procs {
		byID[p.id] = p
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Logf("5 nodes ready after %v", time.Since(start).Round(time.Millisecond))

	// Every shard has a leader before anything else: a formation that
	// left a shard without one would fail everything below less clearly.
	var ledBy map[string][]uint32
	for formed := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		ledBy = leadership(ctx, t, procs)
		led := map[uint32]bool{}
		for _, l := range ledBy {
			for _, s := range l {
				led[s] = true
			}
		}
		n := len(led)
		if n == nShards {
			break
		}
		if time.Since(formed) > 30*time.Second {
			for _, p := range procs {
				t.Logf("%s log:\n%s", p.id, p.log())
			}
			t.Fatalf("only %d of %d shards have a leader 30s after the start: %v", n, nShards, ledBy)
		}
	}
	// The victims: victim leads the shard of a user of the first load;
	// leaver is the other node that leads the most shards. The other
	// three carry the load.
	var victim *proc
	for id, led := range ledBy {
		if slices.Contains(led, shards.ShardOf("kill0-u0", nShards)) {
			victim = byID[id]
		}
	}
	if victim == nil {
		t.Fatalf("shard %d of kill0-u0 has no leader: %v", shards.ShardOf("kill0-u0", nShards), ledBy)
	}
	var leaver *proc
	for _, p := range procs {
		if p != victim && (leaver == nil || len(ledBy[p.id]) > len(ledBy[leaver.id])) {
			leaver = p
		}
	}
	var loaders []*proc
	for _, p := range procs {
		if p != victim && p != leaver {
			loaders = append(loaders, p)
		}
	}
	t.Logf("leaders: %v; kill -9 %s, SIGTERM %s, load through the others", ledBy, victim.id, leaver.id)

	var runs []*loadRun

	// 1. kill -9 of a leader under load.
	stopLoad := startLoads(ctx, loaders, "kill", writers)
	time.Sleep(time.Second)
	led := leadership(ctx, t, procs)[victim.id]
	if len(led) == 0 {
		t.Fatalf("%s leads no shard any more", victim.id)
	}
	// Probe users: two per shard the victim leads.
	var probes []string
	perShard := map[uint32]int{}
	for n := 0; len(probes) < 2*len(led); n++ {
		u := "probe-" + strconv.Itoa(n)
		if s := shards.ShardOf(u, nShards); slices.Contains(led, s) && perShard[s] < 2 {
			perShard[s]++
			probes = append(probes, u)
		}
	}
	killed := time.Now()
	victim.kill9()
	resumed, probeAcks := probeWrites(t, loaders[0].base(), probes, killed, 60*time.Second)
	var worst time.Duration
	for i, u := range probes {
		worst = max(worst, resumed[i])
		t.Logf("  %s (shard %d): first write acknowledged %v after the kill", u, shards.ShardOf(u, nShards), resumed[i].Round(time.Millisecond))
	}
	t.Logf("kill -9 of %s (leader of shards %v): writes to those shards resumed after %v", victim.id, led, worst.Round(time.Millisecond))
	time.Sleep(time.Second)
	killRuns := stopLoad()
	runs = append(runs, killRuns...)
	logRuns(t, "during the kill", killRuns)
	survivor := loaders[1]
	checkAcksVia(t, append(acksOf(killRuns), probeAcks...), survivor.base())
	victim.start()
	t.Logf("%s back after %v down", victim.id, time.Since(killed).Round(time.Millisecond))

	// Down for less than --dead-node-grace (30 s): no replica moved (a
	// node that formed late has opened its groups, which moves nothing).
	// Leadership may have: a shard the victim is the preferred leader of
	// goes back to it once it is back and caught up (prefer_leader), as
	// soon as the new leader has led for rebalance.Config.LeaderSettle
	// (10 s), which can be before this check.
	for _, p := range procs {
		if p == victim {
			continue // restarted: fresh counters
		}
		for k, v := range rebalanceCounts(t, p) {
			if k != "open_group" && k != "prefer_leader" && v != 0 {
				t.Fatalf("%s: %d %s changes after a restart within the dead grace", p.id, v, k)
			}
		}
	}

	// 2. A sixth node joins under load.
	stopLoad = startLoads(ctx, loaders, "join", writers)
	time.Sleep(time.Second)
	p6 := newProc(t)
	p6.id = "node6"
	p6.extra = slices.Clone(procs[0].extra) // the same --join and --bootstrap-expect 5
	joined := time.Now()
	p6.start()
	all := append(slices.Clone(procs), p6)
	ids := []string{"node1", "node2", "node3", "node4", "node5", "node6"}
	want, moved := placementAfterJoin(nShards, ids)
	if moved == 0 {
		t.Fatal("placement over six nodes moves nothing: the test would show nothing")
	}
	waitPlaced(ctx, t, all, want, "replicas not moved")
	t.Logf("node6 joined: %d replica slots moved to it, every shard had its target voters %v after its start", moved, time.Since(joined).Round(time.Millisecond))
	counts := clusterRebalanceCounts(t, all)
	t.Logf("rebalance changes: %v", counts)
	if counts["node6/open_group"] != moved || counts["add_nonvoter"] != moved || counts["promote"] != moved ||
		counts["remove"] != moved || counts["close_group"] != moved {
		t.Errorf("want %d of each of open_group (node6), add_nonvoter, promote, remove, close_group", moved)
	}
	time.Sleep(time.Second) // a moment on the new configuration
	joinRuns := stopLoad()
	runs = append(runs, joinRuns...)
	logRuns(t, "during the join", joinRuns)
	checkAcksVia(t, acksOf(joinRuns), p6.base())

	// 3. SIGTERM of a node that leads shards, under load through the
	// others (node6 too): no request fails.
	led = leadership(ctx, t, []*proc{leaver})[leaver.id]
	stopLoad = startLoads(ctx, append(slices.Clone(loaders), p6), "leave", writers)
	time.Sleep(time.Second)
	left := time.Now()
	if err := leaver.stop(30 * time.Second); err != nil {
		t.Fatalf("%s did not stop cleanly: %v\n%s", leaver.id, err, leaver.log())
	}
	t.Logf("%s (leader of shards %v) exited %v after SIGTERM", leaver.id, led, time.Since(left).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	leaveRuns := stopLoad()
	runs = append(runs, leaveRuns...)
	logRuns(t, "while "+leaver.id+" left", leaveRuns)
	for _, r := range leaveRuns {
		if r.failed > 0 {
			t.Fatalf("%d requests through %s failed while %s left gracefully\n%s", r.failed, r.node, leaver.id, leaver.log())
		}
	}

	// 4. Everything, on the five nodes that remain.
	var rest []*proc
	for _, p := range all {
		if p != leaver {
			rest = append(rest, p)
		}
	}
	allAcks := append(acksOf(runs), probeAcks...)
	checkAcksVia(t, allAcks, victim.base())
	checkReplicasConverge(t, rest)
	checkNothingDoubled(t, runs, victim, p6)
	t.Logf("%d acknowledged writes checked; whole test %v", len(allAcks), time.Since(start).Round(time.Millisecond))
}

// leadership returns the shards each node leads, by its own account.
func leadership(ctx context.Context, t *testing.T, procs []*proc) map[string][]uint32 {
	t.Helper()
	out := map[string][]uint32{}
	for _, p := range procs {
		for _, s := range statusOf(ctx, t, p).Shards {
			if s.Leader == p.id && strings.HasPrefix(s.State, "Leader") {
				out[p.id] = append(out[p.id], s.ID)
			}
		}
	}
	return out
}

// loadRun is one writeLoadCounting through one node: its users are
// tag-u0 to tag-u19.
type loadRun struct {
	node    string
	tag     string
	writers int
	acks    []ack
	failed  int
}

// startLoads runs writeLoadCounting through each node, tagged
// phase+index, until the returned function is called; it returns the runs.
func startLoads(ctx context.Context, nodes []*proc, phase string, writers int) func() []*loadRun {
	lctx, cancel := context.WithCancel(ctx)
	runs := make([]*loadRun, len(nodes))
	var wg sync.WaitGroup
	for i, p := range nodes {
		r := &loadRun{node: p.id, tag: phase + strconv.Itoa(i), writers: writers}
		runs[i] = r
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.acks, r.failed = writeLoadCounting(lctx, p.base(), writers, r.tag)
		}()
	}
	return func() []*loadRun {
		cancel()
		wg.Wait()
		return runs
	}
}

func acksOf(runs []*loadRun) []ack {
	var out []ack
	for _, r := range runs {
		out = append(out, r.acks...)
	}
	return out
}

func logRuns(t *testing.T, when string, runs []*loadRun) {
	t.Helper()
	var parts []string
	for _, r := range runs {
		parts = append(parts, fmt.Sprintf("%s via %s: %d acknowledged, %d failed", r.tag, r.node, len(r.acks), r.failed))
	}
	t.Logf("load %s: %s", when, strings.Join(parts, "; "))
}

// probeWrites sends one grant to each user through base and returns how
// long after since the first write to each was acknowledged. A request
// sent while the shard has no leader can wait for the router's deadline
// after the shard is back, so a new attempt starts every 200ms, each with
// the same id (so at most one applies) and a 2s timeout, until one is
// acknowledged. It fails the test past limit.
func probeWrites(t *testing.T, base string, users []string, since time.Time, limit time.Duration) ([]time.Duration, []ack) {
	t.Helper()
	out := make([]time.Duration, len(users))
	acks := make([]ack, len(users))
	errs := make([]string, len(users))
	var wg sync.WaitGroup
	for i, u := range users {
		url := base + "/v1/users/" + u + "/grants"
		body := `{"id":"probe","amount":1,"timestamp":0}`
		acks[i] = ack{url, body}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			done := make(chan struct{})
			var mu sync.Mutex
			lastErr := "" // the latest failure, for the message
			var attempts sync.WaitGroup
			defer attempts.Wait()
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				attempts.Add(1)
				go func() {
					defer attempts.Done()
					actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					status, resp, err := post(actx, url, body)
					if err == nil && status == 200 {
						once.Do(func() { out[i] = time.Since(since); close(done) })
						return
					}
					mu.Lock()
					lastErr = fmt.Sprintf("%d %s %v", status, resp, err)
					mu.Unlock()
				}()
				select {
				case <-done:
					return
				case <-tick.C:
				}
				if time.Since(since) > limit {
					mu.Lock()
					errs[i] = fmt.Sprintf("%s: no write acknowledged within %v: %s", u, limit, lastErr)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != "" {
			t.Fatal(e)
		}
	}
	return out, acks
}

// event is one entry of a user's history as the HTTP API gives it.
type event struct {
	Kind         string `json:"kind"`
	ID           string `json:"id"`
	Timestamp    int64  `json:"timestamp"`
	Amount       int64  `json:"amount"`
	BalanceAfter int64  `json:"balance_after"`
}

// history reads a user's whole history and its balance at two instants
// through base: at 1000000, after every grant of writeLoad (timestamp i)
// and before every deduction (i+1000000), and at 2^40, after everything.
func history(t *testing.T, base, user string) (evs []event, granted, final int64) {
	t.Helper()
	get := func(u string, v any) {
		resp, err := httpc.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", u, resp.StatusCode, b)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", u, err)
		}
	}
	token := ""
	for {
		var page struct {
			Events []event `json:"events"`
			Next   string  `json:"next_page_token"`
		}
		get(base+"/v1/users/"+user+"/events?limit=1000&page_token="+url.QueryEscape(token), &page)
		evs = append(evs, page.Events...)
		if page.Next == "" {
			break
		}
		token = page.Next
	}
	var b struct {
		Balance int64 `json:"balance"`
	}
	get(base+"/v1/users/"+user+"/balance?at=1000000", &b)
	granted = b.Balance
	get(base+"/v1/users/"+user+"/balance?at="+strconv.FormatInt(1<<40, 10), &b)
	return evs, granted, b.Balance
}

// checkNothingDoubled reads the history of every user of every run
// through two nodes. writeLoad sends grants of 10 at timestamp i with id
// tag-g-w-i (i a multiple of 3) and deductions of 1 at i+1000000 with id
// tag-d-w-i, each id once. So each history must: read the same through
// both nodes; hold only writes the load sent, each id once; hold every
// acknowledged write; and give the balance its events add up to. The
// writes applied but not acknowledged can only be ones whose answer the
// load did not get: at most its failed requests plus one cut short per
// writer at its end.
func checkNothingDoubled(t *testing.T, runs []*loadRun, a, b *proc) {
	t.Helper()
	users, events := 0, 0
	for _, r := range runs {
		acked := map[string]string{} // id -> user
		for _, k := range r.acks {
			var body struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal([]byte(k.body), &body); err != nil {
				t.Fatal(err)
			}
			rest := k.url[strings.Index(k.url, "/v1/users/")+len("/v1/users/"):]
			acked[body.ID] = rest[:strings.Index(rest, "/")]
		}
		seen := map[string]string{}
		unacked := 0
		for u := 0; u < 20; u++ {
			user := fmt.Sprintf("%s-u%d", r.tag, u)
			evs, granted, final := history(t, a.base(), user)
			evs2, granted2, final2 := history(t, b.base(), user)
			if !slices.Equal(evs, evs2) || granted != granted2 || final != final2 {
				t.Fatalf("%s reads differently through %s (%d events, balances %d/%d) and %s (%d events, %d/%d)",
					user, a.id, len(evs), granted, final, b.id, len(evs2), granted2, final2)
			}
			users++
			events += len(evs)
			var grants, deducted int64
			for _, e := range evs {
				kind, w, i, ok := parseLoadID(r.tag, e.ID)
				if !ok || w >= r.writers {
					t.Fatalf("%s: event %+v was not sent by load %s", user, e, r.tag)
				}
				switch {
				case e.Kind == "grant" && kind == "g" && i%3 == 0 && e.Amount == 10 && e.Timestamp == int64(i):
					grants += e.Amount
				case e.Kind == "deduction" && kind == "d" && i%3 != 0 && e.Amount == 1 && e.Timestamp == int64(i)+1000000:
					deducted += e.Amount
				default:
					t.Fatalf("%s: event %+v is not what load %s sent with that id", user, e, r.tag)
				}
				if other, dup := seen[e.ID]; dup {
					t.Fatalf("%s: %s applied twice (also in %s's history)", user, e.ID, other)
				}
				seen[e.ID] = user
				if au, ok := acked[e.ID]; !ok {
					unacked++
				} else if au != user {
					t.Fatalf("%s in %s's history, acknowledged for %s", e.ID, user, au)
				}
			}
			if granted != grants || final != grants-deducted {
				t.Fatalf("%s: balance %d before the deductions and %d after, its history adds up to %d and %d",
					user, granted, final, grants, grants-deducted)
			}
			if n := len(evs); n > 0 && evs[n-1].BalanceAfter != final {
				t.Fatalf("%s: last event's balance_after %d, balance %d", user, evs[n-1].BalanceAfter, final)
			}
		}
		for id, user := range acked {
			if _, ok := seen[id]; !ok {
				t.Fatalf("acknowledged %s of %s is not in its history", id, user)
			}
		}
		if unacked > r.failed+r.writers {
			t.Fatalf("load %s: %d writes applied without an acknowledgement, but only %d failed and %d were cut short at most",
				r.tag, unacked, r.failed, r.writers)
		}
	}
	t.Logf("%d users' histories (%d events) read the same through %s and %s: every acknowledged write once, nothing unsent, balances exact", users, events, a.id, b.id)
}

// parseLoadID splits writeLoad's id tag-k-w-i.
func parseLoadID(tag, id string) (kind string, w, i int, ok bool) {
	rest, ok := strings.CutPrefix(id, tag+"-")
	if !ok {
		return "", 0, 0, false
	}
	parts := strings.Split(rest, "-")
	if len(parts) != 3 {
		return "", 0, 0, false
	}
	w, err1 := strconv.Atoi(parts[1])
	i, err2 := strconv.Atoi(parts[2])
	return parts[0], w, i, err1 == nil && err2 == nil
}
