package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ration/ration/client"
)

// shardVerdict is one shard's replicas compared.
type shardVerdict struct {
	Shard     uint32
	Leader    string
	Converged bool // every voter reported the same applied index and hash
	Diverged  bool // some voters applied the same index yet hash differently
	Detail    string
}

// compareReplicas judges every shard from the nodes' statuses (keyed by
// node id), each of which reports the node's own replicas. The voters are
// those the leader's own status lists; a voter that did not report the
// shard (down, or not answering) leaves it unconverged.
func compareReplicas(statuses map[string]client.ClusterStatus, shards int) []shardVerdict {
	type view struct {
		applied uint64
		hash    []byte
	}
	var out []shardVerdict
	for s := range uint32(shards) {
		v := shardVerdict{Shard: s}
		views := map[string]view{}
		votes := map[string]int{}
		var voters []string
		for node, st := range statuses {
			for _, sh := range st.Shards {
				if sh.ID != s {
					continue
				}
				if sh.Leader != "" {
					votes[sh.Leader]++
				}
				if sh.State != "" {
					views[node] = view{sh.AppliedIndex, sh.StateHash}
				}
				if strings.HasPrefix(sh.State, "Leader") && sh.Leader == node || voters == nil {
					voters = slices.Clone(sh.Voters)
				}
			}
		}
		for id, n := range votes {
			if n > votes[v.Leader] || n == votes[v.Leader] && id < v.Leader {
				v.Leader = id
			}
		}
		slices.Sort(voters)
		switch {
		case v.Leader == "":
			v.Detail = "no leader"
		case len(voters) == 0:
			v.Detail = "no voters reported"
		default:
			var parts, missing []string
			byIndex := map[uint64]map[string][]string{} // applied index -> hash -> nodes
			for _, id := range voters {
				w, ok := views[id]
				if !ok {
					missing = append(missing, id)
					continue
				}
				h := hex.EncodeToString(w.hash)
				if len(h) > 12 {
					h = h[:12]
				}
				parts = append(parts, fmt.Sprintf("%s@%d=%s", id, w.applied, h))
				if byIndex[w.applied] == nil {
					byIndex[w.applied] = map[string][]string{}
				}
				byIndex[w.applied][h] = append(byIndex[w.applied][h], id)
			}
			for _, hashes := range byIndex {
				if len(hashes) > 1 {
					v.Diverged = true
				}
			}
			v.Converged = len(missing) == 0 && len(byIndex) == 1 && !v.Diverged
			v.Detail = strings.Join(parts, " ")
			if len(missing) > 0 {
				v.Detail += " missing " + strings.Join(missing, ",")
			}
		}
		out = append(out, v)
	}
	return out
}

// hashVerdict sums up the shards: pass only if every shard converged.
func hashVerdict(vs []shardVerdict) (pass bool, detail string) {
	var bad []string
	diverged := 0
	for _, v := range vs {
		if v.Diverged {
			diverged++
		}
		if !v.Converged {
			what := "not converged"
			if v.Diverged {
				what = "DIVERGED"
			}
			bad = append(bad, fmt.Sprintf("shard %d %s (leader %q): %s", v.Shard, what, v.Leader, v.Detail))
		}
	}
	if len(bad) == 0 {
		return true, fmt.Sprintf("%d shards: every voter has the same applied index and state hash", len(vs))
	}
	return false, fmt.Sprintf("%d of %d shards bad (%d diverged): %s", len(bad), len(vs), diverged, strings.Join(bad, "; "))
}

// statusFunc asks every reachable node for its status with state hashes,
// keyed by node id.
type statusFunc func(ctx context.Context) map[string]client.ClusterStatus

// awaitConvergence polls until every shard has converged or wait is over,
// and returns the last verdict. A divergence seen at the same applied
// index twice in a row is final: more waiting will not mend it.
func awaitConvergence(ctx context.Context, status statusFunc, shards int, wait time.Duration) (bool, string) {
	deadline := time.Now().Add(wait)
	var last []shardVerdict
	diverged := map[uint32]string{}
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		sts := status(qctx)
		cancel()
		last = compareReplicas(sts, shards)
		pass, detail := hashVerdict(last)
		if pass {
			return true, detail
		}
		again := false
		for _, v := range last {
			if v.Diverged && diverged[v.Shard] == v.Detail {
				again = true
			}
		}
		if again || time.Now().After(deadline) || ctx.Err() != nil {
			return false, detail
		}
		clear(diverged)
		for _, v := range last {
			if v.Diverged {
				diverged[v.Shard] = v.Detail
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// byNodeID re-keys statuses by the id of the node that answered.
func byNodeID(sts map[int]client.ClusterStatus) map[string]client.ClusterStatus {
	out := map[string]client.ClusterStatus{}
	for _, k := range slices.Sorted(maps.Keys(sts)) {
		out[sts[k].NodeID] = sts[k]
	}
	return out
}
