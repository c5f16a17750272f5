package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func openStore(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openGroup(t testing.TB, s *Store, id uint32) *Group {
	t.Helper()
	g, err := s.Group(id)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// entry is the deterministic content of a test entry, so that a reader
// can tell an entry that was written from one that was not.
func entry(group uint32, index, term uint64) *raft.Log {
	return &raft.Log{
		Index: index, Term: term, Type: raft.LogCommand,
		Data:       fmt.Appendf(nil, "g%d-i%d-t%d", group, index, term),
		AppendedAt: time.Unix(0, int64(index)*1000+1),
	}
}

func entries(group uint32, lo, hi, term uint64) []*raft.Log {
	var out []*raft.Log
	for i := lo; i <= hi; i++ {
		out = append(out, entry(group, i, term))
	}
	return out
}

func checkBounds(t *testing.T, g *Group, first, last uint64) {
	t.Helper()
	f, _ := g.FirstIndex()
	l, _ := g.LastIndex()
	if f != first || l != last {
		t.Fatalf("group %d: bounds %d-%d, want %d-%d", g.id, f, l, first, last)
	}
}

func checkEntry(t *testing.T, g *Group, want *raft.Log) {
	t.Helper()
	var got raft.Log
	if err := g.GetLog(want.Index, &got); err != nil {
		t.Fatalf("group %d: GetLog(%d): %v", g.id, want.Index, err)
	}
	if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
		!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) ||
		!got.AppendedAt.Equal(want.AppendedAt) {
		t.Fatalf("group %d: GetLog(%d) = %+v, want %+v", g.id, want.Index, got, *want)
	}
}

func checkMissing(t *testing.T, g *Group, index uint64) {
	t.Helper()
	var got raft.Log
	if err := g.GetLog(index, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("group %d: GetLog(%d) = %v, want ErrLogNotFound", g.id, index, err)
	}
}

func TestLogLifecycle(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	g := openGroup(t, s, 7)
	checkBounds(t, g, 0, 0)
	checkMissing(t, g, 1)

	if err := g.StoreLogs(entries(7, 1, 100, 1)); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, g, 1, 100)
	checkEntry(t, g, entry(7, 50, 1))

	// A follower's conflict: raft deletes the suffix, then appends.
	if err := g.DeleteRange(91, 100); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, g, 1, 90)
	checkMissing(t, g, 95)
	if err := g.StoreLogs(entries(7, 91, 120, 2)); err != nil {
		t.Fatal(err)
	}
	checkEntry(t, g, entry(7, 95, 2))

	// Compaction after a snapshot: a prefix.
	if err := g.DeleteRange(1, 60); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, g, 61, 120)
	checkMissing(t, g, 60)

	// Everything survives a reopen, and the bounds are found again.
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	g = openGroup(t, s, 7)
	checkBounds(t, g, 61, 120)
	checkEntry(t, g, entry(7, 61, 1))
	checkEntry(t, g, entry(7, 120, 2))

	// Deleting all of it empties the log; the next append starts anew
	// (a snapshot install on a monotonic store).
	if err := g.DeleteRange(61, 120); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, g, 0, 0)
	if err := g.StoreLogs(entries(7, 500, 501, 3)); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, g, 500, 501)
}

func TestGroupsAreIsolated(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	ids := []uint32{0, 1, 2, 1 << 24, ^uint32(0) - 1, ^uint32(0)}
	groups := map[uint32]*Group{}
	for n, id := range ids {
		g := openGroup(t, s, id)
		groups[id] = g
		if err := g.StoreLogs(entries(id, 1, uint64(10+n), 1)); err != nil {
			t.Fatal(err)
		}
		if err := g.SetUint64([]byte("CurrentTerm"), uint64(n)); err != nil {
			t.Fatal(err)
		}
	}
	// Deleting one group's whole log, and dropping another, leaves the
	// neighbours whole: the key ranges must not overlap at the edges.
	if err := groups[1].DeleteRange(0, ^uint64(0)); err != nil {
		t.Fatal(err)
	}
	groups[^uint32(0)-1].Close()
	if err := s.DropGroup(^uint32(0) - 1); err != nil {
		t.Fatal(err)
	}
	for n, id := range ids {
		g := groups[id]
		switch id {
		case 1:
			checkBounds(t, g, 0, 0)
			continue
		case ^uint32(0) - 1:
			g = openGroup(t, s, id)
			checkBounds(t, g, 0, 0)
			if _, err := g.GetUint64([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
				t.Fatalf("dropped group's stable key: %v, want not found", err)
			}
			continue
		}
		checkBounds(t, g, 1, uint64(10+n))
		checkEntry(t, g, entry(id, uint64(10+n), 1))
		if v, err := g.GetUint64([]byte("CurrentTerm")); err != nil || v != uint64(n) {
			t.Fatalf("group %d: CurrentTerm = %d, %v; want %d", id, v, err, n)
		}
	}
}

func TestStableStore(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	g := openGroup(t, s, 3)
	// raft tells a missing key from a failure by the message alone.
	if _, err := g.Get([]byte("LastVoteCand")); err == nil || err.Error() != "not found" {
		t.Fatalf("Get of a missing key: %v, want \"not found\"", err)
	}
	if _, err := g.GetUint64([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("GetUint64 of a missing key: %v, want \"not found\"", err)
	}
	if err := g.Set([]byte("LastVoteCand"), []byte("node2")); err != nil {
		t.Fatal(err)
	}
	if v, err := g.Get([]byte("LastVoteCand")); err != nil || string(v) != "node2" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if err := g.SetUint64([]byte("CurrentTerm"), 1<<40+5); err != nil {
		t.Fatal(err)
	}
	if v, err := g.GetUint64([]byte("CurrentTerm")); err != nil || v != 1<<40+5 {
		t.Fatalf("GetUint64 = %d, %v", v, err)
	}
	// A stable key never reads as a log entry and vice versa.
	checkBounds(t, g, 0, 0)
	if err := g.Set([]byte("x"), []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := g.GetUint64([]byte("x")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetUint64 of a 3-byte value: %v, want ErrCorrupt", err)
	}
}

func TestOpenAndCloseRules(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	g := openGroup(t, s, 1)
	if _, err := s.Group(1); err == nil {
		t.Fatal("a second view of an open group was allowed")
	}
	if err := s.DropGroup(1); err == nil {
		t.Fatal("dropping an open group was allowed")
	}
	// A second process on the directory fails at once on the file lock
	// (here: a second engine in this process).
	if s2, err := Open(Options{Dir: dir}); err == nil {
		s2.Close()
		t.Fatal("a second engine opened the same directory")
	}
	// A released view still writes while the engine is open: raft's
	// heartbeat handlers may outlive its shutdown, and raft panics on a
	// failed term write (Group.Close).
	g.Close()
	if err := g.SetUint64([]byte("CurrentTerm"), 9); err != nil {
		t.Fatalf("term write through a released view: %v", err)
	}
	if err := g.StoreLog(entry(1, 1, 9)); err != nil {
		t.Fatalf("append through a released view: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.StoreLog(entry(1, 1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("StoreLog after Close: %v, want ErrClosed", err)
	}
	if _, err := g.Get([]byte("k")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestDifferentialAgainstInmem drives a group and raft's own InmemStore
// with the same random raft-shaped calls (appends, conflicting suffixes,
// compactions, reopens) and compares every answer.
func TestDifferentialAgainstInmem(t *testing.T) {
	seeds := 20
	if testing.Short() {
		seeds = 5
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { differential(t, uint64(seed)) })
	}
}

func differential(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	s := openStore(t, dir)
	defer func() { s.Close() }()
	g := openGroup(t, s, uint32(seed))
	model := raft.NewInmemStore()
	term := uint64(1)
	for step := range 300 {
		first, _ := model.FirstIndex()
		last, _ := model.LastIndex()
		switch op := rng.IntN(10); {
		case op < 6: // append
			n := 1 + rng.Uint64N(20)
			logs := entries(g.id, last+1, last+n, term)
			mustBoth(t, g.StoreLogs(logs), model.StoreLogs(logs))
		case op < 7 && last > first: // conflict: new term overwrites a suffix
			from := first + 1 + rng.Uint64N(last-first)
			term++
			mustBoth(t, g.DeleteRange(from, last), model.DeleteRange(from, last))
			logs := entries(g.id, from, from+rng.Uint64N(5), term)
			mustBoth(t, g.StoreLogs(logs), model.StoreLogs(logs))
		case op < 9 && last > first: // compaction
			upTo := first + rng.Uint64N(last-first)
			mustBoth(t, g.DeleteRange(first, upTo), model.DeleteRange(first, upTo))
		case op < 10: // reopen
			g.Close()
			s.Close()
			s = openStore(t, dir)
			g = openGroup(t, s, uint32(seed))
		}
		compare(t, step, g, model)
	}
}

func mustBoth(t *testing.T, a, b error) {
	t.Helper()
	if a != nil || b != nil {
		t.Fatalf("store: %v, model: %v", a, b)
	}
}

func compare(t *testing.T, step int, g *Group, model *raft.InmemStore) {
	t.Helper()
	mf, _ := model.FirstIndex()
	ml, _ := model.LastIndex()
	f, _ := g.FirstIndex()
	l, _ := g.LastIndex()
	if f != mf || l != ml {
		t.Fatalf("step %d: bounds %d-%d, model %d-%d", step, f, l, mf, ml)
	}
	for i := max(mf, 1) - 1; i <= ml+1; i++ {
		var want raft.Log
		if err := model.GetLog(i, &want); err != nil {
			checkMissing(t, g, i)
			continue
		}
		checkEntry(t, g, &want)
	}
}
