package actorcluster

import (
	"context"
	"log/slog"
)

// remoteFailures are protoactor remote's messages about failing to reach
// another node's remote, which name it in an "address" attribute.
var remoteFailures = map[string]bool{
	"EndpointWriter lost connection":                    true,
	"EndpointWriter failed to connect":                  true,
	"EndpointWriter failed to create receive stream":    true,
	"EndpointWriter failed to send connect request":     true,
	"EndpointWriter failed to receive connect response": true,
}

// RemoteLogHandler wraps the handler the node's actor system logs to
// (actors.NewSystem), which protoactor remote logs through too: remote's
// failures to reach a node whose actor address departing says is going
// away on purpose (it announced it is stopping or left, or this node is
// stopping) are how a graceful departure looks, and are logged at DEBUG.
// Every other record passes unchanged, the same failures with a node that
// stays included.
func RemoteLogHandler(h slog.Handler, departing func(actorAddr string) bool) slog.Handler {
	return remoteLog{inner: h, departing: departing}
}

type remoteLog struct {
	inner     slog.Handler
	departing func(string) bool
}

func (h remoteLog) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h remoteLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Level > slog.LevelDebug && remoteFailures[r.Message] && h.departing(addressOf(r)) {
		r.Level = slog.LevelDebug // r is a copy, and its attributes stay as they are
		if !h.inner.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return h.inner.Handle(ctx, r)
}

func (h remoteLog) WithAttrs(as []slog.Attr) slog.Handler { return h.over(h.inner.WithAttrs(as)) }
func (h remoteLog) WithGroup(name string) slog.Handler    { return h.over(h.inner.WithGroup(name)) }

// over is h in front of inner, a handler derived from h's.
func (h remoteLog) over(inner slog.Handler) slog.Handler {
	h.inner = inner
	return h
}

// addressOf returns the record's "address" attribute, "" without one.
func addressOf(r slog.Record) string {
	addr := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "address" {
			addr = a.Value.String()
			return false
		}
		return true
	})
	return addr
}
