//go:build !(chaos && chaosbug_stalereads)

package routing

import (
	"context"

	"github.com/ration/ration/actors"
)

// readLocally is a planted bug's hook (chaosbug_stalereads.go); in every
// other build it serves nothing and Balance routes as designed.
func readLocally(context.Context, *Router, string, int64, bool) (bool, actors.BalanceResult, error) {
	return false, actors.BalanceResult{}, nil
}

// plantedStaleReads tells tests which behaviour to expect.
const plantedStaleReads = false
