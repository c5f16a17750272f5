package shards

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// oldDir makes a data dir as a release before the count record left it:
// shard state (a snapshots directory, or a bolt raft.db) for each id, and
// no record.
func oldDir(t *testing.T, ids ...int) string {
	t.Helper()
	dir := t.TempDir()
	for i, id := range ids {
		sd := filepath.Join(dir, "shards", strconv.Itoa(id))
		if i%2 == 0 {
			mkdir(t, filepath.Join(sd, "snapshots"))
		} else {
			mkdir(t, sd)
			if err := os.WriteFile(filepath.Join(sd, "raft.db"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
}

// recordedDir is a data dir whose record says n.
func recordedDir(t *testing.T, n int) string {
	t.Helper()
	dir := oldDir(t, 0)
	if err := checkCount(dir, n); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestChooseCount covers every branch: the record wins unless --shards
// contradicts it; a data dir of an earlier release has 32 shards unless
// --shards says otherwise, and neither may be below a shard it holds; a
// new data dir takes --shards, settled only when explicit.
func TestChooseCount(t *testing.T) {
	tests := []struct {
		name       string
		dir        func(t *testing.T) string
		configured int
		explicit   bool
		want       int
		src        CountSource
		err        []string // substrings of the error; nil: none
	}{
		{"recorded, --shards unset", func(t *testing.T) string { return recordedDir(t, 8) }, 64, false, 8, CountRecorded, nil},
		{"recorded, --shards the same", func(t *testing.T) string { return recordedDir(t, 8) }, 8, true, 8, CountRecorded, nil},
		{"recorded, --shards another", func(t *testing.T) string { return recordedDir(t, 8) }, 16, true, 0, 0,
			[]string{"records 8 shards", "--shards is set to 16", "unset --shards"}},
		{"earlier release, --shards unset", func(t *testing.T) string { return oldDir(t, 0, 5, 31) }, 64, false,
			PreRecordShards, CountPreRecord, nil},
		{"earlier release, --shards unset, more than 32 shards", func(t *testing.T) string { return oldDir(t, 3, 40) }, 64, false, 0, 0,
			[]string{"holds shard 40", "not created with 32 shards", "start it with --shards"}},
		{"earlier release, --shards set", func(t *testing.T) string { return oldDir(t, 0, 7) }, 8, true, 8, CountExplicit, nil},
		{"earlier release, --shards below a shard it holds", func(t *testing.T) string { return oldDir(t, 0, 7) }, 4, true, 0, 0,
			[]string{"holds shard 7", "not created with 4 shards (--shards)"}},
		{"new, --shards unset", func(t *testing.T) string { return t.TempDir() }, 64, false, 64, CountDefault, nil},
		{"new, --shards set", func(t *testing.T) string { return t.TempDir() }, 16, true, 16, CountExplicit, nil},
		{"not created yet", func(t *testing.T) string { return filepath.Join(t.TempDir(), "data") }, 64, false, 64, CountDefault, nil},
		{"new, with a layout record and empty shard dirs", func(t *testing.T) string {
			dir := t.TempDir()
			mkdir(t, filepath.Join(dir, "shards", "3"))
			mkdir(t, filepath.Join(dir, "shards", "not-a-shard", "snapshots"))
			if err := writeLayout(dir, LogStoreShared); err != nil {
				t.Fatal(err)
			}
			return dir
		}, 64, false, 64, CountDefault, nil},
		{"corrupt record", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, countFile), []byte("thirty-two\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, 32, false, 0, 0, []string{"not a shard count", "thirty-two"}},
		{"unreadable record", func(t *testing.T) string {
			dir := t.TempDir()
			mkdir(t, filepath.Join(dir, countFile))
			return dir
		}, 32, false, 0, 0, []string{countFile, "is a directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, src, err := ChooseCount(tt.dir(t), tt.configured, tt.explicit)
			if tt.err == nil {
				if err != nil || n != tt.want || src != tt.src {
					t.Fatalf("ChooseCount = %d, %v, %v; want %d, %v", n, src, err, tt.want, tt.src)
				}
				return
			}
			if err == nil {
				t.Fatalf("ChooseCount = %d, %v; want an error", n, src)
			}
			for _, want := range tt.err {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}

func TestChooseCountMismatchIsTyped(t *testing.T) {
	if _, _, err := ChooseCount(recordedDir(t, 8), 16, true); !errors.Is(err, ErrShardCountMismatch) {
		t.Errorf("recorded 8, --shards 16: %v", err)
	}
	if _, _, err := ChooseCount(oldDir(t, 40), 32, false); !errors.Is(err, ErrShardCountMismatch) {
		t.Errorf("earlier release holding shard 40: %v", err)
	}
}

func TestCountSourceSettled(t *testing.T) {
	for _, s := range []CountSource{CountRecorded, CountExplicit, CountPreRecord} {
		if !s.Settled() {
			t.Errorf("%v is not settled", s)
		}
	}
	if CountDefault.Settled() {
		t.Error("the default on a new data dir is settled")
	}
}

// Open's check records the count in a data dir without a record, once
// and durably, and refuses another one afterwards.
func TestCheckCountRecords(t *testing.T) {
	dir := t.TempDir()
	if err := checkCount(dir, 8); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, countFile)); err != nil || string(b) != "8\n" {
		t.Fatalf("record %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, countFile+".tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left behind: %v", err)
	}
	if err := checkCount(dir, 8); err != nil {
		t.Errorf("same count again: %v", err)
	}
	if err := checkCount(dir, 16); !errors.Is(err, ErrShardCountMismatch) || !strings.Contains(err.Error(), "records 8 shards") {
		t.Errorf("another count: %v", err)
	}
	// An earlier release's data dir is recorded with the count given,
	// unless it holds a shard beyond it.
	old := oldDir(t, 2, 9)
	if err := checkCount(old, 8); !errors.Is(err, ErrShardCountMismatch) {
		t.Errorf("8 on a dir holding shard 9: %v", err)
	}
	if _, err := os.Stat(filepath.Join(old, countFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused count was recorded: %v", err)
	}
	if err := checkCount(old, PreRecordShards); err != nil {
		t.Fatal(err)
	}
	if n, src, err := ChooseCount(old, 64, false); n != PreRecordShards || src != CountRecorded || err != nil {
		t.Errorf("after recording: %d, %v, %v", n, src, err)
	}
}

// Open refuses a data dir recorded with another count before it opens
// any group.
func TestOpenRefusesAnotherCount(t *testing.T) {
	dir := t.TempDir()
	n := newNode(t, "n1", dir)
	defer n.stop()
	cfg := fastConfig(2)
	cfg.Bootstrap = true
	n.start(cfg)
	waitReady(t, n.host)
	writeSome(t, n.host, 3, 1)
	if err := n.host.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	n.host = nil

	other := n.cfg
	other.Shards = 4
	if _, err := Open(t.Context(), other); !errors.Is(err, ErrShardCountMismatch) || !strings.Contains(err.Error(), "records 2 shards") {
		t.Fatalf("Open with 4 shards on a dir of 2: %v", err)
	}
	if got := ExistingShards(dir, 4); len(got) != 2 {
		t.Errorf("shards with state after the refusal: %v, want the 2 of before", got)
	}
}

func TestParseCount(t *testing.T) {
	for in, want := range map[string]int{"32\n": 32, "1": 1, " 4096 \r\n": 4096} {
		if got, err := parseCount(in); err != nil || got != want {
			t.Errorf("parseCount(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "\n", "0\n", "-8\n", "8 shards\n", "0x20", "99999999999999999999"} {
		if got, err := parseCount(in); err == nil {
			t.Errorf("parseCount(%q) = %d, want an error", in, got)
		}
	}
}

func FuzzParseCount(f *testing.F) {
	f.Add("32\n")
	f.Add("-1")
	f.Add(" 7 ")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseCount(s)
		if err != nil {
			return
		}
		if n < 1 {
			t.Fatalf("parseCount(%q) = %d", s, n)
		}
		// What parses is what writeRecord would have written for it.
		if back, err := parseCount(strconv.Itoa(n) + "\n"); err != nil || back != n {
			t.Fatalf("%d does not round-trip: %d, %v", n, back, err)
		}
	})
}
