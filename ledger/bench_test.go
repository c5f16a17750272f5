package ledger

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
)

// workload generates the benchmark history: in-order events 1-10 ms apart,
// one grant of 100 per four deductions of 1-20, grants expiring after
// about a thousand events. Credits build up and expire, as for a user who
// buys more than they use.
type workload struct {
	r  *rand.Rand
	ts int64
	n  int
}

func newWorkload(seed uint64) *workload { return &workload{r: rand.New(rand.NewPCG(seed, 1))} }

func (w *workload) next() any {
	w.ts += 1 + w.r.Int64N(10)
	w.n++
	if w.n%5 == 1 {
		return Grant{ID: "g" + strconv.Itoa(w.n), Amount: 100, Timestamp: w.ts, ExpiresAt: w.ts + 5000 + w.r.Int64N(1000)}
	}
	return Deduction{ID: "d" + strconv.Itoa(w.n), Amount: 1 + w.r.Int64N(20), Timestamp: w.ts}
}

func apply(tb testing.TB, l *Ledger, op any) error {
	var err error
	switch op := op.(type) {
	case Grant:
		_, err = l.Grant(op)
	case Deduction:
		_, err = l.Deduct(op)
	}
	return err
}

// buildHistory returns a ledger of n operations and the workload positioned
// after them; ref, if not nil, receives the accepted operations.
func buildHistory(tb testing.TB, n int, ref *refLedger) (*Ledger, *workload) {
	l, w := New(), newWorkload(42)
	for i := 0; i < n; i++ {
		op := w.next()
		if err := apply(tb, l, op); err != nil {
			if _, insufficient := err.(*InsufficientCreditsError); !insufficient {
				tb.Fatal(err)
			}
			continue
		}
		if ref != nil {
			switch op := op.(type) {
			case Grant:
				ref.grants = append(ref.grants, op)
			case Deduction:
				ref.deds = append(ref.deds, op)
			}
		}
	}
	return l, w
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkAppend appends onto a history of 1,000,000 events. The history
// is rebuilt (timer stopped) every appendRound operations, so that a large
// b.N measures appends at the size asked for, not at five times it.
func BenchmarkAppend(b *testing.B) {
	const size, appendRound = 1_000_000, 200_000
	before := heapInUse()
	l, w := buildHistory(b, size, nil)
	perEvent := float64(heapInUse()-before) / float64(l.Len())
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(appendRound, b.N-done)
		b.StopTimer()
		if done > 0 {
			l, w = buildHistory(b, size, nil)
		}
		ops := make([]any, n)
		for i := range ops {
			ops[i] = w.next()
		}
		b.StartTimer()
		for _, op := range ops {
			if err := apply(b, l, op); err != nil {
				b.Fatal(err)
			}
		}
		done += n
	}
	b.StopTimer()
	b.ReportMetric(perEvent, "heap-bytes/event")
	runtime.KeepAlive(l)
}

func BenchmarkBalanceAt(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			l, w := buildHistory(b, n, nil)
			r := rand.New(rand.NewPCG(7, 7))
			b.ReportAllocs()
			b.ResetTimer()
			var sink int64
			for i := 0; i < b.N; i++ {
				sink += l.Balance(r.Int64N(w.ts + 1))
			}
			runtime.KeepAlive(sink)
		})
	}
}

func BenchmarkReferenceBalanceAt(b *testing.B) {
	for _, n := range []int{100_000} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			var m refLedger
			_, w := buildHistory(b, n, &m)
			r := rand.New(rand.NewPCG(7, 7))
			b.ResetTimer()
			var sink int64
			for i := 0; i < b.N; i++ {
				sink += m.balance(r.Int64N(w.ts + 1))
			}
			runtime.KeepAlive(sink)
		})
	}
}

func BenchmarkLateDeduction(b *testing.B) {
	for _, behind := range []int{10, 1000, 100_000} {
		b.Run(fmt.Sprintf("behind=%d", behind), func(b *testing.B) {
			l, _ := buildHistory(b, 1_000_000, nil)
			ids := make([]string, b.N)
			for i := range ids {
				ids[i] = "late" + strconv.Itoa(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			refused := 0
			for i := 0; i < b.N; i++ {
				ts := l.ev.at(l.ev.n - behind).ts
				if _, err := l.Deduct(Deduction{ID: ids[i], Amount: 1, Timestamp: ts}); err != nil {
					refused++
				}
			}
			b.ReportMetric(float64(refused)/float64(b.N), "refused/op")
		})
	}
}

func BenchmarkHistoryPage(b *testing.B) {
	l, w := buildHistory(b, 1_000_000, nil)
	r := rand.New(rand.NewPCG(7, 7))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.History(r.Int64N(w.ts+1), w.ts+1, 0, 100)
	}
}

func BenchmarkBreakdownNow(b *testing.B) {
	l, w := buildHistory(b, 1_000_000, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.Breakdown(w.ts)
	}
}

func BenchmarkEncode(b *testing.B) {
	l, _ := buildHistory(b, 1_000_000, nil)
	b.ReportAllocs()
	b.ResetTimer()
	var n int
	for i := 0; i < b.N; i++ {
		buf, _ := l.MarshalBinary()
		n = len(buf)
	}
	b.ReportMetric(float64(n)/float64(l.Len()), "bytes/event")
}

// BenchmarkActivate rebuilds one user's ledger from its stored encoding,
// as a node does when a user's actor starts: full validation and replay.
// heap-bytes/event is what the rebuilt ledger keeps.
func BenchmarkActivate(b *testing.B) {
	for _, n := range []int{1000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			l, _ := buildHistory(b, n, nil)
			buf, _ := l.MarshalBinary()
			l = nil
			before := heapInUse()
			kept := New()
			if err := kept.UnmarshalBinary(buf); err != nil {
				b.Fatal(err)
			}
			perEvent := float64(heapInUse()-before) / float64(kept.Len())
			runtime.KeepAlive(kept)
			kept = nil
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := New().UnmarshalBinary(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(perEvent, "heap-bytes/event")
		})
	}
}

// manyUsers is BenchmarkManyUsers' population: a node's worth of users.
const manyUsers = 1_000_000

// BenchmarkManyUsers builds manyUsers ledgers of 10 operations each (one
// grant, deductions, a second grant: the benchmark workload's first ten)
// and reports the heap they keep. One iteration builds them all, so the
// default benchtime runs it once; it needs about 1.5 GiB.
func BenchmarkManyUsers(b *testing.B) {
	const perUser = 10
	histories := userHistories(perUser)
	var perUserBytes float64
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ledgers := make([]*Ledger, manyUsers)
		before := heapInUse()
		b.StartTimer()
		buildUsers(b, ledgers, histories)
		b.StopTimer()
		perUserBytes = float64(heapInUse()-before) / manyUsers
		runtime.KeepAlive(ledgers)
		b.StartTimer()
	}
	b.ReportMetric(perUserBytes, "heap-bytes/user")
	b.ReportMetric(perUserBytes/perUser, "heap-bytes/event")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*manyUsers), "ns/user")
}
