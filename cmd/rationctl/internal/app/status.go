package app

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ration/ration/client"
)

func (a *App) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the cluster's nodes and shards as one node sees them",
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
				row(tw, "SHARD", "LEADER", "STATE", "REPLICAS", "VOTERS", "APPLIED", "COMMIT", "USERS")
				for _, s := range st.Shards {
					leader := s.Leader
					if leader == "" {
						leader = "(none)"
					}
					row(tw, s.ID, leader, dash(s.State), dash(strings.Join(s.Replicas, ",")), dash(strings.Join(s.Voters, ",")),
						s.AppliedIndex, s.CommitIndex, s.Users)
				}
				return tw.Flush()
			})
		},
	}
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
			AppliedIndex: s.AppliedIndex, CommitIndex: s.CommitIndex, State: s.State, Users: s.Users})
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
