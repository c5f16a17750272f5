package app

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// timeHelp is the accepted time syntax, for flag usage and errors.
const timeHelp = `Unix milliseconds, RFC 3339 (2026-01-02T15:04:05Z), "now", or a signed offset from now such as -2h, +30m, -90s, -7d`

// parseTime reads a time as the API wants it, Unix milliseconds. Relative
// offsets need an explicit sign: "30m" alone is more likely a mistake than
// a wish for half an hour from now.
func parseTime(s string, now time.Time) (int64, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return 0, fmt.Errorf("empty time; want %s", timeHelp)
	case strings.EqualFold(s, "now"):
		return now.UnixMilli(), nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return ms, nil
	}
	if s[0] == '+' || s[0] == '-' {
		d, err := parseOffset(s)
		if err != nil {
			return 0, fmt.Errorf("invalid time %q: %v; want %s", s, err, timeHelp)
		}
		return now.Add(d).UnixMilli(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("invalid time %q; want %s", s, timeHelp)
	}
	return t.UnixMilli(), nil
}

// parseOffset is time.ParseDuration plus whole days ("-7d"), which are the
// natural unit for credit expiries and which ParseDuration lacks.
func parseOffset(s string) (time.Duration, error) {
	if rest, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad day count %q", rest)
		}
		const maxDays = int64(1<<63-1) / int64(24*time.Hour)
		if n > maxDays || n < -maxDays {
			return 0, fmt.Errorf("%s is out of range", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// formatTime prints Unix ms as RFC 3339 in UTC, with milliseconds only
// when there are some.
func formatTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.999Z07:00")
}

// formatExpiry is formatTime for an optional expiry.
func formatExpiry(ms *int64) string {
	if ms == nil {
		return "never"
	}
	return formatTime(*ms)
}

// timeFlag is an optional time flag; set tells absent from given.
type timeFlag struct {
	raw string
	set bool
}

func (f *timeFlag) String() string { return f.raw }
func (f *timeFlag) Type() string   { return "time" }
func (f *timeFlag) Set(s string) error {
	// Parse now only to report syntax errors at flag time; the value is
	// computed later against the command's clock.
	if _, err := parseTime(s, time.Unix(0, 0)); err != nil {
		return err
	}
	f.raw, f.set = s, true
	return nil
}

// value is the flag's time, or nil when it was not given.
func (f *timeFlag) value(now time.Time) *int64 {
	if !f.set {
		return nil
	}
	ms, _ := parseTime(f.raw, now) // validated by Set
	return &ms
}

// relative reports whether the flag's time depends on when the command
// runs: "now", an offset, or absent, which means now for --at (callers
// check set for flags where absent means something else).
func (f *timeFlag) relative() bool {
	if !f.set {
		return true
	}
	r := strings.TrimSpace(f.raw)
	if strings.EqualFold(r, "now") {
		return true
	}
	if _, err := strconv.ParseInt(r, 10, 64); err == nil {
		return false
	}
	return r != "" && (r[0] == '+' || r[0] == '-')
}
