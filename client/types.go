package client

import (
	"time"

	"github.com/ration/ration/api/rationv1"
)

// Grant adds Amount credits usable from Timestamp (Unix ms, inclusive)
// until ExpiresAt (exclusive; nil: never). Lower Priority values are drawn
// first. ID is the idempotency key, unique among the user's grants.
type Grant struct {
	ID        string
	Amount    int64
	Timestamp int64
	ExpiresAt *int64
	Priority  int32
}

// GrantResult is the outcome of an accepted grant.
type GrantResult struct {
	// Duplicate is true when this exact grant had already been applied
	// (typically by an earlier attempt whose reply was lost).
	Duplicate bool
	// Version is the user's number of accepted operations after the call.
	Version uint64
}

// Deduction consumes Amount credits at Timestamp (Unix ms). ID is the
// idempotency key, unique among the user's deductions.
type Deduction struct {
	ID        string
	Amount    int64
	Timestamp int64
}

// DeductResult is the outcome of an accepted deduction.
type DeductResult struct {
	Duplicate bool
	// Allocations says which grants paid, in draw order, as of the reply;
	// a later back-dated operation can reshuffle them.
	Allocations []Allocation
	Version     uint64
}

// Allocation is what one grant paid towards one deduction.
type Allocation struct {
	GrantID string
	Amount  int64
}

// BalanceResult is a user's balance at one instant.
type BalanceResult struct {
	User string
	// At is the instant the balance is for: the requested one, or the
	// server's clock when none was given.
	At      int64
	Balance int64
	// Grants are the usable grants with credits left, in draw order; their
	// Remaining values sum to Balance.
	Grants []GrantBalance
}

// GrantBalance is one grant's share of a balance.
type GrantBalance struct {
	ID        string
	Remaining int64
	ExpiresAt *int64 // nil: never
	Priority  int32
	Timestamp int64
}

// EventKind tells history events apart.
type EventKind int

const (
	EventUnknown EventKind = iota
	EventGrant
	EventDeduction
	EventExpiration
)

func (k EventKind) String() string {
	switch k {
	case EventGrant:
		return "grant"
	case EventDeduction:
		return "deduction"
	case EventExpiration:
		return "expiration"
	}
	return "unknown"
}

// Event is one entry of a user's history.
type Event struct {
	Kind EventKind
	// ID is the grant's id for grants and expirations, the deduction's id
	// for deductions.
	ID        string
	Timestamp int64
	// Amount is what was granted, deducted, or forfeited by an expiration
	// (for one not yet reached: what it would forfeit given the history so
	// far).
	Amount       int64
	ExpiresAt    *int64 // grants only; nil: never
	Priority     int32  // grants only
	Allocations  []Allocation
	BalanceAfter int64
}

// EventsQuery selects a page of history. From is inclusive and To
// exclusive; nil means unbounded. Limit 0 is the server default (100).
type EventsQuery struct {
	From      *int64
	To        *int64
	Limit     int32
	PageToken string
}

// EventsPage is one page of history. NextPageToken is empty on the last
// page.
type EventsPage struct {
	Events        []Event
	NextPageToken string
}

// Op is one write of a Batch: exactly one of Grant and Deduct is set.
type Op struct {
	User   string
	Grant  *Grant
	Deduct *Deduction
}

// GrantOp and DeductOp build batch operations.
func GrantOp(user string, g Grant) Op      { return Op{User: user, Grant: &g} }
func DeductOp(user string, d Deduction) Op { return Op{User: user, Deduct: &d} }

// OpResult is the outcome of one batch operation: Err, or the result
// matching the operation's kind.
type OpResult struct {
	Grant  *GrantResult
	Deduct *DeductResult
	Err    error
}

// ClusterStatus is the cluster as the answering node sees it.
type ClusterStatus struct {
	NodeID string
	Nodes  []Node
	Shards []Shard
}

// Node is one cluster member. State is "alive", "suspect", "dead" or
// "left"; new values may appear and mean not alive.
type Node struct {
	ID       string
	RaftAddr string
	GRPCAddr string
	HTTPAddr string
	State    string
}

// Shard is one raft group. Leader is empty when the shard has none.
type Shard struct {
	ID           uint32
	Leader       string
	Replicas     []string
	Voters       []string
	AppliedIndex uint64
	// StateHash is the answering node's hash of its replica of the shard
	// state as of AppliedIndex: equal on replicas that applied the same
	// index. Set only for a Status call WithStateHashes.
	StateHash   []byte
	CommitIndex uint64
	State       string
	Users       uint64
	// Target is the replica set placement wants for the shard, given the
	// answering node's membership view, preferred leader first. Replicas
	// differing from it (or a target member not yet in Voters) is a move in
	// progress. Empty when unknown, e.g. on a single node without
	// clustering.
	Target []string
}

// Int64 returns a pointer to v, for the optional fields.
func Int64(v int64) *int64 { return &v }

// Millis converts t to the API's Unix milliseconds.
func Millis(t time.Time) int64 { return t.UnixMilli() }

func (g Grant) proto(user string) *rationv1.GrantRequest {
	return &rationv1.GrantRequest{
		User: user, Id: g.ID, Amount: g.Amount, Timestamp: g.Timestamp,
		ExpiresAt: g.ExpiresAt, Priority: g.Priority,
	}
}

func (d Deduction) proto(user string) *rationv1.DeductRequest {
	return &rationv1.DeductRequest{User: user, Id: d.ID, Amount: d.Amount, Timestamp: d.Timestamp}
}

func (o Op) proto() *rationv1.Operation {
	switch {
	case o.Grant != nil && o.Deduct == nil:
		return &rationv1.Operation{Op: &rationv1.Operation_Grant{Grant: o.Grant.proto(o.User)}}
	case o.Deduct != nil && o.Grant == nil:
		return &rationv1.Operation{Op: &rationv1.Operation_Deduct{Deduct: o.Deduct.proto(o.User)}}
	}
	// Neither or both: send an empty operation and let the server refuse
	// it (field "op") so the error is reported like any other.
	return &rationv1.Operation{}
}

func (o Op) id() string {
	switch {
	case o.Grant != nil:
		return o.Grant.ID
	case o.Deduct != nil:
		return o.Deduct.ID
	}
	return ""
}

func grantResult(r *rationv1.GrantResponse) GrantResult {
	return GrantResult{Duplicate: r.GetDuplicate(), Version: r.GetVersion()}
}

func deductResult(r *rationv1.DeductResponse) DeductResult {
	return DeductResult{Duplicate: r.GetDuplicate(), Allocations: allocations(r.GetAllocations()), Version: r.GetVersion()}
}

func allocations(as []*rationv1.Allocation) []Allocation {
	if len(as) == 0 {
		return nil
	}
	out := make([]Allocation, len(as))
	for i, a := range as {
		out[i] = Allocation{GrantID: a.GetGrantId(), Amount: a.GetAmount()}
	}
	return out
}

func balanceResult(r *rationv1.GetBalanceResponse) BalanceResult {
	b := BalanceResult{User: r.GetUser(), At: r.GetAt(), Balance: r.GetBalance()}
	for _, g := range r.GetGrants() {
		b.Grants = append(b.Grants, GrantBalance{
			ID: g.GetId(), Remaining: g.GetRemaining(), ExpiresAt: g.ExpiresAt,
			Priority: g.GetPriority(), Timestamp: g.GetTimestamp(),
		})
	}
	return b
}

func event(e *rationv1.Event) Event {
	k := EventUnknown
	switch e.GetKind() {
	case rationv1.EventKind_EVENT_KIND_GRANT:
		k = EventGrant
	case rationv1.EventKind_EVENT_KIND_DEDUCTION:
		k = EventDeduction
	case rationv1.EventKind_EVENT_KIND_EXPIRATION:
		k = EventExpiration
	}
	return Event{
		Kind: k, ID: e.GetId(), Timestamp: e.GetTimestamp(), Amount: e.GetAmount(),
		ExpiresAt: e.ExpiresAt, Priority: e.GetPriority(),
		Allocations: allocations(e.GetAllocations()), BalanceAfter: e.GetBalanceAfter(),
	}
}

func clusterStatus(r *rationv1.StatusResponse) ClusterStatus {
	s := ClusterStatus{NodeID: r.GetNodeId()}
	for _, n := range r.GetNodes() {
		s.Nodes = append(s.Nodes, Node{
			ID: n.GetId(), RaftAddr: n.GetRaftAddr(), GRPCAddr: n.GetGrpcAddr(),
			HTTPAddr: n.GetHttpAddr(), State: n.GetState(),
		})
	}
	for _, sh := range r.GetShards() {
		s.Shards = append(s.Shards, Shard{
			ID: sh.GetId(), Leader: sh.GetLeader(), Replicas: sh.GetReplicas(), Voters: sh.GetVoters(),
			AppliedIndex: sh.GetAppliedIndex(), CommitIndex: sh.GetCommitIndex(), StateHash: sh.GetStateHash(),
			State: sh.GetState(), Users: sh.GetUsers(), Target: sh.GetTarget(),
		})
	}
	return s
}
