package ration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/cluster/placement"
)

// settleTimeout bounds the wait for leaders to reach their preferred
// nodes: nodes hand each shard over after leading it for 10 s, two
// transfers a second.
const settleTimeout = time.Minute

// waitLeadersSettled waits until every shard is led by its preferred
// leader (placement.Leaders over the nodes' ids, which is what the nodes'
// rebalancers move leaderships towards). A cluster measured before that
// has one node leading most shards and leaderships moving mid-run, which
// is neither its steady state nor a fair row. It gives up after
// settleTimeout with a note on stderr and lets the run go on.
func waitLeadersSettled(ctx context.Context, eps, ids []string) error {
	conns := make([]*grpc.ClientConn, len(eps))
	for i, ep := range eps {
		cc, err := grpc.NewClient(ep, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("ration: dial %s: %w", ep, err)
		}
		defer cc.Close()
		conns[i] = cc
	}
	deadline := time.Now().Add(settleTimeout)
	for {
		led, want, err := leaders(ctx, conns, ids)
		if err == nil && slices.Equal(led, want) {
			return nil
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "bench: leaders not at their preferred nodes after %s (led %v, preferred %v, err %v); measuring anyway\n",
				settleTimeout, led, want, err)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// leaders returns each shard's leader (the report of the highest term
// over all nodes) and its preferred leader.
func leaders(ctx context.Context, conns []*grpc.ClientConn, ids []string) (led, want []string, err error) {
	var terms []uint64
	for _, cc := range conns {
		res, err := rationv1.NewRoutingClient(cc).GetRoutingTable(ctx, &rationv1.GetRoutingTableRequest{})
		if err != nil {
			return nil, nil, err
		}
		if led == nil {
			led, terms = make([]string, res.GetShardCount()), make([]uint64, res.GetShardCount())
		}
		for _, s := range res.GetShards() {
			if int(s.GetId()) < len(led) && s.GetTerm() >= terms[s.GetId()] && s.GetLeader() != "" {
				led[s.GetId()], terms[s.GetId()] = s.GetLeader(), s.GetTerm()
			}
		}
	}
	sets := make([][]string, len(led))
	for s := range sets {
		sets[s] = placement.ReplicaSet(uint32(s), ids, 3)
	}
	return led, placement.Leaders(sets), nil
}
