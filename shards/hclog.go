package shards

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// hclogAdapter lets raft, which logs through hclog, write to the node's
// slog logger. Only the level and the key/value pairs are carried over;
// hclog's formatting options do not apply.
type hclogAdapter struct {
	log   *slog.Logger
	name  string
	args  []any
	level *atomic.Int32 // shared by derived loggers, as in hclog
	// expect, if set, tells which failures are expected now (a peer or
	// this node going away): they are logged at DEBUG.
	expect expectations
}

var _ hclog.Logger = (*hclogAdapter)(nil)

// expectations is what the adapter asks about a raft group, to tell
// failures that are how a graceful departure looks from the failures that
// need an operator.
type expectations interface {
	// departing reports whether failing to reach the peer is expected:
	// it, or this node, is going away on purpose. Either of id and addr
	// may be empty.
	departing(id raft.ServerID, addr raft.ServerAddress) bool
	// othersDeparting reports whether every other voter of the group is
	// departing (or this node is), so that losing the quorum is expected.
	othersDeparting() bool
}

func newHCLog(l *slog.Logger, level hclog.Level, expect expectations) hclog.Logger {
	lv := new(atomic.Int32)
	lv.Store(int32(level))
	return &hclogAdapter{log: l, level: lv, expect: expect}
}

func toSlogLevel(l hclog.Level) slog.Level {
	switch {
	case l <= hclog.Debug:
		return slog.LevelDebug
	case l == hclog.Info:
		return slog.LevelInfo
	case l == hclog.Warn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func (a *hclogAdapter) enabled(l hclog.Level) bool {
	min := hclog.Level(a.level.Load())
	return l != hclog.Off && min != hclog.Off && l >= min
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	// Whether raft's message is logged at all is decided by the level raft
	// gave it; a lowered one is logged at its new level (DEBUG shows it).
	if !a.enabled(level) {
		return
	}
	level = routineLevel(level, msg, args)
	if a.expect != nil {
		level = expectedLevel(level, msg, args, a.expect)
	}
	if a.name != "" {
		args = append(args, "logger", a.name)
	}
	a.log.Log(context.Background(), toSlogLevel(level), msg, append(a.args[:len(a.args):len(a.args)], args...)...)
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.args }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.args = append(a.args[:len(a.args):len(a.args)], args...)
	return &c
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	c := *a
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	return &c
}

func (a *hclogAdapter) SetLevel(level hclog.Level) { a.level.Store(int32(level)) }
func (a *hclogAdapter) GetLevel() hclog.Level      { return hclog.Level(a.level.Load()) }

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	level := slog.LevelInfo
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = toSlogLevel(opts.ForceLevel)
	}
	return slog.NewLogLogger(a.log.Handler(), level)
}

func (a *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return a.StandardLogger(opts).Writer()
}

// routineLevel lowers the level of raft messages that report how raft
// normally works, not a problem: a clean start of a cluster must log
// nothing above INFO, and the rebalancer hands leaderships to their
// preferred nodes on every start (each transfer makes the old leader's
// replication stop on a newer term, and closes its connections).
func routineLevel(level hclog.Level, msg string, args []any) hclog.Level {
	switch {
	case level == hclog.Warn && isFirstElection(msg, args):
		return hclog.Debug
	case level == hclog.Error && msg == "peer has newer term, stopping replication":
		// The step-down itself is logged at INFO ("lost leadership").
		return hclog.Debug
	case level == hclog.Error && msg == "failed to decode incoming command" && (peerClosed(args) || transportShut(args)):
		return hclog.Debug
	case level == hclog.Warn && concurrentElection[msg]:
		return hclog.Debug
	}
	return level
}

// concurrentElection lists raft's refusals of a vote that are how
// elections resolve when several replicas time out together, as every
// group of a forming cluster does: the candidate that loses says so
// itself if it keeps failing ("Election timeout reached").
var concurrentElection = map[string]bool{
	"rejecting vote request since we have a leader":              true,
	"rejecting vote request since our last term is greater":      true,
	"rejecting vote request since our last index is greater":     true,
	"rejecting pre-vote request since we have a leader":          true,
	"rejecting pre-vote request since our last term is greater":  true,
	"rejecting pre-vote request since our last index is greater": true,
}

// transportShut tells an "error" argument that is raft's
// ErrTransportShutdown: this group's own transport closed under a
// connection it was serving, which happens to every open connection when
// the group closes.
func transportShut(args []any) bool {
	err, _ := argOf(args, "error")
	e, ok := err.(error)
	return ok && errors.Is(e, raft.ErrTransportShutdown)
}

// peerFailures are raft's messages about failing to reach one peer, with
// the argument that names it (a raft.Server, ServerAddress or ServerID).
var peerFailures = map[string]string{
	"failed to appendEntries to":              "peer",
	"failed to heartbeat to":                  "peer",
	"failed to pipeline appendEntries":        "peer",
	"failed to start pipeline replication to": "peer",
	"failed to send snapshot to":              "peer",
	"failed to install snapshot":              "peer",
	"failed to make requestVote RPC":          "target",
	"failed to contact":                       "server-id",
}

// quorumFailures are raft's messages about a group that has no quorum,
// or no leader, any more.
var quorumFailures = map[string]bool{
	"failed to contact quorum of nodes, stepping down": true,
	"Election timeout reached, restarting election":    true,
	"heartbeat timeout reached, starting election":     true,
}

// expectedLevel lowers raft's failures that a graceful departure causes to
// DEBUG: failing to reach a peer that announced it is going away (or
// while this node is), losing the quorum when every other voter is going
// away, and the connection errors of a node that is stopping. The same
// failures with everyone staying are real, and keep raft's level.
func expectedLevel(level hclog.Level, msg string, args []any, e expectations) hclog.Level {
	if level < hclog.Warn {
		return level
	}
	if key, ok := peerFailures[msg]; ok {
		if v, ok := argOf(args, key); ok {
			if id, addr := serverOf(v); (id != "" || addr != "") && e.departing(id, addr) {
				return hclog.Debug
			}
		}
		return level
	}
	switch {
	case quorumFailures[msg] && e.othersDeparting():
		return hclog.Debug
	case msg == "heartbeat timeout reached, starting election" && lastLeaderDeparting(args, e):
		return hclog.Debug
	case (msg == "failed to decode incoming command" || msg == "failed to flush response") && e.departing("", ""):
		// An incoming connection names no peer; these are expected while
		// this node is the one going away.
		return hclog.Debug
	}
	return level
}

// lastLeaderDeparting tells an election that starts because the leader
// went away on purpose.
func lastLeaderDeparting(args []any, e expectations) bool {
	id, _ := argOf(args, "last-leader-id")
	addr, _ := argOf(args, "last-leader-addr")
	sid, _ := id.(raft.ServerID)
	saddr, _ := addr.(raft.ServerAddress)
	return (sid != "" || saddr != "") && e.departing(sid, saddr)
}

// serverOf reads the peer out of a raft log argument.
func serverOf(v any) (raft.ServerID, raft.ServerAddress) {
	switch p := v.(type) {
	case raft.Server:
		return p.ID, p.Address
	case *raft.Server:
		if p != nil {
			return p.ID, p.Address
		}
	case raft.ServerID:
		return p, ""
	case raft.ServerAddress:
		return "", p
	}
	return "", ""
}

// argOf returns the value of key in hclog's alternating key/value args.
func argOf(args []any, key string) (any, bool) {
	for i := 0; i+1 < len(args); i += 2 {
		if k, _ := args[i].(string); k == key {
			return args[i+1], true
		}
	}
	return nil, false
}

// peerClosed tells an "error" argument that says the peer closed the
// connection: raft's old leader closes its replication streams when it
// steps down.
func peerClosed(args []any) bool {
	v, ok := argOf(args, "error")
	if !ok {
		return false
	}
	e := fmt.Sprint(v)
	return strings.Contains(e, "connection reset by peer") || strings.HasSuffix(e, "EOF")
}

// isFirstElection tells raft's "heartbeat timeout reached, starting
// election" for a group that never had a leader: every group of a node
// that starts says it once (32 WARN lines on a fresh single node), and it
// is how a raft group forms, not a problem. Losing a known leader still
// warns.
func isFirstElection(msg string, args []any) bool {
	if msg != "heartbeat timeout reached, starting election" {
		return false
	}
	v, ok := argOf(args, "last-leader-addr")
	return ok && fmt.Sprint(v) == "" // a raft.ServerAddress
}
