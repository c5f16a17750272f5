package grpcapi

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/actors/actorstest"
	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/internal/contract"
	"github.com/ration/ration/service"
)

func newClient(t *testing.T) (rationv1.LedgerClient, *actorstest.Replica) {
	rep := actorstest.NewReplica(4)
	dir := actors.New(rep, actors.Options{IdleTimeout: time.Minute})
	t.Cleanup(func() { _ = dir.Shutdown(context.Background()) })
	s := grpc.NewServer()
	Register(s, service.New(dir, nil), nil, prometheus.NewRegistry())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rationv1.NewLedgerClient(conn), rep
}

func TestVectorsOverGRPC(t *testing.T) {
	c, _ := newClient(t)
	v, err := contract.Load()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, sc := range v.Scenarios {
		for i, st := range sc.Steps {
			var err error
			switch st.Op {
			case "grant":
				_, err = c.Grant(ctx, &rationv1.GrantRequest{User: sc.User, Id: st.ID, Amount: st.Amount, Timestamp: st.Timestamp, ExpiresAt: st.ExpiresAt, Priority: ptrOr(st.Priority)})
			case "deduct":
				_, err = c.Deduct(ctx, &rationv1.DeductRequest{User: sc.User, Id: st.ID, Amount: st.Amount, Timestamp: st.Timestamp})
			case "balance":
				at := st.At
				r, berr := c.GetBalance(ctx, &rationv1.GetBalanceRequest{User: sc.User, At: &at})
				if berr != nil || r.Balance != st.Balance {
					t.Fatalf("%s step %d: balance %v %v, want %d", sc.Name, i, r, berr, st.Balance)
				}
			}
			got := map[codes.Code]string{codes.OK: "ok", codes.InvalidArgument: "invalid", codes.AlreadyExists: "conflict", codes.FailedPrecondition: "insufficient"}[status.Code(err)]
			if got != st.Expect {
				t.Fatalf("%s step %d: got %v, want %s", sc.Name, i, err, st.Expect)
			}
		}
	}
}

func ptrOr(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

func TestStatusDetailsAndBatch(t *testing.T) {
	c, rep := newClient(t)
	ctx := context.Background()
	if _, err := c.Grant(ctx, &rationv1.GrantRequest{User: "u", Id: "g", Amount: 10, Timestamp: 0}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Deduct(ctx, &rationv1.DeductRequest{User: "u", Id: "d", Amount: 11, Timestamp: 1})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || len(st.Details()) != 1 {
		t.Fatalf("insufficient: %v", st)
	}
	if ic, ok := st.Details()[0].(*rationv1.InsufficientCredits); !ok || ic.DeductionId != "d" || ic.Shortfall != 1 || ic.At != 1 {
		t.Fatalf("detail %v", st.Details())
	}
	_, err = c.Grant(ctx, &rationv1.GrantRequest{User: "u", Id: "", Amount: 1})
	st = status.Convert(err)
	if f, ok := st.Details()[0].(*rationv1.InvalidField); st.Code() != codes.InvalidArgument || !ok || f.Field != "id" {
		t.Fatalf("invalid: %v", st)
	}
	if _, err := c.Grant(ctx, &rationv1.GrantRequest{User: "u", Id: "g", Amount: 9}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("conflict: %v", err)
	}
	res, err := c.Batch(ctx, &rationv1.BatchRequest{Operations: []*rationv1.Operation{
		{Op: &rationv1.Operation_Deduct{Deduct: &rationv1.DeductRequest{User: "u", Id: "b1", Amount: 6, Timestamp: 2}}},
		{Op: &rationv1.Operation_Deduct{Deduct: &rationv1.DeductRequest{User: "u", Id: "b2", Amount: 6, Timestamp: 3}}},
		{Op: &rationv1.Operation_Grant{Grant: &rationv1.GrantRequest{User: "v", Id: "g", Amount: 1, ExpiresAt: proto.Int64(0)}}},
		{},
		{Op: &rationv1.Operation_Grant{Grant: &rationv1.GrantRequest{User: "v", Id: "g2", Amount: 1}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := res.Results
	if r[0].GetDeduct() == nil || r[0].GetDeduct().Allocations[0].GrantId != "g" {
		t.Fatalf("b1: %v", r[0])
	}
	if e := r[1].GetError(); e == nil || e.Code != "FAILED_PRECONDITION" || e.Insufficient.Shortfall != 2 {
		t.Fatalf("b2: %v", r[1])
	}
	if e := r[2].GetError(); e == nil || e.Code != "INVALID_ARGUMENT" || e.Field != "expires_at" {
		t.Fatalf("bad grant: %v", r[2])
	}
	if e := r[3].GetError(); e == nil || e.Field != "op" {
		t.Fatalf("empty op: %v", r[3])
	}
	if r[4].GetGrant() == nil || r[4].GetGrant().Version != 1 {
		t.Fatalf("g2: %v", r[4])
	}
	rep.Unavailable.Store(true)
	_, err = c.GetBalance(ctx, &rationv1.GetBalanceRequest{User: "u"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("no leader: %v", err)
	}
}

// TestGetBalances: each read is answered as GetBalance answers it, in
// request order, with per-read errors; too many reads fail the call.
func TestGetBalances(t *testing.T) {
	c, rep := newClient(t)
	ctx := context.Background()
	if _, err := c.Grant(ctx, &rationv1.GrantRequest{User: "u", Id: "g", Amount: 10, Timestamp: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Deduct(ctx, &rationv1.DeductRequest{User: "u", Id: "d", Amount: 4, Timestamp: 5}); err != nil {
		t.Fatal(err)
	}
	reqs := []*rationv1.GetBalanceRequest{
		{User: "u", At: proto.Int64(4)},
		{User: "u", At: proto.Int64(5), Consistency: rationv1.ReadConsistency_READ_CONSISTENCY_STALE},
		{User: "nobody", At: proto.Int64(5)},
		{User: "b/a/d"},
	}
	res, err := c.GetBalances(ctx, &rationv1.GetBalancesRequest{Requests: reqs})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != len(reqs) {
		t.Fatalf("%d results for %d reads", len(res.Results), len(reqs))
	}
	for i, want := range []int64{10, 6, 0} {
		alone, err := c.GetBalance(ctx, reqs[i])
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Results[i].GetBalance(); !proto.Equal(got, alone) || got.Balance != want {
			t.Errorf("read %d: %v, alone %v; want balance %d", i, got, alone, want)
		}
	}
	if e := res.Results[3].GetError(); e == nil || e.Code != "INVALID_ARGUMENT" || e.Field != "user" {
		t.Errorf("bad user: %v", res.Results[3])
	}
	rep.Unavailable.Store(true)
	res, err = c.GetBalances(ctx, &rationv1.GetBalancesRequest{Requests: reqs[:1]})
	if err != nil || res.Results[0].GetError().GetCode() != "UNAVAILABLE" {
		t.Errorf("no leader: %v, %v; want the read's own UNAVAILABLE", res, err)
	}
	_, err = c.GetBalances(ctx, &rationv1.GetBalancesRequest{Requests: make([]*rationv1.GetBalanceRequest, 1001)})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || len(st.Details()) != 1 || st.Details()[0].(*rationv1.InvalidField).Field != "requests" {
		t.Errorf("1001 reads: %v", err)
	}
}
