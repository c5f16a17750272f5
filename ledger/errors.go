package ledger

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the ledger returns wraps exactly one of them,
// so callers map errors to API statuses with errors.Is and read the details
// with errors.As.
var (
	ErrInvalidArgument     = errors.New("invalid argument")
	ErrConflict            = errors.New("id conflict")
	ErrInsufficientCredits = errors.New("insufficient credits")
	ErrCorrupt             = errors.New("corrupt ledger encoding")
)

// InvalidArgumentError names the field that was refused and why.
type InvalidArgumentError struct {
	Field  string
	Reason string
}

func (e *InvalidArgumentError) Error() string {
	return fmt.Sprintf("invalid argument: %s: %s", e.Field, e.Reason)
}

func (e *InvalidArgumentError) Unwrap() error { return ErrInvalidArgument }

func invalid(field, format string, args ...any) error {
	return &InvalidArgumentError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ConflictError reports an id that is already taken by an operation with
// other fields.
type ConflictError struct {
	Kind EventKind // KindGrant or KindDeduction
	ID   string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("id conflict: %s %q already exists with different fields", e.Kind, e.ID)
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// InsufficientCreditsError says which deduction of the history could not be
// met had the operation been accepted. That deduction is the refused one
// itself, or an already accepted later one whose credits it would have taken.
type InsufficientCreditsError struct {
	DeductionID string // the first deduction that could not be met
	At          int64  // its timestamp
	Shortfall   int64  // how much of it could not be met
}

func (e *InsufficientCreditsError) Error() string {
	return fmt.Sprintf("insufficient credits: deduction %q at %d would be short by %d", e.DeductionID, e.At, e.Shortfall)
}

func (e *InsufficientCreditsError) Unwrap() error { return ErrInsufficientCredits }

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}
