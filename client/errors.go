package client

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/ration/ration/api/rationv1"
)

// Sentinel errors. Every error a Client method returns for a server
// refusal or an exhausted retry wraps one of them, so callers branch with
// errors.Is and read details with errors.As on the typed errors below.
var (
	// ErrInvalidArgument: a field was refused (*InvalidArgumentError). Do
	// not retry as is.
	ErrInvalidArgument = errors.New("ration: invalid argument")
	// ErrConflict: the operation id is already used by an operation of the
	// same kind for the user with different fields (*ConflictError).
	ErrConflict = errors.New("ration: id conflict")
	// ErrInsufficientCredits: a deduction could not be met
	// (*InsufficientCreditsError). Retrying helps only after more credits
	// are granted.
	ErrInsufficientCredits = errors.New("ration: insufficient credits")
	// ErrUnavailable: no attempt got an answer within the retry budget
	// (*UnavailableError). Retrying later, with the same ids, is safe.
	ErrUnavailable = errors.New("ration: unavailable")
	// ErrOutcomeUnknown: a write may or may not have been applied because
	// an attempt timed out or was cancelled after it was sent
	// (*OutcomeUnknownError). Retrying with the same id is safe and tells:
	// it succeeds with Duplicate set if the first one was applied.
	ErrOutcomeUnknown = errors.New("ration: outcome unknown")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("ration: client closed")
)

// InvalidArgumentError names the request field the server refused.
type InvalidArgumentError struct {
	// Field is the field's name as in the .proto, e.g. "amount",
	// "expires_at", "page_token", "user".
	Field string
	// Reason is for humans; it is not stable.
	Reason string
}

func (e *InvalidArgumentError) Error() string {
	if e.Field == "" {
		return "ration: invalid argument: " + e.Reason
	}
	return fmt.Sprintf("ration: invalid argument: %s: %s", e.Field, e.Reason)
}

// bareReason is a server's message about an invalid argument without what
// servers built on package ledger put before the reason: "invalid
// argument: " and the field, which InvalidArgumentError.Error says itself.
func bareReason(field, msg string) string {
	msg = strings.TrimPrefix(msg, "invalid argument: ")
	if field != "" {
		msg = strings.TrimPrefix(msg, field+": ")
	}
	return msg
}

func (e *InvalidArgumentError) Unwrap() error { return ErrInvalidArgument }

// ConflictError is an id reused with different fields.
type ConflictError struct {
	// Message is the server's description, for humans.
	Message string
}

func (e *ConflictError) Error() string {
	// Servers built on package ledger already say "id conflict: ...".
	if strings.HasPrefix(e.Message, "id conflict") {
		return "ration: " + e.Message
	}
	return "ration: id conflict: " + e.Message
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// InsufficientCreditsError says which deduction of the user's history could
// not be met had the request been accepted. That is usually the refused
// deduction itself, but for a back-dated deduction it can be an already
// accepted later one whose credits the request would have taken.
type InsufficientCreditsError struct {
	DeductionID string // the first deduction that could not be met
	At          int64  // its timestamp, Unix ms
	Shortfall   int64  // credits it would have been short by
}

func (e *InsufficientCreditsError) Error() string {
	return fmt.Sprintf("ration: insufficient credits: deduction %q at %d would be short by %d",
		e.DeductionID, e.At, e.Shortfall)
}

func (e *InsufficientCreditsError) Unwrap() error { return ErrInsufficientCredits }

// UnavailableError is returned when every attempt failed with a transient
// error and the retry budget (or the caller's context) ran out.
type UnavailableError struct {
	Attempts int
	// Err is the last attempt's error (a gRPC status error, or the
	// context's error).
	Err error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("ration: unavailable after %d attempt(s): %s", e.Attempts, causeText(e.Err))
}

// causeText is what an attempt's error says beyond its class: a server's
// status without gRPC's "rpc error: code = Unavailable desc =" and the
// server's own "unavailable: ", which the caller's message already says.
func causeText(err error) string {
	if err == nil {
		return "<nil>"
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return err.Error()
	}
	return strings.TrimPrefix(st.Message(), "unavailable: ")
}

// Is makes errors.Is(err, ErrUnavailable) hold while Unwrap still exposes
// the last attempt's error (for status.Code or context.Canceled checks).
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

func (e *UnavailableError) Unwrap() error { return e.Err }

// prefixed is err under the package's own prefix and what failed:
// "ration: what: ", with err's own "ration: " left out, so that the
// package's name reads once.
type prefixed struct {
	what string
	err  error
}

func (e *prefixed) Error() string {
	return "ration: " + e.what + ": " + strings.TrimPrefix(e.err.Error(), "ration: ")
}

func (e *prefixed) Unwrap() error { return e.err }

// OutcomeUnknownError is returned by a write when at least one attempt may
// have reached the server without its reply reaching the client, and no
// later attempt settled the matter.
type OutcomeUnknownError struct {
	Op       string // "grant", "deduct" or "batch"
	ID       string // the operation id; empty for a batch
	Attempts int
	// Err is the last attempt's error.
	Err error
}

func (e *OutcomeUnknownError) Error() string {
	what := e.Op
	if e.ID != "" {
		what = fmt.Sprintf("%s %q", e.Op, e.ID)
	}
	return fmt.Sprintf("ration: outcome of %s unknown after %d attempt(s), retrying with the same id is safe: %v",
		what, e.Attempts, e.Err)
}

func (e *OutcomeUnknownError) Is(target error) bool { return target == ErrOutcomeUnknown }

func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// fromStatus turns a gRPC error from the server into the package's typed
// errors when there is one for its code; other errors are returned as is so
// that status.Code still works on them.
func fromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.InvalidArgument:
		e := &InvalidArgumentError{Reason: bareReason("", st.Message())}
		for _, d := range st.Details() {
			if f, ok := d.(*rationv1.InvalidField); ok {
				e.Field, e.Reason = f.GetField(), f.GetReason()
			}
		}
		return e
	case codes.AlreadyExists:
		return &ConflictError{Message: st.Message()}
	case codes.FailedPrecondition:
		for _, d := range st.Details() {
			if ic, ok := d.(*rationv1.InsufficientCredits); ok {
				return &InsufficientCreditsError{DeductionID: ic.GetDeductionId(), At: ic.GetAt(), Shortfall: ic.GetShortfall()}
			}
		}
		// A FAILED_PRECONDITION without the detail is not one the API
		// documents; keep the raw status rather than invent details.
		return err
	}
	return err
}

// fromOpError is fromStatus for a batch operation's inline Error.
func fromOpError(pe *rationv1.Error) error {
	c := parseCode(pe.GetCode())
	switch c {
	case codes.InvalidArgument:
		return &InvalidArgumentError{Field: pe.GetField(), Reason: bareReason(pe.GetField(), pe.GetMessage())}
	case codes.AlreadyExists:
		return &ConflictError{Message: pe.GetMessage()}
	case codes.FailedPrecondition:
		if ic := pe.GetInsufficient(); ic != nil {
			return &InsufficientCreditsError{DeductionID: ic.GetDeductionId(), At: ic.GetAt(), Shortfall: ic.GetShortfall()}
		}
	}
	return status.Error(c, pe.GetMessage())
}

// parseCode reads a canonical code name such as "UNAVAILABLE". Unknown
// names become codes.Unknown, which is never retried.
func parseCode(name string) codes.Code {
	var c codes.Code
	if err := c.UnmarshalJSON([]byte(strconv.Quote(name))); err != nil {
		return codes.Unknown
	}
	return c
}

// opStatus is the status error that the single call of a batch operation
// would have failed with: its code, message and detail, so that the
// retries and the mapping of single calls apply unchanged.
func opStatus(pe *rationv1.Error) error {
	st := status.New(parseCode(pe.GetCode()), pe.GetMessage())
	var detail protoadapt.MessageV1
	switch {
	case pe.GetInsufficient() != nil:
		detail = pe.GetInsufficient()
	case pe.GetField() != "":
		detail = &rationv1.InvalidField{Field: pe.GetField(), Reason: bareReason(pe.GetField(), pe.GetMessage())}
	}
	if detail != nil {
		if withDetail, err := st.WithDetails(detail); err == nil {
			st = withDetail
		}
	}
	return st.Err()
}

// ErrTLS reports a failed TLS handshake with a node: no client
// certificate where the node requires one, one its CA did not sign, an
// expired one, a server certificate this client does not trust. Sending
// again cannot help, so it is never retried.
var ErrTLS = errors.New("TLS handshake failed")

// tlsFailure reports whether an attempt failed on a certificate in the TLS
// handshake. gRPC reports that as UNAVAILABLE, like a node that is down,
// and says which in the message only: a crypto/tls alert or x509 error.
// A handshake cut short (EOF, a reset, its deadline: "authentication
// handshake failed: EOF") is a node or network problem, and is retried.
func tlsFailure(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	m := st.Message()
	return strings.Contains(m, "tls: ") || strings.Contains(m, "x509: ")
}

// attemptCode is an attempt's status code for the retry decision, with a
// TLS handshake failure counted as UNAUTHENTICATED: a client without the
// right certificate must hear so at once, not after its retry budget.
func attemptCode(err error) codes.Code {
	if tlsFailure(err) {
		return codes.Unauthenticated
	}
	return status.Code(err)
}
