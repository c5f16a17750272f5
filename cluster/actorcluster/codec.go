package actorcluster

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/api/ledgerproto"
	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/cluster/actorcluster/actorpb"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/service"
)

// The payloads are the public API's own messages, so both sides of a hop
// agree on them for as long as the API is compatible, and the envelope
// never needs a new message type (see DESIGN.md).

// Errors of a hop. Both are retryable: the caller's router tries again,
// with the same ids, until its deadline.
var (
	// ErrNotLeader: the node reached does not lead the user's shard.
	ErrNotLeader = errors.New("actorcluster: not the shard's leader")
	// ErrUnsupported: the node reached does not know the envelope's version
	// or kind, a node of another release.
	ErrUnsupported = errors.New("actorcluster: request not supported by the receiving node")
)

func newRequest(kind actorpb.Kind, user string, payload proto.Message) *actorpb.Request {
	req := &actorpb.Request{Version: actorpb.Version_VERSION_1, Kind: kind, User: user}
	if payload != nil {
		b, err := proto.Marshal(payload)
		if err != nil {
			// Marshalling a well-formed message of generated code does
			// not fail; if it ever does, the receiver refuses the empty
			// payload, which the caller sees as unavailable.
			b = nil
		}
		req.Payload = b
	}
	return req
}

func grantRequest(user string, g ledger.Grant) *actorpb.Request {
	return newRequest(actorpb.Kind_KIND_GRANT, user, grantMessage(user, g))
}

func deductRequest(user string, d ledger.Deduction) *actorpb.Request {
	return newRequest(actorpb.Kind_KIND_DEDUCT, user, deductMessage(user, d))
}

func grantMessage(user string, g ledger.Grant) *rationv1.GrantRequest {
	return &rationv1.GrantRequest{User: user, Id: g.ID, Amount: g.Amount, Timestamp: g.Timestamp, ExpiresAt: ledgerproto.Expiry(g.ExpiresAt), Priority: g.Priority}
}

func deductMessage(user string, d ledger.Deduction) *rationv1.DeductRequest {
	return &rationv1.DeductRequest{User: user, Id: d.ID, Amount: d.Amount, Timestamp: d.Timestamp}
}

func grantOf(r *rationv1.GrantRequest) ledger.Grant {
	return ledger.Grant{ID: r.GetId(), Amount: r.GetAmount(), Timestamp: r.GetTimestamp(), ExpiresAt: ledgerproto.LedgerExpiry(r.ExpiresAt), Priority: r.GetPriority()}
}

func deductionOf(r *rationv1.DeductRequest) ledger.Deduction {
	return ledger.Deduction{ID: r.GetId(), Amount: r.GetAmount(), Timestamp: r.GetTimestamp()}
}

// writeReply is the reply to a grant or deduction (deduct) that ended
// with res or err.
func writeReply(res actors.WriteResult, err error, deduct bool) *actorpb.Reply {
	switch {
	case err != nil:
		return errorReply(err)
	case deduct:
		return payloadReply(&rationv1.DeductResponse{Duplicate: res.Duplicate, Version: res.Version, Allocations: ledgerproto.Allocations(res.Allocations)})
	}
	return payloadReply(&rationv1.GrantResponse{Duplicate: res.Duplicate, Version: res.Version})
}

func consistency(stale bool) rationv1.ReadConsistency {
	if stale {
		return rationv1.ReadConsistency_READ_CONSISTENCY_STALE
	}
	return rationv1.ReadConsistency_READ_CONSISTENCY_LINEARIZABLE
}

func balanceRequest(user string, at int64, stale bool) *actorpb.Request {
	return newRequest(actorpb.Kind_KIND_BALANCE, user, &rationv1.GetBalanceRequest{User: user, At: &at, Consistency: consistency(stale)})
}

// historyRequest carries the page position (from, skip) as a page token
// of the query [from, to), the API's own encoding, which the leader parses
// back with the same code.
func historyRequest(user string, from, to int64, skip, limit int, stale bool) *actorpb.Request {
	r := &rationv1.ListEventsRequest{User: user, From: &from, To: &to, Limit: int32(min(limit, service.MaxLimit)), Consistency: consistency(stale)}
	if skip > 0 {
		r.PageToken = service.PageToken(user, from, to, from, skip)
	}
	return newRequest(actorpb.Kind_KIND_HISTORY, user, r)
}

// replyErr turns a reply's error back into the error the leader's actor
// returned, so that this node reports it exactly as the leader would.
func replyErr(rep *actorpb.Reply) error {
	e := rep.GetError()
	if e == nil {
		return nil
	}
	switch e.GetCode() {
	case actorpb.Code_CODE_NOT_LEADER:
		if rep.GetLeaderHint() != "" {
			return service.Unavailable(fmt.Errorf("%w (it names %s)", ErrNotLeader, rep.GetLeaderHint()))
		}
		return service.Unavailable(ErrNotLeader)
	case actorpb.Code_CODE_INVALID_ARGUMENT:
		return &ledger.InvalidArgumentError{Field: e.GetField(), Reason: e.GetReason()}
	case actorpb.Code_CODE_CONFLICT:
		return &remoteConflict{msg: e.GetMessage()}
	case actorpb.Code_CODE_INSUFFICIENT_CREDITS:
		return &ledger.InsufficientCreditsError{DeductionID: e.GetDeductionId(), At: e.GetAt(), Shortfall: e.GetShortfall()}
	case actorpb.Code_CODE_UNSUPPORTED:
		return service.Unavailable(fmt.Errorf("%w: %s", ErrUnsupported, e.GetMessage()))
	}
	// Unavailable, and the hop's own deadline or cancellation, which is
	// not the caller's: the router decides from its own context whether
	// to try again.
	return fmt.Errorf("%w: %s", service.ErrUnavailable, e.GetMessage())
}

// remoteConflict is an id conflict reported by another node: the message
// already names the id.
type remoteConflict struct{ msg string }

func (e *remoteConflict) Error() string { return e.msg }
func (e *remoteConflict) Unwrap() error { return ledger.ErrConflict }

func decodePayload(rep *actorpb.Reply, m proto.Message) error {
	if err := replyErr(rep); err != nil {
		return err
	}
	if err := proto.Unmarshal(rep.GetPayload(), m); err != nil {
		return fmt.Errorf("%w: leader's reply: %v", service.ErrUnavailable, err)
	}
	return nil
}

func writeResult(rep *actorpb.Reply, deduct bool) (actors.WriteResult, error) {
	if deduct {
		var r rationv1.DeductResponse
		if err := decodePayload(rep, &r); err != nil {
			return actors.WriteResult{}, err
		}
		return actors.WriteResult{Duplicate: r.Duplicate, Version: r.Version, Allocations: ledgerproto.LedgerAllocations(r.Allocations)}, nil
	}
	var r rationv1.GrantResponse
	if err := decodePayload(rep, &r); err != nil {
		return actors.WriteResult{}, err
	}
	return actors.WriteResult{Duplicate: r.Duplicate, Version: r.Version}, nil
}

func balanceResult(rep *actorpb.Reply) (actors.BalanceResult, error) {
	var r rationv1.GetBalanceResponse
	if err := decodePayload(rep, &r); err != nil {
		return actors.BalanceResult{}, err
	}
	out := actors.BalanceResult{Balance: r.Balance}
	for _, g := range r.Grants {
		out.Grants = append(out.Grants, ledgerproto.LedgerGrantBalance(g))
	}
	return out, nil
}

func pageResult(rep *actorpb.Reply, user string, from, to int64) (actors.Page, error) {
	var r rationv1.ListEventsResponse
	if err := decodePayload(rep, &r); err != nil {
		return actors.Page{}, err
	}
	var p actors.Page
	for _, e := range r.Events {
		p.Events = append(p.Events, ledgerproto.LedgerEvent(e))
	}
	if r.NextPageToken != "" {
		next, nextSkip, err := service.ParsePageToken(r.NextPageToken, user, from, to)
		if err != nil {
			return actors.Page{}, fmt.Errorf("%w: leader's page token: %v", service.ErrUnavailable, err)
		}
		p.Next, p.NextSkip, p.More = next, nextSkip, true
	}
	return p, nil
}

// The serving side: API request payloads into the user's operations, and
// their outcomes into replies.

func errorReply(err error) *actorpb.Reply {
	e := &actorpb.Error{Message: err.Error()}
	switch service.ClassOf(err) {
	case service.ClassInvalid:
		e.Code = actorpb.Code_CODE_INVALID_ARGUMENT
		var ia *ledger.InvalidArgumentError
		if errors.As(err, &ia) {
			e.Field, e.Reason = ia.Field, ia.Reason
		}
	case service.ClassConflict:
		e.Code = actorpb.Code_CODE_CONFLICT
	case service.ClassInsufficient:
		e.Code = actorpb.Code_CODE_INSUFFICIENT_CREDITS
		var ie *ledger.InsufficientCreditsError
		if errors.As(err, &ie) {
			e.DeductionId, e.At, e.Shortfall = ie.DeductionID, ie.At, ie.Shortfall
		}
	case service.ClassDeadline:
		e.Code = actorpb.Code_CODE_DEADLINE_EXCEEDED
	case service.ClassCanceled:
		e.Code = actorpb.Code_CODE_CANCELED
	default:
		// Anything else is not an answer: with ids on every write a retry
		// is safe, and its outcome tells.
		e.Code = actorpb.Code_CODE_UNAVAILABLE
	}
	return &actorpb.Reply{Error: e}
}

func codeReply(code actorpb.Code, format string, args ...any) *actorpb.Reply {
	return &actorpb.Reply{Error: &actorpb.Error{Code: code, Message: fmt.Sprintf(format, args...)}}
}

func payloadReply(m proto.Message) *actorpb.Reply {
	b, err := proto.Marshal(m)
	if err != nil {
		return codeReply(actorpb.Code_CODE_UNAVAILABLE, "encoding the reply: %v", err)
	}
	return &actorpb.Reply{Payload: b}
}

// serve runs one request envelope's operation on l. A payload that does
// not decode is refused as unsupported: it came from a release that
// encodes differently.
func serve(ctx context.Context, req *actorpb.Request, l actors.Local) *actorpb.Reply {
	bad := func(err error) *actorpb.Reply {
		return codeReply(actorpb.Code_CODE_UNSUPPORTED, "%s payload: %v", req.GetKind(), err)
	}
	user := req.GetUser()
	switch req.GetKind() {
	case actorpb.Kind_KIND_GRANT:
		var r rationv1.GrantRequest
		if err := proto.Unmarshal(req.GetPayload(), &r); err != nil {
			return bad(err)
		}
		res, err := l.Grant(ctx, grantOf(&r))
		return writeReply(res, err, false)
	case actorpb.Kind_KIND_DEDUCT:
		var r rationv1.DeductRequest
		if err := proto.Unmarshal(req.GetPayload(), &r); err != nil {
			return bad(err)
		}
		res, err := l.Deduct(ctx, deductionOf(&r))
		return writeReply(res, err, true)
	case actorpb.Kind_KIND_BALANCE:
		var r rationv1.GetBalanceRequest
		if err := proto.Unmarshal(req.GetPayload(), &r); err != nil {
			return bad(err)
		}
		if r.At == nil {
			return bad(errors.New("no timestamp"))
		}
		stale := r.GetConsistency() == rationv1.ReadConsistency_READ_CONSISTENCY_STALE
		b, err := l.Balance(ctx, *r.At, stale)
		if err != nil {
			return errorReply(err)
		}
		return payloadReply(&rationv1.GetBalanceResponse{User: user, At: *r.At, Balance: b.Balance, Grants: ledgerproto.GrantBalances(b.Grants)})
	case actorpb.Kind_KIND_HISTORY:
		var r rationv1.ListEventsRequest
		if err := proto.Unmarshal(req.GetPayload(), &r); err != nil {
			return bad(err)
		}
		if r.From == nil || r.To == nil {
			return bad(errors.New("no range"))
		}
		from, to, skip := *r.From, *r.To, 0
		if r.GetPageToken() != "" {
			var err error
			if _, skip, err = service.ParsePageToken(r.GetPageToken(), user, from, to); err != nil {
				return bad(err)
			}
		}
		stale := r.GetConsistency() == rationv1.ReadConsistency_READ_CONSISTENCY_STALE
		p, err := l.History(ctx, from, to, skip, int(r.GetLimit()), stale)
		if err != nil {
			return errorReply(err)
		}
		res := &rationv1.ListEventsResponse{Events: ledgerproto.Events(p.Events)}
		if p.More {
			res.NextPageToken = service.PageToken(user, from, to, p.Next, p.NextSkip)
		}
		return payloadReply(res)
	}
	return codeReply(actorpb.Code_CODE_UNSUPPORTED, "kind %d unknown to this node", req.GetKind())
}
