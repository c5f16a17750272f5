package node

import (
	"errors"
	"strings"
	"testing"

	"github.com/ration/ration/cluster/membership"
	"github.com/ration/ration/shards"
)

func announcing(id string, count int, tentative bool) membership.Member {
	return membership.Member{Meta: membership.Meta{NodeID: id, Shards: count, ShardsTentative: tentative}}
}

// A node with a new data dir and no explicit --shards takes the count its
// peers settled on; 32 among peers of a release that announces none; its
// own proposal among peers that propose the same; and refuses when the
// peers disagree.
func TestClusterCount(t *testing.T) {
	tests := []struct {
		name  string
		peers []membership.Member
		want  int
		err   []string
	}{
		{"alone", nil, 64, nil},
		{"peers settled", []membership.Member{announcing("a", 8, false), announcing("b", 8, false)}, 8, nil},
		{"peers settled, others proposing", []membership.Member{announcing("a", 8, false), announcing("b", 64, true)}, 8, nil},
		{"peers settled, an old release among them", []membership.Member{announcing("a", 8, false), announcing("old", 0, false)}, 8, nil},
		{"only an old release", []membership.Member{announcing("old", 0, false)}, shards.PreRecordShards, nil},
		{"old release and proposals", []membership.Member{announcing("old", 0, false), announcing("b", 16, true)}, shards.PreRecordShards, nil},
		{"a new cluster, same proposal", []membership.Member{announcing("a", 64, true), announcing("b", 64, true)}, 64, nil},
		{"a new cluster, other proposals", []membership.Member{announcing("a", 64, true), announcing("b", 32, true)}, 0,
			[]string{"propose 32 (b) and 64 (this node, a)", "set --shards on every node"}},
		{"peers settled on several", []membership.Member{announcing("a", 8, false), announcing("b", 16, false), announcing("c", 8, false)}, 0,
			[]string{"announce 8 (a, c) and 16 (b)", "check --join"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := clusterCount(64, tt.peers)
			if tt.err == nil {
				if err != nil || got != tt.want {
					t.Fatalf("clusterCount = %d, %v; want %d", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrShardCountConflict) {
				t.Fatalf("clusterCount = %d, %v; want ErrShardCountConflict", got, err)
			}
			for _, want := range tt.err {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}
