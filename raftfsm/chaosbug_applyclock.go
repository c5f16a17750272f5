//go:build chaos && chaosbug_applyclock

package raftfsm

import (
	"time"

	"github.com/ration/ration/chaos/skew"
	"github.com/ration/ration/raftfsm/raftpb"
)

// A planted bug for the chaos harness (chaos/DESIGN.md): Apply reads the
// wall clock. A "sanity check" skips, as if its version did not match, an
// op stamped more than a minute ahead of this node's clock or more than
// half an hour behind it. Every replica decides with its own clock, so a
// replica whose clock jumps an hour either way stops appending what the
// others append, and its state hash parts from theirs.

const plantedApplyClock = true

const (
	aheadLimit  = time.Minute
	behindLimit = 30 * time.Minute
)

func clockRefuses(op *raftpb.Op) bool {
	ts := op.GetDeduct().GetTimestamp()
	if g := op.GetGrant(); g != nil {
		ts = g.GetTimestamp()
	}
	now := skew.Now()
	return ts > now.Add(aheadLimit).UnixMilli() || ts < now.Add(-behindLimit).UnixMilli()
}
