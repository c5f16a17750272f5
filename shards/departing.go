package shards

import (
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// departures is what a group's log adapter asks (expectations): whether
// the failures raft reports are how a graceful departure looks. A group
// that is closing, a Host that is shutting down, and a node that
// Config.Departing says is going away itself expect every connection to
// fail; otherwise Config.Departing says which peers are going away.
type departures struct {
	g *group
	// raft is the group's raft once NewRaft has returned: raft logs from
	// its own goroutines before that, and group.raft is not set yet.
	raft atomic.Pointer[raft.Raft]
	// closing is set when the group starts to close.
	closing atomic.Bool
}

func (d *departures) selfDeparting() bool {
	if d.closing.Load() {
		return true
	}
	select {
	case <-d.g.h.closing:
		return true
	default:
	}
	c := d.g.h.cfg
	return c.Departing != nil && c.Departing(raft.ServerID(c.NodeID), "")
}

func (d *departures) departing(id raft.ServerID, addr raft.ServerAddress) bool {
	if d.selfDeparting() {
		return true
	}
	f := d.g.h.cfg.Departing
	return f != nil && (id != "" || addr != "") && f(id, addr)
}

func (d *departures) othersDeparting() bool {
	if d.selfDeparting() {
		return true
	}
	r := d.raft.Load()
	if r == nil || d.g.h.cfg.Departing == nil {
		return false
	}
	others := 0
	for _, s := range r.GetConfiguration().Configuration().Servers {
		if s.Suffrage != raft.Voter || s.ID == raft.ServerID(d.g.h.cfg.NodeID) {
			continue
		}
		if !d.g.h.cfg.Departing(s.ID, s.Address) {
			return false
		}
		others++
	}
	return others > 0
}
