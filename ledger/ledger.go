package ledger

import (
	"math"
	"sort"
)

// Never is the ExpiresAt of a grant that does not expire. It sorts after
// every real expiry, which is exactly the draw order the semantics asks for.
const Never int64 = math.MaxInt64

// EventKind tells the events of a history apart. The numeric order is the
// order of events that share a timestamp.
type EventKind uint8

const (
	KindExpiration EventKind = iota
	KindGrant
	KindDeduction
)

func (k EventKind) String() string {
	switch k {
	case KindExpiration:
		return "expiration"
	case KindGrant:
		return "grant"
	case KindDeduction:
		return "deduction"
	}
	return "unknown"
}

// Grant is a grant operation. ExpiresAt is Never for credits that do not
// expire; Priority 0 is the default, lower draws first.
type Grant struct {
	ID        string
	Amount    int64
	Timestamp int64
	ExpiresAt int64
	Priority  int32
}

// Deduction is a deduction operation.
type Deduction struct {
	ID        string
	Amount    int64
	Timestamp int64
}

// Allocation is what one grant paid towards a deduction.
type Allocation struct {
	GrantID string
	Amount  int64
}

// Result describes an accepted operation.
type Result struct {
	// Duplicate is true when the operation had already been accepted with
	// the same fields and this call changed nothing.
	Duplicate bool
	// Allocations of a deduction in the current history, in draw order.
	// The slice is the ledger's own buffer, valid until the next call that
	// changes the ledger: copy what you keep. Appends then allocate nothing.
	Allocations []Allocation
}

// Ledger is one user's credit history with its replay state cached. It is
// not safe for concurrent use: its owner (the user's actor, or the raft FSM)
// serialises access.
//
// See DESIGN.md for the representation.
type Ledger struct {
	grants chunks[grant]
	deds   chunks[deduction]
	ids    arena
	gIndex index
	dIndex index

	// The applied timeline: every event with a timestamp <= frontier, in
	// history order, as parallel arrays to keep inserts and scans cheap.
	ev timeline
	// evChk[k] describes event k*chkEvery: its timestamp, for a two-level
	// search whose first level stays in cache, and the balance before it.
	// Balance after an event is that plus the deltas of its block, which the
	// records give: a grant adds its amount, an accepted deduction takes
	// exactly its amount, an expiration takes what its grant had left.
	// Storing every balance would cost 8 bytes an event.
	evChk []checkpoint

	// Allocations of the deductions, in timeline order.
	allocGrant chunks[uint32]
	allocAmt   chunks[int64]

	// Expirations later than frontier, sorted by (expiry, grant number).
	pending     []uint32
	pendingHead int

	frontier int64 // no event of the applied timeline is later than this
	balance  int64 // sum of remaining of live grants at the end of the timeline
	granted  int64 // sum of all grant amounts, to refuse overflowing totals

	live liveHeap // live grants with something left, in draw order

	scratch []Allocation // Result.Allocations
}

type grant struct {
	amount    int64
	ts        int64
	exp       int64
	remaining int64 // while expired: what the expiration forfeited
	prio      int32
	heapPos   int32 // -1 when not in the live heap
	idOff     uint32
	idLen     uint8
	state     uint8
}

const (
	stateUnapplied uint8 = iota
	stateLive
	stateExpired
)

type deduction struct {
	amount int64
	ts     int64
	idOff  uint32
	idLen  uint8
}

const (
	refShift = 30
	refMask  = 1<<refShift - 1
	// MaxRecords bounds grants and deductions per user (each separately).
	MaxRecords = refMask
)

func ref(k EventKind, rec uint32) uint32 { return uint32(k)<<refShift | rec }
func refKind(r uint32) EventKind         { return EventKind(r >> refShift) }
func refRec(r uint32) uint32             { return r & refMask }

// New returns an empty ledger.
func New() *Ledger {
	l := &Ledger{frontier: -1}
	l.live.l = l
	return l
}

// Len is the number of accepted grants and deductions.
func (l *Ledger) Len() int { return l.grants.len() + l.deds.len() }

// Version counts accepted operations. It changes exactly when the history
// does, so an owner can use it as an expected version for optimistic writes.
func (l *Ledger) Version() uint64 { return uint64(l.Len()) }

// The memory bound of a user's ledger (issue 12, guarded by
// memory_test.go): at most userBytes plus eventBytes per operation, at
// every history size. A node holds millions of users, most with a short
// history, so the fixed part matters as much as the part per operation.
// Measured on the benchmark workload, whose ids are up to 7 bytes: longer
// ids cost their length more per operation.
const (
	userBytes  = 1024
	eventBytes = 96
)

// MemoryBound is the heap the ledger may hold by that bound, for caches
// that weigh their entries (actors.Directory): cheap, unlike measuring.
func (l *Ledger) MemoryBound() int64 { return userBytes + eventBytes*int64(l.Len()) }

// Events is the number of events in the history, expirations included.
func (l *Ledger) Events() int { return l.ev.n + len(l.pending) - l.pendingHead }

// chkEvery is the spacing of checkpoints; a power of two.
const chkEvery = 16

type checkpoint struct {
	ts  int64
	bal int64
}

func (l *Ledger) grantID(g uint32) []byte {
	r := l.grants.at(g)
	return l.ids.bytes(r.idOff, r.idLen)
}

func (l *Ledger) dedID(d uint32) []byte {
	r := l.deds.at(d)
	return l.ids.bytes(r.idOff, r.idLen)
}

// grantName is the grant's id without a copy; see arena.str.
func (l *Ledger) grantName(g uint32) string {
	r := l.grants.at(g)
	return l.ids.str(r.idOff, r.idLen)
}

func (l *Ledger) dedName(d uint32) string {
	r := l.deds.at(d)
	return l.ids.str(r.idOff, r.idLen)
}

// validateOp checks what grants and deductions have in common.
func validateOp(id string, amount, ts int64) error {
	if err := validateID("id", id); err != nil {
		return err
	}
	if amount <= 0 {
		return invalid("amount", "must be positive, got %d", amount)
	}
	if ts < 0 {
		return invalid("timestamp", "must not be negative, got %d", ts)
	}
	return nil
}

func validateGrant(op Grant) error {
	if err := validateOp(op.ID, op.Amount, op.Timestamp); err != nil {
		return err
	}
	if op.Timestamp == Never {
		// No expiry can be later, and the grant could never be used: the
		// timestamp is what is wrong, whether expires_at was given or not.
		return invalid("timestamp", "a grant's must be below 2^63-1, got %d", op.Timestamp)
	}
	if op.ExpiresAt <= op.Timestamp {
		return invalid("expires_at", "must be later than timestamp %d, got %d", op.Timestamp, op.ExpiresAt)
	}
	return nil
}

func validateDeduction(op Deduction) error {
	return validateOp(op.ID, op.Amount, op.Timestamp)
}

// CheckGrant reports what Grant would do without changing anything: nil if
// it would be accepted (or is an exact retry), else the error Grant would
// return.
func (l *Ledger) CheckGrant(op Grant) error {
	if err := validateGrant(op); err != nil {
		return err
	}
	if g, ok := l.gIndex.lookup(op.ID, l.grantID); ok {
		return l.sameGrant(g, op)
	}
	if l.granted > math.MaxInt64-op.Amount {
		return invalid("amount", "total granted would overflow int64")
	}
	return nil
}

func (l *Ledger) sameGrant(g uint32, op Grant) error {
	r := l.grants.at(g)
	if r.amount == op.Amount && r.ts == op.Timestamp && r.exp == op.ExpiresAt && r.prio == op.Priority {
		return nil
	}
	return &ConflictError{Kind: KindGrant, ID: op.ID}
}

// Grant adds credits. It is refused only if invalid or conflicting: more
// credit never makes a feasible history infeasible.
func (l *Ledger) Grant(op Grant) (Result, error) {
	if err := validateGrant(op); err != nil {
		return Result{}, err
	}
	if g, ok := l.gIndex.lookup(op.ID, l.grantID); ok {
		if err := l.sameGrant(g, op); err != nil {
			return Result{}, err
		}
		return Result{Duplicate: true}, nil
	}
	if l.granted > math.MaxInt64-op.Amount {
		return Result{}, invalid("amount", "total granted would overflow int64")
	}
	if l.grants.len() >= MaxRecords {
		return Result{}, invalid("id", "too many grants for one user")
	}
	l.advance(op.Timestamp)

	off, n := l.ids.add(op.ID)
	g := l.grants.push(grant{
		amount: op.Amount, ts: op.Timestamp, exp: op.ExpiresAt, prio: op.Priority,
		heapPos: -1, idOff: off, idLen: n,
	})

	p := l.position(op.Timestamp, KindGrant)
	expApplied := op.ExpiresAt <= l.frontier
	if p == l.ev.n && !expApplied {
		l.insertEvent(p, op.Timestamp, ref(KindGrant, g))
		l.apply(p)
	} else {
		l.rewind(p)
		l.insertEvent(p, op.Timestamp, ref(KindGrant, g))
		if expApplied {
			q := l.position(op.ExpiresAt, KindExpiration)
			l.insertEvent(q, op.ExpiresAt, ref(KindExpiration, g))
		}
		if bad := l.forward(p); bad >= 0 {
			// Unreachable if the semantics hold; refuse rather than corrupt.
			err := l.insufficient(bad)
			l.undoRange(bad, p)
			l.removeGrantEvents(g)
			l.forward(p)
			l.dropLastGrant(off)
			return Result{}, err
		}
	}
	if !expApplied && op.ExpiresAt != Never {
		l.addPending(g)
	}
	l.granted += op.Amount
	l.gIndex.insert(op.ID, g)
	return Result{}, nil
}

// CheckDeduction reports what Deduct would do without changing the history:
// nil if it would be accepted (or is an exact retry), else its error.
func (l *Ledger) CheckDeduction(op Deduction) error {
	if err := validateDeduction(op); err != nil {
		return err
	}
	if d, ok := l.dIndex.lookup(op.ID, l.dedID); ok {
		return l.sameDeduction(d, op)
	}
	// A dry run is the real thing followed by its undo: nothing cheaper
	// answers exactly.
	_, err := l.deduct(op, true, probe{})
	return err
}

func (l *Ledger) sameDeduction(d uint32, op Deduction) error {
	r := l.deds.at(d)
	if r.amount == op.Amount && r.ts == op.Timestamp {
		return nil
	}
	return &ConflictError{Kind: KindDeduction, ID: op.ID}
}

// Deduct consumes credits at op.Timestamp if the whole history stays
// feasible with it, including deductions stamped later.
func (l *Ledger) Deduct(op Deduction) (Result, error) {
	if err := validateDeduction(op); err != nil {
		return Result{}, err
	}
	d, ok, pr := l.dIndex.find(op.ID, l.dedID)
	if ok {
		if err := l.sameDeduction(d, op); err != nil {
			return Result{}, err
		}
		return Result{Duplicate: true, Allocations: l.allocationsOf(d)}, nil
	}
	return l.deduct(op, false, pr)
}

func (l *Ledger) deduct(op Deduction, dryRun bool, pr probe) (Result, error) {
	if l.deds.len() >= MaxRecords {
		return Result{}, invalid("id", "too many deductions for one user")
	}
	// Moving expirations into the applied timeline changes no answer, so a
	// dry run may do it too.
	l.advance(op.Timestamp)
	off, n := l.ids.add(op.ID)
	d := l.deds.push(deduction{amount: op.Amount, ts: op.Timestamp, idOff: off, idLen: n})

	p := l.position(op.Timestamp, KindDeduction)
	end := l.ev.n
	l.rewind(p)
	l.insertEvent(p, op.Timestamp, ref(KindDeduction, d))
	var bad int
	if p == end {
		bad = -1
		if !l.apply(p) {
			bad = p
		}
	} else {
		bad = l.forward(p)
	}
	if bad >= 0 || dryRun {
		var err error
		last := l.ev.n - 1
		if bad >= 0 {
			err = l.insufficient(bad)
			last = bad
		}
		l.undoRange(last, p)
		l.removeEvent(p)
		l.forward(p)
		l.dropLastDeduction(off)
		return Result{}, err
	}
	l.dIndex.insertProbe(pr, d)
	l.scratch = l.appendAllocations(l.scratch[:0], p)
	return Result{Allocations: l.scratch}, nil
}

// advance moves the frontier to t, applying the expirations up to t. The
// timeline is fully applied before and after.
func (l *Ledger) advance(t int64) {
	if t <= l.frontier {
		return
	}
	for l.pendingHead < len(l.pending) {
		g := l.pending[l.pendingHead]
		exp := l.grants.at(g).exp
		if exp > t {
			break
		}
		l.pendingHead++
		p := l.ev.n
		l.insertEvent(p, exp, ref(KindExpiration, g))
		l.apply(p)
	}
	if l.pendingHead > 64 && l.pendingHead*2 > len(l.pending) {
		n := copy(l.pending, l.pending[l.pendingHead:])
		l.pending = l.pending[:n]
		l.pendingHead = 0
	}
	l.frontier = t
}

func (l *Ledger) addPending(g uint32) {
	exp := l.grants.at(g).exp
	ps := l.pending[l.pendingHead:]
	i := sort.Search(len(ps), func(i int) bool { return l.grants.at(ps[i]).exp > exp })
	i += l.pendingHead
	l.pending = append(l.pending, 0)
	copy(l.pending[i+1:], l.pending[i:])
	l.pending[i] = g
}

// position is where an event of kind k at t goes: after every event that
// sorts before or with it, so events of one kind at one timestamp keep
// arrival order.
func (l *Ledger) position(t int64, k EventKind) int {
	n := l.ev.n
	// Fast path: appends at the end are the common case.
	if n == 0 || l.ev.at(n-1).ts < t || (l.ev.at(n-1).ts == t && refKind(l.ev.at(n-1).ref) <= k) {
		return n
	}
	return sort.Search(n, func(i int) bool {
		ti := l.ev.at(i).ts
		return ti > t || (ti == t && refKind(l.ev.at(i).ref) > k)
	})
}

func (l *Ledger) insertEvent(p int, t int64, r uint32) {
	if l.ev.n&(chkEvery-1) == 0 {
		l.evChk = append(l.evChk, checkpoint{})
	}
	if p == l.ev.n {
		l.ev.push(event{ts: t, ref: r})
	} else {
		l.ev.insert(p, event{ts: t, ref: r})
	}
}

func (l *Ledger) removeEvent(p int) {
	l.ev.remove(p)
	l.evChk = l.evChk[:(l.ev.n+chkEvery-1)/chkEvery]
}

// removeGrantEvents drops the grant's events from the (rewound) timeline.
func (l *Ledger) removeGrantEvents(g uint32) {
	for i := l.ev.n - 1; i >= 0; i-- {
		if r := l.ev.at(i).ref; refRec(r) == g && refKind(r) != KindDeduction {
			l.removeEvent(i)
		}
	}
}

func (l *Ledger) dropLastGrant(off uint32) {
	l.grants.pop()
	l.ids.truncate(off)
}

func (l *Ledger) dropLastDeduction(off uint32) {
	l.deds.pop()
	l.ids.truncate(off)
}

func (l *Ledger) allocStart(p int) uint32 {
	if p == 0 {
		return 0
	}
	return l.ev.at(p - 1).allocEnd
}

func (l *Ledger) truncateAllocs(p int) {
	s := l.allocStart(p)
	l.allocGrant.truncate(int(s))
	l.allocAmt.truncate(int(s))
}

// apply replays event p onto the state, which must be that after event p-1.
// It reports false if p is a deduction the live grants cannot meet; the
// event's partial draws are then recorded so that rewind undoes them.
func (l *Ledger) apply(p int) bool {
	if p&(chkEvery-1) == 0 {
		l.evChk[p/chkEvery] = checkpoint{ts: l.ev.at(p).ts, bal: l.balance}
	}
	r := l.ev.at(p).ref
	rec := refRec(r)
	ok := true
	switch refKind(r) {
	case KindGrant:
		g := l.grants.at(rec)
		g.state = stateLive
		g.remaining = g.amount
		l.balance += g.amount
		l.live.push(rec)
	case KindExpiration:
		g := l.grants.at(rec)
		g.state = stateExpired
		if g.heapPos >= 0 {
			l.live.remove(int(g.heapPos))
		}
		l.balance -= g.remaining
	case KindDeduction:
		need := l.deds.at(rec).amount
		for need > 0 && len(l.live.h) > 0 {
			top := l.live.h[0]
			g := l.grants.at(top)
			take := min(need, g.remaining)
			g.remaining -= take
			need -= take
			l.balance -= take
			l.allocGrant.push(top)
			l.allocAmt.push(take)
			if g.remaining == 0 {
				l.live.pop()
			}
		}
		ok = need == 0
	}
	l.ev.at(p).allocEnd = uint32(l.allocGrant.len())
	return ok
}

// undo reverts event p; the state must be that after event p.
func (l *Ledger) undo(p int) {
	r := l.ev.at(p).ref
	rec := refRec(r)
	switch refKind(r) {
	case KindGrant:
		g := l.grants.at(rec)
		if g.heapPos >= 0 {
			l.live.remove(int(g.heapPos))
		}
		l.balance -= g.remaining
		g.remaining = 0
		g.state = stateUnapplied
	case KindExpiration:
		g := l.grants.at(rec)
		g.state = stateLive
		l.balance += g.remaining
		if g.remaining > 0 {
			l.live.push(rec)
		}
	case KindDeduction:
		for a := int(l.ev.at(p).allocEnd) - 1; a >= int(l.allocStart(p)); a-- {
			gi := *l.allocGrant.at(uint32(a))
			g := l.grants.at(gi)
			amt := *l.allocAmt.at(uint32(a))
			g.remaining += amt
			l.balance += amt
			if g.heapPos < 0 {
				l.live.push(gi)
			}
		}
	}
}

// rewind undoes the events from the end of the timeline back to p.
func (l *Ledger) rewind(p int) { l.undoRange(l.ev.n-1, p) }

// undoRange undoes events hi down to lo; the state must be that after hi.
func (l *Ledger) undoRange(hi, lo int) {
	for i := hi; i >= lo; i-- {
		l.undo(i)
	}
}

// forward replays events p..end onto the state after event p-1, rewriting
// their allocations. It returns the first deduction that fails, or -1. On a
// failure it stops there: the state is that after the failed event's partial
// draws, which are recorded so that undoRange(bad, p) reverts exactly.
func (l *Ledger) forward(p int) int {
	l.truncateAllocs(p)
	for i := p; i < l.ev.n; i++ {
		if !l.apply(i) {
			return i
		}
	}
	return -1
}

func (l *Ledger) insufficient(p int) error {
	d := refRec(l.ev.at(p).ref)
	var paid int64
	for a := l.allocStart(p); a < l.ev.at(p).allocEnd; a++ {
		paid += *l.allocAmt.at(a)
	}
	r := l.deds.at(d)
	return &InsufficientCreditsError{DeductionID: string(l.dedID(d)), At: r.ts, Shortfall: r.amount - paid}
}
