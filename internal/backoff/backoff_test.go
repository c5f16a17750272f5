package backoff

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestNominal(t *testing.T) {
	p := Policy{Base: 20 * time.Millisecond, Cap: 500 * time.Millisecond}
	for _, tt := range []struct {
		n    int
		want time.Duration
	}{{-1, 20 * time.Millisecond}, {0, 20 * time.Millisecond}, {1, 20 * time.Millisecond}, {2, 40 * time.Millisecond},
		{5, 320 * time.Millisecond}, {6, 500 * time.Millisecond}, {1 << 30, 500 * time.Millisecond}} {
		if got := p.Nominal(tt.n); got != tt.want {
			t.Errorf("Nominal(%d) = %v, want %v", tt.n, got, tt.want)
		}
	}
	// Without a cap the doubling stops short of overflowing.
	unbounded := Policy{Base: time.Second}
	if got := unbounded.Nominal(1 << 30); got < time.Duration(1<<62) {
		t.Errorf("uncapped Nominal(2^30) = %v, want at least 2^62 ns", got)
	}
	if got := (Policy{}).Delay(3); got != 0 {
		t.Errorf("zero policy Delay = %v, want 0", got)
	}
}

// Full jitter draws over the whole of [0, nominal), not just near the top.
func TestDelayFullJitter(t *testing.T) {
	p := Policy{Base: 50 * time.Millisecond, Cap: 2 * time.Second}
	for _, n := range []int{1, 2, 6, 7, 200} {
		ceil := p.Nominal(n)
		lo, hi := ceil, time.Duration(0)
		for range 2000 {
			d := p.Delay(n)
			if d < 0 || d >= ceil {
				t.Fatalf("Delay(%d) = %v, want in [0, %v)", n, d, ceil)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo > ceil/4 || hi < ceil*3/4 {
			t.Errorf("Delay(%d): 2000 draws within [%v, %v], want them spread over [0, %v)", n, lo, hi, ceil)
		}
	}
}

// A spread keeps the nominal pace: waits fall within ±Spread of it, on
// both sides.
func TestDelaySpread(t *testing.T) {
	p := Policy{Base: time.Second, Cap: 30 * time.Second, Spread: 0.2}
	for _, n := range []int{1, 3, 10} {
		nom := p.Nominal(n)
		lo, hi := nom*8/10, nom*12/10
		below, above := false, false
		for range 2000 {
			d := p.Delay(n)
			if d < lo || d > hi {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", n, d, lo, hi)
			}
			below, above = below || d < nom*9/10, above || d > nom*11/10
		}
		if !below || !above {
			t.Errorf("Delay(%d): 2000 draws not spread on both sides of %v", n, nom)
		}
	}
}

// The bubble's clock moves only when every goroutine waits, so the waits
// below are measured exactly.
func TestSleepWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if err := Sleep(t.Context(), 3*time.Second, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("slept %v, want 3s", got)
		}
		// A wait that ends exactly at the deadline is allowed.
		start = time.Now()
		if err := Sleep(t.Context(), time.Second, start.Add(time.Second)); err != nil {
			t.Errorf("a wait ending at the deadline: %v", err)
		}
		if err := Sleep(t.Context(), 0, time.Time{}); err != nil {
			t.Errorf("zero wait: %v", err)
		}
	})
}

func TestSleepStopsOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		start := time.Now()
		time.AfterFunc(10*time.Millisecond, cancel)
		err := Sleep(ctx, time.Hour, time.Time{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if got := time.Since(start); got != 10*time.Millisecond {
			t.Errorf("returned after %v, want at the cancel (10ms)", got)
		}
		// Already cancelled: no wait at all, even a zero one.
		if err := Sleep(ctx, 0, time.Time{}); !errors.Is(err, context.Canceled) {
			t.Errorf("zero wait on a cancelled ctx: err = %v", err)
		}
	})
}

func TestSleepRespectsDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A wait that would end past the deadline is refused at once.
		start := time.Now()
		err := Sleep(t.Context(), 2*time.Second, start.Add(time.Second))
		if !errors.Is(err, ErrDeadline) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want ErrDeadline (a context.DeadlineExceeded)", err)
		}
		if got := time.Since(start); got != 0 {
			t.Errorf("waited %v before refusing", got)
		}
		// ctx's own deadline ends the wait when it comes.
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		err = Sleep(ctx, time.Hour, time.Time{})
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrDeadline) {
			t.Fatalf("err = %v, want ctx's deadline", err)
		}
		if got := time.Since(start); got != 50*time.Millisecond {
			t.Errorf("returned after %v, want at ctx's deadline (50ms)", got)
		}
	})
}

func TestWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := Policy{Base: time.Second, Cap: 4 * time.Second, Spread: 0.5}
		for n := 1; n <= 4; n++ {
			start := time.Now()
			if err := p.Wait(t.Context(), n, time.Time{}); err != nil {
				t.Fatal(err)
			}
			nom := p.Nominal(n)
			if got := time.Since(start); got < nom/2 || got > nom*3/2 {
				t.Errorf("Wait(%d) took %v, want within ±50%% of %v", n, got, nom)
			}
		}
		// Past the deadline: refused without waiting.
		start := time.Now()
		if err := p.Wait(t.Context(), 3, start.Add(time.Second)); !errors.Is(err, ErrDeadline) {
			t.Errorf("Wait past the deadline: err = %v", err)
		}
	})
}
