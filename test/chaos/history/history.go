// Package history records what the chaos workload's clients asked and what
// they were told, in the form the checkers read: one Op per call, with the
// wall-clock instants the call started and returned.
//
// The record is the single source of truth of a run. It is written as JSON
// lines so that a failed run can be checked again, or by hand, later.
package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/ration/ration/api/ledgerjson"
)

// Kind is what an Op asked for.
type Kind string

const (
	Grant   Kind = "grant"
	Deduct  Kind = "deduct"
	Balance Kind = "balance"
)

// Outcome is what the client learned. Only OutcomeUnknown leaves it open
// whether a write was applied; every other outcome is definite.
type Outcome string

const (
	// OK: applied now, or (Duplicate set) applied earlier with these fields.
	OK Outcome = "ok"
	// Refused: insufficient credits; nothing recorded, the id stays free.
	Refused Outcome = "refused"
	// Conflict: the id was already used with other fields.
	Conflict Outcome = "conflict"
	// Invalid: the server refused a field.
	Invalid Outcome = "invalid"
	// Failed: definitely not applied (e.g. unavailable before the request
	// was sent anywhere). Reads that failed are Failed too.
	Failed Outcome = "failed"
	// Unknown: a write may or may not have been applied (timeout after
	// sending). The checkers treat its return as open-ended.
	Unknown Outcome = "unknown"
)

// Allocation is what one grant paid towards a deduction, in the HTTP
// API's shape.
type Allocation = ledgerjson.Allocation

// GrantBalance is one grant's share of a balance reply, in the HTTP API's
// shape.
type GrantBalance = ledgerjson.GrantBalance

// Insufficient is what a refused deduction's error said: the deduction of
// the history that could not have been met, and by how much.
type Insufficient struct {
	DeductionID string `json:"deduction_id"`
	At          int64  `json:"at"`
	Shortfall   int64  `json:"shortfall"`
}

// Op is one client call and its outcome.
type Op struct {
	// Seq numbers ops in the order they were recorded (return order).
	Seq    int64  `json:"seq"`
	Client int    `json:"client"`
	User   string `json:"user"`
	Kind   Kind   `json:"kind"`

	// Writes.
	ID        string `json:"id,omitempty"`
	Amount    int64  `json:"amount,omitempty"`
	Timestamp int64  `json:"timestamp,omitempty"`
	ExpiresAt *int64 `json:"expires_at,omitempty"`
	Priority  int32  `json:"priority,omitempty"`
	// Resend marks a write sent again by the workload after it had
	// already been answered (a client that lost the reply would do this).
	Resend bool `json:"resend,omitempty"`

	// Reads: At is the requested instant; nil asks for the server's now,
	// and the reply's instant is in Result.At.
	At *int64 `json:"at,omitempty"`

	// Invoke and Return are Unix nanoseconds of the harness clock. Return
	// is 0 for OutcomeUnknown.
	Invoke int64 `json:"invoke"`
	Return int64 `json:"return"`

	Outcome   Outcome `json:"outcome"`
	Duplicate bool    `json:"duplicate,omitempty"`
	// Error is the client's error text, for people.
	Error string `json:"error,omitempty"`
	// Node is the endpoint that answered, when known.
	Node string `json:"node,omitempty"`
	// Attempts is how many requests the client sent for this call, retries
	// included; 0 when not recorded. A write answered as a duplicate after
	// one attempt must have been applied by an earlier call.
	Attempts int `json:"attempts,omitempty"`

	Allocations []Allocation `json:"allocations,omitempty"` // deductions
	// Insufficient details a Refused deduction, when the server said.
	Insufficient *Insufficient `json:"insufficient,omitempty"`
	// Balance replies.
	ResultAt *int64         `json:"result_at,omitempty"`
	Balance  int64          `json:"balance,omitempty"`
	Grants   []GrantBalance `json:"grants,omitempty"`
}

// Recorder collects ops from concurrent clients and streams them to a
// JSON-lines file as they complete, so a crash of the harness keeps what
// was recorded.
type Recorder struct {
	mu  sync.Mutex
	ops []Op
	w   *bufio.Writer
	f   *os.File
	seq int64
}

// NewRecorder records into memory and, if path is not empty, into path.
func NewRecorder(path string) (*Recorder, error) {
	r := &Recorder{}
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			return nil, fmt.Errorf("history: %w", err)
		}
		r.f, r.w = f, bufio.NewWriter(f)
	}
	return r, nil
}

// Add records op, assigning its Seq, and returns the recorded copy.
func (r *Recorder) Add(op Op) Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	op.Seq = r.seq
	r.ops = append(r.ops, op)
	if r.w != nil {
		b, _ := json.Marshal(op)
		r.w.Write(b)
		r.w.WriteByte('\n')
	}
	return op
}

// Ops returns a copy of everything recorded so far.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// Close flushes and closes the file.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	if err := r.w.Flush(); err != nil {
		r.f.Close()
		return err
	}
	return r.f.Close()
}

// Read loads a JSON-lines history.
func Read(rd io.Reader) ([]Op, error) {
	var ops []Op
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for n := 1; sc.Scan(); n++ {
		var op Op
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			return nil, fmt.Errorf("history: line %d: %w", n, err)
		}
		ops = append(ops, op)
	}
	return ops, sc.Err()
}
