package actorcluster

import (
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/asynkron/protoactor-go/cluster"

	"github.com/ration/ration/cluster/membership"
)

// Kind is the protoactor cluster kind of a user's actor: identities are
// "user"/<user id>.
const Kind = "user"

// Membership is what the provider and the lookup read of this node's
// gossip view (*membership.Membership).
type Membership interface {
	Members() []membership.Member
	Member(nodeID string) (membership.Member, bool)
	Subscribe() (<-chan struct{}, func())
}

// Provider is a protoactor ClusterProvider fed by our own memberlist view,
// so the cluster runs one failure detector, not two: protoactor's topology
// follows cluster/membership.
type Provider struct {
	m   Membership
	log *slog.Logger

	mu   sync.Mutex
	stop func()
	done chan struct{}
}

var _ cluster.ClusterProvider = (*Provider)(nil)

// NewProvider returns a provider over m.
func NewProvider(m Membership, log *slog.Logger) *Provider {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Provider{m: m, log: log}
}

// StartMember publishes the view into c's member list now and after every
// change of the view, until Shutdown.
func (p *Provider) StartMember(c *cluster.Cluster) error {
	ch, cancel := p.m.Subscribe()
	done := make(chan struct{})
	p.mu.Lock()
	p.stop, p.done = cancel, done
	p.mu.Unlock()
	go func() {
		defer close(done)
		for range ch {
			c.MemberList.UpdateClusterTopology(Members(p.m.Members()))
		}
	}()
	return nil
}

// StartClient is StartMember: a client needs the topology too.
func (p *Provider) StartClient(c *cluster.Cluster) error { return p.StartMember(c) }

// Shutdown stops following the view.
func (p *Provider) Shutdown(bool) error {
	p.mu.Lock()
	stop, done := p.stop, p.done
	p.stop, p.done = nil, nil
	p.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	return nil
}

// Members are the protoactor members of a view: the nodes memberlist
// still counts (alive or suspect) that announce an actor address, each
// under its actor system's id. Suspect counts because memberlist may
// still refute it; protoactor blocks a member id that leaves the topology
// for good (see DESIGN.md).
func Members(view []membership.Member) cluster.Members {
	var out cluster.Members
	for _, m := range view {
		if m.State != membership.Alive && m.State != membership.Suspect {
			continue
		}
		if m.ActorAddr == "" || m.ActorID == "" {
			continue
		}
		host, port, err := net.SplitHostPort(m.ActorAddr)
		if err != nil {
			continue
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			continue
		}
		out = append(out, &cluster.Member{Id: m.ActorID, Host: host, Port: int32(p), Kinds: []string{Kind}})
	}
	return out
}
