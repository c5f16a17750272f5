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

func TestBatchKeepsEachUsersOrder(t *testing.T) {
	b := &orderBackend{order: map[string][]string{}}
	s := New(b, nil)
	var ops []BatchOp
	for i := 0; i < 30; i++ {
		user := fmt.Sprintf("u%d", i%3)
		ops = append(ops, BatchOp{User: user, Deduction: &ledger.Deduction{ID: fmt.Sprintf("d%02d", i), Amount: int64(1 + 100*(i%7/6))}})
	}
	ops = append(ops, BatchOp{User: "u0"}) // neither grant nor deduction
	res, err := s.Batch(context.Background(), ops)
	if err != nil {
		t.Fatal(err)
	}
	for user, ids := range b.order {
		for i := 1; i < len(ids); i++ {
			if ids[i] < ids[i-1] {
				t.Fatalf("%s: operations applied out of order: %v", user, ids)
			}
		}
	}
	if !errors.Is(res[6].Err, ledger.ErrInsufficientCredits) || res[0].Err != nil {
		t.Fatalf("per-operation results: %+v", res[:7])
	}
	if !errors.Is(res[30].Err, ledger.ErrInvalidArgument) {
		t.Fatalf("empty operation: %v", res[30].Err)
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
