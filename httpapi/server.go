// Package httpapi serves Ration's HTTP/JSON API for people and scripts.
// The contract (paths, bodies, statuses, error codes) is fixed; see the
// README. Amounts and timestamps are JSON integers in Unix milliseconds.
package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ration/ration/api/ledgerjson"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/service"
)

// Options configure the handler.
type Options struct {
	// MaxBodyBytes caps request bodies (1 MiB if zero).
	MaxBodyBytes int64
	// Ready reports whether this node can serve: every shard has a leader.
	Ready func() bool
	// Gatherer serves /metrics (prometheus.DefaultGatherer if nil).
	Gatherer   prometheus.Gatherer
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Handler returns the HTTP API over svc.
func Handler(svc *service.Service, opts Options) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.Gatherer == nil {
		opts.Gatherer = prometheus.DefaultGatherer
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &server{svc: svc, opts: opts, met: newMetrics(opts.Registerer)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/users/{user}/grants", s.instrument("grant", s.grant))
	mux.HandleFunc("POST /v1/users/{user}/deductions", s.instrument("deduct", s.deduct))
	mux.HandleFunc("GET /v1/users/{user}/balance", s.instrument("balance", s.balance))
	mux.HandleFunc("GET /v1/users/{user}/events", s.instrument("events", s.events))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if opts.Ready != nil && !opts.Ready() {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	// Profiles for operators chasing latency; the API listens on a
	// cluster-internal address.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

type server struct {
	svc  *service.Service
	opts Options
	met  *metrics
}

// jsonInt is a JSON number token kept as text, so that integers are
// checked exactly (no float rounding) and strings are refused.
type jsonInt string

func (n *jsonInt) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || !(b[0] == '-' || b[0] >= '0' && b[0] <= '9') {
		return errors.New("must be a JSON integer")
	}
	*n = jsonInt(b)
	return nil
}

type grantBody struct {
	ID        *string  `json:"id"`
	Amount    *jsonInt `json:"amount"`
	Timestamp *jsonInt `json:"timestamp"`
	ExpiresAt *jsonInt `json:"expires_at"`
	Priority  *jsonInt `json:"priority"`
}

type deductBody struct {
	ID        *string  `json:"id"`
	Amount    *jsonInt `json:"amount"`
	Timestamp *jsonInt `json:"timestamp"`
}

type writeReply struct {
	User        string                   `json:"user"`
	ID          string                   `json:"id"`
	Duplicate   bool                     `json:"duplicate"`
	Version     uint64                   `json:"version"`
	Allocations *[]ledgerjson.Allocation `json:"allocations,omitempty"`
}

func (s *server) grant(w http.ResponseWriter, r *http.Request) error {
	var b grantBody
	if err := s.decode(w, r, &b); err != nil {
		return err
	}
	g := ledger.Grant{ExpiresAt: ledger.Never}
	var err error
	if g.ID, err = required("id", b.ID); err != nil {
		return err
	}
	if g.Amount, err = integer("amount", b.Amount, true); err != nil {
		return err
	}
	if g.Timestamp, err = integer("timestamp", b.Timestamp, true); err != nil {
		return err
	}
	if b.ExpiresAt != nil {
		if g.ExpiresAt, err = integer("expires_at", b.ExpiresAt, true); err != nil {
			return err
		}
		if g.ExpiresAt == ledger.Never {
			return &ledger.InvalidArgumentError{Field: "expires_at", Reason: "too large; leave it out for credits that never expire"}
		}
	}
	if b.Priority != nil {
		p, err := integer("priority", b.Priority, true)
		if err != nil {
			return err
		}
		if int64(int32(p)) != p {
			return &ledger.InvalidArgumentError{Field: "priority", Reason: "must fit in 32 bits"}
		}
		g.Priority = int32(p)
	}
	user := r.PathValue("user")
	res, err := s.svc.Grant(r.Context(), user, g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, writeReply{User: user, ID: g.ID, Duplicate: res.Duplicate, Version: res.Version})
	return nil
}

func (s *server) deduct(w http.ResponseWriter, r *http.Request) error {
	var b deductBody
	if err := s.decode(w, r, &b); err != nil {
		return err
	}
	var d ledger.Deduction
	var err error
	if d.ID, err = required("id", b.ID); err != nil {
		return err
	}
	if d.Amount, err = integer("amount", b.Amount, true); err != nil {
		return err
	}
	if d.Timestamp, err = integer("timestamp", b.Timestamp, true); err != nil {
		return err
	}
	user := r.PathValue("user")
	res, err := s.svc.Deduct(r.Context(), user, d)
	if err != nil {
		return err
	}
	allocs := allocations(res.Allocations)
	writeJSON(w, http.StatusOK, writeReply{User: user, ID: d.ID, Duplicate: res.Duplicate, Version: res.Version, Allocations: &allocs})
	return nil
}

func (s *server) balance(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	at, err := queryInt(q.Get("at"), "at")
	if err != nil {
		return err
	}
	stale, err := consistency(q.Get("consistency"))
	if err != nil {
		return err
	}
	user := r.PathValue("user")
	res, err := s.svc.Balance(r.Context(), user, at, stale)
	if err != nil {
		return err
	}
	out := ledgerjson.Balance{User: user, At: res.At, Balance: res.Balance, Grants: make([]ledgerjson.GrantBalance, len(res.Grants))}
	for i, g := range res.Grants {
		out.Grants[i] = ledgerjson.GrantBalance{ID: g.ID, Remaining: g.Remaining, ExpiresAt: expiry(g.ExpiresAt), Priority: g.Priority, Timestamp: g.Timestamp}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type eventsReply struct {
	User          string             `json:"user"`
	Events        []ledgerjson.Event `json:"events"`
	NextPageToken string             `json:"next_page_token,omitempty"`
}

func (s *server) events(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var eq service.EventsQuery
	var err error
	if eq.From, err = queryInt(q.Get("from"), "from"); err != nil {
		return err
	}
	if eq.To, err = queryInt(q.Get("to"), "to"); err != nil {
		return err
	}
	if lim, err := queryInt(q.Get("limit"), "limit"); err != nil {
		return err
	} else if lim != nil {
		if *lim < 0 || *lim > 1<<31-1 {
			return &ledger.InvalidArgumentError{Field: "limit", Reason: "must be 0 to 2^31-1"}
		}
		eq.Limit = int(*lim)
	}
	eq.PageToken = q.Get("page_token")
	if eq.Stale, err = consistency(q.Get("consistency")); err != nil {
		return err
	}
	user := r.PathValue("user")
	res, err := s.svc.Events(r.Context(), user, eq)
	if err != nil {
		return err
	}
	out := eventsReply{User: user, NextPageToken: res.NextPageToken, Events: make([]ledgerjson.Event, len(res.Events))}
	for i, e := range res.Events {
		// ledgerjson writes only the fields of the event's kind.
		out.Events[i] = ledgerjson.Event{Kind: e.Kind.String(), ID: e.ID, Timestamp: e.Timestamp, Amount: e.Amount,
			ExpiresAt: expiry(e.ExpiresAt), Priority: e.Priority, Allocations: allocations(e.Allocations), BalanceAfter: e.BalanceAfter}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func allocations(as []ledger.Allocation) []ledgerjson.Allocation {
	out := make([]ledgerjson.Allocation, len(as))
	for i, a := range as {
		out[i] = ledgerjson.Allocation(a)
	}
	return out
}

func expiry(t int64) *int64 {
	if t == ledger.Never {
		return nil
	}
	return &t
}

// decode reads a JSON object strictly: bounded size, no unknown fields, no
// trailing data, numbers kept as text so that integers are checked exactly.
func (s *server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	data, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &ledger.InvalidArgumentError{Field: "body", Reason: fmt.Sprintf("larger than %d bytes", s.opts.MaxBodyBytes)}
		}
		return &ledger.InvalidArgumentError{Field: "body", Reason: "could not be read"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		field := "body"
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			field = te.Field
		}
		return &ledger.InvalidArgumentError{Field: field, Reason: "not a valid JSON object of this request: " + err.Error()}
	}
	if dec.More() {
		return &ledger.InvalidArgumentError{Field: "body", Reason: "trailing data after the JSON object"}
	}
	return nil
}

func required(field string, s *string) (string, error) {
	if s == nil {
		return "", &ledger.InvalidArgumentError{Field: field, Reason: "is required"}
	}
	return *s, nil
}

func integer(field string, n *jsonInt, need bool) (int64, error) {
	if n == nil {
		if need {
			return 0, &ledger.InvalidArgumentError{Field: field, Reason: "is required"}
		}
		return 0, nil
	}
	v, err := strconv.ParseInt(string(*n), 10, 64)
	if err != nil {
		return 0, &ledger.InvalidArgumentError{Field: field, Reason: fmt.Sprintf("must be an integer that fits in 64 bits, got %s", *n)}
	}
	return v, nil
}

func queryInt(s, field string) (*int64, error) {
	if s == "" {
		return nil, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return nil, &ledger.InvalidArgumentError{Field: field, Reason: fmt.Sprintf("must be an integer (Unix milliseconds), got %q", s)}
	}
	return &v, nil
}

func consistency(s string) (stale bool, err error) {
	switch s {
	case "", "linearizable":
		return false, nil
	case "stale":
		return true, nil
	}
	return false, &ledger.InvalidArgumentError{Field: "consistency", Reason: "must be linearizable or stale"}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

type errorBody struct {
	Error errorJSON `json:"error"`
}

type errorJSON struct {
	Code        string `json:"code"`
	Message     string `json:"message"`
	Field       string `json:"field,omitempty"`
	ID          string `json:"id,omitempty"`
	DeductionID string `json:"deduction_id,omitempty"`
	At          *int64 `json:"at,omitempty"`
	Shortfall   *int64 `json:"shortfall,omitempty"`
}

// writeError reports err with the contract's status and code, and returns
// the outcome label for metrics.
func writeError(w http.ResponseWriter, err error) string {
	e := errorJSON{Message: err.Error()}
	var status int
	switch service.ClassOf(err) {
	case service.ClassInvalid:
		status, e.Code = http.StatusBadRequest, "invalid_argument"
		var ia *ledger.InvalidArgumentError
		if errors.As(err, &ia) {
			e.Field = ia.Field
		}
	case service.ClassConflict:
		status, e.Code = http.StatusConflict, "conflict"
		var ce *ledger.ConflictError
		if errors.As(err, &ce) {
			e.ID = ce.ID
		}
	case service.ClassInsufficient:
		status, e.Code = http.StatusUnprocessableEntity, "insufficient_credits"
		var ie *ledger.InsufficientCreditsError
		if errors.As(err, &ie) {
			e.DeductionID, e.At, e.Shortfall = ie.DeductionID, &ie.At, &ie.Shortfall
		}
	case service.ClassCanceled:
		// The client is gone; nobody reads this.
		status, e.Code = 499, "canceled"
	default:
		// Unavailable, deadlines and anything unexpected: retrying with the
		// same ids is safe, so tell the client to.
		status, e.Code = http.StatusServiceUnavailable, "unavailable"
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, errorBody{Error: e})
	return e.Code
}

type metrics struct {
	latency *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ration_request_duration_seconds",
		Help:    "API request latency by transport, operation and outcome.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	}, []string{"transport", "op", "outcome"})}
	if reg != nil {
		if err := reg.Register(m.latency); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				m.latency = are.ExistingCollector.(*prometheus.HistogramVec)
			}
		}
	}
	return m
}

func (s *server) instrument(op string, h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		outcome := "ok"
		if err := h(w, r); err != nil {
			outcome = writeError(w, err)
			if outcome == "unavailable" {
				s.opts.Logger.Debug("request failed", "op", op, "err", err)
			}
		}
		s.met.latency.WithLabelValues("http", op, outcome).Observe(time.Since(start).Seconds())
	}
}
