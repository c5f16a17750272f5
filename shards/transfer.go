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
// other voter, or whose other voters are all departing too
// (Config.Departing: the whole cluster is stopping), stay led here.
// Proposals arriving meanwhile fail with ErrNoLeader (retryable), and the
// router finds the new leader.
func (h *Host) TransferLeadership(ctx context.Context) error {
	var wg sync.WaitGroup
	hosted := h.hostedGroups()
	errs := make([]error, len(hosted))
	moved, kept := 0, 0
	for i, g := range hosted {
		if g.raft.State() != raft.Leader {
			continue
		}
		to, ok := h.transferTarget(g)
		if !ok {
			kept++
			continue
		}
		moved++
		wg.Go(func() {
			var f raft.Future
			if to == nil {
				f = g.raft.LeadershipTransfer()
			} else {
				f = g.raft.LeadershipTransferToServer(to.ID, to.Address)
			}
			err := await(ctx, f)
			if _, staying := h.transferTarget(g); err != nil && staying {
				// Failing to hand the shard to a voter that has since
				// announced it is going too is how a whole cluster's stop
				// goes; the shard stays here, as it would have.
				errs[i] = fmt.Errorf("shards: shard %d: leadership transfer: %w", g.id, err)
			}
		})
	}
	wg.Wait()
	err := errors.Join(errs...)
	h.log.Info("transferred leadership", "shards", moved, "kept", kept, "err", err)
	return err
}

// transferTarget picks where g's leadership goes: nil means raft's own
// choice (the most up-to-date follower), when no voter is departing; else
// a voter that stays. ok is false when there is none.
func (h *Host) transferTarget(g *group) (to *raft.Server, ok bool) {
	f := g.raft.GetConfiguration()
	if f.Error() != nil {
		return nil, false
	}
	var staying []raft.Server
	others := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter || s.ID == raft.ServerID(h.cfg.NodeID) {
			continue
		}
		others++
		if h.cfg.Departing == nil || !h.cfg.Departing(s.ID, s.Address) {
			staying = append(staying, s)
		}
	}
	switch {
	case len(staying) == 0:
		return nil, false
	case len(staying) == others:
		return nil, true
	}
	return &staying[0], true
}
