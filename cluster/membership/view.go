package membership

import (
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's state as this node sees it.
type State int

const (
	// Alive: memberlist counts the node a member and it answers probes.
	Alive State = iota
	// Suspect: memberlist still counts the node a member, but this node
	// has had no direct probe ack from it for several probe rounds. It may
	// be slow, partitioned from this node only, or dying; memberlist
	// declares it dead if it stays unreachable through a suspicion timeout.
	Suspect
	// Dead: memberlist declared the node failed. Since is when this node
	// learnt it. A dead member stays in the view until it comes back or is
	// forgotten, so placement can wait out a grace period first.
	Dead
	// Left: the node announced a graceful leave.
	Left
)

func (s State) String() string {
	switch s {
	case Alive:
		return "alive"
	case Suspect:
		return "suspect"
	case Dead:
		return "dead"
	case Left:
		return "left"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Member is one node of the view.
type Member struct {
	Meta
	State State
	// Since is when this node saw State begin, by its own clock.
	Since time.Time
	// GossipAddr is the host:port the node gossips from, for logs and
	// diagnostics.
	GossipAddr string
	// Stopping: the node announced that it is shutting down
	// (AnnounceStopping). It keeps its State until it leaves or fails;
	// failing to reach it from now on is expected, not news.
	Stopping bool
}

// memberState is a view entry plus what the view needs to judge it.
type memberState struct {
	Member
	flags byte
	// conflict: the member announces another settled shard count than
	// this node's (Conflicting); it is not in the view.
	conflict bool
	// lastAck is when memberlist last had a direct probe ack from the
	// node, or when it (re)joined.
	lastAck time.Time
}

type eventKind int

const (
	evJoin eventKind = iota
	evLeave
	evUpdate
)

// delegate receives memberlist's callbacks. It must not call back into
// memberlist: event callbacks run with memberlist's node lock held.
type delegate struct {
	m *Membership
}

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
	_ memberlist.PingDelegate  = (*delegate)(nil)
	_ memberlist.MergeDelegate = (*delegate)(nil)
)

func (d *delegate) NodeMeta(int) []byte {
	d.m.metaMu.Lock()
	defer d.m.metaMu.Unlock()
	return encodeMeta(d.m.cfg.Meta, d.m.flags)
}

// The user-message half of memberlist.Delegate is unused: membership only
// gossips metadata.

func (d *delegate) NotifyMsg([]byte)                {}
func (d *delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *delegate) LocalState(bool) []byte          { return nil }
func (d *delegate) MergeRemoteState([]byte, bool)   {}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.m.apply(n, evJoin) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.m.apply(n, evLeave) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.m.apply(n, evUpdate) }

func (d *delegate) AckPayload() []byte { return nil }

func (d *delegate) NotifyPingComplete(n *memberlist.Node, _ time.Duration, _ []byte) {
	d.m.acked(n.Name)
}

// NotifyMerge sees a peer's member list during a join, before memberlist
// merges it. If the peer holds this node's name at another address, it
// will refuse this node's alive message (memberlist reports that only in
// its log), so the join loop must try again once the old entry is dead.
// Left entries are exempt: memberlist lets a new address take those over
// at once.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	self, ok := d.m.selfAddr.Load().(netip.AddrPort)
	if !ok {
		return nil
	}
	for _, p := range peers {
		if p.Name != d.m.cfg.NodeID || p.State == memberlist.StateLeft {
			continue
		}
		if nodeAddr(p) != self {
			d.m.conflict.Store(true)
			d.m.log.Debug("a peer holds this node id at another address",
				slog.String("their_addr", nodeAddr(p).String()), slog.String("our_addr", self.String()))
		}
	}
	return nil
}

func nodeAddr(n *memberlist.Node) netip.AddrPort {
	a, _ := netip.AddrFromSlice(n.Addr)
	return netip.AddrPortFrom(a.Unmap(), n.Port)
}

// apply folds a memberlist event into the view. memberlist's Node.State
// is never set (its internal nodeState shadows the field), so events are
// the only source of state, and NotifyLeave does not say whether the node
// failed or left: the leaving flag in its metadata does.
func (m *Membership) apply(n *memberlist.Node, ev eventKind) {
	meta, flags, err := decodeMeta(n.Meta)
	if err != nil {
		m.log.Warn("member metadata unreadable", slog.String("node", n.Name), slog.Any("err", err))
		meta, flags = Meta{}, 0
	}
	if meta.NodeID != n.Name {
		if err == nil {
			m.log.Warn("member metadata names another node", slog.String("node", n.Name), slog.String("meta_node_id", meta.NodeID))
		}
		meta.NodeID = n.Name
	}
	now := time.Now()

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	ms, known := m.members[n.Name]
	if !known {
		ms = &memberState{}
		m.members[n.Name] = ms
	}
	prev := ms.Member
	var state State
	switch ev {
	case evJoin:
		state = Alive
		ms.lastAck = now
	case evLeave:
		state = Dead
	case evUpdate:
		state = prev.State
		if !known || state == Dead || state == Left {
			// memberlist only sends updates for members it counts alive;
			// a Left here came from a leaving flag the node has dropped.
			state = Alive
			ms.lastAck = now
		}
	}
	if flags&flagLeaving != 0 {
		state = Left
	}
	ms.Meta, ms.flags, ms.State = meta, flags, state
	ms.Stopping = flags&flagStopping != 0
	ms.GossipAddr = nodeAddr(n).String()
	if !known || state != prev.State {
		ms.Since = now
		m.log.Info("member state", slog.String("node", n.Name), slog.String("state", state.String()),
			slog.String("addr", ms.GossipAddr))
	}
	if ms.Stopping && !prev.Stopping && n.Name != m.cfg.NodeID {
		m.log.Info("member is stopping", slog.String("node", n.Name))
	}
	judged := m.judgeLocked(ms)
	if !known || ms.Member != prev || judged {
		m.notifyLocked()
	}
}

// conflictMsg is what judgeLocked logs when a conflict begins.
const conflictMsg = "member announces another shard count: left out of the view, so nothing is routed to it or placed on it; " +
	"it belongs to another cluster or was started with the wrong --shards"

// judgeLocked decides whether ms conflicts with this node's shard count
// (Conflicting), logs a change, and reports it. A conflict is logged at
// ERROR: some node was started with another count than the cluster's, or
// two clusters share gossip seeds, and an operator must step in.
func (m *Membership) judgeLocked(ms *memberState) bool {
	theirs := ms.Meta.settledShards()
	conflict := ms.NodeID != m.cfg.NodeID && m.shards > 0 && theirs > 0 && theirs != m.shards
	if conflict == ms.conflict {
		return false
	}
	ms.conflict = conflict
	if conflict {
		m.log.Error(conflictMsg,
			slog.String("node", ms.NodeID), slog.Int("its_shards", theirs), slog.Int("our_shards", m.shards),
			slog.String("addr", ms.GossipAddr))
	} else {
		m.log.Info("member's shard count agrees again: back in the view", slog.String("node", ms.NodeID),
			slog.Int("shards", m.shards))
	}
	return true
}

// acked records a direct probe ack; a Suspect member that answers is
// Alive again.
func (m *Membership) acked(name string) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	ms, ok := m.members[name]
	if m.closed || !ok || (ms.State != Alive && ms.State != Suspect) {
		return
	}
	ms.lastAck = now
	if ms.State == Suspect {
		ms.State, ms.Since = Alive, now
		m.log.Info("member state", slog.String("node", name), slog.String("state", Alive.String()))
		m.notifyLocked()
	}
}

// suspectAfter is how long a member may go without a direct ack before
// the view calls it Suspect. memberlist probes one member per (health
// scaled) ProbeInterval, in a shuffled round over all of them, so the gap
// between two probes of the same member can approach two rounds.
func (m *Membership) suspectAfter(peers, health int) time.Duration {
	rounds := time.Duration(2*max(peers, 1) + 1)
	return rounds*m.cfg.ProbeInterval*time.Duration(health+1) + m.cfg.ProbeTimeout
}

// markSilent turns Alive members with no recent direct ack Suspect.
func (m *Membership) markSilent(now time.Time, health int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	peers := 0
	for id, ms := range m.members {
		if id != m.cfg.NodeID && (ms.State == Alive || ms.State == Suspect) {
			peers++
		}
	}
	limit := m.suspectAfter(peers, health)
	changed := false
	for id, ms := range m.members {
		if id == m.cfg.NodeID || ms.State != Alive || now.Sub(ms.lastAck) <= limit {
			continue
		}
		ms.State, ms.Since = Suspect, now
		changed = true
		m.log.Info("member state", slog.String("node", id), slog.String("state", Suspect.String()),
			slog.Duration("silent_for", now.Sub(ms.lastAck)))
	}
	if changed {
		m.notifyLocked()
	}
}

// notifyLocked signals every subscriber without blocking; a signal
// already pending stands for this one too.
func (m *Membership) notifyLocked() {
	for _, ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
