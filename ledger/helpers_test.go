package ledger

import (
	"bytes"
	"math"
	"reflect"
	"testing"
)

// checkInvariants verifies the cached state against itself: anything that
// can be derived two ways must agree.
func checkInvariants(t testing.TB, l *Ledger) {
	t.Helper()
	n := l.ev.n
	if len(l.evChk) != (n+chkEvery-1)/chkEvery {
		t.Fatalf("timeline arrays disagree in length")
	}
	for k, c := range l.evChk {
		if c.ts != l.ev.at(k*chkEvery).ts {
			t.Fatalf("checkpoint %d has timestamp %d, event has %d", k, c.ts, l.ev.at(k*chkEvery).ts)
		}
	}
	for i := 1; i < n; i++ {
		if l.ev.at(i).ts < l.ev.at(i-1).ts || (l.ev.at(i).ts == l.ev.at(i-1).ts && refKind(l.ev.at(i).ref) < refKind(l.ev.at(i-1).ref)) {
			t.Fatalf("timeline out of order at %d", i)
		}
	}
	if n > 0 {
		if l.ev.at(n-1).ts > l.frontier {
			t.Fatalf("event after frontier")
		}
		if b := l.balanceAfter(n - 1); b != l.balance {
			t.Fatalf("last balance %d != running balance %d", b, l.balance)
		}
		if int(l.ev.at(n-1).allocEnd) != l.allocGrant.len() {
			t.Fatalf("allocation count mismatch")
		}
	}
	var live int64
	for i := uint32(0); int(i) < l.grants.len(); i++ {
		g := l.grants.at(i)
		if g.state == stateLive {
			live += g.remaining
			if (g.remaining > 0) != (g.heapPos >= 0) {
				t.Fatalf("grant %d: remaining %d but heapPos %d", i, g.remaining, g.heapPos)
			}
		} else if g.heapPos >= 0 {
			t.Fatalf("grant %d in heap while state %d", i, g.state)
		}
	}
	if live != l.balance {
		t.Fatalf("live sum %d != balance %d", live, l.balance)
	}
	for i, g := range l.live.h {
		if int(l.grants.at(g).heapPos) != i {
			t.Fatalf("heap position mismatch")
		}
		if i > 0 && l.drawsBefore(g, l.live.h[(i-1)/2]) {
			t.Fatalf("heap order violated")
		}
	}
	ps := l.pending[l.pendingHead:]
	for i, g := range ps {
		if l.grants.at(g).exp <= l.frontier {
			t.Fatalf("pending expiration not after frontier")
		}
		if i > 0 && l.grants.at(g).exp < l.grants.at(ps[i-1]).exp {
			t.Fatalf("pending out of order")
		}
	}
}

func roundTrip(t testing.TB, l *Ledger) *Ledger {
	t.Helper()
	b, err := l.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	r := New()
	if err := r.UnmarshalBinary(b); err != nil {
		t.Fatalf("decode: %v", err)
	}
	checkInvariants(t, r)
	b2, _ := r.MarshalBinary()
	if !bytes.Equal(b, b2) {
		t.Fatalf("encoding is not stable across a round trip")
	}
	return r
}

// fullHistory pages through the whole history with a small page size, so
// the paging itself is exercised.
func fullHistory(l *Ledger) []Event {
	var all []Event
	from, skip := int64(math.MinInt64), 0
	for {
		evs, next, nextSkip, more := l.History(from, math.MaxInt64, skip, 3)
		all = append(all, evs...)
		if !more {
			return all
		}
		from, skip = next, nextSkip
	}
}

func assertSameHistory(t testing.TB, got, want *Ledger) {
	t.Helper()
	a, b := fullHistory(got), fullHistory(want)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("histories differ:\n got %+v\nwant %+v", a, b)
	}
}
