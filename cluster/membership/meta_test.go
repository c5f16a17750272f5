package membership

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
)

func TestMetaRoundTrip(t *testing.T) {
	cases := []Meta{
		{},
		{NodeID: "ration-0", RaftAddr: "10.0.0.1:7000", GRPCAddr: "10.0.0.1:9090", HTTPAddr: "10.0.0.1:8080", Version: 3},
		{NodeID: "ration-0", RaftAddr: "10.0.0.1:7000", GRPCAddr: "10.0.0.1:9090", HTTPAddr: "10.0.0.1:8080",
			ActorAddr: "10.0.0.1:7001", ActorID: "Fq7PJ3zKcXvN8LmQ2wRt5a"},
		{NodeID: "n", ActorID: "only-the-id"},
		{NodeID: "n", Version: -1},
		{NodeID: "ünïcode", HTTPAddr: strings.Repeat("h", 300), Version: math.MaxInt32},
		{NodeID: "n", ActorAddr: "x:1", ActorID: "id", Shards: 32},
		{NodeID: "n", Shards: 4096, ShardsTentative: true},
		{NodeID: "n", Shards: maxShards},
		{NodeID: "n", ShardsTentative: true},
	}
	for _, m := range cases {
		for _, flags := range []byte{0, flagLeaving} {
			got, gotFlags, err := decodeMeta(encodeMeta(m, flags))
			if err != nil || got != m || gotFlags != flags {
				t.Errorf("round trip of %+v/%d = %+v/%d, %v", m, flags, got, gotFlags, err)
			}
		}
	}
}

func TestMetaIsCompact(t *testing.T) {
	m := Meta{NodeID: "ration-12", RaftAddr: "10.244.3.17:7000", GRPCAddr: "10.244.3.17:9090", HTTPAddr: "10.244.3.17:8080", Version: 1,
		ActorAddr: "10.244.3.17:7001", ActorID: "Fq7PJ3zKcXvN8LmQ2wRt5a", Shards: 32}
	n := len(encodeMeta(m, 0))
	payload := len(m.NodeID) + len(m.RaftAddr) + len(m.GRPCAddr) + len(m.HTTPAddr) + len(m.ActorAddr) + len(m.ActorID)
	if n > payload+10 {
		t.Errorf("encoded %d bytes for %d bytes of strings: overhead above 10", n, payload)
	}
}

func TestMetaAppendedFieldsIgnored(t *testing.T) {
	m := Meta{NodeID: "a", RaftAddr: "r", Version: 7, ActorAddr: "x:1", ActorID: "id", Shards: 8, ShardsTentative: true}
	b := append(encodeMeta(m, 0), 0x05, 'f', 'u', 't', 'u', 'r')
	got, _, err := decodeMeta(b)
	if err != nil || got != m {
		t.Errorf("decode with a newer release's trailing field = %+v, %v; want %+v", got, err, m)
	}
}

// A node of the release before ActorAddr and ActorID were appended sends
// four fields; they decode with the actor fields empty and the shard count
// unknown.
func TestMetaOfAnOlderRelease(t *testing.T) {
	m := Meta{NodeID: "a", RaftAddr: "r:1", GRPCAddr: "g:2", HTTPAddr: "h:3", Version: 1}
	b := encodeMeta(m, 0)
	old := b[:len(b)-3] // without the two empty length bytes and the count
	got, _, err := decodeMeta(old)
	if err != nil || got != m {
		t.Errorf("decode of an older release's metadata = %+v, %v; want %+v", got, err, m)
	}
}

// A node of the release before the shard count was appended sends six
// fields; its count decodes as 0, unknown.
func TestMetaWithoutShardCount(t *testing.T) {
	m := Meta{NodeID: "a", RaftAddr: "r:1", GRPCAddr: "g:2", HTTPAddr: "h:3", Version: 1, ActorAddr: "x:4", ActorID: "id"}
	b := encodeMeta(m, flagLeaving)
	if b[len(b)-1] != 0 {
		t.Fatalf("count 0 encodes as %#x, want one zero byte", b[len(b)-1])
	}
	got, flags, err := decodeMeta(b[:len(b)-1])
	if err != nil || got != m || flags != flagLeaving || got.Shards != 0 {
		t.Errorf("decode of a release without the shard count = %+v/%d, %v; want %+v", got, flags, err, m)
	}
}

func TestMetaRejectsGarbage(t *testing.T) {
	good := encodeMeta(Meta{NodeID: "a", RaftAddr: "b", GRPCAddr: "c", HTTPAddr: "d", ActorAddr: "e", ActorID: "f"}, 0)
	cases := map[string][]byte{
		"empty":          nil,
		"one byte":       {metaFormat},
		"unknown format": append([]byte{2}, good[1:]...),
		"JSON":           []byte(`{"NodeID":"a"}`),
		"truncated":      good[:len(good)-2],
		"huge length":    {metaFormat, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge count":     append(good[:len(good)-1:len(good)-1], 0x80, 0x80, 0x80, 0x80, 0x10),
		"bad count":      append(good[:len(good)-1:len(good)-1], 0x80),
	}
	for name, b := range cases {
		if _, _, err := decodeMeta(b); !errors.Is(err, ErrBadMeta) {
			t.Errorf("%s: err = %v, want ErrBadMeta", name, err)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta(Meta{NodeID: "a", RaftAddr: "r:1", Version: 2}, flagLeaving))
	f.Add([]byte{metaFormat, 0, 0x80})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, flags, err := decodeMeta(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to a prefix of the input: the rest
		// can only be fields of a newer release.
		re := encodeMeta(m, flags)
		if !bytes.HasPrefix(b, re) {
			// Varints have non-minimal encodings; compare by value.
			m2, flags2, err := decodeMeta(re)
			if err != nil || m2 != m || flags2 != flags {
				t.Fatalf("re-encoding %+v/%d does not decode back: %+v/%d %v", m, flags, m2, flags2, err)
			}
		}
	})
}

func TestParseLevelPrefix(t *testing.T) {
	cases := []struct {
		in    string
		level slog.Level
		msg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=1.2.3.4:5\n", slog.LevelDebug, "Stream connection from=1.2.3.4:5"},
		{"[INFO] memberlist: Marking c as failed", slog.LevelInfo, "Marking c as failed"},
		{"[WARN] memberlist: Refuting a suspect message", slog.LevelWarn, "Refuting a suspect message"},
		{"[ERR] memberlist: Conflicting address", slog.LevelError, "Conflicting address"},
		{"[ERR] Failed to shutdown transport", slog.LevelError, "Failed to shutdown transport"},
		{"no prefix at all", slog.LevelInfo, "no prefix at all"},
		{"[odd] text", slog.LevelInfo, "[odd] text"},
	}
	for _, tc := range cases {
		level, msg := parseLevelPrefix(tc.in)
		if level != tc.level || msg != tc.msg {
			t.Errorf("parseLevelPrefix(%q) = %v %q, want %v %q", tc.in, level, msg, tc.level, tc.msg)
		}
	}
}

// TestMemberlistLoggerLevels checks the whole adapter: a logger at Warn
// keeps memberlist's warnings and errors, at their levels, and drops its
// debug and info lines.
func TestMemberlistLoggerLevels(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	ml := newMemberlistLogger(l, nil)
	ml.Printf("[DEBUG] memberlist: noise")
	ml.Printf("[INFO] memberlist: chatter")
	ml.Printf("[WARN] memberlist: careful %d", 1)
	ml.Printf("[ERR] memberlist: broken")
	want := "level=WARN msg=\"careful 1\" logger=memberlist\nlevel=ERROR msg=broken logger=memberlist\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
	if !(levelPrefixHandler{inner: l.Handler()}).Enabled(context.Background(), slog.LevelDebug) {
		t.Error("adapter must not filter on the fixed level NewLogLogger asks with")
	}
}

// memberlist's failures to reach a member that is going away, or while
// this node's gossip shuts down, are expected; the same failures with a
// member that stays are not, nor are other errors.
func TestMemberlistExpectedFailures(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	m := &Membership{cfg: Config{NodeID: "a"}, members: map[string]*memberState{
		"a": {Member: Member{GossipAddr: "127.0.0.1:7946"}},
		"b": {Member: Member{GossipAddr: "127.0.0.2:7946"}},
		"c": {Member: Member{GossipAddr: "127.0.0.3:7946", Stopping: true}},
		"d": {Member: Member{GossipAddr: "127.0.0.4:7946", State: Left}},
	}}
	ml := newMemberlistLogger(l, m.expectedFailure)
	for _, tc := range []struct {
		closing bool
		line    string
		want    string // the level logged, "" for none above INFO
	}{
		{false, "[ERR] memberlist: Failed to send gossip to 127.0.0.2:7946: write udp 127.0.0.1:7946->127.0.0.2:7946: use of closed network connection", "ERROR"},
		{false, "[ERR] memberlist: Failed to send gossip to 127.0.0.3:7946: connection refused", ""},
		{false, "[ERR] memberlist: Failed fallback TCP ping: timeout 1s: write tcp 127.0.0.1:36208->127.0.0.4:7946: i/o timeout", ""},
		{false, "[ERR] memberlist: Failed to send UDP ping: write udp 127.0.0.1:7946->127.0.0.3:79460: refused", "ERROR"},
		{false, "[WARN] memberlist: Was able to connect to c over TCP but UDP probes failed, network may be misconfigured", "WARN"},
		{false, "[ERR] memberlist: Conflicting address for 127.0.0.3:7946", "ERROR"},
		{true, "[ERR] memberlist: Failed to send UDP ping: write udp 127.0.0.1:7946->127.0.0.2:7946: use of closed network connection", ""},
		{true, "[ERR] memberlist: broken", "ERROR"},
	} {
		buf.Reset()
		m.closing.Store(tc.closing)
		ml.Print(tc.line)
		got := ""
		for _, lv := range []string{"WARN", "ERROR"} {
			if strings.Contains(buf.String(), "level="+lv) {
				got = lv
			}
		}
		if got != tc.want {
			t.Errorf("closing %v, %q: logged %q, want %q", tc.closing, tc.line, got, tc.want)
		}
	}
}
