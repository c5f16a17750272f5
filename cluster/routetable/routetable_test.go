package routetable

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/internal/shardhash"
)

// fakeHost hosts shards 0..3 of 4; this node ("n1") leads the shards in
// led, and "n2" leads the others in term 7.
type fakeHost struct{ led map[uint32]bool }

func (h fakeHost) Hosted() []uint32           { return []uint32{0, 1, 2, 3} }
func (h fakeHost) IsLeader(shard uint32) bool { return h.led[shard] }
func (h fakeHost) LeaderTerm(shard uint32) (string, string, uint64) {
	if h.led[shard] {
		return "n1", "raft-n1", 5
	}
	return "n2", "raft-n2", 7
}
func (h fakeHost) Configuration(uint32) (raft.Configuration, error) {
	return raft.Configuration{Servers: []raft.Server{{ID: "n1"}, {ID: "n2"}}}, nil
}

type fakeMembers struct{}

func (fakeMembers) Nodes() []Node {
	return []Node{{ID: "n1", GRPCAddr: "h1:9090"}, {ID: "n2", GRPCAddr: "h2:9090"}}
}
func (fakeMembers) GRPCAddr(id string) string {
	return map[string]string{"n1": "h1:9090", "n2": "h2:9090"}[id]
}

func newService(t *testing.T, led ...uint32) (*Service, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h := fakeHost{led: map[uint32]bool{}}
	for _, s := range led {
		h.led[s] = true
	}
	s, err := New(Config{NodeID: "n1", Shards: 4, Host: h, Members: fakeMembers{}, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func TestGetRoutingTable(t *testing.T) {
	s, _ := newService(t, 0, 2)
	res, err := s.GetRoutingTable(context.Background(), &rationv1.GetRoutingTableRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetNodeId() != "n1" || res.GetShardCount() != 4 || res.GetHash() != shardhash.FNV1a64Mod || len(res.GetNodes()) != 2 {
		t.Fatalf("table header = %v", res)
	}
	if len(res.GetShards()) != 4 {
		t.Fatalf("%d shards, want the 4 hosted", len(res.GetShards()))
	}
	for _, r := range res.GetShards() {
		wantLeader, wantTerm := "n2", uint64(7)
		if r.GetId() == 0 || r.GetId() == 2 {
			wantLeader, wantTerm = "n1", 5
		}
		if r.GetLeader() != wantLeader || r.GetTerm() != wantTerm || !slices.Equal(r.GetReplicas(), []string{"n1", "n2"}) {
			t.Errorf("shard %d = %v, want leader %s in term %d", r.GetId(), r, wantLeader, wantTerm)
		}
	}
}

// trailerStream records what a handler sets as trailer.
type trailerStream struct {
	grpc.ServerTransportStream
	md metadata.MD
}

func (s *trailerStream) Method() string { return "" }
func (s *trailerStream) SetTrailer(md metadata.MD) error {
	s.md = metadata.Join(s.md, md)
	return nil
}

// call runs req through the interceptor as method, with a handler that
// fails, and returns the hints of the trailer.
func call(t *testing.T, s *Service, method string, req any) []*rationv1.RouteHint {
	t.Helper()
	st := &trailerStream{}
	ctx := grpc.NewContextWithServerTransportStream(context.Background(), st)
	failed := errors.New("handler failed")
	_, err := s.Hints(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) {
		return nil, failed
	})
	if !errors.Is(err, failed) {
		t.Fatalf("interceptor changed the handler's error: %v", err)
	}
	var hints []*rationv1.RouteHint
	for _, v := range st.md.Get(rationv1.RouteHintKey) {
		h := &rationv1.RouteHint{}
		if err := proto.Unmarshal([]byte(v), h); err != nil {
			t.Fatal(err)
		}
		hints = append(hints, h)
	}
	return hints
}

// userIn is a user of shard among 4.
func userIn(shard uint32) string {
	for i := 0; ; i++ {
		u := "u" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if shardhash.Of(u, 4) == shard {
			return u
		}
	}
}

func TestHints(t *testing.T) {
	s, reg := newService(t, 0)
	led, other := userIn(0), userIn(1)

	if h := call(t, s, "/ration.v1.Ledger/Deduct", &rationv1.DeductRequest{User: led}); len(h) != 0 {
		t.Errorf("hints for a shard this node leads: %v", h)
	}
	h := call(t, s, "/ration.v1.Ledger/GetBalance", &rationv1.GetBalanceRequest{User: other})
	want := &rationv1.RouteHint{Shard: 1, Leader: "n2", Term: 7, NodeId: "n1", LeaderGrpcAddr: "h2:9090"}
	if len(h) != 1 || !proto.Equal(h[0], want) {
		t.Errorf("hints = %v, want %v", h, want)
	}
	if h := call(t, s, "/ration.v1.Admin/Status", &rationv1.StatusRequest{}); len(h) != 0 {
		t.Errorf("hints on a call that is not the ledger's: %v", h)
	}

	// A batch: one hint per shard not led here, however many operations.
	batch := &rationv1.BatchRequest{}
	for _, u := range []string{led, other, other, userIn(3), led} {
		batch.Operations = append(batch.Operations, &rationv1.Operation{Op: &rationv1.Operation_Grant{Grant: &rationv1.GrantRequest{User: u}}})
	}
	batch.Operations = append(batch.Operations, &rationv1.Operation{})
	h = call(t, s, "/ration.v1.Ledger/Batch", batch)
	var got []uint32
	for _, x := range h {
		got = append(got, x.GetShard())
	}
	if !slices.Equal(got, []uint32{1, 3}) {
		t.Errorf("batch hints for shards %v, want [1 3]", got)
	}

	if n := notLed(t, reg, "GetBalance"); n != 1 {
		t.Errorf("not-led GetBalance counted %v times, want 1", n)
	}
	if n := notLed(t, reg, "Batch"); n != 1 {
		t.Errorf("not-led Batch counted %v times, want 1", n)
	}
	if n := notLed(t, reg, "Deduct"); n != 0 {
		t.Errorf("led Deduct counted %v times, want 0", n)
	}
	if _, err := New(Config{Registerer: reg}); err != nil {
		t.Errorf("a second service on the same registry: %v", err)
	}
}

// notLed reads ration_grpc_not_led_total{method} from reg.
func notLed(t *testing.T, reg *prometheus.Registry, method string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ration_grpc_not_led_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" && l.GetValue() == method {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
