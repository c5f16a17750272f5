package app

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ration/ration/client"
)

func (a *App) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the cluster's nodes, shards and moves in progress as one node sees them",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd.Context(), func(c *client.Client) error {
				st, err := c.Status(cmd.Context())
				if err != nil {
					return err
				}
				if a.g.output == outJSON {
					return writeJSON(a.Stdout, statusJSON(st))
				}
				fmt.Fprintf(a.Stdout, "answered by node %s\n\n", st.NodeID)
				tw := newTable(a.Stdout)
				row(tw, "NODE", "STATE", "GRPC", "RAFT", "HTTP")
				for _, n := range st.Nodes {
					row(tw, n.ID, n.State, dash(n.GRPCAddr), dash(n.RaftAddr), dash(n.HTTPAddr))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintln(a.Stdout)
				tw = newTable(a.Stdout)
				// MOVES is last: its cells may hold spaces.
				row(tw, "SHARD", "LEADER", "STATE", "REPLICAS", "VOTERS", "APPLIED", "COMMIT", "USERS", "MOVES")
				moving := 0
				for _, s := range st.Shards {
					leader := s.Leader
					if leader == "" {
						leader = "(none)"
					}
					m := moves(s)
					if m != "" {
						moving++
					}
					row(tw, s.ID, leader, dash(s.State), dash(strings.Join(s.Replicas, ",")), dash(strings.Join(s.Voters, ",")),
						s.AppliedIndex, s.CommitIndex, s.Users, dash(m))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintln(a.Stdout)
				fmt.Fprintln(a.Stdout, movesSummary(moving))
				return nil
			})
		},
	}
}

// moves describes what separates shard s from its target replica set:
// "+id" for a target node that holds no replica yet, "+id(catching up)"
// for one whose replica is not a voter yet, then "-id" for each replica
// the target drops, e.g. "+node4(catching up) -node1". It is empty when s
// is at its target, and when the answering node does not know the target
// (a single node without clustering) or the shard's replicas (a replica
// just opened, not yet contacted by its leader).
func moves(s client.Shard) string {
	if len(s.Target) == 0 || len(s.Replicas) == 0 {
		return ""
	}
	var out []string
	for _, id := range s.Target {
		switch {
		case slices.Contains(s.Voters, id):
		case slices.Contains(s.Replicas, id):
			out = append(out, "+"+id+"(catching up)")
		default:
			out = append(out, "+"+id)
		}
	}
	for _, id := range s.Replicas {
		if !slices.Contains(s.Target, id) {
			out = append(out, "-"+id)
		}
	}
	return strings.Join(out, " ")
}

// movesSummary is the status table's last line, given how many shards are
// not at their target.
func movesSummary(moving int) string {
	switch moving {
	case 0:
		return "no moves in progress"
	case 1:
		return "moves in progress: 1 shard"
	}
	return fmt.Sprintf("moves in progress: %d shards", moving)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func statusJSON(st client.ClusterStatus) jsonStatus {
	out := jsonStatus{NodeID: st.NodeID, Nodes: []jsonNode{}, Shards: []jsonShard{}}
	for _, n := range st.Nodes {
		out.Nodes = append(out.Nodes, jsonNode{ID: n.ID, RaftAddr: n.RaftAddr, GRPCAddr: n.GRPCAddr, HTTPAddr: n.HTTPAddr, State: n.State})
	}
	for _, s := range st.Shards {
		out.Shards = append(out.Shards, jsonShard{ID: s.ID, Leader: s.Leader, Replicas: nonNil(s.Replicas), Voters: nonNil(s.Voters),
			AppliedIndex: s.AppliedIndex, CommitIndex: s.CommitIndex, State: s.State, Users: s.Users, Target: nonNil(s.Target)})
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
