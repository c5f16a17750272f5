package shards

import (
	"bytes"
	"errors"
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

// Routine raft messages are lowered; the same messages in other
// circumstances, and everything else, keep their level.
func TestRoutineLevel(t *testing.T) {
	for _, tc := range []struct {
		level hclog.Level
		msg   string
		args  []any
		want  hclog.Level
	}{
		{hclog.Warn, "heartbeat timeout reached, starting election", []any{"last-leader-addr", "", "last-leader-id", ""}, hclog.Debug},
		{hclog.Warn, "heartbeat timeout reached, starting election", []any{"last-leader-addr", "127.0.0.2:7000"}, hclog.Warn},
		{hclog.Error, "peer has newer term, stopping replication", []any{"peer", "n2"}, hclog.Info},
		{hclog.Error, "failed to decode incoming command", []any{"error", errors.New("read tcp 1->2: read: connection reset by peer")}, hclog.Debug},
		{hclog.Error, "failed to decode incoming command", []any{"error", errors.New("EOF")}, hclog.Debug},
		{hclog.Error, "failed to decode incoming command", []any{"error", errors.New("msgpack decode error [pos 3]: invalid")}, hclog.Error},
		{hclog.Error, "failed to appendEntries to", []any{"error", errors.New("EOF")}, hclog.Error},
	} {
		if got := routineLevel(tc.level, tc.msg, tc.args); got != tc.want {
			t.Errorf("%s %q %v: level %s, want %s", tc.level, tc.msg, tc.args, got, tc.want)
		}
	}
}
