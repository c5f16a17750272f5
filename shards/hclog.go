package shards

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter lets raft, which logs through hclog, write to the node's
// slog logger. Only the level and the key/value pairs are carried over;
// hclog's formatting options do not apply.
type hclogAdapter struct {
	log   *slog.Logger
	name  string
	args  []any
	level *atomic.Int32 // shared by derived loggers, as in hclog
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHCLog(l *slog.Logger, level hclog.Level) hclog.Logger {
	lv := new(atomic.Int32)
	lv.Store(int32(level))
	return &hclogAdapter{log: l, level: lv}
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
	level = routineLevel(level, msg, args)
	if !a.enabled(level) {
		return
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
		return hclog.Info
	case level == hclog.Error && msg == "failed to decode incoming command" && peerClosed(args):
		return hclog.Debug
	}
	return level
}

// peerClosed tells an "error" argument that says the peer closed the
// connection: raft's old leader closes its replication streams when it
// steps down.
func peerClosed(args []any) bool {
	for i := 0; i+1 < len(args); i += 2 {
		if k, _ := args[i].(string); k == "error" {
			e := fmt.Sprint(args[i+1])
			return strings.Contains(e, "connection reset by peer") || strings.HasSuffix(e, "EOF")
		}
	}
	return false
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
	for i := 0; i+1 < len(args); i += 2 {
		if k, _ := args[i].(string); k == "last-leader-addr" {
			return fmt.Sprint(args[i+1]) == "" // a raft.ServerAddress
		}
	}
	return false
}
