package node

import (
	"github.com/ration/ration/cluster/membership"
	"github.com/ration/ration/cluster/routetable"
)

// newRouteTable serves the routing table and the route hints (clients that
// route send each request to its shard's leader) from this node's groups
// and membership view.
func (n *Node) newRouteTable() (*routetable.Service, error) {
	return routetable.New(routetable.Config{
		NodeID:     n.cfg.NodeID,
		Shards:     n.cfg.Shards,
		Host:       n.host,
		Members:    routeMembers{n},
		Registerer: n.reg,
	})
}

// routeMembers lists the members' gRPC addresses: from gossip, or this node
// alone on a single node.
type routeMembers struct{ n *Node }

func (r routeMembers) Nodes() []routetable.Node {
	if r.n.members == nil {
		return []routetable.Node{{ID: r.n.cfg.NodeID, GRPCAddr: r.n.cfg.AdvertiseGRPCAddr()}}
	}
	var out []routetable.Node
	for _, m := range r.n.members.Members() {
		// A member that left or died may come back at another address;
		// until then it leads nothing a client should be sent to.
		if m.Meta.GRPCAddr != "" && (m.State == membership.Alive || m.State == membership.Suspect) {
			out = append(out, routetable.Node{ID: m.Meta.NodeID, GRPCAddr: m.Meta.GRPCAddr})
		}
	}
	return out
}

func (r routeMembers) GRPCAddr(nodeID string) string {
	if r.n.members == nil {
		if nodeID == r.n.cfg.NodeID {
			return r.n.cfg.AdvertiseGRPCAddr()
		}
		return ""
	}
	m, ok := r.n.members.Member(nodeID)
	if !ok {
		return ""
	}
	return m.Meta.GRPCAddr
}
