// Package load is the harness's one load generator: it drives any system
// through a Call, closed loop (a fixed number of clients, each starting
// its next call when the last one returns) or open loop (calls scheduled
// at a fixed rate, whether or not earlier ones have returned), and
// measures throughput and latency over a window after a warmup.
package load

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ration/ration/internal/hist"
)

// Worker is what a Call knows about the goroutine making it: a stable
// index, a private random source and a per-worker call counter, so that
// systems can draw users and mint unique ids without sharing state.
type Worker struct {
	ID   int
	Rand *rand.Rand
	// Seq counts this worker's calls, from 0.
	Seq uint64
	run uint64
}

// UniqueID is an id for the worker's current call that no other call of
// this process mints: systems that are handed the same id twice would
// count a duplicate, not a new write.
func (w *Worker) UniqueID() string {
	return strconv.FormatUint(w.run, 36) + "-" + strconv.Itoa(w.ID) + "-" + strconv.FormatUint(w.Seq, 10)
}

// Call makes one call to the system under test and returns how many
// operations it carried (1, or the size of a batch).
type Call func(ctx context.Context, w *Worker) (ops int, err error)

// Options shape a run.
type Options struct {
	// Concurrency is the number of workers: the clients of a closed loop,
	// or the most calls in flight in an open loop.
	Concurrency int
	// Warmup runs the load unmeasured before the window.
	Warmup time.Duration
	// Duration is the measured window.
	Duration time.Duration
	// Rate, when positive, makes the loop open: calls are scheduled this
	// many per second from the start of the warmup, and each call's
	// latency counts from its scheduled time, so a system that falls
	// behind shows as latency (no coordinated omission).
	Rate float64
	// Seed makes the workers' random sources reproducible.
	Seed uint64
}

// ErrOptions is returned for options a run cannot use.
var ErrOptions = errors.New("load: invalid options")

func (o Options) validate() error {
	switch {
	case o.Concurrency < 1:
		return fmt.Errorf("%w: concurrency %d", ErrOptions, o.Concurrency)
	case o.Warmup < 0 || o.Duration <= 0:
		return fmt.Errorf("%w: warmup %v, duration %v", ErrOptions, o.Warmup, o.Duration)
	case o.Rate < 0:
		return fmt.Errorf("%w: rate %v", ErrOptions, o.Rate)
	}
	return nil
}

// Result is what one run measured. Only calls that ended inside the
// window count; latency is per call (a batch's latency is its call's).
type Result struct {
	Window time.Duration
	Calls  int64
	Ops    int64
	Errors int64
	// FirstError is the first failed call's error, nil if none failed.
	FirstError error
	// Latency holds the successful calls' latencies in nanoseconds.
	Latency *hist.Histogram
}

// OpsPerSec is the throughput of operations in the window.
func (r Result) OpsPerSec() float64 { return float64(r.Ops) / r.Window.Seconds() }

// CallsPerSec is the throughput of calls in the window.
func (r Result) CallsPerSec() float64 { return float64(r.Calls) / r.Window.Seconds() }

// runs numbers the runs of this process, for Worker.UniqueID.
var runs atomic.Uint64

// recorder collects the window's calls from every worker.
type recorder struct {
	from, to time.Time
	lat      hist.Histogram
	calls    atomic.Int64
	ops      atomic.Int64
	errs     atomic.Int64
	first    atomic.Pointer[error]
}

func (r *recorder) record(begin, end time.Time, ops int, err error) {
	if end.Before(r.from) || !end.Before(r.to) {
		return
	}
	if err != nil {
		r.errs.Add(1)
		r.first.CompareAndSwap(nil, &err)
		return
	}
	r.calls.Add(1)
	r.ops.Add(int64(ops))
	r.lat.Record(int64(end.Sub(begin)))
}

// Run drives call under o until the window ends or ctx is done. Calls
// still in flight when the window ends are waited for (under ctx) but
// not counted. It returns ctx's error if ctx ended the run.
func Run(ctx context.Context, o Options, call Call) (Result, error) {
	if err := o.validate(); err != nil {
		return Result{}, err
	}
	start := time.Now()
	rec := &recorder{from: start.Add(o.Warmup), to: start.Add(o.Warmup + o.Duration)}
	var next func(ctx context.Context) (time.Time, bool)
	if o.Rate > 0 {
		next = newSchedule(start, rec.to, o.Rate).next
	} else {
		next = func(ctx context.Context) (time.Time, bool) {
			now := time.Now()
			return now, ctx.Err() == nil && now.Before(rec.to)
		}
	}
	run := runs.Add(1)<<32 | uint64(start.Unix())&(1<<32-1)
	var wg sync.WaitGroup
	for i := range o.Concurrency {
		w := &Worker{ID: i, Rand: rand.New(rand.NewPCG(o.Seed, uint64(i))), run: run}
		wg.Go(func() {
			for {
				begin, ok := next(ctx)
				if !ok {
					return
				}
				ops, err := call(ctx, w)
				w.Seq++
				rec.record(begin, time.Now(), ops, err)
			}
		})
	}
	wg.Wait()
	res := Result{
		Window: o.Duration, Calls: rec.calls.Load(), Ops: rec.ops.Load(),
		Errors: rec.errs.Load(), Latency: &rec.lat,
	}
	if p := rec.first.Load(); p != nil {
		res.FirstError = *p
	}
	return res, ctx.Err()
}

// schedule hands out the start times of an open loop: slot i is at
// start + i/rate. Workers take slots in order and sleep until theirs; a
// worker that is late goes at once, and its call's latency still counts
// from the slot.
type schedule struct {
	start, end time.Time
	interval   float64 // nanoseconds between slots
	slots      atomic.Int64
}

func newSchedule(start, end time.Time, rate float64) *schedule {
	return &schedule{start: start, end: end, interval: float64(time.Second) / rate}
}

func (s *schedule) next(ctx context.Context) (time.Time, bool) {
	i := s.slots.Add(1) - 1
	slot := s.start.Add(time.Duration(float64(i) * s.interval))
	if !slot.Before(s.end) {
		return time.Time{}, false
	}
	if wait := time.Until(slot); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return time.Time{}, false
		case <-t.C:
		}
	}
	return slot, ctx.Err() == nil
}
