package actorcluster

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/cluster/actorcluster/actorpb"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/service"
)

// local records what an envelope asked of the user's actor, and answers
// with canned results.
type local struct {
	got   []any
	write actors.WriteResult
	bal   actors.BalanceResult
	page  actors.Page
	err   error
}

func (l *local) Grant(_ context.Context, g ledger.Grant) (actors.WriteResult, error) {
	l.got = append(l.got, g)
	return l.write, l.err
}

func (l *local) Deduct(_ context.Context, d ledger.Deduction) (actors.WriteResult, error) {
	l.got = append(l.got, d)
	return l.write, l.err
}

func (l *local) Balance(_ context.Context, at int64, stale bool) (actors.BalanceResult, error) {
	l.got = append(l.got, [2]any{at, stale})
	return l.bal, l.err
}

func (l *local) History(_ context.Context, from, to int64, skip, limit int, stale bool) (actors.Page, error) {
	l.got = append(l.got, [5]any{from, to, skip, limit, stale})
	return l.page, l.err
}

// Every kind of request survives the envelope both ways: the operation
// the leader's actor runs is the one the sender routed, and the result
// the sender gets back is the one the actor returned.
func TestEnvelopeRoundTrip(t *testing.T) {
	ctx := context.Background()
	const user = "bob"

	g := ledger.Grant{ID: "g", Amount: 7, Timestamp: 3, ExpiresAt: 99, Priority: 4}
	l := &local{write: actors.WriteResult{Duplicate: true, Version: 5}}
	got, err := writeResult(serve(ctx, grantRequest(user, g), l), false)
	if err != nil || !reflect.DeepEqual(l.got, []any{g}) || !reflect.DeepEqual(got, actors.WriteResult{Duplicate: true, Version: 5}) {
		t.Fatalf("grant: ran %v, got %+v %v", l.got, got, err)
	}
	never := ledger.Grant{ID: "n", Amount: 1, ExpiresAt: ledger.Never}
	l = &local{}
	if _, err := writeResult(serve(ctx, grantRequest(user, never), l), false); err != nil || l.got[0] != any(never) {
		t.Fatalf("grant that never expires: ran %v, %v", l.got, err)
	}

	d := ledger.Deduction{ID: "d", Amount: 2, Timestamp: 8}
	allocs := []ledger.Allocation{{GrantID: "g", Amount: 2}}
	l = &local{write: actors.WriteResult{Version: 6, Allocations: allocs}}
	wr, err := writeResult(serve(ctx, deductRequest(user, d), l), true)
	if err != nil || !reflect.DeepEqual(l.got, []any{d}) || wr.Version != 6 || !reflect.DeepEqual(wr.Allocations, allocs) {
		t.Fatalf("deduct: ran %v, got %+v %v", l.got, wr, err)
	}

	bal := actors.BalanceResult{Balance: 5, Grants: []ledger.GrantBalance{
		{ID: "g", Remaining: 5, Timestamp: 3, ExpiresAt: 99, Priority: 4},
		{ID: "n", Remaining: 0, ExpiresAt: ledger.Never},
	}}
	l = &local{bal: bal}
	b, err := balanceResult(serve(ctx, balanceRequest(user, 42, true), l))
	if err != nil || !reflect.DeepEqual(l.got, []any{[2]any{int64(42), true}}) || !reflect.DeepEqual(b, bal) {
		t.Fatalf("balance: ran %v, got %+v %v", l.got, b, err)
	}

	page := actors.Page{Events: []ledger.Event{
		{Kind: ledger.KindGrant, ID: "g", Timestamp: 3, Amount: 7, Priority: 4, BalanceAfter: 7, ExpiresAt: 99},
		{Kind: ledger.KindDeduction, ID: "d", Timestamp: 8, Amount: 2, BalanceAfter: 5, ExpiresAt: ledger.Never, Allocations: allocs},
	}, Next: 8, NextSkip: 1, More: true}
	l = &local{page: page}
	p, err := pageResult(serve(ctx, historyRequest(user, 3, 100, 2, 5, false), l), user, 3, 100)
	if err != nil || !reflect.DeepEqual(l.got, []any{[5]any{int64(3), int64(100), 2, 5, false}}) || !reflect.DeepEqual(p, page) {
		t.Fatalf("history: ran %v, got %+v %v", l.got, p, err)
	}
}

// Errors keep their type and details across the envelope; anything that
// is not an answer comes back retryable.
func TestEnvelopeErrors(t *testing.T) {
	ctx := context.Background()
	req := deductRequest("bob", ledger.Deduction{ID: "d", Amount: 2})
	for _, tc := range []struct {
		err   error
		check func(error) bool
	}{
		{&ledger.InvalidArgumentError{Field: "amount", Reason: "must be positive"}, func(err error) bool {
			var ia *ledger.InvalidArgumentError
			return errors.As(err, &ia) && ia.Field == "amount" && ia.Reason == "must be positive"
		}},
		{&ledger.InsufficientCreditsError{DeductionID: "d", At: 9, Shortfall: 3}, func(err error) bool {
			var ie *ledger.InsufficientCreditsError
			return errors.As(err, &ie) && *ie == ledger.InsufficientCreditsError{DeductionID: "d", At: 9, Shortfall: 3}
		}},
		{ledger.ErrConflict, func(err error) bool { return errors.Is(err, ledger.ErrConflict) }},
		{actors.ErrOutcomeUnknown, func(err error) bool { return service.ClassOf(err) == service.ClassUnavailable }},
		{errors.New("raft: not the leader"), func(err error) bool { return service.ClassOf(err) == service.ClassUnavailable }},
		// The hop's own deadline is not the caller's: the router decides.
		{context.DeadlineExceeded, func(err error) bool { return service.ClassOf(err) == service.ClassUnavailable }},
	} {
		_, err := writeResult(serve(ctx, req, &local{err: tc.err}), true)
		if !tc.check(err) {
			t.Errorf("%v came back as %v", tc.err, err)
		}
	}
}

// A request of a kind or version this node does not know, or with a
// payload it cannot read, is answered UNSUPPORTED, and the sender counts
// that as retryable.
func TestEnvelopeUnsupported(t *testing.T) {
	srv := Server{Locator: leadsAll{}}
	for _, req := range []*actorpb.Request{
		{Version: 2, Kind: actorpb.Kind_KIND_GRANT, User: "bob"},
		{Version: actorpb.Version_VERSION_1, Kind: 77, User: "bob"},
		{Version: actorpb.Version_VERSION_1, Kind: actorpb.Kind_KIND_BALANCE, User: "bob", Payload: []byte{0x0a}},
		{Version: actorpb.Version_VERSION_1, Kind: actorpb.Kind_KIND_ACTIVATE, User: "bob"},
	} {
		rep, ok := srv.ServeRemote("bob", req, &local{}).(*actorpb.Reply)
		if !ok || rep.GetError().GetCode() != actorpb.Code_CODE_UNSUPPORTED {
			t.Errorf("%v: %v", req, rep)
			continue
		}
		if err := replyErr(rep); !errors.Is(err, ErrUnsupported) || service.ClassOf(err) != service.ClassUnavailable {
			t.Errorf("%v: the sender sees %v", req, err)
		}
	}
	if rep := srv.ServeRemote("bob", "not an envelope", &local{}); rep != nil {
		t.Errorf("a foreign message got %v", rep)
	}
}

type leadsAll struct{}

func (leadsAll) ShardOf(string) uint32            { return 0 }
func (leadsAll) LocalLeader(uint32) bool          { return true }
func (leadsAll) LeaderHint(uint32) (string, bool) { return "", false }
func (leadsAll) Candidates(uint32) []string       { return nil }

// A request that arrives after its sender's deadline is not started: its
// sender has given up and may have answered otherwise. One inside its
// deadline runs with that deadline, not a fresh one.
func TestEnvelopePastDeadlineNotStarted(t *testing.T) {
	expired := prometheus.NewCounter(prometheus.CounterOpts{Name: "expired"})
	srv := Server{Locator: leadsAll{}, Expired: expired}
	d := ledger.Deduction{ID: "d", Amount: 1, Timestamp: 1}

	req := deductRequest("bob", d)
	req.TimeoutMs = 5000 // what the receiver would count from arrival
	req.DeadlineUnixMs = time.Now().Add(-time.Second).UnixMilli()
	l := &local{}
	rep, _ := srv.ServeRemote("bob", req, l).(*actorpb.Reply)
	if rep.GetError().GetCode() != actorpb.Code_CODE_DEADLINE_EXCEEDED || len(l.got) != 0 {
		t.Fatalf("late request: reply %v, actor ran %v; want DEADLINE_EXCEEDED and nothing run", rep, l.got)
	}
	var m dto.Metric
	if err := expired.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("expired counter %v (%v), want 1", m.GetCounter().GetValue(), err)
	}

	req = deductRequest("bob", d)
	req.TimeoutMs = 5000
	deadline := time.Now().Add(time.Second)
	req.DeadlineUnixMs = deadline.UnixMilli()
	dl := &deadlineLocal{}
	if rep, _ := srv.ServeRemote("bob", req, dl).(*actorpb.Reply); rep.GetError() != nil {
		t.Fatalf("request in time: %v", rep.GetError())
	}
	if dl.deadline.IsZero() || dl.deadline.After(deadline) {
		t.Fatalf("served with deadline %v, want at most the sender's %v", dl.deadline, deadline)
	}
}

// deadlineLocal records the deadline a deduction was served with.
type deadlineLocal struct {
	local
	deadline time.Time
}

func (l *deadlineLocal) Deduct(ctx context.Context, d ledger.Deduction) (actors.WriteResult, error) {
	l.deadline, _ = ctx.Deadline()
	return l.local.Deduct(ctx, d)
}
