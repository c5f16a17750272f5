package app

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/ration/ration/api/ledgerjson"
)

// Output formats.
const (
	outTable = "table"
	outJSON  = "json"
)

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// row writes tab-separated cells and a newline.
func row(w io.Writer, cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		parts[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(w, strings.Join(parts, "\t"))
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// JSON shapes. Balances and events are the HTTP API's (api/ledgerjson);
// the others follow its field names, with times and amounts as integers.

type jsonGrantResult struct {
	User      string `json:"user"`
	ID        string `json:"id"`
	Timestamp int64  `json:"timestamp"`
	ExpiresAt *int64 `json:"expires_at,omitempty"`
	Duplicate bool   `json:"duplicate"`
	Version   uint64 `json:"version"`
}

type jsonDeductResult struct {
	User        string                  `json:"user"`
	ID          string                  `json:"id"`
	Timestamp   int64                   `json:"timestamp"`
	Duplicate   bool                    `json:"duplicate"`
	Version     uint64                  `json:"version"`
	Allocations []ledgerjson.Allocation `json:"allocations"`
}

type jsonNode struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	GRPCAddr string `json:"grpc_addr"`
	HTTPAddr string `json:"http_addr"`
	State    string `json:"state"`
}

type jsonShard struct {
	ID           uint32   `json:"id"`
	Leader       string   `json:"leader"`
	Replicas     []string `json:"replicas"`
	Voters       []string `json:"voters"`
	AppliedIndex uint64   `json:"applied_index"`
	CommitIndex  uint64   `json:"commit_index"`
	State        string   `json:"state"`
	Users        uint64   `json:"users"`
	// Target is the replica set placement wants; empty when unknown.
	Target []string `json:"target"`
}

type jsonStatus struct {
	NodeID string      `json:"node_id"`
	Nodes  []jsonNode  `json:"nodes"`
	Shards []jsonShard `json:"shards"`
}

// writeJSONLine writes v compactly on one line, for streams.
func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}
