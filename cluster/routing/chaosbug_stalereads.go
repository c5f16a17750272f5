//go:build chaos && chaosbug_stalereads

package routing

import (
	"context"

	"github.com/ration/ration/actors"
)

// A planted bug for the chaos harness (chaos/DESIGN.md): a linearizable
// balance read is answered by the node that received it, from its own
// replica and without a read barrier, whenever it holds one, follower or
// not, as a stale read is. A follower cut off from its leader then answers
// from a state that misses acknowledged writes.

func readLocally(ctx context.Context, r *Router, user string, at int64, stale bool) (bool, actors.BalanceResult, error) {
	if stale {
		return false, actors.BalanceResult{}, nil
	}
	return replicaRead(r, user, true, func(rs Replicas) (actors.BalanceResult, error) {
		return rs.Balance(ctx, user, at)
	})
}

// plantedStaleReads tells tests which behaviour to expect.
const plantedStaleReads = true
