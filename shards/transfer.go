package shards

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// TransferLeadership hands every shard this node leads to another voter of
// the shard, all at once, so that a graceful stop costs the cluster no
// election timeout: each group keeps a leader throughout. Shards with no
// other voter stay led here. Proposals arriving meanwhile fail with
// ErrNoLeader (retryable), and the router finds the new leader.
func (h *Host) TransferLeadership(ctx context.Context) error {
	var wg sync.WaitGroup
	hosted := h.hostedGroups()
	errs := make([]error, len(hosted))
	moved := 0
	for i, g := range hosted {
		if g.raft.State() != raft.Leader || !hasOtherVoter(g) {
			continue
		}
		moved++
		wg.Go(func() {
			if err := await(ctx, g.raft.LeadershipTransfer()); err != nil {
				errs[i] = fmt.Errorf("shards: shard %d: leadership transfer: %w", g.id, err)
			}
		})
	}
	wg.Wait()
	err := errors.Join(errs...)
	h.log.Info("transferred leadership", "shards", moved, "err", err)
	return err
}

func hasOtherVoter(g *group) bool {
	f := g.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != raft.ServerID(g.h.cfg.NodeID) {
			return true
		}
	}
	return false
}
