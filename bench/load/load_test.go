package load

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestScheduleHandsOutSlotsAtTheRateUntilTheEnd(t *testing.T) {
	// A start in the past: every slot is due, so next never sleeps.
	start := time.Now().Add(-time.Hour)
	s := newSchedule(start, start.Add(50*time.Millisecond), 100) // one slot per 10 ms
	var got []time.Duration
	for {
		slot, ok := s.next(context.Background())
		if !ok {
			break
		}
		got = append(got, slot.Sub(start))
	}
	if len(got) != 5 {
		t.Fatalf("got %d slots, want 5 (0, 10, 20, 30, 40 ms): %v", len(got), got)
	}
	for i, d := range got {
		if want := time.Duration(i) * 10 * time.Millisecond; d != want {
			t.Errorf("slot %d at %v, want %v", i, d, want)
		}
	}
}

func TestScheduleStopsWithTheContext(t *testing.T) {
	start := time.Now().Add(time.Hour) // the first slot is an hour away
	s := newSchedule(start, start.Add(time.Hour), 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := s.next(ctx); ok {
		t.Fatal("next handed out a slot after the context ended")
	}
}

func TestRecorderCountsOnlyCallsEndingInTheWindow(t *testing.T) {
	from := time.Now()
	r := &recorder{from: from, to: from.Add(time.Second)}
	boom := errors.New("boom")
	r.record(from.Add(-2*time.Second), from.Add(-time.Millisecond), 1, nil) // ended in the warmup
	r.record(from.Add(-time.Millisecond), from.Add(2*time.Millisecond), 64, nil)
	r.record(from, from.Add(5*time.Millisecond), 1, nil)
	r.record(from, from.Add(6*time.Millisecond), 1, boom)
	r.record(from, from.Add(7*time.Millisecond), 1, errors.New("second"))
	r.record(from, from.Add(time.Second), 1, nil) // ended as the window closed
	if c, o := r.calls.Load(), r.ops.Load(); c != 2 || o != 65 {
		t.Errorf("calls %d ops %d, want 2 and 65", c, o)
	}
	if e := r.errs.Load(); e != 2 {
		t.Errorf("errors %d, want 2", e)
	}
	if p := r.first.Load(); p == nil || *p != boom {
		t.Errorf("first error %v, want boom", p)
	}
	if n, m := r.lat.Count(), r.lat.Max(); n != 2 || m != int64(5*time.Millisecond) {
		t.Errorf("latencies: %d recorded, max %v; want 2, max 5ms (the batch took 3ms)", n, time.Duration(m))
	}
}

func TestRunClosedLoopCountsOpsPerCall(t *testing.T) {
	var mu sync.Mutex
	invoked := 0
	ids := map[string]bool{}
	res, err := Run(context.Background(), Options{Concurrency: 4, Duration: 30 * time.Millisecond}, func(ctx context.Context, w *Worker) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		invoked++
		id := w.UniqueID()
		if ids[id] {
			t.Errorf("id %s minted twice", id)
		}
		ids[id] = true
		return 3, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 3*res.Calls || res.Errors != 0 || res.Calls > int64(invoked) {
		t.Errorf("calls %d ops %d errors %d of %d invocations", res.Calls, res.Ops, res.Errors, invoked)
	}
	if res.Latency.Count() != uint64(res.Calls) {
		t.Errorf("%d latencies for %d calls", res.Latency.Count(), res.Calls)
	}
}

func TestRunReportsFailedCalls(t *testing.T) {
	boom := errors.New("boom")
	res, err := Run(context.Background(), Options{Concurrency: 2, Duration: 500 * time.Millisecond, Rate: 1}, func(ctx context.Context, w *Worker) (int, error) {
		return 1, boom
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Calls != 0 || res.Ops != 0 || res.Latency.Count() != 0 {
		t.Errorf("failed calls counted as done: %+v", res)
	}
	if res.Errors > 0 && !errors.Is(res.FirstError, boom) {
		t.Errorf("first error %v, want boom", res.FirstError)
	}
}

func TestRunEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, Options{Concurrency: 2, Duration: time.Hour, Rate: 10}, func(ctx context.Context, w *Worker) (int, error) {
		return 1, nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

func TestUniqueIDsDifferAcrossRuns(t *testing.T) {
	seen := map[string]bool{}
	for range 3 {
		// An open loop's first slot is its start, so each run makes
		// exactly one call, however late its worker runs.
		_, err := Run(context.Background(), Options{Concurrency: 1, Duration: time.Millisecond, Rate: 1}, func(ctx context.Context, w *Worker) (int, error) {
			if seen[w.UniqueID()] {
				t.Errorf("id %s repeats an earlier run's", w.UniqueID())
			}
			seen[w.UniqueID()] = true
			return 1, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 3 {
		t.Errorf("%d ids from 3 runs of one call", len(seen))
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{
		{Concurrency: 0, Duration: time.Second},
		{Concurrency: 1},
		{Concurrency: 1, Duration: time.Second, Warmup: -1},
		{Concurrency: 1, Duration: time.Second, Rate: -1},
	} {
		if _, err := Run(context.Background(), o, nil); !errors.Is(err, ErrOptions) {
			t.Errorf("%+v: err %v, want ErrOptions", o, err)
		}
	}
}
