package app

import (
	"strings"
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 890_000_000, time.UTC)
	ms := now.UnixMilli()
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "1767225600000", want: 1767225600000},
		{in: "0", want: 0},
		{in: "-5", want: -5}, // an integer, not an offset; the server refuses it
		{in: " 42 ", want: 42},
		{in: "now", want: ms},
		{in: "NOW", want: ms},
		{in: "2026-01-01T00:00:00Z", want: 1767225600000},
		{in: "2026-01-01T00:00:00.123Z", want: 1767225600123},
		{in: "2026-01-01T00:00:00.1239Z", want: 1767225600123},
		{in: "2026-01-01T02:00:00+02:00", want: 1767225600000},
		{in: "-2h", want: ms - 2*3_600_000},
		{in: "+30m", want: ms + 30*60_000},
		{in: "-90s", want: ms - 90_000},
		{in: "-1h30m", want: ms - 90*60_000},
		{in: "+1500ms", want: ms + 1500},
		{in: "-7d", want: ms - 7*86_400_000},
		{in: "+1d", want: ms + 86_400_000},
		{in: "", wantErr: "empty time"},
		{in: "30m", wantErr: "invalid time"},
		{in: "yesterday", wantErr: "invalid time"},
		{in: "-2x", wantErr: "invalid time"},
		{in: "+d", wantErr: "bad day count"},
		{in: "2026-01-01", wantErr: "RFC 3339"},
		{in: "-999999999999d", wantErr: "out of range"},
	}
	for _, tt := range tests {
		got, err := parseTime(tt.in, now)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseTime(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
		case err != nil || got != tt.want:
			t.Errorf("parseTime(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatTime(t *testing.T) {
	for ms, want := range map[int64]string{
		1767225600000: "2026-01-01T00:00:00Z",
		1767225600120: "2026-01-01T00:00:00.12Z",
		1767225600001: "2026-01-01T00:00:00.001Z",
		0:             "1970-01-01T00:00:00Z",
	} {
		if got := formatTime(ms); got != want {
			t.Errorf("formatTime(%d) = %q, want %q", ms, got, want)
		}
		// What is printed parses back to the same instant.
		if back, err := parseTime(formatTime(ms), time.Now()); err != nil || back != ms {
			t.Errorf("round trip of %d: %d, %v", ms, back, err)
		}
	}
	if formatExpiry(nil) != "never" {
		t.Error("nil expiry")
	}
}

func TestParseMix(t *testing.T) {
	w, err := parseMix("grant=10, deduct=80,balance=10")
	if err != nil || w != [numOps]int{10, 80, 10} {
		t.Errorf("default mix = %v, %v", w, err)
	}
	if w, err := parseMix("balance=1"); err != nil || w != [numOps]int{0, 0, 1} {
		t.Errorf("balance only = %v, %v", w, err)
	}
	for _, bad := range []string{"", "grant=0", "grant", "grant=-1", "refund=3", "grant=x"} {
		if _, err := parseMix(bad); err == nil {
			t.Errorf("parseMix(%q) succeeded", bad)
		}
	}
}

func TestTokenBucketPaces(t *testing.T) {
	start := time.Now()
	b := newTokenBucket(1000, time.Second, start)
	var last time.Time
	for i := range 50 {
		slot, err := b.take(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if want := start.Add(time.Duration(i) * time.Millisecond); !slot.Equal(want) {
			t.Fatalf("slot %d = %v after start, want %v", i, slot.Sub(start), want.Sub(start))
		}
		last = slot
	}
	if time.Now().Before(last) {
		t.Error("take returned before its slot")
	}
	// After a stall longer than the capacity, the backlog is capped.
	b = newTokenBucket(1000, 10*time.Millisecond, start.Add(-time.Hour))
	before := time.Now()
	slot, _ := b.take(t.Context())
	after := time.Now()
	// The slot is the capacity behind the moment take ran, which lies
	// between before and after (bounds, not timing: a slow scheduler only
	// widens the window).
	if slot.Before(before.Add(-10*time.Millisecond)) || slot.After(after.Add(-10*time.Millisecond)) {
		t.Errorf("slot %v behind before, %v behind after; want the 10ms capacity behind the call", before.Sub(slot), after.Sub(slot))
	}
}

func TestTimeFlagRelative(t *testing.T) {
	for raw, want := range map[string]bool{"now": true, "-2h": true, "+1d": true, "1767225600000": false, "-5": false, "2026-01-01T00:00:00Z": false} {
		var f timeFlag
		if err := f.Set(raw); err != nil {
			t.Fatal(err)
		}
		if f.relative() != want {
			t.Errorf("relative(%q) = %v, want %v", raw, !want, want)
		}
	}
	var unset timeFlag
	if !unset.relative() || unset.value(time.Now()) != nil {
		t.Error("an unset flag is relative (now) and has no value")
	}
}
