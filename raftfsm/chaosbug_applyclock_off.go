//go:build !(chaos && chaosbug_applyclock)

package raftfsm

import "github.com/ration/ration/raftfsm/raftpb"

// clockRefuses is a planted bug's hook (chaosbug_applyclock.go); in every
// other build Apply reads no clock.
func clockRefuses(*raftpb.Op) bool { return false }

const plantedApplyClock = false
