package membership

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// newMemberlistLogger adapts slog to memberlist, which wants a *log.Logger
// and writes every line as "[LEVEL] memberlist: message". slog.NewLogLogger
// alone would log every line at one level, drowning warnings among the
// per-connection debug lines, so the handler below reads the level back
// out of the prefix. expected, if set, tells the failures that are how a
// graceful departure looks (Membership.expectedFailure): they are logged
// at DEBUG.
func newMemberlistLogger(l *slog.Logger, expected func(msg string) bool) *log.Logger {
	h := levelPrefixHandler{inner: l.With(slog.String("logger", "memberlist")).Handler(), expected: expected}
	return slog.NewLogLogger(h, slog.LevelInfo)
}

type levelPrefixHandler struct {
	inner    slog.Handler
	expected func(msg string) bool
}

// Enabled is asked with the fixed level given to NewLogLogger, before the
// real level is known; answer for the most severe level memberlist uses so
// that Handle gets to decide.
func (h levelPrefixHandler) Enabled(ctx context.Context, _ slog.Level) bool {
	return h.inner.Enabled(ctx, slog.LevelError)
}

func (h levelPrefixHandler) Handle(ctx context.Context, r slog.Record) error {
	level, msg := parseLevelPrefix(r.Message)
	if level > slog.LevelDebug && h.expected != nil && h.expected(msg) {
		level = slog.LevelDebug
	}
	if !h.inner.Enabled(ctx, level) {
		return nil
	}
	out := slog.NewRecord(r.Time, level, msg, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h levelPrefixHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return levelPrefixHandler{inner: h.inner.WithAttrs(attrs), expected: h.expected}
}

func (h levelPrefixHandler) WithGroup(name string) slog.Handler {
	return levelPrefixHandler{inner: h.inner.WithGroup(name), expected: h.expected}
}

// parseLevelPrefix splits "[WARN] memberlist: text" into Warn and "text".
// A line without a known prefix is kept whole at Info.
func parseLevelPrefix(s string) (slog.Level, string) {
	level := slog.LevelInfo
	rest, ok := strings.CutPrefix(s, "[")
	if ok {
		tag, after, found := strings.Cut(rest, "] ")
		if found {
			known := true
			switch tag {
			case "DEBUG", "TRACE":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			default:
				known = false
			}
			if known {
				s = after
			}
		}
	}
	s = strings.TrimPrefix(s, "memberlist: ")
	return level, strings.TrimRight(s, "\n")
}

// networkFailures are the beginnings of memberlist's messages about
// failing to exchange packets or streams with a peer.
var networkFailures = []string{
	"Failed fallback TCP ping",
	"Failed to send ",
	"Push/Pull with ",
	"Failed to push local state",
	"Failed to read remote state",
	"failed to receive",
	"Error reading UDP packet",
	"Error accepting TCP connection",
	"Was able to connect to ",
}

func isNetworkFailure(msg string) bool {
	for _, p := range networkFailures {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// mentions reports whether msg names addr (host:port), not merely a
// longer port that begins with addr's.
func mentions(msg, addr string) bool {
	for i := 0; addr != ""; {
		j := strings.Index(msg[i:], addr)
		if j < 0 {
			return false
		}
		end := i + j + len(addr)
		if end == len(msg) || msg[end] < '0' || msg[end] > '9' {
			return true
		}
		i = end
	}
	return false
}

// expectedFailure tells memberlist's failures to reach a member that is
// going away on purpose (it announced it is stopping, or left), and any
// while this node's own gossip shuts down (memberlist's goroutines race
// its shutdown and write to its closed sockets): they are how a graceful
// departure looks. The same failures with a member that stays are news.
func (m *Membership) expectedFailure(msg string) bool {
	if !isNetworkFailure(msg) {
		return false
	}
	if m.closing.Load() {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, ms := range m.members {
		if id != m.cfg.NodeID && (ms.Stopping || ms.State == Left) && mentions(msg, ms.GossipAddr) {
			return true
		}
	}
	return false
}
