// Package service is the API of Ration independent of transport: the gRPC
// and HTTP servers are thin adapters over it. It validates requests, fills
// in defaults (a missing "at" is the server's now), pages histories with
// opaque tokens, runs batches, and sorts errors into the classes both
// transports report.
package service

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/ledger"
)

// Backend serves users' ledgers: the actor directory.
type Backend interface {
	Grant(ctx context.Context, user string, g ledger.Grant) (actors.WriteResult, error)
	Deduct(ctx context.Context, user string, d ledger.Deduction) (actors.WriteResult, error)
	Balance(ctx context.Context, user string, at int64, stale bool) (actors.BalanceResult, error)
	History(ctx context.Context, user string, from, to int64, skip, limit int, stale bool) (actors.Page, error)
	// Batch runs ops, each as if sent alone, and returns one result per
	// op; ops of one user apply in the order given. Each op has a valid
	// user and exactly one of Grant and Deduction.
	Batch(ctx context.Context, ops []BatchOp) []BatchResult
}

// Paging and batch limits.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
	MaxBatch     = 1000
)

// ErrUnavailable marks a failure the caller should retry, with the same
// ids: no leader, leadership moving, shutting down, outcome unknown.
var ErrUnavailable = errors.New("unavailable")

// Unavailable marks err as ErrUnavailable without saying so in its text:
// the layer that reports the failure (the router, ClassOf's callers) names
// the class once, so inner causes do not each end in ": unavailable".
func Unavailable(err error) error { return unavailableError{err} }

type unavailableError struct{ err error }

func (e unavailableError) Error() string   { return e.err.Error() }
func (e unavailableError) Unwrap() []error { return []error{e.err, ErrUnavailable} }

// Service is the API.
type Service struct {
	b   Backend
	now func() time.Time
	// defaultDeadline bounds a request that came without a deadline;
	// maxDeadline cuts a longer one (WithDeadlines). 0: no bound.
	defaultDeadline, maxDeadline time.Duration
}

// WithDeadlines bounds every request: one without a deadline gets def, one
// with a later deadline than max from now is cut to it. A request must end
// while its caller still waits for it: a shard with no leader then answers
// unavailable within the caller's deadline, instead of after the node's
// own retries, and no caller holds a request open for hours. It returns s.
func (s *Service) WithDeadlines(def, max time.Duration) *Service {
	s.defaultDeadline, s.maxDeadline = def, max
	return s
}

// bound applies WithDeadlines' bounds to ctx.
func (s *Service) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	switch {
	case !ok && s.defaultDeadline > 0:
		return context.WithTimeout(ctx, s.defaultDeadline)
	case ok && s.maxDeadline > 0 && time.Until(dl) > s.maxDeadline:
		return context.WithTimeout(ctx, s.maxDeadline)
	}
	return ctx, func() {}
}

// New returns the API over b. now is the clock for requests that leave
// "at" out; it is only ever read here, never inside the replicated state.
func New(b Backend, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{b: b, now: now}
}

// Now is the server's current time in Unix milliseconds.
func (s *Service) Now() int64 { return s.now().UnixMilli() }

func checkUser(user string) error {
	if !ledger.ValidID(user) {
		return &ledger.InvalidArgumentError{Field: "user", Reason: "must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ -"}
	}
	return nil
}

// Grant adds credits.
func (s *Service) Grant(ctx context.Context, user string, g ledger.Grant) (actors.WriteResult, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := checkUser(user); err != nil {
		return actors.WriteResult{}, err
	}
	r, err := s.b.Grant(ctx, user, g)
	return r, classify(err)
}

// Deduct consumes credits.
func (s *Service) Deduct(ctx context.Context, user string, d ledger.Deduction) (actors.WriteResult, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := checkUser(user); err != nil {
		return actors.WriteResult{}, err
	}
	r, err := s.b.Deduct(ctx, user, d)
	return r, classify(err)
}

// BalanceReply is a balance with the timestamp it is for.
type BalanceReply struct {
	At int64
	actors.BalanceResult
}

// Balance reads the balance at *at, or now if at is nil.
func (s *Service) Balance(ctx context.Context, user string, at *int64, stale bool) (BalanceReply, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := checkUser(user); err != nil {
		return BalanceReply{}, err
	}
	if err := notNegative("at", at); err != nil {
		return BalanceReply{}, err
	}
	t := s.Now()
	if at != nil {
		t = *at
	}
	r, err := s.b.Balance(ctx, user, t, stale)
	return BalanceReply{At: t, BalanceResult: r}, classify(err)
}

// EventsQuery selects a page of history. From is inclusive, To exclusive;
// nil means unbounded. Limit 0 means DefaultLimit; above MaxLimit it is
// refused, as a negative one is: a caller that asked for more than it can
// get should hear so, not page through less than it thinks.
type EventsQuery struct {
	From, To  *int64
	Limit     int
	PageToken string
	Stale     bool
}

// EventsReply is a page; NextPageToken is empty on the last page.
type EventsReply struct {
	Events        []ledger.Event
	NextPageToken string
}

// Events reads a page of a user's history.
func (s *Service) Events(ctx context.Context, user string, q EventsQuery) (EventsReply, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := checkUser(user); err != nil {
		return EventsReply{}, err
	}
	from, to := int64(math.MinInt64), int64(math.MaxInt64)
	if q.From != nil {
		from = *q.From
	}
	if q.To != nil {
		to = *q.To
	}
	switch {
	case q.Limit < 0:
		return EventsReply{}, &ledger.InvalidArgumentError{Field: "limit", Reason: "must not be negative"}
	case q.Limit == 0:
		q.Limit = DefaultLimit
	case q.Limit > MaxLimit:
		return EventsReply{}, &ledger.InvalidArgumentError{Field: "limit", Reason: fmt.Sprintf("must be at most %d", MaxLimit)}
	}
	if err := notNegative("from", q.From); err != nil {
		return EventsReply{}, err
	}
	if err := notNegative("to", q.To); err != nil {
		return EventsReply{}, err
	}
	start, skip := from, 0
	if q.PageToken != "" {
		var err error
		if start, skip, err = decodeToken(q.PageToken, user, from, to); err != nil {
			return EventsReply{}, err
		}
	}
	p, err := s.b.History(ctx, user, start, to, skip, q.Limit, q.Stale)
	if err != nil {
		return EventsReply{}, classify(err)
	}
	r := EventsReply{Events: p.Events}
	if p.More {
		r.NextPageToken = encodeToken(user, from, to, p.Next, p.NextSkip)
	}
	return r, nil
}

// Page tokens are opaque to callers: a version byte, where the next page
// starts, and a hash of the query they belong to, so that a token used with
// another user or range is refused instead of silently misread.
const tokenVersion = 1

func queryHash(user string, from, to int64) uint32 {
	h := fnv.New32a()
	h.Write([]byte(user))
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], uint64(from))
	binary.LittleEndian.PutUint64(b[8:], uint64(to))
	h.Write(b[:])
	return h.Sum32()
}

// PageToken is the token for the page of (user, from, to) that starts
// skip events into timestamp next. Nodes forwarding a history read to
// another node use it and ParsePageToken; callers treat tokens as opaque.
func PageToken(user string, from, to, next int64, skip int) string {
	return encodeToken(user, from, to, next, skip)
}

// ParsePageToken reads a token made by PageToken for the same query.
func ParsePageToken(tok, user string, from, to int64) (next int64, skip int, err error) {
	return decodeToken(tok, user, from, to)
}

func encodeToken(user string, from, to, next int64, skip int) string {
	b := []byte{tokenVersion}
	b = binary.AppendVarint(b, next)
	b = binary.AppendUvarint(b, uint64(skip))
	b = binary.LittleEndian.AppendUint32(b, queryHash(user, from, to))
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(tok, user string, from, to int64) (int64, int, error) {
	bad := &ledger.InvalidArgumentError{Field: "page_token", Reason: "not a token of this query (same user, from and to)"}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 1+4 || b[0] != tokenVersion {
		return 0, 0, bad
	}
	b = b[1:]
	next, n := binary.Varint(b)
	if n <= 0 {
		return 0, 0, bad
	}
	b = b[n:]
	skip, n := binary.Uvarint(b)
	if n <= 0 || skip > math.MaxInt32 || len(b[n:]) != 4 {
		return 0, 0, bad
	}
	if binary.LittleEndian.Uint32(b[n:]) != queryHash(user, from, to) || next < from {
		return 0, 0, bad
	}
	return next, int(skip), nil
}

// BatchOp is one operation of a batch: exactly one of Grant and Deduction.
type BatchOp = actors.BatchOp

// BatchResult is one operation's outcome.
type BatchResult = actors.BatchResult

// Batch runs ops, each as if sent alone (not atomically). Operations of one
// user apply in the order given: one starts only once the ones before it
// have an answer. The backend splits them by shard and proposes each
// shard's part together, parts in parallel. Invalid operations (bad user,
// not exactly one of grant and deduction) fail alone, without reaching the
// backend.
func (s *Service) Batch(ctx context.Context, ops []BatchOp) ([]BatchResult, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if len(ops) > MaxBatch {
		return nil, &ledger.InvalidArgumentError{Field: "operations", Reason: fmt.Sprintf("at most %d per batch, got %d", MaxBatch, len(ops))}
	}
	out := make([]BatchResult, len(ops))
	valid := make([]BatchOp, 0, len(ops))
	idx := make([]int, 0, len(ops))
	for i, op := range ops {
		err := checkUser(op.User)
		if err == nil && (op.Grant == nil) == (op.Deduction == nil) {
			err = &ledger.InvalidArgumentError{Field: "op", Reason: "exactly one of grant and deduct must be set"}
		}
		if err != nil {
			out[i].Err = err
			continue
		}
		valid = append(valid, op)
		idx = append(idx, i)
	}
	if len(valid) > 0 {
		for k, r := range s.b.Batch(ctx, valid) {
			r.Err = classify(r.Err)
			out[idx[k]] = r
		}
	}
	return out, nil
}

// Class is how an error is reported: the same classes over gRPC and HTTP.
type Class int

const (
	ClassOK Class = iota
	ClassInvalid
	ClassConflict
	ClassInsufficient
	ClassUnavailable
	ClassDeadline
	ClassCanceled
	ClassInternal
)

// ClassOf sorts an error returned by the Service.
func ClassOf(err error) Class {
	switch {
	case err == nil:
		return ClassOK
	case errors.Is(err, ledger.ErrInvalidArgument):
		return ClassInvalid
	case errors.Is(err, ledger.ErrConflict):
		return ClassConflict
	case errors.Is(err, ledger.ErrInsufficientCredits):
		return ClassInsufficient
	case errors.Is(err, ErrUnavailable):
		return ClassUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return ClassDeadline
	case errors.Is(err, context.Canceled):
		return ClassCanceled
	}
	return ClassInternal
}

// classify marks backend failures that are not answers (ledger errors) or
// the caller's own deadline as unavailable: with ids on every write a retry
// is always safe, and the outcome of such a failure is not known.
func classify(err error) error {
	if err == nil {
		return nil
	}
	switch ClassOf(err) {
	case ClassInvalid, ClassConflict, ClassInsufficient, ClassDeadline, ClassCanceled, ClassUnavailable:
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// notNegative refuses a negative instant: timestamps are Unix milliseconds
// and writes refuse negative ones, so a read before 0 can only be a
// mistake (a sign error, seconds mixed with a negative offset).
func notNegative(field string, t *int64) error {
	if t != nil && *t < 0 {
		return &ledger.InvalidArgumentError{Field: field, Reason: fmt.Sprintf("must not be negative (Unix milliseconds), got %d", *t)}
	}
	return nil
}
