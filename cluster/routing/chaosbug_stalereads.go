//go:build chaos && chaosbug_stalereads

package routing

import (
	"context"

	"github.com/ration/ration/actors"
)

// A planted bug for the chaos harness (chaos/DESIGN.md): a linearizable
// balance read is answered by the node that received it, from its own
// replica and without a read barrier, whenever it holds one, follower or
// not. A follower cut off from its leader then answers from a state that
// misses acknowledged writes.

// replicaHolder is what the node's locator adds in chaos builds.
type replicaHolder interface {
	HostsReplica(shard uint32) bool
}

func readLocally(ctx context.Context, r *Router, user string, at int64, stale bool) (bool, actors.BalanceResult, error) {
	if stale {
		return false, actors.BalanceResult{}, nil
	}
	h, ok := r.loc.(replicaHolder)
	if !ok || !h.HostsReplica(r.loc.ShardOf(user)) {
		return false, actors.BalanceResult{}, nil
	}
	res, err := r.local.Balance(ctx, user, at, true)
	return true, res, err
}

// plantedStaleReads tells tests which behaviour to expect.
const plantedStaleReads = true
