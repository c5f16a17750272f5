package rationv1

import (
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestBatchRequestRoundTrip(t *testing.T) {
	in := &BatchRequest{Operations: []*Operation{
		{Op: &Operation_Grant{Grant: &GrantRequest{
			User: "alice", Id: "g1", Amount: 100, Timestamp: 1_700_000_000_000,
			ExpiresAt: proto.Int64(1_700_000_060_000), Priority: -1,
		}}},
		{Op: &Operation_Deduct{Deduct: &DeductRequest{
			User: "alice", Id: "d1", Amount: 30, Timestamp: 1_700_000_001_000,
		}}},
		{Op: &Operation_Grant{Grant: &GrantRequest{User: "bob", Id: "g2", Amount: 5}}},
	}}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out BatchRequest
	if err := proto.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, &out) {
		t.Fatalf("round trip changed the message:\n in: %v\nout: %v", in, &out)
	}
	ops := out.GetOperations()
	if len(ops) != 3 {
		t.Fatalf("got %d operations, want 3", len(ops))
	}
	g := ops[0].GetGrant()
	if g.GetId() != "g1" || g.GetAmount() != 100 || g.GetPriority() != -1 {
		t.Errorf("operations[0].grant = %v", g)
	}
	if g.ExpiresAt == nil || *g.ExpiresAt != 1_700_000_060_000 {
		t.Errorf("operations[0].grant.expires_at = %v, want 1700000060000", g.ExpiresAt)
	}
	if d := ops[1].GetDeduct(); d.GetId() != "d1" || d.GetAmount() != 30 {
		t.Errorf("operations[1].deduct = %v", d)
	}
	// An absent optional field must stay absent: it means "never expires".
	if e := ops[2].GetGrant().ExpiresAt; e != nil {
		t.Errorf("operations[2].grant.expires_at = %d, want absent", *e)
	}
}
