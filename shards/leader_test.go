package shards

import "testing"

func TestLeaderTerm(t *testing.T) {
	n := singleNode(t, fastConfig(2))
	for shard := range uint32(2) {
		id, addr, term := n.host.LeaderTerm(shard)
		if id != n.id || addr == "" || term == 0 {
			t.Errorf("shard %d: LeaderTerm = %q, %q, %d; want this node, its address and a term", shard, id, addr, term)
		}
	}
	if id, addr, term := n.host.LeaderTerm(7); id != "" || addr != "" || term != 0 {
		t.Errorf("unhosted shard: LeaderTerm = %q, %q, %d; want nothing", id, addr, term)
	}
}
