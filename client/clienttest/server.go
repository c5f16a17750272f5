// Package clienttest is an in-process fake of a Ration node for tests of
// code that uses package client (or the generated gRPC client directly).
//
// Server implements the Ledger and Admin services with real ledgers from
// package ledger, one per user, behind one mutex: the semantics are the
// real ones, only the cluster (raft, shards, forwarding) is missing. It can
// inject the faults a client must survive: calls refused with UNAVAILABLE,
// a user whose shard has no leader, and writes applied whose reply never
// arrives.
package clienttest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ration/ration/api/ledgerproto"
	"github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/ledger"
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// NodeID is the node id Status reports. Default "fake-1".
	NodeID string
	// Now is the server clock in Unix ms, used by GetBalance without
	// `at`. Default: the wall clock.
	Now func() int64
}

// Server is the fake node. Its methods are safe for concurrent use.
type Server struct {
	rationv1.UnimplementedLedgerServer
	rationv1.UnimplementedAdminServer

	nodeID string
	now    func() int64

	mu      sync.Mutex
	ledgers map[string]*ledger.Ledger
	applied uint64 // accepted operations, all users: the fake's "raft index"
	calls   map[string]int
	// Pending faults, consumed by the calls they hit.
	failNext   int
	failCode   codes.Code
	dropNext   int
	userFaults map[string]int
	// editStatus, if set, changes every Status response (SetStatus).
	editStatus func(*rationv1.StatusResponse)

	gs   *grpc.Server
	lis  net.Listener
	done chan struct{}
}

// NewServer returns a Server that is not serving yet: Register it on a
// grpc.Server of your own, or use Serve or Start.
func NewServer(opts Options) *Server {
	s := &Server{
		nodeID:     opts.NodeID,
		now:        opts.Now,
		ledgers:    map[string]*ledger.Ledger{},
		calls:      map[string]int{},
		userFaults: map[string]int{},
	}
	if s.nodeID == "" {
		s.nodeID = "fake-1"
	}
	if s.now == nil {
		s.now = func() int64 { return time.Now().UnixMilli() }
	}
	return s
}

// Start serves a new Server on a 127.0.0.1 port until the test ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("clienttest: listen: %v", err)
	}
	s := NewServer(opts)
	s.serveInBackground(tb, lis)
	tb.Cleanup(s.Stop)
	return s
}

// Restart serves again, after Stop, on the address the server had, with
// its ledgers intact: a node coming back after a crash.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	lis, err := net.Listen("tcp", s.Addr())
	if err != nil {
		tb.Fatalf("clienttest: restart on %s: %v", s.Addr(), err)
	}
	s.serveInBackground(tb, lis)
}

func (s *Server) serveInBackground(tb testing.TB, lis net.Listener) {
	tb.Helper()
	gs, done, err := s.prepare(lis)
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		defer close(done)
		// Serve returns nil after Stop; any other error shows up in the
		// test as failing calls.
		_ = gs.Serve(lis)
	}()
}

// Serve serves the Ledger and Admin services on lis until Stop.
func (s *Server) Serve(lis net.Listener) error {
	gs, done, err := s.prepare(lis)
	if err != nil {
		return err
	}
	defer close(done)
	return gs.Serve(lis)
}

// prepare sets up the grpc.Server before serving, so that a Stop right
// after Start finds it.
func (s *Server) prepare(lis net.Listener) (*grpc.Server, chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gs != nil {
		return nil, nil, errors.New("clienttest: already serving")
	}
	s.gs = grpc.NewServer()
	s.lis = lis
	s.done = make(chan struct{})
	s.Register(s.gs)
	return s.gs, s.done, nil
}

// Register adds the services, with fault injection, to gs. Use it instead
// of Serve to serve the fake on a listener of your own (bufconn, TLS).
func (s *Server) Register(gs *grpc.Server) {
	rationv1.RegisterLedgerServer(gs, &faulty{s: s})
	rationv1.RegisterAdminServer(gs, &faultyAdmin{s: s})
}

// Addr is the host:port Start or Serve listens on.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return ""
	}
	return s.lis.Addr().String()
}

// Stop closes the listener and every connection; in-flight calls fail.
// The ledgers survive, so a test can Stop one node and check the state.
func (s *Server) Stop() {
	s.mu.Lock()
	gs, done := s.gs, s.done
	s.mu.Unlock()
	if gs == nil {
		return
	}
	gs.Stop()
	<-done
	s.mu.Lock()
	s.gs = nil
	s.mu.Unlock()
}

// FailNext makes the next n calls, of any method, fail with UNAVAILABLE
// without being applied, as a node without a leader does.
func (s *Server) FailNext(n int) { s.FailNextWith(n, codes.Unavailable) }

// FailNextWith is FailNext with another status code.
func (s *Server) FailNextWith(n int, code codes.Code) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext, s.failCode = n, code
}

// DropNextReplies makes the next n calls run normally, writes included,
// and then lose their reply: the call blocks until its context ends, so
// the client sees its deadline expire with the write applied.
func (s *Server) DropNextReplies(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropNext = n
}

// FailUser makes the next n calls that write for user fail that user's
// writes with UNAVAILABLE, as if only the user's shard had no leader: a
// single Grant or Deduct fails; in a Batch every operation of the user
// fails and the others are applied.
func (s *Server) FailUser(user string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.userFaults[user] = n
}

// SetStatus makes edit change every Status response before it is sent,
// so that the fake can describe a cluster it is not: more nodes, shards
// led elsewhere, replicas being moved. edit gets the fake's own answer (one
// node, one shard it leads) and may change or replace any of it; it may
// call the server's methods (Addr). A nil edit restores the fake's own
// answer.
func (s *Server) SetStatus(edit func(*rationv1.StatusResponse)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.editStatus = edit
}

// Calls is how many calls of method ("Grant", "Batch", "Status", ...) the
// server received, failed ones included.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// Version is user's ledger version: its number of accepted operations.
func (s *Server) Version(user string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.ledgers[user]; l != nil {
		return l.Version()
	}
	return 0
}

// Balance reads user's balance at t directly, bypassing faults.
func (s *Server) Balance(user string, t int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.ledgers[user]; l != nil {
		return l.Balance(t)
	}
	return 0
}

// fault is what the interceptor does to one call.
type fault int

const (
	faultNone fault = iota
	faultFail
	faultDrop
)

func (s *Server) enter(method string) (fault, codes.Code) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[method]++
	switch {
	case s.failNext > 0:
		s.failNext--
		return faultFail, s.failCode
	case s.dropNext > 0:
		s.dropNext--
		return faultDrop, codes.OK
	}
	return faultNone, codes.OK
}

// run applies the pending call fault around handler.
func run[Resp any](ctx context.Context, s *Server, method string, handler func() (Resp, error)) (Resp, error) {
	var zero Resp
	f, code := s.enter(method)
	if f == faultFail {
		return zero, status.Errorf(code, "clienttest: injected %s", code)
	}
	resp, err := handler()
	if f == faultDrop {
		<-ctx.Done()
		return zero, status.FromContextError(ctx.Err()).Err()
	}
	return resp, err
}

// faulty wraps the ledger service with the call faults. (An interceptor
// would do as well, but would not survive a caller's own Register.)
type faulty struct {
	rationv1.UnimplementedLedgerServer
	s *Server
}

func (f *faulty) Grant(ctx context.Context, r *rationv1.GrantRequest) (*rationv1.GrantResponse, error) {
	return run(ctx, f.s, "Grant", func() (*rationv1.GrantResponse, error) { return f.s.Grant(ctx, r) })
}

func (f *faulty) Deduct(ctx context.Context, r *rationv1.DeductRequest) (*rationv1.DeductResponse, error) {
	return run(ctx, f.s, "Deduct", func() (*rationv1.DeductResponse, error) { return f.s.Deduct(ctx, r) })
}

func (f *faulty) GetBalance(ctx context.Context, r *rationv1.GetBalanceRequest) (*rationv1.GetBalanceResponse, error) {
	return run(ctx, f.s, "GetBalance", func() (*rationv1.GetBalanceResponse, error) { return f.s.GetBalance(ctx, r) })
}

func (f *faulty) ListEvents(ctx context.Context, r *rationv1.ListEventsRequest) (*rationv1.ListEventsResponse, error) {
	return run(ctx, f.s, "ListEvents", func() (*rationv1.ListEventsResponse, error) { return f.s.ListEvents(ctx, r) })
}

func (f *faulty) Batch(ctx context.Context, r *rationv1.BatchRequest) (*rationv1.BatchResponse, error) {
	return run(ctx, f.s, "Batch", func() (*rationv1.BatchResponse, error) { return f.s.Batch(ctx, r) })
}

func (f *faulty) GetBalances(ctx context.Context, r *rationv1.GetBalancesRequest) (*rationv1.GetBalancesResponse, error) {
	return run(ctx, f.s, "GetBalances", func() (*rationv1.GetBalancesResponse, error) { return f.s.GetBalances(ctx, r) })
}

type faultyAdmin struct {
	rationv1.UnimplementedAdminServer
	s *Server
}

func (f *faultyAdmin) Status(ctx context.Context, r *rationv1.StatusRequest) (*rationv1.StatusResponse, error) {
	return run(ctx, f.s, "Status", func() (*rationv1.StatusResponse, error) { return f.s.Status(ctx, r) })
}

// errUserUnavailable is the injected per-user failure.
var errUserUnavailable = status.Error(codes.Unavailable, "clienttest: injected: shard has no leader")

// takeUserFaults consumes one pending FailUser fault of each of users and
// returns those that fail in this call. s.mu must be held.
func (s *Server) takeUserFaults(users ...string) map[string]bool {
	var down map[string]bool
	for _, u := range users {
		if n := s.userFaults[u]; n > 0 && !down[u] {
			if down == nil {
				down = map[string]bool{}
			}
			s.userFaults[u] = n - 1
			down[u] = true
		}
	}
	return down
}

func validUser(user string) error {
	if !ledger.ValidID(user) {
		return &ledger.InvalidArgumentError{Field: "user", Reason: "must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ -"}
	}
	return nil
}

// grant applies one grant unless its user is down. s.mu must be held.
func (s *Server) grant(r *rationv1.GrantRequest, down map[string]bool) (*rationv1.GrantResponse, error) {
	if err := validUser(r.GetUser()); err != nil {
		return nil, err
	}
	if down[r.GetUser()] {
		return nil, errUserUnavailable
	}
	exp := ledgerproto.LedgerExpiry(r.ExpiresAt)
	l := s.ledgers[r.GetUser()]
	if l == nil {
		l = ledger.New()
	}
	res, err := l.Grant(ledger.Grant{ID: r.GetId(), Amount: r.GetAmount(), Timestamp: r.GetTimestamp(), ExpiresAt: exp, Priority: r.GetPriority()})
	if err != nil {
		return nil, err
	}
	s.ledgers[r.GetUser()] = l
	if !res.Duplicate {
		s.applied++
	}
	return &rationv1.GrantResponse{Duplicate: res.Duplicate, Version: l.Version()}, nil
}

// deduct applies one deduction unless its user is down. s.mu must be held.
func (s *Server) deduct(r *rationv1.DeductRequest, down map[string]bool) (*rationv1.DeductResponse, error) {
	if err := validUser(r.GetUser()); err != nil {
		return nil, err
	}
	if down[r.GetUser()] {
		return nil, errUserUnavailable
	}
	l := s.ledgers[r.GetUser()]
	if l == nil {
		l = ledger.New()
	}
	res, err := l.Deduct(ledger.Deduction{ID: r.GetId(), Amount: r.GetAmount(), Timestamp: r.GetTimestamp()})
	if err != nil {
		return nil, err
	}
	s.ledgers[r.GetUser()] = l
	if !res.Duplicate {
		s.applied++
	}
	// res.Allocations is the ledger's buffer, reused by its next call:
	// copied here.
	return &rationv1.DeductResponse{Duplicate: res.Duplicate, Version: l.Version(), Allocations: ledgerproto.Allocations(res.Allocations)}, nil
}

// Grant implements rationv1.LedgerServer, without faults.
func (s *Server) Grant(_ context.Context, r *rationv1.GrantRequest) (*rationv1.GrantResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp, err := s.grant(r, s.takeUserFaults(r.GetUser()))
	return resp, toStatus(err)
}

// Deduct implements rationv1.LedgerServer, without faults.
func (s *Server) Deduct(_ context.Context, r *rationv1.DeductRequest) (*rationv1.DeductResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp, err := s.deduct(r, s.takeUserFaults(r.GetUser()))
	return resp, toStatus(err)
}

// GetBalance implements rationv1.LedgerServer, without faults.
// Consistency is ignored: the fake has a single, always current replica.
func (s *Server) GetBalance(_ context.Context, r *rationv1.GetBalanceRequest) (*rationv1.GetBalanceResponse, error) {
	if err := validUser(r.GetUser()); err != nil {
		return nil, toStatus(err)
	}
	at := s.now()
	if r.At != nil {
		at = r.GetAt()
	}
	resp := &rationv1.GetBalanceResponse{User: r.GetUser(), At: at}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.ledgers[r.GetUser()]
	if l == nil {
		return resp, nil
	}
	resp.Balance = l.Balance(at)
	resp.Grants = ledgerproto.GrantBalances(l.Breakdown(at))
	return resp, nil
}

// ListEvents implements rationv1.LedgerServer, without faults.
func (s *Server) ListEvents(_ context.Context, r *rationv1.ListEventsRequest) (*rationv1.ListEventsResponse, error) {
	if err := validUser(r.GetUser()); err != nil {
		return nil, toStatus(err)
	}
	limit := int(r.GetLimit())
	switch {
	case limit < 0:
		return nil, toStatus(&ledger.InvalidArgumentError{Field: "limit", Reason: "must not be negative"})
	case limit == 0:
		limit = 100
	case limit > 1000:
		return nil, toStatus(&ledger.InvalidArgumentError{Field: "limit", Reason: "must be at most 1000"})
	}
	from, to := int64(0), int64(math.MaxInt64)
	if r.From != nil {
		from = r.GetFrom()
	}
	if r.To != nil {
		to = r.GetTo()
	}
	cur := cursor{from: r.From, to: r.To, next: from}
	if r.GetPageToken() != "" {
		c, err := parseCursor(r.GetPageToken())
		if err != nil || !samePtr(c.from, r.From) || !samePtr(c.to, r.To) {
			return nil, toStatus(&ledger.InvalidArgumentError{Field: "page_token", Reason: "not a token for this request"})
		}
		cur = c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &rationv1.ListEventsResponse{}
	l := s.ledgers[r.GetUser()]
	if l == nil {
		return resp, nil
	}
	evs, next, skip, more := l.History(cur.next, to, cur.skip, limit)
	resp.Events = ledgerproto.Events(evs)
	if more {
		cur.next, cur.skip = next, skip
		resp.NextPageToken = cur.String()
	}
	return resp, nil
}

// cursor is the fake's page token: the request's range, to refuse a token
// reused with another one, and where the next page starts.
type cursor struct {
	from, to *int64
	next     int64
	skip     int
}

func (c cursor) String() string {
	opt := func(p *int64) string {
		if p == nil {
			return "-"
		}
		return strconv.FormatInt(*p, 10)
	}
	raw := fmt.Sprintf("%s,%s,%d,%d", opt(c.from), opt(c.to), c.next, c.skip)
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func parseCursor(tok string) (cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return cursor{}, err
	}
	parts := strings.Split(string(raw), ",")
	if len(parts) != 4 {
		return cursor{}, errors.New("bad token")
	}
	opt := func(s string) (*int64, error) {
		if s == "-" {
			return nil, nil
		}
		v, err := strconv.ParseInt(s, 10, 64)
		return &v, err
	}
	var c cursor
	if c.from, err = opt(parts[0]); err != nil {
		return cursor{}, err
	}
	if c.to, err = opt(parts[1]); err != nil {
		return cursor{}, err
	}
	if c.next, err = strconv.ParseInt(parts[2], 10, 64); err != nil {
		return cursor{}, err
	}
	if c.skip, err = strconv.Atoi(parts[3]); err != nil {
		return cursor{}, err
	}
	return c, nil
}

func samePtr(a, b *int64) bool {
	return (a == nil && b == nil) || (a != nil && b != nil && *a == *b)
}

// Batch implements rationv1.LedgerServer, without call faults (FailUser
// faults apply per operation).
func (s *Server) Batch(_ context.Context, r *rationv1.BatchRequest) (*rationv1.BatchResponse, error) {
	if len(r.GetOperations()) > 1000 {
		return nil, toStatus(&ledger.InvalidArgumentError{Field: "operations", Reason: "more than 1000 operations"})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var users []string
	for _, op := range r.GetOperations() {
		switch v := op.GetOp().(type) {
		case *rationv1.Operation_Grant:
			users = append(users, v.Grant.GetUser())
		case *rationv1.Operation_Deduct:
			users = append(users, v.Deduct.GetUser())
		}
	}
	down := s.takeUserFaults(users...)
	resp := &rationv1.BatchResponse{Results: make([]*rationv1.OperationResult, len(r.GetOperations()))}
	for i, op := range r.GetOperations() {
		var res *rationv1.OperationResult
		switch v := op.GetOp().(type) {
		case *rationv1.Operation_Grant:
			g, err := s.grant(v.Grant, down)
			if err != nil {
				res = opError(err)
			} else {
				res = &rationv1.OperationResult{Result: &rationv1.OperationResult_Grant{Grant: g}}
			}
		case *rationv1.Operation_Deduct:
			d, err := s.deduct(v.Deduct, down)
			if err != nil {
				res = opError(err)
			} else {
				res = &rationv1.OperationResult{Result: &rationv1.OperationResult_Deduct{Deduct: d}}
			}
		default:
			res = opError(&ledger.InvalidArgumentError{Field: "op", Reason: "neither grant nor deduct is set"})
		}
		resp.Results[i] = res
	}
	return resp, nil
}

// Status implements rationv1.AdminServer, without faults: a one-node
// cluster with one shard that this node leads, as a single node without
// clustering reports it (no target), unless SetStatus changes it.
func (s *Server) Status(context.Context, *rationv1.StatusRequest) (*rationv1.StatusResponse, error) {
	addr := s.Addr()
	s.mu.Lock()
	resp := &rationv1.StatusResponse{
		NodeId: s.nodeID,
		Nodes:  []*rationv1.Node{{Id: s.nodeID, GrpcAddr: addr, State: "alive"}},
		Shards: []*rationv1.Shard{{
			Id: 0, Leader: s.nodeID, Replicas: []string{s.nodeID}, Voters: []string{s.nodeID},
			AppliedIndex: s.applied, CommitIndex: s.applied, State: "Leader", Users: uint64(len(s.ledgers)),
		}},
	}
	edit := s.editStatus
	s.mu.Unlock()
	// Outside the lock: edit may call the server's methods.
	if edit != nil {
		edit(resp)
	}
	return resp, nil
}

// toStatus maps ledger errors to the API's statuses and details.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var (
		inv  *ledger.InvalidArgumentError
		conf *ledger.ConflictError
		ins  *ledger.InsufficientCreditsError
	)
	switch {
	case errors.As(err, &inv):
		st, derr := status.New(codes.InvalidArgument, inv.Error()).
			WithDetails(&rationv1.InvalidField{Field: inv.Field, Reason: inv.Reason})
		if derr != nil {
			return status.Error(codes.Internal, derr.Error())
		}
		return st.Err()
	case errors.As(err, &conf):
		return status.Error(codes.AlreadyExists, conf.Error())
	case errors.As(err, &ins):
		st, derr := status.New(codes.FailedPrecondition, ins.Error()).
			WithDetails(&rationv1.InsufficientCredits{DeductionId: ins.DeductionID, At: ins.At, Shortfall: ins.Shortfall})
		if derr != nil {
			return status.Error(codes.Internal, derr.Error())
		}
		return st.Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

// opError is toStatus for a batch operation.
// GetBalances answers each read as GetBalance does.
func (s *Server) GetBalances(ctx context.Context, r *rationv1.GetBalancesRequest) (*rationv1.GetBalancesResponse, error) {
	if len(r.GetRequests()) > 1000 {
		return nil, toStatus(&ledger.InvalidArgumentError{Field: "requests", Reason: "more than 1000 requests"})
	}
	resp := &rationv1.GetBalancesResponse{Results: make([]*rationv1.BalanceResult, len(r.GetRequests()))}
	for i, q := range r.GetRequests() {
		b, err := s.GetBalance(ctx, q)
		if verr := validUser(q.GetUser()); verr != nil {
			err = verr // the typed error, which carries the field
		}
		if err != nil {
			resp.Results[i] = &rationv1.BalanceResult{Result: &rationv1.BalanceResult_Error{Error: errorOf(err)}}
			continue
		}
		resp.Results[i] = &rationv1.BalanceResult{Result: &rationv1.BalanceResult_Balance{Balance: b}}
	}
	return resp, nil
}

func opError(err error) *rationv1.OperationResult {
	return &rationv1.OperationResult{Result: &rationv1.OperationResult_Error{Error: errorOf(err)}}
}

// errorOf is the inline Error of one operation or read that failed.
func errorOf(err error) *rationv1.Error {
	pe := &rationv1.Error{Message: err.Error()}
	var (
		inv *ledger.InvalidArgumentError
		ins *ledger.InsufficientCreditsError
	)
	switch {
	case errors.As(err, &inv):
		pe.Code, pe.Field = "INVALID_ARGUMENT", inv.Field
	case errors.Is(err, ledger.ErrConflict):
		pe.Code = "ALREADY_EXISTS"
	case errors.As(err, &ins):
		pe.Code = "FAILED_PRECONDITION"
		pe.Insufficient = &rationv1.InsufficientCredits{DeductionId: ins.DeductionID, At: ins.At, Shortfall: ins.Shortfall}
	default:
		pe.Code = codeName(status.Code(err))
	}
	return pe
}

// codeName is the canonical upper-snake name of c, as google.rpc.Code
// spells it (codes.Code.String is CamelCase).
func codeName(c codes.Code) string {
	names := [...]string{
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
		"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
		"UNAUTHENTICATED",
	}
	if int(c) < len(names) {
		return names[c]
	}
	return "UNKNOWN"
}
