package node

import (
	"context"

	"github.com/hashicorp/raft"

	"github.com/ration/ration/cluster/membership"
)

// A node that stops gracefully announces it first (Shutdown,
// membership.AnnounceStopping), and leaves at the end. Until it is gone,
// its peers keep trying to reach it; the functions below tell the shard
// host and protoactor remote which failures to reach a peer are therefore
// expected, so that a cluster that is stopped, whole or a node at a time,
// logs them at DEBUG and not as the errors they are when a peer fails.

// announceStopping tells the peers before anything stops here: they then
// hand this node no leadership, and take their failures to reach it from
// now on as expected.
func (n *Node) announceStopping(ctx context.Context) error {
	if err := n.members.AnnounceStopping(ctx); err != nil {
		n.log.Warn("announce stopping", "err", err)
	}
	return nil
}

// departing reports whether the member that match picks announced it is
// stopping, or left.
func (n *Node) departing(match func(membership.Member) bool) bool {
	if n.members == nil {
		return false
	}
	for _, m := range n.members.Members() {
		if match(m) {
			return m.Stopping || m.State == membership.Left
		}
	}
	return false
}

// raftPeerDeparting is shards.Config.Departing: the raft peer by server
// id (the node id) or raft address.
func (n *Node) raftPeerDeparting(id raft.ServerID, addr raft.ServerAddress) bool {
	return n.departing(func(m membership.Member) bool {
		return (id != "" && m.NodeID == string(id)) || (addr != "" && m.RaftAddr == string(addr))
	})
}

// actorPeerDeparting tells protoactor remote's log which node addresses are
// going away (actorcluster.RemoteLogHandler): a departing member's, and
// every address while this node is stopping, when its own remote closes
// the connections.
func (n *Node) actorPeerDeparting(addr string) bool {
	return n.draining.Load() || n.departing(func(m membership.Member) bool { return addr != "" && m.ActorAddr == addr })
}
