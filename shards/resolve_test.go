package shards

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ration/ration/raftfsm"
)

// addressBook resolves server ids as a gossip view would: to wherever each
// node said it is now.
type addressBook struct {
	mu   sync.Mutex
	addr map[raft.ServerID]raft.ServerAddress
}

func (b *addressBook) set(id, addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addr[raft.ServerID(id)] = raft.ServerAddress(addr)
}

func (b *addressBook) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if a, ok := b.addr[id]; ok {
		return a, nil
	}
	return "", errors.New("unknown server")
}

// TestPeersAtNewAddresses moves both followers of a group to new ports
// (as rescheduled pods get new IPs). Raft's configuration still holds the
// old addresses; with Resolve set every replica is reached at its new one
// and converges, without it a moved replica stays unreachable.
func TestPeersAtNewAddresses(t *testing.T) {
	for _, resolve := range []bool{true, false} {
		t.Run(fmt.Sprintf("resolve=%v", resolve), func(t *testing.T) {
			book := &addressBook{addr: map[raft.ServerID]raft.ServerAddress{}}
			nodes := make([]*node, 3)
			var peers []raft.Server
			for i := range nodes {
				nodes[i] = newNode(t, fmt.Sprintf("n%d", i+1), t.TempDir())
				book.set(nodes[i].id, nodes[i].addr)
				peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(nodes[i].id), Address: raft.ServerAddress(nodes[i].addr)})
			}
			for i, n := range nodes {
				cfg := fastConfig(1)
				if resolve {
					cfg.Resolve = book
				}
				if i == 0 {
					cfg.Bootstrap, cfg.Peers = true, peers
				}
				n.start(cfg)
				t.Cleanup(n.stop)
			}
			leader, followers := leaderOf(t, nodes, 0)
			const user = "moved"
			propose(t, leader.host, grant(user, 0, "g0", 1))

			for _, f := range followers {
				cfg := f.cfg
				f.stop()
				f.bind("127.0.0.1:0") // a new port: the pod's new IP
				book.set(f.id, f.addr)
				f.start(cfg)
			}

			deadline := time.Now().Add(5 * time.Second)
			if !resolve {
				deadline = time.Now().Add(2 * time.Second)
			}
			var last string
			for time.Now().Before(deadline) {
				if l := currentLeader(nodes, 0); l != nil {
					if r, err := tryPropose(l.host, grant(user, l.host.FSM(0).Version(user), fmt.Sprintf("g-%d", time.Now().UnixNano()), 1)); err == nil && r.Applied {
						want := r.Version
						versions := make([]uint64, 3)
						same := false
						for wait := time.Now().Add(time.Second); !same && time.Now().Before(wait); time.Sleep(20 * time.Millisecond) {
							same = true
							for i, n := range nodes {
								versions[i] = n.host.FSM(0).Version(user)
								same = same && versions[i] >= want
							}
						}
						if same {
							if !resolve {
								t.Fatalf("replicas at new addresses converged (versions %v) without a resolver: the test proves nothing", versions)
							}
							return
						}
						last = fmt.Sprint(versions)
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
			if resolve {
				t.Fatalf("replicas did not converge at their new addresses; versions %s", last)
			}
		})
	}
}

// currentLeader is the node that leads shard and is ready, if any.
func currentLeader(nodes []*node, shard uint32) *node {
	for _, n := range nodes {
		if n.host.IsLeader(shard) && n.host.Ready() {
			return n
		}
	}
	return nil
}

func tryPropose(h *Host, op raftfsm.Op) (raftfsm.OpResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return h.Propose(ctx, op)
}
