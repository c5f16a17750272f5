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
// out of the prefix.
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	h := levelPrefixHandler{inner: l.With(slog.String("logger", "memberlist")).Handler()}
	return slog.NewLogLogger(h, slog.LevelInfo)
}

type levelPrefixHandler struct {
	inner slog.Handler
}

// Enabled is asked with the fixed level given to NewLogLogger, before the
// real level is known; answer for the most severe level memberlist uses so
// that Handle gets to decide.
func (h levelPrefixHandler) Enabled(ctx context.Context, _ slog.Level) bool {
	return h.inner.Enabled(ctx, slog.LevelError)
}

func (h levelPrefixHandler) Handle(ctx context.Context, r slog.Record) error {
	level, msg := parseLevelPrefix(r.Message)
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
	return levelPrefixHandler{inner: h.inner.WithAttrs(attrs)}
}

func (h levelPrefixHandler) WithGroup(name string) slog.Handler {
	return levelPrefixHandler{inner: h.inner.WithGroup(name)}
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
