package shards

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

func openDB(t *testing.T, path string) *raftboltdb.BoltStore {
	t.Helper()
	db, err := raftboltdb.New(raftboltdb.Options{Path: path, NoSync: chaosNoSync})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func storeRange(t *testing.T, s raft.LogStore, lo, hi uint64) {
	t.Helper()
	var logs []*raft.Log
	for i := lo; i <= hi; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: fmt.Appendf(nil, "entry %d", i)})
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
}

func lastIndex(t *testing.T, s raft.LogStore) uint64 {
	t.Helper()
	i, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// kill drops the store as kill -9 on a machine that then loses power
// would: the buffer, if any, is gone; raft.db is released unflushed.
func kill(t *testing.T, s raftStore, db *raftboltdb.BoltStore) {
	t.Helper()
	if h, ok := s.(interface{ halt() }); ok {
		h.halt()
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// The planted no-fsync bug loses the log entries stored in the last
// flushEvery when the process dies, while every read before that sees
// them. Run with -tags chaos,chaosbug_nofsync to see the bug; without, the
// same test shows that stored entries survive.
func TestBugNoFsync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	db := openDB(t, path)
	s := chaosStore(db)
	storeRange(t, s, 1, 5)
	var l raft.Log
	if err := s.GetLog(3, &l); err != nil || string(l.Data) != "entry 3" {
		t.Fatalf("GetLog(3) = %q, %v", l.Data, err)
	}
	if first, err := s.FirstIndex(); err != nil || first != 1 || lastIndex(t, s) != 5 {
		t.Fatalf("first %d (%v), last %d, want 1 and 5", first, err, lastIndex(t, s))
	}
	// A follower truncating a conflicting suffix.
	if err := s.DeleteRange(4, 5); err != nil {
		t.Fatal(err)
	}
	if err := s.GetLog(4, &l); err != raft.ErrLogNotFound || lastIndex(t, s) != 3 {
		t.Fatalf("after DeleteRange(4, 5): GetLog(4) = %v, last %d", err, lastIndex(t, s))
	}
	kill(t, s, db)

	db = openDB(t, path)
	want := uint64(3)
	if plantedNoFsync {
		want = 0
	}
	if got := lastIndex(t, db); got != want {
		t.Fatalf("after a kill raft.db ends at %d, want %d", got, want)
	}
	// A clean close keeps everything, and so does waiting for a flush.
	s = chaosStore(db)
	storeRange(t, s, 1, 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, path)
	if got := lastIndex(t, db); got != 3 {
		t.Fatalf("after a clean close raft.db ends at %d, want 3", got)
	}
	s = chaosStore(db)
	storeRange(t, s, 4, 6)
	if plantedNoFsync {
		time.Sleep(flushEvery + 500*time.Millisecond)
	}
	kill(t, s, db)
	db = openDB(t, path)
	defer db.Close()
	if got := lastIndex(t, db); got != 6 {
		t.Fatalf("after a flush and a kill raft.db ends at %d, want 6", got)
	}
}
