package client

import (
	"testing"
	"time"
)

// Zero fields mean the defaults. The jitter itself is internal/backoff's
// and tested there; here only that the whole range up to the ceiling is
// used.
func TestBackoffDefaults(t *testing.T) {
	cases := []struct {
		b     Backoff
		retry int
		ceil  time.Duration
	}{
		{Backoff{}, 1, DefaultBackoffBase},
		{Backoff{}, 200, DefaultBackoffCap},
		{Backoff{Base: time.Millisecond}, 3, 4 * time.Millisecond},
		{Backoff{Cap: 60 * time.Millisecond}, 5, 60 * time.Millisecond},
	}
	for _, c := range cases {
		var top time.Duration
		for range 1000 {
			d := c.b.Delay(c.retry)
			if d < 0 || d >= c.ceil {
				t.Fatalf("%+v.Delay(%d) = %v, want in [0, %v)", c.b, c.retry, d, c.ceil)
			}
			top = max(top, d)
		}
		if top < c.ceil/2 {
			t.Errorf("%+v.Delay(%d): the largest of 1000 draws is %v, want near %v", c.b, c.retry, top, c.ceil)
		}
	}
}
