package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/ledger"
)

func TestPageTokenIsBoundToItsQuery(t *testing.T) {
	tok := PageToken("u", 10, 20, 15, 3)
	next, skip, err := ParsePageToken(tok, "u", 10, 20)
	if err != nil || next != 15 || skip != 3 {
		t.Fatalf("round trip: %d %d %v", next, skip, err)
	}
	for _, q := range []struct {
		user     string
		from, to int64
	}{{"v", 10, 20}, {"u", 11, 20}, {"u", 10, 21}} {
		if _, _, err := ParsePageToken(tok, q.user, q.from, q.to); !errors.Is(err, ledger.ErrInvalidArgument) {
			t.Fatalf("token accepted for %+v: %v", q, err)
		}
	}
	for _, bad := range []string{"", "!!", "AAAA", tok[:len(tok)-2]} {
		if _, _, err := ParsePageToken(bad, "u", 10, 20); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}

// orderBackend records the order in which each user's operations arrive.
type orderBackend struct {
	mu    sync.Mutex
	order map[string][]string
}

func (b *orderBackend) record(user, id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.order[user] = append(b.order[user], id)
}

func (b *orderBackend) Grant(_ context.Context, user string, g ledger.Grant) (actors.WriteResult, error) {
	b.record(user, g.ID)
	return actors.WriteResult{Version: 1}, nil
}

func (b *orderBackend) Deduct(_ context.Context, user string, d ledger.Deduction) (actors.WriteResult, error) {
	b.record(user, d.ID)
	if d.Amount > 100 {
		return actors.WriteResult{}, &ledger.InsufficientCreditsError{DeductionID: d.ID}
	}
	time.Sleep(time.Millisecond) // let other users' operations interleave
	return actors.WriteResult{}, nil
}

func (b *orderBackend) Balance(context.Context, string, int64, bool) (actors.BalanceResult, error) {
	return actors.BalanceResult{}, errors.New("backend exploded")
}

func (b *orderBackend) History(context.Context, string, int64, int64, int, int, bool) (actors.Page, error) {
	return actors.Page{}, nil
}

// Batch runs ops in order, one at a time, as single writes; an op with
// amount 13 fails as a backend failure that is not an answer.
func (b *orderBackend) Batch(ctx context.Context, ops []BatchOp) []BatchResult {
	out := make([]BatchResult, len(ops))
	for i, op := range ops {
		switch {
		case op.Grant != nil && op.Grant.Amount == 13:
			out[i].Err = errors.New("replica on fire")
		case op.Grant != nil:
			out[i].WriteResult, out[i].Err = b.Grant(ctx, op.User, *op.Grant)
		default:
			out[i].WriteResult, out[i].Err = b.Deduct(ctx, op.User, *op.Deduction)
		}
	}
	return out
}

// Batch hands the backend only valid operations, puts each result back at
// its operation's place, and sorts the errors like single calls'.
func TestBatchValidatesAndClassifies(t *testing.T) {
	b := &orderBackend{order: map[string][]string{}}
	s := New(b, nil)
	ops := []BatchOp{
		{User: "u0", Deduction: &ledger.Deduction{ID: "d0", Amount: 1}},
		{User: "u0"}, // neither grant nor deduction
		{User: "bad user", Grant: &ledger.Grant{ID: "g", Amount: 1}},
		{User: "u1", Deduction: &ledger.Deduction{ID: "d1", Amount: 500}},
		{User: "u1", Grant: &ledger.Grant{ID: "g1", Amount: 13}},
		{User: "u0", Grant: &ledger.Grant{ID: "g2", Amount: 1}, Deduction: &ledger.Deduction{ID: "d2", Amount: 1}},
		{User: "u0", Grant: &ledger.Grant{ID: "g3", Amount: 1}},
	}
	res, err := s.Batch(context.Background(), ops)
	if err != nil {
		t.Fatal(err)
	}
	want := []Class{ClassOK, ClassInvalid, ClassInvalid, ClassInsufficient, ClassUnavailable, ClassInvalid, ClassOK}
	for i, c := range want {
		if got := ClassOf(res[i].Err); got != c {
			t.Errorf("op %d: %v (%v), want class %v", i, got, res[i].Err, c)
		}
	}
	if res[6].Version != 1 {
		t.Errorf("op 6: %+v, want the backend's result", res[6])
	}
	if got := fmt.Sprint(b.order); got != "map[u0:[d0 g3] u1:[d1]]" {
		t.Errorf("the backend saw %s", got)
	}
	if _, err := s.Batch(context.Background(), make([]BatchOp, MaxBatch+1)); !errors.Is(err, ledger.ErrInvalidArgument) {
		t.Fatalf("oversized batch: %v", err)
	}
}

func TestErrorsAreClassified(t *testing.T) {
	s := New(&orderBackend{order: map[string][]string{}}, func() time.Time { return time.UnixMilli(42) })
	if _, err := s.Grant(context.Background(), "bad user", ledger.Grant{}); ClassOf(err) != ClassInvalid {
		t.Fatalf("bad user: %v", err)
	}
	// A failure that is not an answer is reported as unavailable: retrying
	// with the same ids is always safe.
	_, err := s.Balance(context.Background(), "u", nil, false)
	if ClassOf(err) != ClassUnavailable {
		t.Fatalf("backend failure classified %v: %v", ClassOf(err), err)
	}
	if ClassOf(context.DeadlineExceeded) != ClassDeadline || ClassOf(nil) != ClassOK {
		t.Fatal("classes")
	}
}

// TestUnavailableMarkIsSilent: the mark makes an error of class
// unavailable without adding the word to its text, and keeps its cause.
func TestUnavailableMarkIsSilent(t *testing.T) {
	cause := errors.New("shard 1: no leader")
	err := fmt.Errorf("router: %w", Unavailable(cause))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, cause) || ClassOf(err) != ClassUnavailable {
		t.Errorf("%v: marked unavailable %v, keeps cause %v, class %v", err, errors.Is(err, ErrUnavailable), errors.Is(err, cause), ClassOf(err))
	}
	if got := err.Error(); got != "router: shard 1: no leader" {
		t.Errorf("text %q, want the cause's alone", got)
	}
}

// Reads refuse what they cannot answer as asked: a page larger than
// MaxLimit (not cut down to it) and instants before 0.
func TestReadsRefuseOutOfRangeArguments(t *testing.T) {
	s := New(&orderBackend{order: map[string][]string{}}, func() time.Time { return time.UnixMilli(42) })
	ctx := context.Background()
	neg := int64(-1)
	for name, err := range map[string]error{
		"limit": func() error { _, err := s.Events(ctx, "u", EventsQuery{Limit: MaxLimit + 1}); return err }(),
		"from":  func() error { _, err := s.Events(ctx, "u", EventsQuery{From: &neg}); return err }(),
		"to":    func() error { _, err := s.Events(ctx, "u", EventsQuery{To: &neg}); return err }(),
		"at":    func() error { _, err := s.Balance(ctx, "u", &neg, false); return err }(),
	} {
		var ia *ledger.InvalidArgumentError
		if !errors.As(err, &ia) || ia.Field != name {
			t.Errorf("%s out of range: %v, want invalid argument on %s", name, err, name)
		}
	}
}

// deadlineBackend records the deadline each call reached it with.
type deadlineBackend struct {
	orderBackend
	got time.Duration // until the deadline; -1 for none
}

func (b *deadlineBackend) Balance(ctx context.Context, _ string, _ int64, _ bool) (actors.BalanceResult, error) {
	b.got = -1
	if dl, ok := ctx.Deadline(); ok {
		b.got = time.Until(dl)
	}
	return actors.BalanceResult{}, nil
}

// WithDeadlines gives a request without a deadline the default and cuts
// a later one to the maximum; one within bounds is left alone.
func TestDeadlinesAreBounded(t *testing.T) {
	b := &deadlineBackend{orderBackend: orderBackend{order: map[string][]string{}}}
	s := New(b, nil).WithDeadlines(5*time.Second, time.Minute)
	call := func(ctx context.Context) time.Duration {
		if _, err := s.Balance(ctx, "u", nil, false); err != nil {
			t.Fatal(err)
		}
		return b.got
	}
	near := func(got, want time.Duration) bool { return got <= want && got > want-time.Second }
	if got := call(context.Background()); !near(got, 5*time.Second) {
		t.Errorf("no deadline: the backend got %v, want about 5s", got)
	}
	long, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if got := call(long); !near(got, time.Minute) {
		t.Errorf("an hour: the backend got %v, want about 1m", got)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if got := call(short); !near(got, 2*time.Second) {
		t.Errorf("2s: the backend got %v, want about 2s", got)
	}
	if got := func() time.Duration {
		if _, err := New(b, nil).Balance(context.Background(), "u", nil, false); err != nil {
			t.Fatal(err)
		}
		return b.got
	}(); got != -1 {
		t.Errorf("without WithDeadlines: %v, want no deadline", got)
	}
}
