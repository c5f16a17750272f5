package ledger

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

var histories = flag.Int("histories", 3000, "random histories in TestDifferential")

// genOp draws one random operation. Small timestamp and id spaces make
// ties, retries and conflicts common; the knobs vary per history so that
// some histories are credit-rich and others starved.
type gen struct {
	r        *rand.Rand
	tsSpan   int64
	grantIDs []string
	dedIDs   []string
	richness int
}

func (g *gen) ts() int64 { return g.r.Int64N(g.tsSpan) }

func (g *gen) op() any {
	r := g.r
	switch n := r.IntN(100); {
	case n < 30+g.richness: // grant
		var op Grant
		if len(g.grantIDs) > 0 && r.IntN(8) == 0 {
			id := g.grantIDs[r.IntN(len(g.grantIDs))]
			return Grant{ID: id, Amount: 1 + r.Int64N(20), Timestamp: g.ts(), ExpiresAt: Never} // likely a conflict
		}
		op.ID = fmt.Sprintf("g%d", len(g.grantIDs))
		g.grantIDs = append(g.grantIDs, op.ID)
		op.Amount = 1 + r.Int64N(30)
		op.Timestamp = g.ts()
		op.ExpiresAt = Never
		if r.IntN(3) > 0 {
			op.ExpiresAt = op.Timestamp + 1 + r.Int64N(g.tsSpan/2+1)
		}
		if r.IntN(4) == 0 {
			op.Priority = int32(r.IntN(3)) - 1
		}
		if r.IntN(30) == 0 {
			op.Amount = -r.Int64N(3) // invalid
		}
		if r.IntN(40) == 0 {
			op.ExpiresAt = op.Timestamp // invalid
		}
		return op
	case n < 90: // deduction
		if len(g.dedIDs) > 0 && r.IntN(6) == 0 {
			id := g.dedIDs[r.IntN(len(g.dedIDs))]
			return Deduction{ID: id, Amount: 1 + r.Int64N(10), Timestamp: g.ts()}
		}
		op := Deduction{ID: fmt.Sprintf("d%d", len(g.dedIDs)), Amount: 1 + r.Int64N(15), Timestamp: g.ts()}
		g.dedIDs = append(g.dedIDs, op.ID)
		if r.IntN(40) == 0 {
			op.Timestamp = -1 // invalid
		}
		if r.IntN(40) == 0 {
			op.ID = "bad id" // invalid
		}
		return op
	default: // a retry of something sent before, same fields
		return nil
	}
}

func TestDifferential(t *testing.T) {
	n := *histories
	if testing.Short() {
		n /= 10
	}
	for h := 0; h < n; h++ {
		seed := uint64(h)
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runDifferential(t, seed, 20+int(seed%7)*15)
		})
	}
}

func runDifferential(t *testing.T, seed uint64, ops int) {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	g := &gen{r: r, tsSpan: []int64{10, 50, 1000}[seed%3], richness: int(seed%5) * 5}
	l, m := New(), &refLedger{}
	var sent []any
	for i := 0; i < ops; i++ {
		op := g.op()
		if op == nil && len(sent) > 0 {
			op = sent[r.IntN(len(sent))]
		} else if op == nil {
			continue
		}
		sent = append(sent, op)
		var got, want Result
		var gotErr, wantErr, checkErr error
		switch op := op.(type) {
		case Grant:
			checkErr = l.CheckGrant(op)
			got, gotErr = l.Grant(op)
			want, wantErr = m.grant(op)
		case Deduction:
			before := fullHistory(l)
			checkErr = l.CheckDeduction(op)
			if after := fullHistory(l); !reflect.DeepEqual(before, after) {
				t.Fatalf("op %d: CheckDeduction changed the history", i)
			}
			got, gotErr = l.Deduct(op)
			want, wantErr = m.deduct(op)
		}
		if !sameErr(gotErr, wantErr) {
			t.Fatalf("op %d %+v: got %v, want %v", i, op, gotErr, wantErr)
		}
		if !sameErr(checkErr, wantErr) {
			t.Fatalf("op %d %+v: check said %v, want %v", i, op, checkErr, wantErr)
		}
		if len(got.Allocations) == 0 && len(want.Allocations) == 0 {
			got.Allocations, want.Allocations = nil, nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("op %d %+v: got %+v, want %+v", i, op, got, want)
		}
		checkInvariants(t, l)
		for k := 0; k < 3; k++ {
			at := r.Int64N(g.tsSpan*2) - 1
			if b, w := l.Balance(at), m.balance(at); b != w {
				t.Fatalf("op %d: balance at %d = %d, want %d", i, at, b, w)
			}
			if b, w := l.Breakdown(at), m.breakdown(at); !reflect.DeepEqual(b, w) && (len(b) != 0 || len(w) != 0) {
				t.Fatalf("op %d: breakdown at %d = %+v, want %+v", i, at, b, w)
			}
		}
		if i%10 == 9 {
			if hl, hm := fullHistory(l), m.history(); !reflect.DeepEqual(hl, hm) {
				t.Fatalf("op %d: history\n got %+v\nwant %+v", i, hl, hm)
			}
			// Continue on a restored copy: encoding loses nothing that
			// later operations depend on.
			l = roundTrip(t, l)
		}
	}
	if hl, hm := fullHistory(l), m.history(); !reflect.DeepEqual(hl, hm) {
		t.Fatalf("final history\n got %+v\nwant %+v", hl, hm)
	}
	if b, w := l.Balance(math.MaxInt64), m.balance(math.MaxInt64); b != w {
		t.Fatalf("final balance %d, want %d", b, w)
	}
}

func sameErr(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return reflect.TypeOf(a) == reflect.TypeOf(b) && a.Error() == b.Error()
}

// TestLongHistories runs histories long enough to move the ledger's arrays
// from their first allocation into segments (chunks.go), one appended in
// order and one with operations at random times, so that inserts shift
// events across leaves. The reference replays everything for each answer,
// too slow to follow such histories operation by operation: the ledger's
// decisions are taken as they are and the outcome compared once at the end.
func TestLongHistories(t *testing.T) {
	n := 20_000
	if testing.Short() {
		n = 6_000
	}
	t.Run("in order", func(t *testing.T) {
		var m refLedger
		l, _ := buildHistory(t, n, &m)
		compareLong(t, l, &m)
	})
	t.Run("late", func(t *testing.T) {
		r := rand.New(rand.NewPCG(12, 0x5eed))
		g := &gen{r: r, tsSpan: 1_000_000, richness: 20}
		l, m := New(), &refLedger{}
		for l.ev.n < max(firstLen+2*chunkLen, n/3) {
			switch op := g.op().(type) {
			case Grant:
				got, gotErr := l.Grant(op)
				want, wantErr := m.grant(op)
				if !sameErr(gotErr, wantErr) || got.Duplicate != want.Duplicate {
					t.Fatalf("%+v: got %+v %v, want %+v %v", op, got, gotErr, want, wantErr)
				}
			case Deduction:
				if res, err := l.Deduct(op); err == nil && !res.Duplicate {
					m.deds = append(m.deds, op)
				}
			}
		}
		compareLong(t, l, m)
	})
}

func compareLong(t *testing.T, l *Ledger, m *refLedger) {
	t.Helper()
	if l.ev.chunks.capacity() <= firstLen {
		t.Fatalf("the timeline holds %d events: too short to leave its first allocation", l.ev.n)
	}
	checkInvariants(t, l)
	if hl, hm := fullHistory(l), m.history(); !reflect.DeepEqual(hl, hm) {
		t.Fatalf("history of %d operations differs from the reference", l.Len())
	}
	// The history carries the balance after each event; a few balances at
	// random times check the search between events too.
	r := rand.New(rand.NewPCG(5, 5))
	for range 3 {
		at := r.Int64N(l.frontier + 2)
		if b, w := l.Balance(at), m.balance(at); b != w {
			t.Fatalf("balance at %d = %d, want %d", at, b, w)
		}
	}
	assertSameHistory(t, roundTrip(t, l), l)
}
