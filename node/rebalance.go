package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/cluster/membership"
	"github.com/ration/ration/cluster/rebalance"
)

// peers caches gRPC connections to other nodes' Admin service, for the
// rebalancer's catch-up checks and the join check of formation.
type peers struct {
	// creds are for the calls: plaintext, or TLS (tlsfiles.PeerConfig)
	// when the node serves TLS.
	creds  credentials.TransportCredentials
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	recent map[string]recentStatus // by address, for leaderReplicas
}

type recentStatus struct {
	at time.Time
	st *rationv1.StatusResponse
}

// leaderAnswerTTL is how long one status answer serves the questions of
// every dropped replica of a pass (one status call covers all shards).
const leaderAnswerTTL = time.Second

// recentStatus returns a status of addr at most leaderAnswerTTL old.
func (p *peers) recentStatus(ctx context.Context, addr string) (*rationv1.StatusResponse, error) {
	p.mu.Lock()
	r, ok := p.recent[addr]
	p.mu.Unlock()
	if ok && time.Since(r.at) < leaderAnswerTTL {
		return r.st, nil
	}
	st, err := p.status(ctx, addr)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.recent == nil {
		p.recent = map[string]recentStatus{}
	}
	p.recent[addr] = recentStatus{time.Now(), st}
	p.mu.Unlock()
	return st, nil
}

func (p *peers) status(ctx context.Context, addr string) (*rationv1.StatusResponse, error) {
	p.mu.Lock()
	if p.conns == nil {
		p.conns = map[string]*grpc.ClientConn{}
	}
	cc, ok := p.conns[addr]
	if !ok {
		var err error
		creds := p.creds
		if creds == nil {
			creds = insecure.NewCredentials()
		}
		cc, err = grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		p.conns[addr] = cc
	}
	p.mu.Unlock()
	return rationv1.NewAdminClient(cc).Status(ctx, &rationv1.StatusRequest{})
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cc := range p.conns {
		_ = cc.Close()
	}
	p.conns = nil
}

// appliedIndex asks member for its applied index of shard.
func (p *peers) appliedIndex(ctx context.Context, m membership.Member, shard uint32) (uint64, error) {
	if m.GRPCAddr == "" {
		return 0, fmt.Errorf("node %s has no gRPC address", m.NodeID)
	}
	st, err := p.status(ctx, m.GRPCAddr)
	if err != nil {
		return 0, err
	}
	for _, s := range st.GetShards() {
		if s.GetId() == shard {
			return s.GetAppliedIndex(), nil
		}
	}
	return 0, fmt.Errorf("node %s does not host shard %d", m.NodeID, shard)
}

// leaderReplicas asks member whether it leads shard, and for the servers
// of its latest configuration of the shard if it does.
func (p *peers) leaderReplicas(ctx context.Context, m membership.Member, shard uint32) ([]string, bool, error) {
	if m.GRPCAddr == "" {
		return nil, false, fmt.Errorf("node %s has no gRPC address", m.NodeID)
	}
	st, err := p.recentStatus(ctx, m.GRPCAddr)
	if err != nil {
		return nil, false, err
	}
	for _, s := range st.GetShards() {
		if s.GetId() == shard {
			// "Leader", or "Leader (moving)"; the leader id confirms it.
			leads := strings.HasPrefix(s.GetState(), "Leader") && s.GetLeader() == m.NodeID
			return s.GetReplicas(), leads, nil
		}
	}
	return nil, false, nil
}

// othersMovedOn reports whether any of members other than this node hosts
// a shard in a configuration other than sets, the formation's: then the
// cluster exists already, and this node joins it instead of forming
// shards. A member that does not answer, or a replica with no
// configuration yet, is no evidence either way.
func (n *Node) othersMovedOn(ctx context.Context, members []membership.Member, sets [][]string) bool {
	for _, m := range members {
		if m.NodeID == n.cfg.NodeID || m.GRPCAddr == "" {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := n.peers.status(cctx, m.GRPCAddr)
		cancel()
		if err != nil {
			continue
		}
		for _, sh := range st.GetShards() {
			if len(sh.GetReplicas()) == 0 {
				continue
			}
			if int(sh.GetId()) >= len(sets) || !sameMembers(sh.GetReplicas(), sets[sh.GetId()]) {
				return true
			}
		}
	}
	return false
}

func sameMembers(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// newRebalancer is the reconciler that moves this node's replicas as
// membership changes.
func (n *Node) newRebalancer() *rebalance.Reconciler {
	return rebalance.New(rebalance.Config{
		Host:           n.host,
		Members:        n.members,
		AppliedIndex:   n.peers.appliedIndex,
		LeaderReplicas: n.peers.leaderReplicas,
		Replicas:       n.cfg.Replicas,
		DeadGrace:      n.cfg.DeadNodeGrace,
		Logger:         n.log,
		Registerer:     n.reg,
	})
}
