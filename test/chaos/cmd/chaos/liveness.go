package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/shards"
)

// probeUsers names one user per shard, outside the workload's users (the
// checkers never see them), so that a write to each shard can be timed.
func probeUsers(prefix string, nShards int) []string {
	users := make([]string, nShards)
	found := 0
	for k := 0; found < nShards; k++ {
		u := prefix + strconv.Itoa(k)
		if s := shards.ShardOf(u, nShards); users[s] == "" {
			users[s] = u
			found++
		}
	}
	return users
}

// probeResult is how long after the heal each shard took a write again;
// a negative duration means not within the budget.
type probeResult struct {
	Shard   int
	User    string
	After   time.Duration
	LastErr string
}

// probe writes one grant per shard, again and again with the same id and
// fields (so that a write whose outcome was unknown turns into a
// duplicate, not a second grant), until each shard has taken it or
// budget since healed is over.
func probe(ctx context.Context, c *client.Client, users []string, healed time.Time, budget time.Duration) []probeResult {
	res := make([]probeResult, len(users))
	ts := time.Now().UnixMilli()
	var wg sync.WaitGroup
	for s, u := range users {
		wg.Go(func() {
			res[s] = probeResult{Shard: s, User: u, After: -1}
			g := client.Grant{ID: "liveness", Amount: 1, Timestamp: ts}
			for time.Since(healed) < budget && ctx.Err() == nil {
				actx, cancel := context.WithTimeout(ctx, time.Second)
				_, err := c.Grant(actx, u, g)
				cancel()
				if err == nil {
					res[s].After = time.Since(healed)
					return
				}
				res[s].LastErr = err.Error()
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
	}
	wg.Wait()
	return res
}

// livenessVerdict passes if every shard took a write within limit.
func livenessVerdict(rs []probeResult, limit time.Duration) (bool, string) {
	var slow []string
	var worst time.Duration
	for _, r := range rs {
		if r.After < 0 || r.After > limit {
			what := "none"
			if r.After >= 0 {
				what = r.After.Round(time.Millisecond).String()
			}
			slow = append(slow, fmt.Sprintf("shard %d: %s (%s)", r.Shard, what, r.LastErr))
			continue
		}
		worst = max(worst, r.After)
	}
	if len(slow) > 0 {
		slices.Sort(slow)
		return false, fmt.Sprintf("%d of %d shards took no write within %v of the heal: %s", len(slow), len(rs), limit, strings.Join(slow, "; "))
	}
	return true, fmt.Sprintf("every shard took a write within %v of the heal (limit %v)", worst.Round(time.Millisecond), limit)
}
