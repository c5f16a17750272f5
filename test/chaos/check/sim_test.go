package check

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/test/chaos/history"
)

// simulate makes a concurrent history of a correct server: clients invoke
// ops that take effect at a random instant within their call, in that
// order, against the reference model. Some writes time out: they are
// applied, or not, and recorded as unknown; one that is applied takes
// effect up to late after it was invoked, as a proposal held by a paused
// leader commits when it resumes. It returns the ops and the final
// histories.
func simulate(seed uint64, clients, users, perUser int, unknownRate float64, late time.Duration) ([]history.Op, Final) {
	rng := rand.New(rand.NewPCG(seed, 1))
	const ms = int64(time.Millisecond)
	const epoch = int64(1_700_000_000_000) // Unix ms of the simulated start
	type pending struct {
		op      history.Op
		effect  int64 // when it takes effect (ns)
		applies bool  // for unknown writes
	}
	var all []pending
	cursor := make([]int64, clients)
	n := users * perUser
	for i := range n {
		c := rng.IntN(clients)
		invoke := cursor[c] + rng.Int64N(5*ms)
		ret := invoke + ms + rng.Int64N(40*ms)
		cursor[c] = ret
		effect := invoke + rng.Int64N(ret-invoke+1)
		now := epoch + effect/ms
		op := history.Op{Client: c, User: fmt.Sprintf("u%d", rng.IntN(users)), Invoke: invoke, Return: ret}
		switch r := rng.Float64(); {
		case r < 0.3:
			op.Kind, op.ID, op.Amount, op.Timestamp = history.Grant, fmt.Sprintf("g-%d", i), 10+rng.Int64N(991), now
			if rng.Float64() < 0.2 {
				op.Timestamp -= rng.Int64N(180_000)
			}
			if rng.Float64() < 0.3 {
				op.ExpiresAt = ptr(now + 2000 + rng.Int64N(18_000))
			}
			if rng.Float64() < 0.3 {
				op.Priority = rng.Int32N(4)
			}
		case r < 0.6:
			op.Kind, op.ID, op.Amount, op.Timestamp = history.Deduct, fmt.Sprintf("d-%d", i), 10+rng.Int64N(600), now
			if rng.Float64() < 0.2 {
				op.Timestamp -= rng.Int64N(180_000)
			}
		default:
			op.Kind = history.Balance
			switch r := rng.Float64(); {
			case r < 0.5:
				op.ResultAt = ptr(now)
			case r < 0.8:
				op.At = ptr(now - rng.Int64N(300_000))
			default:
				op.At = ptr(now + rng.Int64N(30_000))
			}
		}
		p := pending{op: op, effect: effect, applies: true}
		if op.Kind != history.Balance && rng.Float64() < unknownRate {
			p.op.Outcome, p.op.Return, p.applies = history.Unknown, 0, rng.IntN(2) == 0
			if late > 0 {
				p.effect = invoke + rng.Int64N(int64(late))
			}
		}
		all = append(all, p)
	}
	slices.SortFunc(all, func(a, b pending) int { return int(a.effect - b.effect) })

	m := newModel()
	states := map[string]*state{}
	var ops []history.Op
	for _, p := range all {
		op := p.op
		s := states[op.User]
		if s == nil {
			s = empty
		}
		v := m.view(s)
		switch {
		case op.Kind == history.Balance:
			op.Outcome = history.OK
			at, _ := readInstant(&op)
			op.Balance, op.Grants = v.balanceAt(at)
		case op.Outcome == history.Unknown:
			if p.applies {
				s, _ = m.step(s, call{op: &op}, false)
			}
		default:
			w := writeOf(&op)
			ns := m.with(s, w, v)
			op.Outcome = history.OK
			if !w.grant {
				allocs, short := m.view(ns).allocations(ns.w, true)
				if short != nil {
					op.Outcome = history.Refused
					op.Insufficient = &history.Insufficient{DeductionID: short.id, At: short.at, Shortfall: short.shortfall}
					ns = s
				}
				op.Allocations = allocs
			}
			s = ns
		}
		states[op.User] = s
		ops = append(ops, op)
	}
	slices.SortFunc(ops, func(a, b history.Op) int { return int(max(a.Return, a.Invoke) - max(b.Return, b.Invoke)) })
	for i := range ops {
		ops[i].Seq = int64(i + 1)
	}

	final := Final{Events: map[string][]client.Event{}}
	for user, s := range states {
		final.Events[user] = finalEvents(m, s)
	}
	return ops, final
}

// finalEvents lists a state as the server's history would.
func finalEvents(m *model, s *state) []client.Event {
	v := m.view(s)
	wk := &walker{t: m.t}
	var out []client.Event
	for _, e := range v.events {
		allocs, _, forfeited := wk.step(e, true)
		w := m.t.ws[e.w]
		ev := client.Event{ID: w.id, Timestamp: e.ts, Amount: w.amount}
		switch e.kind {
		case evGrant:
			ev.Kind, ev.Priority = client.EventGrant, w.prio
			if w.exp != never {
				ev.ExpiresAt = ptr(w.exp)
			}
		case evExpire:
			ev.Kind, ev.Amount = client.EventExpiration, forfeited
		case evDeduct:
			ev.Kind = client.EventDeduction
			for _, a := range allocs {
				ev.Allocations = append(ev.Allocations, client.Allocation{GrantID: a.GrantID, Amount: a.Amount})
			}
		}
		ev.BalanceAfter = wk.bal
		out = append(out, ev)
	}
	return out
}

// TestRealisticHistoryIsFast: ~200 ops per user from 16 clients with some
// unknown outcomes must be checked well within the default timeout.
func TestRealisticHistoryIsFast(t *testing.T) {
	ops, final := simulate(1, 16, 5, 200, 0.03, 0)
	var unknown, refused int
	for _, op := range ops {
		switch op.Outcome {
		case history.Unknown:
			unknown++
		case history.Refused:
			refused++
		}
	}
	start := time.Now()
	r := Check(ops, final, Options{})
	took := time.Since(start)
	t.Logf("%d ops (%d unknown, %d refused), %d users: %v (slowest user %v)", len(ops), unknown, refused, r.UsersChecked, took, r.Slowest)
	wantPass(t, r)
	if unknown == 0 || refused == 0 {
		t.Fatalf("the simulation should have unknown and refused ops")
	}
	if took > DefaultTimeout/6 {
		t.Fatalf("check took %v, want well under %v", took, DefaultTimeout)
	}

	// The same history with one answer changed must fail.
	for i := range ops {
		if ops[i].Kind == history.Balance && ops[i].Balance > 0 {
			ops[i].Balance--
			break
		}
	}
	if r := Check(ops, final, Options{}); r.Linearizable {
		t.Fatal("a wrong balance passed")
	}
}

func TestTimeoutIsAnAnomaly(t *testing.T) {
	ops, final := simulate(2, 16, 1, 400, 0.03, 0)
	r := Check(ops, final, Options{Timeout: time.Nanosecond})
	wantKinds(t, r, KindUnknownLinearizability)
}

// TestLateUnknownWrites: writes of unknown outcome that took effect
// seconds after they were sent, with many calls of the same user in
// between, as when a paused leader resumes, must not make the search give
// up.
func TestLateUnknownWrites(t *testing.T) {
	ops, final := simulate(3, 12, 4, 2000, 0.01, 7*time.Second)
	start := time.Now()
	r := Check(ops, final, Options{})
	t.Logf("%d ops: %v (slowest user %v)", len(ops), time.Since(start), r.Slowest)
	wantPass(t, r)
}

// TestUnknownWritesAreNarrowed: an unknown write is dropped when an
// earlier call was answered ok for its id, and an unknown grant returns
// no later than the first call that shows it.
func TestUnknownWritesAreNarrowed(t *testing.T) {
	g := history.Op{Kind: history.Grant, ID: "g", User: "u", Amount: 5, Timestamp: 1}
	ok, again, late := g, g, g
	ok.Outcome, ok.Invoke, ok.Return = history.OK, 10, 20
	again.Outcome, again.Invoke = history.Unknown, 30
	late.ID, late.Outcome, late.Invoke = "h", history.Unknown, 40
	read := history.Op{Kind: history.Balance, User: "u", Outcome: history.OK, Invoke: 50, Return: 60,
		ResultAt: ptr(int64(2)), Balance: 10, Grants: []history.GrantBalance{{ID: "g", Remaining: 5}, {ID: "h", Remaining: 5}}}
	tail := history.Op{Kind: history.Balance, User: "u", Outcome: history.OK, Invoke: 70, Return: 80, ResultAt: ptr(int64(2)), Balance: 10}
	final := []client.Event{{Kind: client.EventGrant, ID: "g"}, {Kind: client.EventGrant, ID: "h"}}
	cs := calls([]history.Op{ok, again, late, read, tail}, final, true)
	if len(cs) != 4 || cs[1].op.ID != "h" {
		t.Fatalf("calls kept %d ops, want the resend of g dropped", len(cs))
	}
	if ret := operations(cs)[1].Return; ret != read.Return {
		t.Fatalf("grant h returns at %d, want %d (the read that shows it)", ret, read.Return)
	}
}
