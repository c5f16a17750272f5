// Package membership tells a node which nodes make up the cluster: who is
// alive, suspect, dead or gone, and where to reach them. It wraps
// hashicorp/memberlist (SWIM gossip with Lifeguard) and keeps a view that
// memberlist itself does not: dead members stay listed, with the time they
// died, until they return or are forgotten, so the placement layer can
// wait out a grace period before it moves their replicas. See DESIGN.md.
package membership

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Membership is a running member of the gossip cluster. Its methods are
// safe for concurrent use.
type Membership struct {
	cfg Config
	log *slog.Logger
	ml  *memberlist.Memberlist

	// selfAddr is the advertised gossip address (netip.AddrPort), known
	// once memberlist has bound; delegates may run before that.
	selfAddr atomic.Value
	bindAddr netip.Addr

	metaMu sync.Mutex
	flags  byte // guarded by metaMu

	mu      sync.Mutex
	members map[string]*memberState
	// shards is this node's settled shard count, 0 while it has none
	// (Meta.settledShards); members that announce another are left out
	// of the view (Conflicting).
	shards  int
	subs    map[uint64]chan struct{}
	nextSub uint64
	closed  bool // view frozen, subscriptions closed

	closing      atomic.Bool // Leave or Shutdown has begun
	conflict     atomic.Bool // set by NotifyMerge during a join attempt
	joinAttempts atomic.Int64

	stopLoops context.CancelFunc
	wg        sync.WaitGroup
}

// Start joins (or forms) the cluster. It binds gossip, makes one attempt
// to join the seeds, and returns; if no seed answered, attempts continue
// in the background with exponential backoff until another member is seen.
// A node left without any live peer later (every peer died, or a partition
// cut it off) goes back to its seeds the same way, because memberlist never
// contacts dead members again by itself.
//
// ctx bounds joining: the first attempt, and the background retries,
// which stop when ctx ends. It does not bound the membership, which lasts
// until Leave or Shutdown; pass the node's lifetime context.
func Start(ctx context.Context, cfg Config) (*Membership, error) {
	c, seeds, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	bind, err := resolveHost(ctx, c.lookupIP, c.BindHost)
	if err != nil {
		return nil, fmt.Errorf("membership: bind host: %w", err)
	}
	var advertise netip.Addr
	if c.AdvertiseHost != "" {
		if advertise, err = resolveHost(ctx, c.lookupIP, c.AdvertiseHost); err != nil {
			return nil, fmt.Errorf("membership: advertise host: %w", err)
		}
	}

	m := &Membership{
		cfg:      c,
		log:      c.Logger.With(slog.String("logger", "membership")),
		bindAddr: bind,
		members:  make(map[string]*memberState),
		subs:     make(map[uint64]chan struct{}),
		shards:   c.Meta.settledShards(),
	}
	ml, err := memberlist.Create(c.memberlistConfig(bind, advertise, &delegate{m: m}))
	if err != nil {
		return nil, fmt.Errorf("membership: start gossip on %s port %d: %w", bind, c.BindPort, err)
	}
	m.ml = ml
	self := nodeAddr(ml.LocalNode())
	m.selfAddr.Store(self)
	m.log.Info("gossip started", slog.String("node", c.NodeID), slog.String("addr", self.String()),
		slog.Bool("encrypted", len(c.SecretKey) > 0))

	loopCtx, stop := context.WithCancel(context.Background())
	m.stopLoops = stop
	m.wg.Add(1)
	go m.watchAcks(loopCtx)

	if len(seeds) == 0 {
		m.log.Info("no seeds: forming a new cluster")
		return m, nil
	}
	joinErr := m.joinOnce(ctx, seeds)
	switch {
	case joinErr == nil:
		m.log.Info("joined the cluster", slog.Int("members", ml.NumMembers()))
	case ctx.Err() != nil:
		_ = m.Shutdown()
		return nil, fmt.Errorf("membership: join: %w", ctx.Err())
	case errors.Is(joinErr, ErrNoPeers) && allLiteral(seeds):
		// Nothing will ever change about literal seeds that are all this
		// node: it is the cluster's first member, others will join it.
		m.log.Info("the only seed is this node: forming a new cluster")
		return m, nil
	case errors.Is(joinErr, ErrAddressConflict):
		// The expected outcome of a restart on a new address: peers
		// accept it once they have declared the old incarnation dead.
		m.log.Info("peers still hold this node's previous incarnation; retrying until they release it",
			slog.Any("err", joinErr))
	default:
		// Usual when the nodes of a cluster start together: the seeds
		// are not up yet. The loop warns if none answers for a while.
		m.log.Info("no seed answered yet; retrying in the background", slog.Any("err", joinErr))
	}
	joinCtx, cancelJoin := context.WithCancel(ctx)
	context.AfterFunc(loopCtx, cancelJoin)
	m.wg.Add(1)
	go m.joinLoop(joinCtx, seeds, joinErr)
	return m, nil
}

// Members returns the view sorted by NodeID, this node included, without
// the members that announce another shard count (Conflicting).
func (m *Membership) Members() []Member {
	return m.list(false)
}

// Conflicting returns, sorted by NodeID and whatever their state, the
// members left out of the view because they and this node have each
// settled on a shard count (Meta.Shards, not tentative) and the counts
// differ. Users map to shards by the count, so such a member serves
// another cluster's data under the same shard ids: nothing here may route
// to it, place a replica on it or form a shard with it. A member of a
// release that announces no count (0) conflicts with nothing.
func (m *Membership) Conflicting() []Member {
	return m.list(true)
}

func (m *Membership) list(conflicting bool) []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.members))
	for _, ms := range m.members {
		if ms.conflict == conflicting {
			out = append(out, ms.Member)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.NodeID, b.NodeID) })
	return out
}

// Member returns the view's entry for nodeID, whatever its state; a
// conflicting member (Conflicting) is not in the view.
func (m *Membership) Member(nodeID string) (Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ms, ok := m.members[nodeID]
	if !ok || ms.conflict {
		return Member{}, false
	}
	return ms.Member, true
}

// NumAlive counts the members memberlist still considers part of the
// cluster, Alive or Suspect, this node included, conflicting ones not.
func (m *Membership) NumAlive() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, ms := range m.members {
		if !ms.conflict && (ms.State == Alive || ms.State == Suspect) {
			n++
		}
	}
	return n
}

// LocalMeta returns the metadata this node announces.
func (m *Membership) LocalMeta() Meta {
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	return m.cfg.Meta
}

// SettleShards settles this node's shard count at n: it announces n, no
// longer tentative, and from then on leaves members that announce another
// settled count out of the view (Conflicting). ctx bounds the wait for
// the announcement to be sent; peers learn it by gossip either way, so an
// error here only says that the wait ran out.
func (m *Membership) SettleShards(ctx context.Context, n int) error {
	if n < 1 || n > maxShards {
		return fmt.Errorf("%w: shard count %d out of range 1-%d", ErrInvalidConfig, n, maxShards)
	}
	m.metaMu.Lock()
	m.cfg.Meta.Shards, m.cfg.Meta.ShardsTentative = n, false
	m.metaMu.Unlock()

	m.mu.Lock()
	m.shards = n
	changed := false
	for _, ms := range m.members {
		changed = m.judgeLocked(ms) || changed
	}
	if changed {
		m.notifyLocked()
	}
	m.mu.Unlock()

	timeout := DefaultLeaveTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	if err := m.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("membership: announce shard count %d: %w", n, err)
	}
	return nil
}

// Forget removes a Dead or Left member from the view, once placement has
// moved its replicas away or an operator has decommissioned it. Should it
// come back, it reappears as a new member.
func (m *Membership) Forget(nodeID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ms, ok := m.members[nodeID]
	switch {
	case !ok:
		return fmt.Errorf("forget %q: %w", nodeID, ErrUnknownMember)
	case nodeID == m.cfg.NodeID || (ms.State != Dead && ms.State != Left):
		return fmt.Errorf("forget %q (%s): %w", nodeID, ms.State, ErrMemberNotGone)
	}
	delete(m.members, nodeID)
	m.log.Info("member forgotten", slog.String("node", nodeID))
	m.notifyLocked()
	return nil
}

// Subscribe returns a channel that receives a value after every change of
// the view, and one right away so a consumer can start with a full read.
// Signals coalesce (buffer 1): a consumer re-reads Members rather than
// expecting one signal per change. The channel is closed by the returned
// cancel function and when the membership stops.
func (m *Membership) Subscribe() (<-chan struct{}, func()) {
	return m.subscribe(true)
}

func (m *Membership) subscribe(initial bool) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		close(ch)
		return ch, func() {}
	}
	if initial {
		ch <- struct{}{}
	}
	id := m.nextSub
	m.nextSub++
	m.subs[id] = ch
	return ch, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if c, ok := m.subs[id]; ok {
			delete(m.subs, id)
			close(c)
		}
	}
}

// AnnounceStopping tells the peers that this node has begun to shut down
// (Member.Stopping), before it stops serving: they can then take their
// failures to reach it for what they are, and stop handing it work. It
// waits for the broadcast as Leave does. Leave or Shutdown follow; the
// node stays a member until then.
func (m *Membership) AnnounceStopping(ctx context.Context) error {
	if m.closing.Load() {
		return fmt.Errorf("membership: announce stopping: %w", ErrClosed)
	}
	m.metaMu.Lock()
	m.flags |= flagStopping
	m.metaMu.Unlock()
	// Members that are stopping too are waited for: they need to know
	// before this node stops answering them.
	if err := m.broadcast(ctx, true, m.ml.UpdateNode); err != nil {
		return fmt.Errorf("membership: announce stopping: %w", err)
	}
	return nil
}

// Leave announces a graceful departure, then shuts down. Peers list the
// node as Left, which placement treats as gone for good at once: a node
// that will be back shortly (a restart, an upgrade) should call Shutdown
// instead, and be Dead within the grace period. ctx bounds the
// announcement; the shutdown happens either way.
func (m *Membership) Leave(ctx context.Context) error {
	if !m.closing.CompareAndSwap(false, true) {
		return fmt.Errorf("membership: leave: %w", ErrClosed)
	}
	m.stopBackground()

	m.metaMu.Lock()
	m.flags |= flagLeaving
	m.metaMu.Unlock()

	err := m.broadcast(ctx, false, func(timeout time.Duration) error {
		// The metadata update carries the leaving flag, which is how peers
		// tell Left from Dead (memberlist's events do not say which).
		var errs []error
		if err := m.ml.UpdateNode(timeout); err != nil {
			errs = append(errs, fmt.Errorf("announce leaving: %w", err))
		}
		if err := m.ml.Leave(timeout); err != nil {
			errs = append(errs, fmt.Errorf("broadcast leave: %w", err))
		}
		return errors.Join(errs...)
	})
	err = errors.Join(err, m.shutdownGossip())
	m.freeze()
	m.log.Info("left the cluster", slog.Any("err", err))
	if err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// broadcast runs send, a memberlist call that waits up to the timeout it
// is given for its broadcast to go out, and waits for it: until ctx ends,
// LeaveTimeout at most, and only while some other member is left to hear
// it. memberlist gossips to no member that has left, so a broadcast whose
// listeners all left meanwhile never goes out, and memberlist would wait
// out its whole timeout: every node of a cluster stopping at once did.
// Members that announced they are stopping count as listeners only if
// stopping is set. An abandoned send ends within LeaveTimeout.
func (m *Membership) broadcast(ctx context.Context, stopping bool, send func(timeout time.Duration) error) error {
	timeout := m.cfg.LeaveTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, max(time.Until(dl), time.Millisecond))
	}
	changes, unsubscribe := m.subscribe(false)
	defer unsubscribe()
	done := make(chan error, 1)
	go func() {
		// memberlist.Leave panics when Shutdown came first, which happens
		// when this wait ends before send reaches it.
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("cut short by shutdown: %v", r)
			}
		}()
		done <- send(timeout)
	}()
	for m.anyoneListening(stopping) {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-changes:
			if !ok {
				return nil // the view is frozen: nobody to wait for
			}
		}
	}
	return nil
}

// anyoneListening reports whether another member of the view is alive (or
// suspect), and not stopping unless stopping is set, so that a broadcast
// is worth waiting for.
func (m *Membership) anyoneListening(stopping bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, ms := range m.members {
		if id != m.cfg.NodeID && !ms.conflict && (stopping || !ms.Stopping) && (ms.State == Alive || ms.State == Suspect) {
			return true
		}
	}
	return false
}

// Shutdown stops gossip without announcing anything: peers see the node
// fail (Suspect, then Dead) and keep its replicas for the grace period.
// It is a no-op after Leave or a previous Shutdown.
func (m *Membership) Shutdown() error {
	if !m.closing.CompareAndSwap(false, true) {
		return nil
	}
	m.stopBackground()
	err := m.shutdownGossip()
	m.freeze()
	m.log.Info("gossip stopped", slog.Any("err", err))
	if err != nil {
		return fmt.Errorf("membership: shutdown: %w", err)
	}
	return nil
}

func (m *Membership) stopBackground() {
	m.stopLoops()
	m.wg.Wait()
}

func (m *Membership) shutdownGossip() error {
	if err := m.ml.Shutdown(); err != nil {
		return fmt.Errorf("stop gossip: %w", err)
	}
	return nil
}

// freeze stops the view from changing and closes the subscriptions:
// events memberlist may still deliver while it winds down are dropped.
func (m *Membership) freeze() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for id, ch := range m.subs {
		delete(m.subs, id)
		close(ch)
	}
}

// watchAcks turns members Suspect when memberlist stops getting direct
// acks from them; see Suspect.
func (m *Membership) watchAcks(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(max(m.cfg.ProbeInterval/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.markSilent(now, m.ml.GetHealthScore())
		}
	}
}
