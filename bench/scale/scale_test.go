package scale

import (
	"os"
	"path/filepath"
	"testing"
)

func TestHistory(t *testing.T) {
	ops := history("u", 20, 1000)
	if len(ops) != 20 || ops[0].Grant == nil || ops[0].Grant.Amount != initial {
		t.Fatalf("history: %d ops, first %+v", len(ops), ops[0])
	}
	seen := map[string]bool{}
	for i, op := range ops[1:] {
		d := op.Deduct
		if d == nil || d.Amount != 1 || d.Timestamp != 1000+int64(i+1) || seen[d.ID] || op.User != "u" {
			t.Fatalf("op %d: %+v", i+1, op)
		}
		seen[d.ID] = true
	}
}

func TestRSSAndDiskUsage(t *testing.T) {
	if rss := readRSS(os.Getpid()); rss < 1<<20 {
		t.Fatalf("own RSS %d bytes, want at least 1 MiB", rss)
	}
	if rss := readRSS(-1); rss != 0 {
		t.Fatalf("RSS of no process: %d", rss)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"x": 100, "a/y": 23} {
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := diskUsage(dir); err != nil || n != 123 {
		t.Fatalf("diskUsage = %d, %v; want 123", n, err)
	}
}
