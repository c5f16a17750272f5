package client

import (
	"errors"
	"fmt"
	"maps"
	"net"

	"google.golang.org/protobuf/proto"

	"github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/internal/shardhash"
)

// maxShards bounds the shard count a routing table may announce, so that a
// confused server cannot make the client allocate without bound. Nodes
// accept at most 4096.
const maxShards = 1 << 16

// Why a routing table is not used. The client then sends every call to its
// Endpoints, which forward it: slower, never wrong.
var (
	errUnknownHash = errors.New("ration: routing table: unknown shard function")
	errBadTable    = errors.New("ration: routing table: malformed")
)

// leaderTerm is who leads a shard, as far as the client knows, and the
// raft term of that knowledge; node is empty when unknown.
type leaderTerm struct {
	node string
	term uint64
}

// table is what the client knows of where shards are led. A table is never
// changed once published: updates make a new one (readers outnumber
// writers by far: every call reads, only refreshes and hints write).
type table struct {
	shards  int
	leaders []leaderTerm      // by shard
	addrs   map[string]string // node id → gRPC address
}

// shardOf is user's shard, by the function the table was published with.
func (t *table) shardOf(user string) uint32 { return shardhash.Of(user, t.shards) }

func (t *table) clone() *table {
	return &table{shards: t.shards, leaders: append([]leaderTerm(nil), t.leaders...), addrs: maps.Clone(t.addrs)}
}

// report merges what node from says of one shard: that leader leads it in
// term (leader empty: from knows of no leader in term). The higher term
// wins, since a shard has at most one leader per term and terms only grow.
// A node's word about itself is first-hand and beats a report at the same
// term from elsewhere; and when the node the client believes leads says it
// does not, the belief goes, whatever the terms.
func report(cur leaderTerm, from, leader string, term uint64) leaderTerm {
	switch {
	case term > cur.term:
		return leaderTerm{node: leader, term: term}
	case term == cur.term && (cur.node == "" || leader == from && leader != ""):
		if leader == "" {
			return cur
		}
		return leaderTerm{node: leader, term: term}
	case cur.node != "" && cur.node == from && leader != from:
		if term == cur.term {
			return leaderTerm{node: leader, term: term}
		}
		return leaderTerm{term: cur.term}
	}
	return cur
}

// validAddr accepts host:port addresses only, so that an announced address
// is something the client can dial.
func validAddr(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	return err == nil && host != "" && port != ""
}

// withTable merges one node's routing table into t (nil: nothing known
// yet) and returns the result. A table for another shard count replaces t
// whole: the cluster the client talks to is not the one it knew.
func (t *table) withTable(res *rationv1.GetRoutingTableResponse) (*table, error) {
	if h := res.GetHash(); h != shardhash.FNV1a64Mod {
		return nil, fmt.Errorf("%w %q", errUnknownHash, h)
	}
	n := int(res.GetShardCount())
	if n < 1 || n > maxShards {
		return nil, fmt.Errorf("%w: %d shards", errBadTable, n)
	}
	var nt *table
	if t == nil || t.shards != n {
		nt = &table{shards: n, leaders: make([]leaderTerm, n), addrs: map[string]string{}}
	} else {
		nt = t.clone()
	}
	for _, node := range res.GetNodes() {
		if node.GetId() != "" && validAddr(node.GetGrpcAddr()) {
			nt.addrs[node.GetId()] = node.GetGrpcAddr()
		}
	}
	for _, r := range res.GetShards() {
		if int64(r.GetId()) < int64(n) {
			nt.leaders[r.GetId()] = report(nt.leaders[r.GetId()], res.GetNodeId(), r.GetLeader(), r.GetTerm())
		}
	}
	return nt, nil
}

// withHints merges the route hints of one answer (the values of the
// rationv1.RouteHintKey trailer) into t. It returns t itself when they
// change nothing, and whether one named a leader the client cannot reach
// by its table (none, or one without an address): the table is then worth
// fetching again. Malformed hints are ignored: they are advice.
func (t *table) withHints(values []string) (nt *table, stale bool) {
	nt = t
	for _, v := range values {
		h := &rationv1.RouteHint{}
		if err := proto.Unmarshal([]byte(v), h); err != nil || int64(h.GetShard()) >= int64(t.shards) {
			continue
		}
		cur := nt.leaders[h.GetShard()]
		next := report(cur, h.GetNodeId(), h.GetLeader(), h.GetTerm())
		addr := h.GetLeaderGrpcAddr()
		learnAddr := h.GetLeader() != "" && validAddr(addr) && nt.addrs[h.GetLeader()] != addr
		if next != cur || learnAddr {
			if nt == t {
				nt = t.clone()
			}
			nt.leaders[h.GetShard()] = next
			if learnAddr {
				nt.addrs[h.GetLeader()] = addr
			}
		}
		if next.node == "" || nt.addrs[next.node] == "" {
			stale = true
		}
	}
	return nt, stale
}

// without drops the belief that node leads shard, after node failed a call
// for it; t itself if the table did not say so.
func (t *table) without(shard uint32, node string) *table {
	if int64(shard) >= int64(t.shards) || t.leaders[shard].node != node {
		return t
	}
	nt := t.clone()
	nt.leaders[shard].node = ""
	return nt
}

// covered marks in seen the shards a table response reports on.
func covered(res *rationv1.GetRoutingTableResponse, seen []bool) {
	for _, r := range res.GetShards() {
		if int64(r.GetId()) < int64(len(seen)) {
			seen[r.GetId()] = true
		}
	}
}
