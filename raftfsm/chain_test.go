package raftfsm

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ration/ration/raftfsm/raftpb"
)

func chained(op Op) Op {
	op.Chained = true
	return op
}

func formatOf(t *testing.T, data []byte) uint32 {
	t.Helper()
	var b raftpb.Batch
	if err := proto.Unmarshal(data[1:], &b); err != nil {
		t.Fatal(err)
	}
	return b.Format
}

// A chain applies whole when its first op's version matches, and is
// refused whole when it does not, even where a later op's expected
// version happens to equal the user's version: that op was accepted on
// top of the refused one, not on what the log holds.
func TestChainedOps(t *testing.T) {
	a := newApplier()
	chain := mustBatch(t,
		grantOp("u", 0, "g1", 10, 1),
		chained(grantOp("u", 1, "g2", 10, 2)),
		chained(deductOp("u", 2, "d1", 15, 3)),
		grantOp("v", 0, "g", 1, 1),
	)
	if f := formatOf(t, chain); f != formatChained {
		t.Fatalf("a batch with a chain is written as format %d, want %d", f, formatChained)
	}
	res := a.results(t, chain)
	for i, want := range []uint64{1, 2, 3, 1} {
		if !res[i].Applied || res[i].Version != want || res[i].Err != nil {
			t.Fatalf("op %d: %+v, want applied at version %d", i, res[i], want)
		}
	}

	// Another activation appended one op meanwhile: u is at 4, and the
	// chain was accepted at 3. Its second op expects 4.
	a.results(t, mustBatch(t, grantOp("u", 3, "other", 1, 1)))
	before := a.s.StateHash()
	res = a.results(t, mustBatch(t,
		deductOp("u", 3, "d2", 5, 9),
		chained(deductOp("u", 4, "d3", 5, 9)),
		chained(grantOp("u", 5, "g3", 5, 9)),
	))
	for i, r := range res {
		if r.Applied || r.Err != nil || r.Version != 4 {
			t.Fatalf("op %d of a stale chain: %+v, want refused at version 4", i, r)
		}
	}
	if a.s.StateHash() != before || a.s.Stats().Mismatches != 3 {
		t.Fatalf("a refused chain changed the state, or was not counted: %+v", a.s.Stats())
	}
}

// Chaining only means something from format 2. A chained op must follow an
// op of its own user: EncodeBatch refuses it otherwise, and Apply answers
// it as invalid. In a format 1 entry the field is ignored, as replicas
// that know only format 1 ignore it.
func TestChainedNeedsItsUser(t *testing.T) {
	if _, err := EncodeBatch([]Op{chained(grantOp("u", 0, "g", 1, 1))}); !errors.Is(err, ErrInvalidOp) {
		t.Fatalf("a chain without a first op: %v, want ErrInvalidOp", err)
	}
	if _, err := EncodeBatch([]Op{grantOp("v", 0, "g", 1, 1), chained(grantOp("u", 0, "g", 1, 1))}); !errors.Is(err, ErrInvalidOp) {
		t.Fatalf("a chain across users: %v, want ErrInvalidOp", err)
	}
	if f := formatOf(t, mustBatch(t, grantOp("u", 0, "g", 1, 1), grantOp("u", 1, "h", 1, 1))); f != formatPlain {
		t.Fatalf("a batch without chains is written as format %d, want %d", f, formatPlain)
	}

	wire := func(format uint32) []byte {
		b := &raftpb.Batch{Format: format, Ops: []*raftpb.Op{
			{User: "v", Op: &raftpb.Op_Grant{Grant: &raftpb.GrantOp{Id: "g", Amount: 1}}},
			{User: "u", Chained: true, Op: &raftpb.Op_Grant{Grant: &raftpb.GrantOp{Id: "g", Amount: 1}}},
			{User: "u", ExpectedVersion: 7, Op: &raftpb.Op_Grant{Grant: &raftpb.GrantOp{Id: "h", Amount: 1}}},
			{User: "u", ExpectedVersion: 1, Chained: true, Op: &raftpb.Op_Grant{Grant: &raftpb.GrantOp{Id: "h", Amount: 1}}},
		}}
		data, err := proto.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte{TypeBatch}, data...)
	}
	res := newApplier().results(t, wire(formatPlain))
	for i, want := range []bool{true, true, false, true} {
		if res[i].Applied != want || res[i].Err != nil {
			t.Fatalf("format 1, op %d: %+v, want applied=%v (chained ignored)", i, res[i], want)
		}
	}
	res = newApplier().results(t, wire(formatChained))
	if !res[0].Applied || !errors.Is(res[1].Err, ErrInvalidOp) || res[2].Applied || res[3].Applied {
		t.Fatalf("format 2: %+v; want v applied, the orphan chained op invalid, the rest refused", res)
	}
}
