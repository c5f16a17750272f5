// Package backoff is the wait between retries: exponential, capped and
// jittered, and cut short by a context or a deadline. The retrying loops
// keep their own attempt limits and their own judgement of which errors
// are worth another try; this package only says how long to wait.
package backoff

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Policy is the waits before retries. Retry n (n >= 1) has the nominal
// wait min(Cap, Base*2^(n-1)), drawn with jitter (Delay): many callers that
// failed together, such as two activations of a user or the pods of a
// StatefulSet, then do not retry in lockstep.
type Policy struct {
	// Base is the first retry's nominal wait. Zero or negative makes
	// every wait zero.
	Base time.Duration
	// Cap bounds the nominal wait; zero or negative means no bound.
	Cap time.Duration
	// Spread chooses the jitter. Zero is full jitter: a wait uniform in
	// [0, nominal), which spreads retries the most. A fraction in (0, 1]
	// draws within ±Spread of the nominal wait instead (0.2: 80% to 120%
	// of it), for loops that want the nominal pace kept.
	Spread float64
}

// Nominal is retry n's wait before jitter: min(Cap, Base*2^(n-1)). n below
// 1 counts as 1.
func (p Policy) Nominal(n int) time.Duration {
	if p.Base <= 0 {
		return 0
	}
	d := p.Base
	// Doubling stops at the cap, or before it could overflow.
	for i := 1; i < n && (p.Cap <= 0 || d < p.Cap) && d <= maxDuration/2; i++ {
		d *= 2
	}
	if p.Cap > 0 {
		d = min(d, p.Cap)
	}
	return d
}

const maxDuration = time.Duration(1<<63 - 1)

// Delay draws retry n's wait: Nominal(n) with the policy's jitter.
func (p Policy) Delay(n int) time.Duration {
	d := p.Nominal(n)
	if d <= 0 {
		return 0
	}
	if p.Spread <= 0 {
		return rand.N(d)
	}
	return max(0, d+time.Duration((2*rand.Float64()-1)*p.Spread*float64(d)))
}

// ErrDeadline is Sleep's refusal to start a wait that would end past its
// deadline. It wraps context.DeadlineExceeded.
var ErrDeadline = fmt.Errorf("backoff: the wait would end past the deadline: %w", context.DeadlineExceeded)

// Sleep waits d. It returns ctx's error if ctx ends first, and ErrDeadline
// at once, without waiting, if deadline is set and the wait would end after
// it: a retry that could not start in time is not worth the wait. ctx's own
// deadline only ends the wait when it comes; pass it as deadline too to
// give up early.
func Sleep(ctx context.Context, d time.Duration, deadline time.Time) error {
	if !deadline.IsZero() && time.Now().Add(d).After(deadline) {
		return ErrDeadline
	}
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Wait sleeps retry n's wait (Delay(n)), as Sleep does.
func (p Policy) Wait(ctx context.Context, n int, deadline time.Time) error {
	return Sleep(ctx, p.Delay(n), deadline)
}
