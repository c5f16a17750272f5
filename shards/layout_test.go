package shards

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseLogStore(t *testing.T) {
	for in, want := range map[string]LogStore{"": LogStoreShared, "shared": LogStoreShared, "bolt": LogStoreBolt} {
		if got, err := ParseLogStore(in); err != nil || got != want {
			t.Errorf("ParseLogStore(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseLogStore("pebble"); err == nil || !strings.Contains(err.Error(), `"shared" or "bolt"`) {
		t.Errorf("ParseLogStore(pebble): %v", err)
	}
}

// A data dir keeps the layout it was created with: a node started on it
// with the other one refuses, naming the flag that would start it.
func TestDataDirKeepsItsLayout(t *testing.T) {
	for _, tc := range []struct{ created, then LogStore }{
		{LogStoreShared, LogStoreBolt},
		{LogStoreBolt, LogStoreShared},
	} {
		t.Run(string(tc.created), func(t *testing.T) {
			dir := t.TempDir()
			n := newNode(t, "n1", dir)
			cfg := fastConfig(2)
			cfg.Bootstrap = true
			cfg.LogStore = tc.created
			n.start(cfg)
			waitReady(t, n.host)
			want := writeSome(t, n.host, 3, 1)
			n.stop()

			n.bind(n.addr)
			defer n.stop()
			other := n.cfg
			other.LogStore = tc.then
			other.Mux = n.mux
			_, err := Open(t.Context(), other)
			if !errors.Is(err, ErrLayoutMismatch) || !strings.Contains(err.Error(), "--raft-log-store "+string(tc.created)) {
				t.Fatalf("Open with %s on a %s dir: %v", tc.then, tc.created, err)
			}
			// With its own layout it opens, and serves what it held.
			n.start(cfg)
			waitReady(t, n.host)
			for user, v := range want {
				if got := n.host.FSM(ShardOf(user, 2)).Version(user); got != v {
					t.Fatalf("%s: version %d after reopening, want %d", user, got, v)
				}
			}
		})
	}
}

// A data dir written before the layout was recorded holds raft.db files:
// it is a bolt one.
func TestUnrecordedDataDirIsBolt(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "shards", "0"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "shards", "0", "raft.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkLayout(dir, LogStoreShared); !errors.Is(err, ErrLayoutMismatch) {
		t.Fatalf("shared on an old bolt dir: %v", err)
	}
	if err := checkLayout(dir, LogStoreBolt); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, layoutFile)); err != nil || string(b) != "bolt\n" {
		t.Fatalf("record %q, %v", b, err)
	}
	// A fresh dir records what it is created with.
	fresh := t.TempDir()
	if err := checkLayout(fresh, LogStoreShared); err != nil {
		t.Fatal(err)
	}
	if err := checkLayout(fresh, LogStoreBolt); !errors.Is(err, ErrLayoutMismatch) {
		t.Fatalf("bolt on a fresh shared dir: %v", err)
	}
}
