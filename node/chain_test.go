package node

import (
	"testing"

	"github.com/hashicorp/raft"

	"github.com/ration/ration/cluster/membership"
)

func member(id string, version int) membership.Member {
	return membership.Member{Meta: membership.Meta{NodeID: id, Version: version}}
}

// A shard's ops are chained only when no replica of the shard can be of an
// earlier release: one that the gossip view does not know (it was down
// when this node started, and a new node never learns of dead members) may
// come back old and stop on a chained entry, so it counts as old.
func TestChainableAmong(t *testing.T) {
	servers := []raft.Server{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	for _, c := range []struct {
		name    string
		members []membership.Member
		want    bool
	}{
		{"every replica upgraded", []membership.Member{member("a", 1), member("b", 1), member("c", 1)}, true},
		{"a replica of an earlier release", []membership.Member{member("a", 1), member("b", 0), member("c", 1)}, false},
		{"another node of an earlier release", []membership.Member{member("a", 1), member("b", 1), member("c", 1), member("d", 0)}, false},
		{"a replica missing from the view", []membership.Member{member("a", 1), member("b", 1)}, false},
		{"a newer release", []membership.Member{member("a", 2), member("b", 1), member("c", 1)}, true},
	} {
		if got := chainableAmong(c.members, servers); got != c.want {
			t.Errorf("%s: chainable %v, want %v", c.name, got, c.want)
		}
	}
}
