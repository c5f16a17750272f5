package shards

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A group's first election is not a warning; losing a known leader is.
func TestFirstElectionIsNotAWarning(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), hclog.Warn)
	const msg = "heartbeat timeout reached, starting election"
	l.Warn(msg, "last-leader-addr", raft.ServerAddress(""), "last-leader-id", raft.ServerID(""))
	if buf.Len() != 0 {
		t.Fatalf("first election logged: %s", buf.String())
	}
	l.Warn(msg, "last-leader-addr", raft.ServerAddress("127.0.0.2:7000"), "last-leader-id", raft.ServerID("n2"))
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "127.0.0.2:7000") {
		t.Fatalf("lost leader not warned: %q", buf.String())
	}
}
