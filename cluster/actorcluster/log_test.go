package actorcluster

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// protoactor remote's failures to reach a node that is going away are
// logged at DEBUG; the same failures with a node that stays, and other
// errors, keep their level.
func TestRemoteLogHandler(t *testing.T) {
	var buf bytes.Buffer
	h := RemoteLogHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}),
		func(addr string) bool { return addr == "10.0.0.3:7001" })
	l := slog.New(h).With("component", "protoactor")
	eof := errors.New("rpc error: code = Unavailable desc = error reading from server: EOF")
	for _, tc := range []struct {
		msg, addr, want string
	}{
		{"EndpointWriter lost connection", "10.0.0.3:7001", "level=DEBUG"},
		{"EndpointWriter lost connection", "10.0.0.2:7001", "level=ERROR"},
		{"EndpointWriter failed to connect", "10.0.0.3:7001", "level=DEBUG"},
		{"EndpointReader failed to handle message batch", "10.0.0.3:7001", "level=ERROR"},
	} {
		buf.Reset()
		l.Error(tc.msg, slog.String("address", tc.addr), slog.Any("error", eof))
		if out := buf.String(); !strings.Contains(out, tc.want) || !strings.Contains(out, "component=protoactor") {
			t.Errorf("%s to %s: %q, want %s", tc.msg, tc.addr, out, tc.want)
		}
	}
}
