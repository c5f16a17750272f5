// Package routetable tells clients where shards are led, so that they can
// send each request straight to the leader of its user's shard: it serves
// the ration.v1 Routing service (the node's view of the table), and adds a
// route hint to the answer of every Ledger call this node answered for a
// shard it does not lead. Forwarding stays: a client without the table, or
// with a stale one, still gets its answer, one hop later.
package routetable

import (
	"context"
	"errors"
	"strings"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/internal/shardhash"
)

// Host is this node's raft groups (shards.Host).
type Host interface {
	// Hosted lists the shards with a replica on this node.
	Hosted() []uint32
	// IsLeader reports whether this node leads shard.
	IsLeader(shard uint32) bool
	// LeaderTerm is shard's leader as this node knows it, and the term.
	LeaderTerm(shard uint32) (id, addr string, term uint64)
	// Configuration is shard's latest raft configuration.
	Configuration(shard uint32) (raft.Configuration, error)
}

// Node is one member and its gRPC API's address.
type Node struct {
	ID       string
	GRPCAddr string
}

// Members is what this node knows of the others (cluster/membership).
type Members interface {
	// Nodes lists the members with a gRPC address, this node included.
	Nodes() []Node
	// GRPCAddr is a member's gRPC address, "" if unknown.
	GRPCAddr(nodeID string) string
}

// Config describes the node.
type Config struct {
	NodeID string
	// Shards is the cluster's shard count.
	Shards     int
	Host       Host
	Members    Members
	Registerer prometheus.Registerer
}

// Service is the node's Routing service and hint interceptor.
type Service struct {
	rationv1.UnimplementedRoutingServer
	cfg    Config
	notLed *prometheus.CounterVec
}

// New returns the service; register it with rationv1.RegisterRoutingServer
// and install Hints as a unary interceptor of the same gRPC server.
func New(cfg Config) (*Service, error) {
	s := &Service{cfg: cfg, notLed: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ration_grpc_not_led_total",
		Help: "Ledger calls (gRPC) answered for a user whose shard this node did not lead: forwarded to the leader, or a stale read served by this replica. Clients that route keep it near zero; a Batch counts once.",
	}, []string{"method"})}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.notLed); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			s.notLed = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return s, nil
}

// GetRoutingTable answers from this node's own view, without waiting for
// anything: the shards it holds a replica of, each with its leader and
// term as its raft group knows them.
func (s *Service) GetRoutingTable(context.Context, *rationv1.GetRoutingTableRequest) (*rationv1.GetRoutingTableResponse, error) {
	res := &rationv1.GetRoutingTableResponse{
		NodeId:     s.cfg.NodeID,
		ShardCount: uint32(s.cfg.Shards),
		Hash:       shardhash.FNV1a64Mod,
	}
	for _, n := range s.cfg.Members.Nodes() {
		res.Nodes = append(res.Nodes, &rationv1.RoutingNode{Id: n.ID, GrpcAddr: n.GRPCAddr})
	}
	for _, shard := range s.cfg.Host.Hosted() {
		leader, _, term := s.cfg.Host.LeaderTerm(shard)
		r := &rationv1.ShardRoute{Id: shard, Leader: leader, Term: term}
		if c, err := s.cfg.Host.Configuration(shard); err == nil {
			for _, srv := range c.Servers {
				r.Replicas = append(r.Replicas, string(srv.ID))
			}
		}
		res.Shards = append(res.Shards, r)
	}
	return res, nil
}

// ledgerPrefix is the full method name prefix of the calls hints go with.
var ledgerPrefix = "/" + rationv1.Ledger_ServiceDesc.ServiceName + "/"

// Hints is a unary server interceptor: after a Ledger call, for each shard
// of the call's users that this node does not lead (now, as the answer
// leaves), it adds a RouteHint to the trailer, whatever the call's
// outcome. It looks at leadership after the call, so the hint is as fresh
// as this node can make it.
func (s *Service) Hints(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	method, ok := strings.CutPrefix(info.FullMethod, ledgerPrefix)
	if !ok {
		return resp, err
	}
	var md metadata.MD
	for _, shard := range s.shardsOf(req) {
		if s.cfg.Host.IsLeader(shard) {
			continue
		}
		b, merr := proto.Marshal(s.hint(shard))
		if merr != nil {
			continue // cannot happen for this message; hints are optional
		}
		if md == nil {
			md = metadata.MD{}
		}
		md.Append(rationv1.RouteHintKey, string(b))
	}
	if md != nil {
		s.notLed.WithLabelValues(method).Inc()
		// Fails only if the stream is gone, when nobody reads the hint.
		_ = grpc.SetTrailer(ctx, md)
	}
	return resp, err
}

// hint is this node's word on who leads shard.
func (s *Service) hint(shard uint32) *rationv1.RouteHint {
	leader, _, term := s.cfg.Host.LeaderTerm(shard)
	h := &rationv1.RouteHint{Shard: shard, Leader: leader, Term: term, NodeId: s.cfg.NodeID}
	if leader != "" {
		h.LeaderGrpcAddr = s.cfg.Members.GRPCAddr(leader)
	}
	return h
}

// user is what the single-user Ledger requests have in common.
type user interface{ GetUser() string }

// shardsOf lists the distinct shards of a Ledger request's users.
func (s *Service) shardsOf(req any) []uint32 {
	switch r := req.(type) {
	case user:
		return []uint32{shardhash.Of(r.GetUser(), s.cfg.Shards)}
	case *rationv1.BatchRequest:
		return s.distinct(func(yield func(string)) {
			for _, op := range r.GetOperations() {
				switch o := op.GetOp().(type) {
				case *rationv1.Operation_Grant:
					yield(o.Grant.GetUser())
				case *rationv1.Operation_Deduct:
					yield(o.Deduct.GetUser())
				}
			}
		})
	case *rationv1.GetBalancesRequest:
		return s.distinct(func(yield func(string)) {
			for _, q := range r.GetRequests() {
				yield(q.GetUser())
			}
		})
	}
	return nil
}

// distinct lists the distinct shards of the users that users yields.
func (s *Service) distinct(users func(yield func(string))) []uint32 {
	seen := make([]bool, max(s.cfg.Shards, 1))
	var out []uint32
	users(func(u string) {
		if sh := shardhash.Of(u, s.cfg.Shards); !seen[sh] {
			seen[sh] = true
			out = append(out, sh)
		}
	})
	return out
}
