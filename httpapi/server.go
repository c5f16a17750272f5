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
	"mime"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
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
	return jsonFallbacks(mux)
}

// jsonFallbacks answers the requests no route takes, 404 and 405, with
// the contract's JSON error body where ServeMux would write plain text.
// Only misses pay for the second lookup of their route.
func jsonFallbacks(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		var allowed []string
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			other := r.Clone(r.Context())
			other.Method = m
			if _, pattern := mux.Handler(other); pattern != "" {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) == 0 {
			writeError(w, &requestError{status: http.StatusNotFound, code: "not_found", msg: "no such path: " + r.URL.Path})
			return
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, &requestError{status: http.StatusMethodNotAllowed, code: "method_not_allowed",
			msg: fmt.Sprintf("%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, strings.Join(allowed, ", "))})
	})
}

type server struct {
	svc  *service.Service
	opts Options
	met  *metrics
}

// The fields each write's body may have.
var (
	grantFields  = []string{"id", "amount", "timestamp", "expires_at", "priority"}
	deductFields = []string{"id", "amount", "timestamp"}
)

type writeReply struct {
	User        string                   `json:"user"`
	ID          string                   `json:"id"`
	Duplicate   bool                     `json:"duplicate"`
	Version     uint64                   `json:"version"`
	Allocations *[]ledgerjson.Allocation `json:"allocations,omitempty"`
}

func (s *server) grant(w http.ResponseWriter, r *http.Request) error {
	b, err := s.object(w, r, grantFields)
	if err != nil {
		return err
	}
	g := ledger.Grant{ExpiresAt: ledger.Never}
	if g.ID, err = text(b, "id"); err != nil {
		return err
	}
	if g.Amount, err = integer(b, "amount"); err != nil {
		return err
	}
	if g.Timestamp, err = integer(b, "timestamp"); err != nil {
		return err
	}
	if present(b, "expires_at") {
		if g.ExpiresAt, err = integer(b, "expires_at"); err != nil {
			return err
		}
		if g.ExpiresAt == ledger.Never {
			return &ledger.InvalidArgumentError{Field: "expires_at", Reason: "too large; leave it out for credits that never expire"}
		}
	}
	if present(b, "priority") {
		p, err := integer(b, "priority")
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
	b, err := s.object(w, r, deductFields)
	if err != nil {
		return err
	}
	var d ledger.Deduction
	if d.ID, err = text(b, "id"); err != nil {
		return err
	}
	if d.Amount, err = integer(b, "amount"); err != nil {
		return err
	}
	if d.Timestamp, err = integer(b, "timestamp"); err != nil {
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

// object reads the body of a write: JSON (by its Content-Type), at most
// MaxBodyBytes, one flat object with each key at most once and only keys
// in fields, and nothing after it. Values stay raw, so that each is
// parsed, and reported, under its own name, and integers exactly.
func (s *server) object(w http.ResponseWriter, r *http.Request, fields []string) (map[string]json.RawMessage, error) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		// Also what keeps a web page from posting here: a browser sends
		// application/json across origins only after a CORS preflight,
		// which this API never grants.
		return nil, &requestError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
			msg: fmt.Sprintf("a write's body must be JSON, sent with Content-Type: application/json (got %q)", r.Header.Get("Content-Type"))}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &requestError{status: http.StatusRequestEntityTooLarge, code: "payload_too_large",
				msg: fmt.Sprintf("the body is larger than %d bytes", s.opts.MaxBodyBytes)}
		}
		return nil, &ledger.InvalidArgumentError{Field: "body", Reason: "could not be read"}
	}
	return flatObject(data, fields)
}

func flatObject(data []byte, fields []string) (map[string]json.RawMessage, error) {
	notObject := func(why string) error {
		return &ledger.InvalidArgumentError{Field: "body", Reason: "not a JSON object: " + why}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, notObject("it must start with {")
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, notObject(err.Error())
		}
		key, ok := tok.(string)
		if !ok {
			return nil, notObject("a key is not a string")
		}
		if _, dup := out[key]; dup {
			return nil, &ledger.InvalidArgumentError{Field: key, Reason: "appears more than once"}
		}
		if !slices.Contains(fields, key) {
			return nil, &ledger.InvalidArgumentError{Field: key, Reason: "unknown field; this request takes " + strings.Join(fields, ", ")}
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, notObject(err.Error())
		}
		out[key] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, notObject(err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &ledger.InvalidArgumentError{Field: "body", Reason: "trailing data after the JSON object"}
	}
	return out, nil
}

// present says whether the body has the field, null counting as absent.
func present(b map[string]json.RawMessage, field string) bool {
	v, ok := b[field]
	return ok && string(v) != "null"
}

func text(b map[string]json.RawMessage, field string) (string, error) {
	if !present(b, field) {
		return "", &ledger.InvalidArgumentError{Field: field, Reason: "is required"}
	}
	var v string
	if err := json.Unmarshal(b[field], &v); err != nil {
		return "", &ledger.InvalidArgumentError{Field: field, Reason: fmt.Sprintf("must be a JSON string, got %s", b[field])}
	}
	return v, nil
}

// integer reads a required JSON integer exactly: no float rounding, no
// exponents, no strings.
func integer(b map[string]json.RawMessage, field string) (int64, error) {
	if !present(b, field) {
		return 0, &ledger.InvalidArgumentError{Field: field, Reason: "is required"}
	}
	raw := string(b[field])
	v, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return 0, &ledger.InvalidArgumentError{Field: field, Reason: fmt.Sprintf("must be a JSON integer that fits in 64 bits, got %s", raw)}
	}
	return v, nil
}

func queryInt(s, field string) (*int64, error) {
	if s == "" {
		return nil, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return nil, &ledger.InvalidArgumentError{Field: field, Reason: fmt.Sprintf("must be an integer, got %q", s)}
	}
	return &v, nil
}

// requestError is a failure of the HTTP request itself, before any
// operation: the transport's own statuses, outside service.ClassOf.
type requestError struct {
	status    int
	code, msg string
}

func (e *requestError) Error() string { return e.msg }

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
	var re *requestError
	if errors.As(err, &re) {
		e.Code = re.code
		writeJSON(w, re.status, errorBody{Error: e})
		return e.Code
	}
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
