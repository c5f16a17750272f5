package app

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ration/ration/api/ledgerjson"
	"github.com/ration/ration/ledger"
)

// httpFake implements the write endpoints and balance of the HTTP/JSON
// contract on real ledgers, for the bench's HTTP mode.
type httpFake struct {
	mu      sync.Mutex
	ledgers map[string]*ledger.Ledger
	// unavailable makes the next n requests answer 503 with Retry-After.
	unavailable atomic.Int64
	requests    atomic.Int64
	statuses    sync.Map // status code -> *atomic.Int64
}

func newHTTPFake() *httpFake { return &httpFake{ledgers: map[string]*ledger.Ledger{}} }

func (f *httpFake) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/users/{user}/grants", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			ID        string `json:"id"`
			Amount    int64  `json:"amount"`
			Timestamp int64  `json:"timestamp"`
			ExpiresAt *int64 `json:"expires_at"`
			Priority  int32  `json:"priority"`
		}
		if !f.decode(w, r, &body) {
			return
		}
		exp := ledger.Never
		if body.ExpiresAt != nil {
			exp = *body.ExpiresAt
		}
		f.withLedger(w, r.PathValue("user"), func(l *ledger.Ledger) (any, error) {
			res, err := l.Grant(ledger.Grant{ID: body.ID, Amount: body.Amount, Timestamp: body.Timestamp, ExpiresAt: exp, Priority: body.Priority})
			return map[string]any{"user": r.PathValue("user"), "id": body.ID, "duplicate": res.Duplicate, "version": l.Version()}, err
		})
	})
	mux.HandleFunc("POST /v1/users/{user}/deductions", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			ID        string `json:"id"`
			Amount    int64  `json:"amount"`
			Timestamp int64  `json:"timestamp"`
		}
		if !f.decode(w, r, &body) {
			return
		}
		f.withLedger(w, r.PathValue("user"), func(l *ledger.Ledger) (any, error) {
			res, err := l.Deduct(ledger.Deduction{ID: body.ID, Amount: body.Amount, Timestamp: body.Timestamp})
			allocs := []map[string]any{}
			for _, a := range res.Allocations {
				allocs = append(allocs, map[string]any{"grant_id": a.GrantID, "amount": a.Amount})
			}
			return map[string]any{"user": r.PathValue("user"), "id": body.ID, "duplicate": res.Duplicate, "version": l.Version(), "allocations": allocs}, err
		})
	})
	mux.HandleFunc("GET /v1/users/{user}/balance", func(w http.ResponseWriter, r *http.Request) {
		at := time.Now().UnixMilli()
		if s := r.URL.Query().Get("at"); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				f.reply(w, http.StatusBadRequest, errBody("invalid_argument", "at is not an integer"))
				return
			}
			at = v
		}
		f.withLedger(w, r.PathValue("user"), func(l *ledger.Ledger) (any, error) {
			b := ledgerjson.Balance{User: r.PathValue("user"), At: at, Balance: l.Balance(at)}
			for _, g := range l.Breakdown(at) {
				gb := ledgerjson.GrantBalance{ID: g.ID, Remaining: g.Remaining, Priority: g.Priority, Timestamp: g.Timestamp}
				if g.ExpiresAt != ledger.Never {
					gb.ExpiresAt = &g.ExpiresAt
				}
				b.Grants = append(b.Grants, gb)
			}
			return b, nil
		})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		if f.unavailable.Add(-1) >= 0 {
			w.Header().Set("Retry-After", "0")
			f.reply(w, http.StatusServiceUnavailable, errBody("unavailable", "no leader"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func errBody(code, msg string) map[string]any {
	return map[string]any{"error": map[string]any{"code": code, "message": msg}}
}

func (f *httpFake) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		f.reply(w, http.StatusBadRequest, errBody("invalid_argument", err.Error()))
		return false
	}
	return true
}

func (f *httpFake) withLedger(w http.ResponseWriter, user string, fn func(*ledger.Ledger) (any, error)) {
	if !ledger.ValidID(user) {
		f.reply(w, http.StatusBadRequest, errBody("invalid_argument", "bad user"))
		return
	}
	f.mu.Lock()
	l := f.ledgers[user]
	if l == nil {
		l = ledger.New()
		f.ledgers[user] = l
	}
	body, err := fn(l)
	f.mu.Unlock()
	var ins *ledger.InsufficientCreditsError
	switch {
	case err == nil:
		f.reply(w, http.StatusOK, body)
	case errors.Is(err, ledger.ErrInvalidArgument):
		f.reply(w, http.StatusBadRequest, errBody("invalid_argument", err.Error()))
	case errors.Is(err, ledger.ErrConflict):
		f.reply(w, http.StatusConflict, errBody("conflict", err.Error()))
	case errors.As(err, &ins):
		b := errBody("insufficient_credits", err.Error())
		b["error"].(map[string]any)["shortfall"] = ins.Shortfall
		f.reply(w, http.StatusUnprocessableEntity, b)
	default:
		f.reply(w, http.StatusInternalServerError, errBody("internal", err.Error()))
	}
}

func (f *httpFake) reply(w http.ResponseWriter, status int, body any) {
	c, _ := f.statuses.LoadOrStore(status, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (f *httpFake) count(status int) int64 {
	c, ok := f.statuses.Load(status)
	if !ok {
		return 0
	}
	return c.(*atomic.Int64).Load()
}

func (f *httpFake) balance(t *testing.T, user string) int64 {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.ledgers[user]; l != nil {
		return l.Balance(time.Now().UnixMilli() + 1000)
	}
	return 0
}

// newTestHTTPServer serves f until the test ends and returns its URL.
func newTestHTTPServer(t *testing.T, f *httpFake) string {
	t.Helper()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	return srv.URL
}
