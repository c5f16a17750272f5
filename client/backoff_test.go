package client

import (
	"testing"
	"time"
)

func TestBackoffFullJitter(t *testing.T) {
	b := Backoff{Base: 50 * time.Millisecond, Cap: 2 * time.Second}
	for _, tt := range []struct {
		retry int
		ceil  time.Duration
	}{{1, 50 * time.Millisecond}, {2, 100 * time.Millisecond}, {3, 200 * time.Millisecond}, {6, 1600 * time.Millisecond}, {7, 2 * time.Second}, {200, 2 * time.Second}} {
		var maxSeen time.Duration
		for range 2000 {
			d := b.Delay(tt.retry)
			if d < 0 || d >= tt.ceil {
				t.Fatalf("Delay(%d) = %v, want in [0, %v)", tt.retry, d, tt.ceil)
			}
			maxSeen = max(maxSeen, d)
		}
		// Full jitter spreads over the whole range, not just near the top.
		if maxSeen < tt.ceil/2 {
			t.Errorf("Delay(%d): max of 2000 draws %v, want near %v", tt.retry, maxSeen, tt.ceil)
		}
	}
}
