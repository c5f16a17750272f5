package raftfsm

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/ration/ration/ledger"
	"github.com/ration/ration/raftfsm/raftpb"
)

func TestApplyChecksVersions(t *testing.T) {
	a := newApplier()
	res := a.results(t, mustBatch(t,
		grantOp("alice", 0, "g1", 100, 10),
		grantOp("alice", 1, "g2", 50, 20),  // chains on the op before it
		grantOp("bob", 3, "g1", 5, 10),     // bob has no ops: refused
		deductOp("alice", 1, "d1", 30, 30), // stale: alice is at 2 now
		deductOp("alice", 2, "d1", 30, 30),
	))
	want := []OpResult{
		{Applied: true, Version: 1},
		{Applied: true, Version: 2},
		{Applied: false, Version: 0},
		{Applied: false, Version: 2},
		{Applied: true, Version: 3},
	}
	if len(res) != len(want) {
		t.Fatalf("got %d results, want %d", len(res), len(want))
	}
	for i := range want {
		if res[i] != want[i] {
			t.Errorf("op %d: got %+v, want %+v", i, res[i], want[i])
		}
	}
	if v := a.s.Version("alice"); v != 3 {
		t.Errorf("alice version %d, want 3", v)
	}
	if v := a.s.Version("bob"); v != 0 {
		t.Errorf("bob version %d, want 0", v)
	}
	if n := a.s.Users(); n != 1 {
		t.Errorf("Users() = %d, want 1 (a refused op must not create a user)", n)
	}
	if got := a.s.AppliedIndex(); got != 1 {
		t.Errorf("AppliedIndex() = %d, want 1", got)
	}
	st := a.s.Stats()
	if st.Entries != 1 || st.Ops != 5 || st.Applied != 3 || st.Mismatches != 2 || st.Invalid != 0 {
		t.Errorf("stats %+v", st)
	}

	v, ops := a.s.Log("alice")
	if v != 3 || len(ops) != 3 {
		t.Fatalf("Log: version %d, %d ops", v, len(ops))
	}
	if g := ops[0].Grant; g == nil || *g != (ledger.Grant{ID: "g1", Amount: 100, Timestamp: 10, ExpiresAt: ledger.Never}) {
		t.Errorf("op 0: %+v", ops[0])
	}
	if d := ops[2].Deduction; d == nil || *d != (ledger.Deduction{ID: "d1", Amount: 30, Timestamp: 30}) {
		t.Errorf("op 2: %+v", ops[2])
	}
	v, ops = a.s.LogSince("alice", 2)
	if v != 3 || len(ops) != 1 || ops[0].Deduction == nil {
		t.Errorf("LogSince(2): version %d, ops %+v", v, ops)
	}
	if v, ops = a.s.LogSince("alice", 5); v != 3 || len(ops) != 0 {
		t.Errorf("LogSince(5): version %d, %d ops", v, len(ops))
	}
	if v, ops = a.s.Log("nobody"); v != 0 || ops != nil {
		t.Errorf("Log(nobody): %d %v", v, ops)
	}
}

func TestLogRoundTripsEveryField(t *testing.T) {
	a := newApplier()
	grants := []ledger.Grant{
		{ID: "a", Amount: 1, Timestamp: 0, ExpiresAt: 1, Priority: math.MinInt32},
		{ID: "b.c:d@e-f_G9", Amount: math.MaxInt64, Timestamp: math.MaxInt64 - 2, ExpiresAt: math.MaxInt64 - 1, Priority: math.MaxInt32},
		{ID: string(make128('x')), Amount: 7, Timestamp: 1_700_000_000_000, ExpiresAt: ledger.Never, Priority: -1},
		// An explicit MaxInt64 expiry is Never.
		{ID: "n", Amount: 7, Timestamp: 5, ExpiresAt: math.MaxInt64},
	}
	var ops []Op
	for i := range grants {
		ops = append(ops, Op{User: "u", ExpectedVersion: uint64(i), Grant: &grants[i]})
	}
	ops = append(ops, deductOp("u", uint64(len(grants)), "d", math.MaxInt64, math.MaxInt64))
	for i, r := range a.results(t, mustBatch(t, ops...)) {
		if !r.Applied || r.Err != nil {
			t.Fatalf("op %d: %+v", i, r)
		}
	}
	_, logged := a.s.Log("u")
	for i, g := range grants {
		if logged[i].Grant == nil || *logged[i].Grant != g {
			t.Errorf("grant %d: got %+v, want %+v", i, logged[i].Grant, g)
		}
	}
	if d := logged[len(grants)].Deduction; d == nil || *d != *ops[len(grants)].Deduction {
		t.Errorf("deduction: got %+v", d)
	}
	checkInvariants(t, a.s)
}

func make128(c byte) []byte {
	b := make([]byte, ledger.MaxIDLen)
	for i := range b {
		b[i] = c
	}
	return b
}

// TestLogRebuildsLedger is the actor's use of Log: replaying it into a fresh
// ledger must accept every operation and give the same version.
func TestLogRebuildsLedger(t *testing.T) {
	a := newApplier()
	l := ledger.New()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		var op Op
		ts := int64(1000 + rng.IntN(500))
		if rng.IntN(2) == 0 {
			op = grantOp("u", l.Version(), "g"+itoa(i), 1+rng.Int64N(50), ts)
			op.Grant.ExpiresAt = ts + 1 + rng.Int64N(300)
			if _, err := l.Grant(*op.Grant); err != nil {
				continue
			}
		} else {
			op = deductOp("u", l.Version(), "d"+itoa(i), 1+rng.Int64N(20), ts)
			if _, err := l.Deduct(*op.Deduction); err != nil {
				continue // refused ops are never proposed
			}
		}
		if r := a.results(t, mustBatch(t, op)); !r[0].Applied {
			t.Fatalf("op %d refused: %+v", i, r[0])
		}
	}
	v, ops := a.s.Log("u")
	if v != l.Version() {
		t.Fatalf("fsm version %d, ledger %d", v, l.Version())
	}
	re := ledger.New()
	for i, op := range ops {
		var err error
		if op.Grant != nil {
			_, err = re.Grant(*op.Grant)
		} else {
			_, err = re.Deduct(*op.Deduction)
		}
		if err != nil {
			t.Fatalf("replaying op %d: %v", i, err)
		}
	}
	want, _ := l.MarshalBinary()
	got, _ := re.MarshalBinary()
	if string(got) != string(want) {
		t.Fatal("replayed ledger differs from the original")
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestApplyRefusesInvalidOps(t *testing.T) {
	a := newApplier()
	// EncodeBatch validates, so build the wire form by hand, as a buggy
	// proposer would.
	exp := int64(5)
	batch := &raftpb.Batch{Format: BatchFormat, Ops: []*raftpb.Op{
		{User: "ok", Op: &raftpb.Op_Grant{Grant: &raftpb.GrantOp{Id: "g", Amount: 1, Timestamp: 1}}},
		{User: "bad user", Op: &raftpb.Op_Grant{Grant: &raftpb.GrantOp{Id: "g", Amount: 1}}},
		{User: "ok", ExpectedVersion: 1, Op: &raftpb.Op_Grant{Grant: &raftpb.GrantOp{Id: "g2", Amount: 0}}},
		{User: "ok", ExpectedVersion: 1, Op: &raftpb.Op_Grant{Grant: &raftpb.GrantOp{Id: "g2", Amount: 1, Timestamp: 5, ExpiresAt: &exp}}},
		{User: "ok", ExpectedVersion: 1, Op: &raftpb.Op_Deduct{Deduct: &raftpb.DeductOp{Id: "", Amount: 1}}},
		{User: "ok", ExpectedVersion: 1, Op: &raftpb.Op_Deduct{Deduct: &raftpb.DeductOp{Id: "d", Amount: 1, Timestamp: -1}}},
		{User: "ok", ExpectedVersion: 1},
		{User: "ok", ExpectedVersion: 1, Op: &raftpb.Op_Deduct{Deduct: &raftpb.DeductOp{Id: "d", Amount: 1, Timestamp: 9}}},
	}}
	payload, err := proto.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	res := a.results(t, append([]byte{TypeBatch}, payload...))
	for i, r := range res {
		wantOK := i == 0 || i == 7
		if r.Applied != wantOK {
			t.Errorf("op %d: %+v", i, r)
		}
		if !wantOK && !errors.Is(r.Err, ErrInvalidOp) {
			t.Errorf("op %d: err %v, want ErrInvalidOp", i, r.Err)
		}
	}
	if v := a.s.Version("ok"); v != 2 {
		t.Errorf("version %d, want 2", v)
	}
	if st := a.s.Stats(); st.Invalid != 6 {
		t.Errorf("Invalid = %d, want 6", st.Invalid)
	}
}

func TestEncodeBatchValidates(t *testing.T) {
	for _, ops := range [][]Op{
		nil,
		{{User: "u"}},
		{{User: "u", Grant: &ledger.Grant{ID: "g", Amount: 1, ExpiresAt: ledger.Never}, Deduction: &ledger.Deduction{ID: "d", Amount: 1}}},
		{grantOp("", 0, "g", 1, 0)},
		{grantOp("u", 0, "g", -1, 0)},
		{{User: "u", Grant: &ledger.Grant{ID: "g", Amount: 1, Timestamp: 5, ExpiresAt: 5}}},
		{deductOp("u", 0, "d/1", 1, 0)},
		make([]Op, MaxBatchOps+1),
	} {
		if _, err := EncodeBatch(ops); !errors.Is(err, ErrInvalidOp) {
			t.Errorf("EncodeBatch(%+v): err %v, want ErrInvalidOp", ops, err)
		}
	}
}

func TestMalformedEntriesChangeNothing(t *testing.T) {
	a := newApplier()
	a.results(t, mustBatch(t, grantOp("u", 0, "g", 1, 1)))
	before := a.s.StateHash()
	good := mustBatch(t, grantOp("u", 1, "g2", 1, 1))
	zeroFormat, _ := proto.Marshal(&raftpb.Batch{Ops: []*raftpb.Op{{User: "u", ExpectedVersion: 1, Op: &raftpb.Op_Grant{Grant: &raftpb.GrantOp{Id: "g3", Amount: 1}}}}})
	for _, data := range [][]byte{
		{},
		{TypeBatch, 0xff},
		good[:len(good)-3],
		append([]byte{TypeBatch}, zeroFormat...),
	} {
		if resp := a.apply(data); !errors.Is(resp.(error), ErrMalformedCommand) {
			t.Errorf("%x: response %v, want ErrMalformedCommand", data, resp)
		}
	}
	if a.s.StateHash() != before {
		t.Error("a malformed entry changed the state")
	}
	if got := a.s.AppliedIndex(); got != 5 {
		t.Errorf("AppliedIndex %d, want 5: malformed entries are still applied (as no-ops)", got)
	}
}

func TestUnknownCommands(t *testing.T) {
	a := newApplier()
	a.results(t, mustBatch(t, grantOp("u", 0, "g", 1, 1)))
	before := a.s.StateHash()

	// Ignorable: skipped, counted, applied index advances.
	if resp := a.apply([]byte{IgnorableFlag | 0x05, 1, 2, 3}); resp != nil {
		t.Errorf("ignorable response %v", resp)
	}
	if a.s.Stats().Ignored != 1 || a.s.AppliedIndex() != 2 || a.s.StateHash() != before {
		t.Errorf("ignorable command: stats %+v applied %d", a.s.Stats(), a.s.AppliedIndex())
	}
	// Noop: nothing.
	if resp := a.apply(EncodeNoop()); resp != nil {
		t.Errorf("noop response %v", resp)
	}

	newer, _ := proto.Marshal(&raftpb.Batch{Format: BatchFormat + 1})
	for _, data := range [][]byte{{0x05}, {0x00, 1}, {0x7f}, append([]byte{TypeBatch}, newer...)} {
		func() {
			defer func() {
				var uc *UnknownCommandError
				if err, _ := recover().(error); !errors.As(err, &uc) {
					t.Errorf("%x: recovered %v, want *UnknownCommandError", data, err)
				}
			}()
			a.apply(data)
			t.Errorf("%x: no panic", data)
		}()
	}
	if a.s.StateHash() != before {
		t.Error("state changed")
	}
}

func TestNonCommandEntriesAdvanceAppliedIndex(t *testing.T) {
	s := New(discardLogger())
	resps := s.FSM().ApplyBatch([]*raft.Log{
		{Index: 7, Type: raft.LogCommand, Data: mustBatch(t, grantOp("u", 0, "g", 1, 1))},
		{Index: 8, Type: raft.LogConfiguration, Data: []byte("whatever")},
	})
	if len(resps) != 2 || resps[1] != nil {
		t.Fatalf("responses %v", resps)
	}
	if s.AppliedIndex() != 8 {
		t.Errorf("AppliedIndex %d, want 8", s.AppliedIndex())
	}
}

func TestDeterminism(t *testing.T) {
	entries := randomEntries(rand.New(rand.NewPCG(7, 7)), 400, 50, 20)
	one := newApplier()
	for _, e := range entries {
		one.apply(e)
	}
	// The same entries in raft batches of varying size, with a snapshot
	// and restore halfway, must give the same state.
	two := newApplier()
	rng := rand.New(rand.NewPCG(8, 8))
	for i := 0; i < len(entries); {
		n := min(1+rng.IntN(16), len(entries)-i)
		logs := make([]*raft.Log, n)
		for j := range logs {
			logs[j] = two.entry(entries[i+j])
		}
		two.s.FSM().ApplyBatch(logs)
		i += n
		if i >= len(entries)/2 && i-n < len(entries)/2 {
			snap, _ := two.s.FSM().Snapshot()
			data := persist(t, snap)
			fresh := New(discardLogger())
			if err := restore(fresh, data); err != nil {
				t.Fatal(err)
			}
			two.s = fresh
		}
	}
	if one.s.StateHash() != two.s.StateHash() {
		t.Fatal("same entries, different StateHash")
	}
	if one.s.AppliedIndex() != two.s.AppliedIndex() {
		t.Fatalf("applied %d vs %d", one.s.AppliedIndex(), two.s.AppliedIndex())
	}
	if one.s.Stats().Mismatches == 0 {
		t.Fatal("test entries should include mismatches")
	}
	checkInvariants(t, one.s)
}

func TestSnapshotIsPointInTime(t *testing.T) {
	entries := randomEntries(rand.New(rand.NewPCG(3, 4)), 300, 40, 16)
	a := newApplier()
	for _, e := range entries[:150] {
		a.apply(e)
	}
	snap, err := a.s.FSM().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	hashAt, indexAt, usersAt := a.s.StateHash(), a.s.AppliedIndex(), a.s.Users()
	// Apply more before persisting: Persist must not see it.
	for _, e := range entries[150:] {
		a.apply(e)
	}
	if a.s.StateHash() == hashAt {
		t.Fatal("later entries did not change the state")
	}
	data := persist(t, snap)

	fresh := New(discardLogger())
	if err := restore(fresh, data); err != nil {
		t.Fatal(err)
	}
	if fresh.StateHash() != hashAt || fresh.AppliedIndex() != indexAt || fresh.Users() != usersAt {
		t.Fatalf("restored state differs from the state at snapshot time")
	}
	checkInvariants(t, fresh)

	// Restore replaces existing state rather than merging into it.
	if err := restore(a.s, data); err != nil {
		t.Fatal(err)
	}
	if a.s.StateHash() != hashAt || a.s.AppliedIndex() != indexAt {
		t.Fatal("restore over existing state did not replace it")
	}
	// The restored state keeps working: replaying the rest gives the
	// state of a replica that never snapshotted.
	full := newApplier()
	for _, e := range entries {
		full.apply(e)
	}
	fresh2 := &applier{s: fresh, index: indexAt}
	for _, e := range entries[150:] {
		fresh2.apply(e)
	}
	if fresh2.s.StateHash() != full.s.StateHash() {
		t.Fatal("restored replica diverged after replaying the rest of the log")
	}
}

func TestEmptySnapshot(t *testing.T) {
	s := New(discardLogger())
	snap, _ := s.FSM().Snapshot()
	data := persist(t, snap)
	other := newApplier()
	other.apply(mustBatch(t, grantOp("u", 0, "g", 1, 1)))
	if err := restore(other.s, data); err != nil {
		t.Fatal(err)
	}
	if other.s.Users() != 0 || other.s.StateHash() != s.StateHash() {
		t.Fatal("empty snapshot did not restore to empty state")
	}
}

func TestCorruptSnapshotsAreRefused(t *testing.T) {
	a := newApplier()
	for _, e := range randomEntries(rand.New(rand.NewPCG(5, 6)), 20, 5, 6) {
		a.apply(e)
	}
	snap, _ := a.s.FSM().Snapshot()
	data := persist(t, snap)

	target := newApplier()
	target.apply(mustBatch(t, grantOp("keep", 0, "g", 1, 1)))
	want := target.s.StateHash()
	check := func(name string, bad []byte) {
		t.Helper()
		err := restore(target.s, bad)
		if err == nil {
			t.Fatalf("%s: restore accepted a corrupt snapshot", name)
		}
		if !errors.Is(err, ErrCorruptSnapshot) {
			t.Fatalf("%s: err %v, want ErrCorruptSnapshot", name, err)
		}
		if target.s.StateHash() != want || target.s.AppliedIndex() != 1 {
			t.Fatalf("%s: a refused restore changed the state", name)
		}
	}
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x20
		check("flip byte "+itoa(i), bad)
	}
	for n := range len(data) {
		check("truncate to "+itoa(n), data[:n])
	}
	check("trailing byte", append(append([]byte(nil), data...), 0))
}

func TestWaitApplied(t *testing.T) {
	a := newApplier()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.s.WaitApplied(ctx, 3) }()
	for range 3 {
		select {
		case err := <-done:
			t.Fatalf("returned early at index %d: %v", a.s.AppliedIndex(), err)
		case <-time.After(10 * time.Millisecond):
		}
		a.apply(EncodeNoop())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	if err := a.s.WaitApplied(short, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
}

// TestConcurrentReadsAndSnapshots is for the race detector: readers and
// snapshot persistence run while entries are applied.
func TestConcurrentReadsAndSnapshots(t *testing.T) {
	entries := randomEntries(rand.New(rand.NewPCG(9, 9)), 500, 30, 16)
	a := newApplier()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	snaps := make(chan raft.FSMSnapshot, 64)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for u := range 30 {
				v, ops := a.s.Log("u" + itoa(u))
				if uint64(len(ops)) != v {
					t.Errorf("Log: version %d with %d ops", v, len(ops))
					return
				}
			}
			a.s.StateHash()
		}
	})
	wg.Go(func() {
		for snap := range snaps {
			data := persist(t, snap)
			if err := restore(New(discardLogger()), data); err != nil {
				t.Error(err)
			}
		}
	})
	for i, e := range entries {
		a.apply(e)
		if i%25 == 0 {
			snap, _ := a.s.FSM().Snapshot()
			snaps <- snap
		}
	}
	close(snaps)
	close(stop)
	wg.Wait()
}

// OpsSinceSnapshot counts applied ops (not entries, not refused ones)
// since the last Snapshot or Restore, and the state's ops.
func TestOpsSinceSnapshot(t *testing.T) {
	a := newApplier()
	a.results(t, mustBatch(t, grantOp("u", 0, "g", 5, 1), grantOp("v", 0, "g", 5, 1), deductOp("u", 1, "d", 1, 2)))
	a.results(t, mustBatch(t, grantOp("u", 0, "stale", 5, 1))) // version mismatch: not applied
	if since, state := a.s.OpsSinceSnapshot(); since != 3 || state != 3 {
		t.Fatalf("after 3 ops: since %d, state %d", since, state)
	}
	snap, err := a.s.FSM().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	data := persist(t, snap)
	a.results(t, mustBatch(t, grantOp("w", 0, "g", 5, 1)))
	if since, state := a.s.OpsSinceSnapshot(); since != 1 || state != 4 {
		t.Fatalf("one op after the snapshot: since %d, state %d", since, state)
	}
	if err := restore(a.s, data); err != nil {
		t.Fatal(err)
	}
	if since, state := a.s.OpsSinceSnapshot(); since != 0 || state != 3 {
		t.Fatalf("after restoring the snapshot: since %d, state %d", since, state)
	}
}
