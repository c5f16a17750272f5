package app

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/client"
)

func TestMoves(t *testing.T) {
	for _, c := range []struct {
		name                     string
		replicas, voters, target []string
		want                     string
	}{
		{"at target", []string{"n1", "n2", "n3"}, []string{"n1", "n2", "n3"}, []string{"n2", "n3", "n1"}, ""},
		{"target unknown", []string{"n1", "n2", "n3"}, []string{"n1", "n2", "n3"}, nil, ""},
		{"replicas unknown", nil, nil, []string{"n1", "n2", "n3"}, ""},
		{"to add", []string{"n1", "n2", "n3"}, []string{"n1", "n2", "n3"}, []string{"n4", "n2", "n3"}, "+n4 -n1"},
		{"catching up", []string{"n1", "n2", "n3", "n4"}, []string{"n1", "n2", "n3"}, []string{"n4", "n2", "n3"}, "+n4(catching up) -n1"},
		{"only removing", []string{"n1", "n2", "n3", "n4"}, []string{"n1", "n2", "n3", "n4"}, []string{"n4", "n2", "n3"}, "-n1"},
		{"only adding", []string{"n1", "n2"}, []string{"n1", "n2"}, []string{"n1", "n2", "n3"}, "+n3"},
		{"two at once", []string{"n1", "n2", "n3", "n5"}, []string{"n1", "n2", "n3"}, []string{"n4", "n5", "n3"}, "+n4 +n5(catching up) -n1 -n2"},
	} {
		s := client.Shard{Replicas: c.replicas, Voters: c.voters, Target: c.target}
		if got := moves(s); got != c.want {
			t.Errorf("%s: moves(%v voters %v target %v) = %q, want %q", c.name, c.replicas, c.voters, c.target, got, c.want)
		}
	}
	for n, want := range map[int]string{0: "no moves in progress", 1: "moves in progress: 1 shard", 3: "moves in progress: 3 shards"} {
		if got := movesSummary(n); got != want {
			t.Errorf("movesSummary(%d) = %q, want %q", n, got, want)
		}
	}
}

// A cluster in motion, as node2 of four sees it: node4 joined, shard 0
// has yet to add it, shard 1 is adding it, shard 2 is where placement
// wants it.
func TestStatusShowsMoves(t *testing.T) {
	h := newHarness(t)
	ids := func(s ...string) []string { return s }
	h.srv.SetStatus(func(r *rationv1.StatusResponse) {
		r.NodeId = "node2"
		r.Nodes = nil
		for _, id := range ids("node1", "node2", "node3", "node4") {
			r.Nodes = append(r.Nodes, &rationv1.Node{Id: id, GrpcAddr: id + ":9090", RaftAddr: id + ":7000", HttpAddr: id + ":8080", State: "alive"})
		}
		r.Shards = []*rationv1.Shard{
			{Id: 0, Leader: "node1", State: "Follower", Replicas: ids("node1", "node2", "node3"), Voters: ids("node1", "node2", "node3"),
				Target: ids("node4", "node2", "node3"), AppliedIndex: 10, CommitIndex: 10, Users: 3},
			{Id: 1, Leader: "node2", State: "Leader (moving)", Replicas: ids("node1", "node2", "node3", "node4"), Voters: ids("node1", "node2", "node3"),
				Target: ids("node2", "node4", "node3"), AppliedIndex: 12, CommitIndex: 12, Users: 4},
			{Id: 2, Leader: "node3", State: "Follower", Replicas: ids("node2", "node3", "node4"), Voters: ids("node2", "node3", "node4"),
				Target: ids("node3", "node2", "node4"), AppliedIndex: 7, CommitIndex: 7, Users: 2},
		}
	})
	out := h.ok("status")
	want := `answered by node node2

NODE   STATE  GRPC        RAFT        HTTP
node1  alive  node1:9090  node1:7000  node1:8080
node2  alive  node2:9090  node2:7000  node2:8080
node3  alive  node3:9090  node3:7000  node3:8080
node4  alive  node4:9090  node4:7000  node4:8080

SHARD  LEADER  STATE            REPLICAS                 VOTERS             APPLIED  COMMIT  USERS  MOVES
0      node1   Follower         node1,node2,node3        node1,node2,node3  10       10      3      +node4 -node1
1      node2   Leader (moving)  node1,node2,node3,node4  node1,node2,node3  12       12      4      +node4(catching up) -node1
2      node3   Follower         node2,node3,node4        node2,node3,node4  7        7       2      -

moves in progress: 2 shards
`
	if out != want {
		t.Errorf("status output:\n%s\nwant:\n%s", out, want)
	}

	out = h.ok("status", "-o", "json")
	var sj jsonStatus
	if err := json.Unmarshal([]byte(out), &sj); err != nil {
		t.Fatal(err)
	}
	if len(sj.Shards) != 3 || !slices.Equal(sj.Shards[0].Target, ids("node4", "node2", "node3")) ||
		!slices.Equal(sj.Shards[2].Target, ids("node3", "node2", "node4")) {
		t.Errorf("status json: %s", out)
	}

	// Back to the fake's own answer: a single node, which places nothing.
	h.srv.SetStatus(nil)
	out = h.ok("status")
	if want := "\nno moves in progress\n"; !strings.HasSuffix(out, want) {
		t.Errorf("status of a single node ends %q, want %q", out, want)
	}
	out = h.ok("status", "-o", "json")
	if err := json.Unmarshal([]byte(out), &sj); err != nil {
		t.Fatal(err)
	}
	if len(sj.Shards) != 1 || sj.Shards[0].Target == nil || len(sj.Shards[0].Target) != 0 {
		t.Errorf("status json of a single node: want \"target\": [], got %s", out)
	}
}
