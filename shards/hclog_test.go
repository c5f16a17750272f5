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
	l := newHCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), hclog.Warn, nil)
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
		{hclog.Error, "peer has newer term, stopping replication", []any{"peer", "n2"}, hclog.Debug},
		{hclog.Error, "failed to decode incoming command", []any{"error", raft.ErrTransportShutdown}, hclog.Debug},
		{hclog.Warn, "rejecting vote request since we have a leader", []any{"from", "127.0.0.2:7000"}, hclog.Debug},
		{hclog.Warn, "rejecting pre-vote request since our last term is greater", nil, hclog.Debug},
		{hclog.Warn, "rejecting vote request since node is not in configuration", nil, hclog.Warn},
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

// fakeDepartures says n3 (at 127.0.0.3:7000) is going away; self says
// whether this node is.
type fakeDepartures struct{ self, othersGone bool }

func (f fakeDepartures) departing(id raft.ServerID, addr raft.ServerAddress) bool {
	return f.self || id == "n3" || addr == "127.0.0.3:7000"
}

func (f fakeDepartures) othersDeparting() bool { return f.self || f.othersGone }

// Failing to reach a peer that is going away on purpose, or losing the
// quorum when every other voter is, is expected: DEBUG. The same failures
// with a peer that stays keep raft's level.
func TestExpectedLevel(t *testing.T) {
	n2 := raft.Server{Suffrage: raft.Voter, ID: "n2", Address: "127.0.0.2:7000"}
	n3 := raft.Server{Suffrage: raft.Voter, ID: "n3", Address: "127.0.0.3:7000"}
	eof := errors.New("EOF")
	staying, leaving, stopping := fakeDepartures{}, fakeDepartures{othersGone: true}, fakeDepartures{self: true}
	for _, tc := range []struct {
		e     fakeDepartures
		level hclog.Level
		msg   string
		args  []any
		want  hclog.Level
	}{
		{staying, hclog.Error, "failed to appendEntries to", []any{"peer", n3, "error", eof}, hclog.Debug},
		{staying, hclog.Error, "failed to appendEntries to", []any{"peer", n2, "error", eof}, hclog.Error},
		{staying, hclog.Error, "failed to heartbeat to", []any{"peer", n3.Address, "backoff time", 10, "error", eof}, hclog.Debug},
		{staying, hclog.Error, "failed to heartbeat to", []any{"peer", n2.Address, "error", eof}, hclog.Error},
		{staying, hclog.Error, "failed to make requestVote RPC", []any{"target", n3, "error", eof}, hclog.Debug},
		{staying, hclog.Warn, "failed to contact", []any{"server-id", n3.ID, "time", 600}, hclog.Debug},
		{staying, hclog.Warn, "failed to contact", []any{"server-id", n2.ID, "time", 600}, hclog.Warn},
		{staying, hclog.Warn, "failed to contact quorum of nodes, stepping down", nil, hclog.Warn},
		{leaving, hclog.Warn, "failed to contact quorum of nodes, stepping down", nil, hclog.Debug},
		{leaving, hclog.Warn, "Election timeout reached, restarting election", nil, hclog.Debug},
		{staying, hclog.Warn, "Election timeout reached, restarting election", nil, hclog.Warn},
		{staying, hclog.Warn, "heartbeat timeout reached, starting election", []any{"last-leader-addr", n3.Address, "last-leader-id", n3.ID}, hclog.Debug},
		{staying, hclog.Warn, "heartbeat timeout reached, starting election", []any{"last-leader-addr", n2.Address, "last-leader-id", n2.ID}, hclog.Warn},
		{staying, hclog.Error, "failed to decode incoming command", []any{"error", errors.New("msgpack decode error")}, hclog.Error},
		{stopping, hclog.Error, "failed to decode incoming command", []any{"error", errors.New("msgpack decode error")}, hclog.Debug},
		{stopping, hclog.Error, "failed to appendEntries to", []any{"peer", n2, "error", eof}, hclog.Debug},
		// Not about reaching anyone: a stopping node still reports it.
		{stopping, hclog.Error, "failed to take snapshot", []any{"error", eof}, hclog.Error},
	} {
		if got := expectedLevel(tc.level, tc.msg, tc.args, tc.e); got != tc.want {
			t.Errorf("%+v %s %q %v: level %s, want %s", tc.e, tc.level, tc.msg, tc.args, got, tc.want)
		}
	}
}

// A lowered message is still there at DEBUG, for whoever asks for it;
// the adapter's own level (raft's WARN) decides what reaches slog at all.
func TestLoweredMessagesLogAtDebug(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), hclog.Warn, fakeDepartures{})
	l.Error("failed to appendEntries to", "peer", raft.Server{ID: "n3"}, "error", errors.New("EOF"))
	l.Info("entering follower state")
	if out := buf.String(); !strings.Contains(out, "level=DEBUG") || strings.Contains(out, "follower") {
		t.Fatalf("log: %q", out)
	}
}
