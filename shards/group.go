package shards

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/ration/ration/mux"
	"github.com/ration/ration/raftfsm"
)

const (
	// boltOpenTimeout bounds the wait for raft.db's file lock, so that a
	// second process on the same data dir fails instead of hanging.
	boltOpenTimeout = 5 * time.Second
	snapshotsRetain = 2
	transportPool   = 3
	transportIO     = 10 * time.Second
)

// raftStore is a group's raft log and stable store: its view of the
// node's shared engine, or its own raft.db (Config.LogStore).
type raftStore interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// group is one shard's raft group on this node.
type group struct {
	h     *Host
	id    uint32
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *raftfsm.Shard
	store raftStore
	trans *raft.NetworkTransport

	// notifyCh is raft's NotifyCh. It is unbuffered on purpose: raft
	// then cannot act as leader of a new term before watch has taken in
	// the loss of the previous one, which ReadBarrier relies on.
	notifyCh chan bool
	obsCh    chan raft.Observation
	observer *raft.Observer
	stopCh   chan struct{} // stops watch
	watchWG  sync.WaitGroup
	// departures tells the log adapter which failures are expected.
	departures departures

	mu     sync.Mutex
	gen    uint64 // bumped on every change of this node's leadership
	leader bool
	ready  bool // leader, and this generation's noop has been applied
	// announced: a Leader event for this leadership went to subscribers,
	// so its loss must be reported too.
	announced bool
	changed   broadcast // leader or ready changed

	verify verifier

	// removed is set, under Host.mu, by RemoveGroup before the proposer
	// stops, so that nothing is queued behind its final drain.
	removed bool

	pipeline
}

func (h *Host) openGroup(id uint32, bootstrap bool) (_ *group, err error) {
	dir := filepath.Join(h.cfg.DataDir, "shards", strconv.FormatUint(uint64(id), 10))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("shards: shard %d: %w", id, err)
	}
	log := h.log.With("shard", id)
	g := &group{
		h:        h,
		id:       id,
		log:      log,
		fsm:      raftfsm.New(log),
		notifyCh: make(chan bool),
		obsCh:    make(chan raft.Observation, 16),
		stopCh:   make(chan struct{}),
	}
	g.departures.g = g
	hl := newHCLog(log, hclog.Warn, &g.departures)
	fail := func(what string, err error) error {
		return fmt.Errorf("shards: shard %d: %s: %w", id, what, err)
	}
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				_ = undo[i]()
			}
		}
	}()

	g.store, err = h.openLogStore(id, dir)
	if err != nil {
		return nil, fail("open raft log", err)
	}
	undo = append(undo, g.store.Close)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotsRetain, hl)
	if err != nil {
		return nil, fail("open snapshot store", err)
	}
	layer, err := h.cfg.Mux.Listen(mux.TypeRaft, id)
	if err != nil {
		return nil, fail("listen", err)
	}
	var stream raft.StreamLayer = layer
	if h.cfg.AdvertiseAddr != "" {
		stream = advertisedLayer{Layer: layer, addr: tcpAddr(h.cfg.AdvertiseAddr)}
	}
	g.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:                stream,
		ServerAddressProvider: h.cfg.Resolve,
		MaxPool:               transportPool,
		Timeout:               transportIO,
		Logger:                hl,
	})
	undo = append(undo, func() error { g.trans.CloseStreams(); return g.trans.Close() })

	rc := h.raftConfig(hl, g.notifyCh)
	if bootstrap {
		has, err := raft.HasExistingState(g.store, g.store, snaps)
		if err != nil {
			return nil, fail("check for existing state", err)
		}
		if !has {
			servers := h.cfg.Peers
			if h.cfg.PeersOf != nil {
				servers = h.cfg.PeersOf(g.id)
			}
			if len(servers) == 0 {
				servers = []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: g.trans.LocalAddr()}}
			}
			if err := raft.BootstrapCluster(rc, g.store, g.store, snaps, g.trans, raft.Configuration{Servers: servers}); err != nil {
				return nil, fail("bootstrap", err)
			}
			log.Info("bootstrapped raft group", "voters", len(servers))
		}
	}
	logs, err := h.logReader(g.store)
	if err != nil {
		return nil, fail("log cache", err)
	}
	g.raft, err = raft.NewRaft(rc, g.fsm.FSM(), logs, g.store, snaps, g.trans)
	if err != nil {
		return nil, fail("start raft", err)
	}
	g.departures.raft.Store(g.raft)
	g.observer = raft.NewObserver(g.obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	g.raft.RegisterObserver(g.observer)
	g.pipeline.init(h.cfg)
	return g, nil
}

// openLogStore opens shard id's raft log and stable store.
func (h *Host) openLogStore(id uint32, dir string) (raftStore, error) {
	if h.logs != nil {
		lg, err := h.logs.Group(id)
		if err != nil {
			return nil, err
		}
		return lg, nil
	}
	db, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(dir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: boltOpenTimeout, NoFreelistSync: false},
	})
	if err != nil {
		return nil, err
	}
	return db, nil
}

// logCacheEntries is how many of a group's latest entries raft keeps in
// memory in front of the shared store. The leader reads each entry back
// once per follower to replicate it (GetLog was 6% of a leader's CPU on
// three nodes, docs/profiles/); the cache answers those reads with the
// entry raft appended, no engine lookup and no copy. 64 entries per group
// holds every entry still in flight at 64 clients over 32 groups, and at
// most 64 entries' data per group (batch entries are ~25 KB at worst).
const logCacheEntries = 64

// logReader is the LogStore raft reads and writes: with the shared store,
// a LogCache over it; bolt reads its memory-mapped file and keeps today's
// behaviour for comparison.
func (h *Host) logReader(store raftStore) (raft.LogStore, error) {
	if h.logs == nil {
		return store, nil
	}
	return raft.NewLogCache(logCacheEntries, store)
}

func (h *Host) raftConfig(logger hclog.Logger, notify chan bool) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(h.cfg.NodeID)
	rc.Logger = logger
	rc.NotifyCh = notify
	// Let raft gather the entries of several proposers into one
	// AppendEntries and one log write, on top of our own batching.
	rc.BatchApplyCh = true
	rc.NoSnapshotRestoreOnStart = false
	set := func(dst *time.Duration, v time.Duration) {
		if v > 0 {
			*dst = v
		}
	}
	set(&rc.HeartbeatTimeout, h.cfg.HeartbeatTimeout)
	set(&rc.ElectionTimeout, h.cfg.ElectionTimeout)
	set(&rc.LeaderLeaseTimeout, h.cfg.LeaderLeaseTimeout)
	set(&rc.CommitTimeout, h.cfg.CommitTimeout)
	set(&rc.SnapshotInterval, h.cfg.SnapshotInterval)
	if h.cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = h.cfg.SnapshotThreshold
	}
	if h.cfg.TrailingLogs > 0 {
		rc.TrailingLogs = h.cfg.TrailingLogs
	}
	return rc
}

// start runs the group's goroutines; Open calls it once every group is
// open, so that a failed Open has nothing to stop but raft itself.
func (g *group) start() {
	g.watchWG.Go(g.watch)
	g.pipeline.start(g)
}

// watch follows this node's leadership of the group. It must never block
// for long: raft waits on notifyCh.
func (g *group) watch() {
	for {
		select {
		case leader := <-g.notifyCh:
			g.setLeader(leader)
		case <-g.obsCh:
			g.changed.notify()
			g.h.changed.notify()
		case <-g.stopCh:
			return
		}
	}
}

func (g *group) setLeader(leader bool) {
	g.mu.Lock()
	g.gen++
	gen := g.gen
	g.leader, g.ready = leader, false
	if !leader && g.announced {
		g.announced = false
		g.h.events.publish(ShardLeadership{Shard: g.id, Leader: false})
	}
	g.mu.Unlock()
	g.changed.notify()
	g.h.changed.notify()
	if leader {
		g.log.Info("became leader", "term", g.raft.CurrentTerm())
		g.h.wg.Go(func() { g.confirmLeadership(gen) })
	} else {
		g.log.Info("lost leadership")
	}
}

// confirmLeadership appends a Noop and, once it is applied, marks the
// generation ready: every entry committed by earlier leaders is then in
// the state machine, and the commit index belongs to this term, which is
// what read barriers and newly activated actors need.
func (g *group) confirmLeadership(gen uint64) {
	backoff := 10 * time.Millisecond
	for {
		g.mu.Lock()
		current := g.gen == gen
		g.mu.Unlock()
		if !current {
			return
		}
		f := g.raft.Apply(raftfsm.EncodeNoop(), 0)
		err := awaitUntil(f, g.stopCh)
		if err == nil {
			g.mu.Lock()
			if g.gen == gen {
				g.ready, g.announced = true, true
				g.h.events.publish(ShardLeadership{Shard: g.id, Leader: true, Term: g.raft.CurrentTerm()})
			}
			g.mu.Unlock()
			g.changed.notify()
			g.h.changed.notify()
			g.log.Debug("leadership confirmed", "index", f.Index())
			return
		}
		if errors.Is(err, raft.ErrRaftShutdown) {
			return
		}
		// Leadership lost or in transfer: a notification follows and ends
		// this generation; until then retry.
		g.log.Debug("leadership noop failed; retrying", "err", err)
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, time.Second)
		case <-g.h.closing:
			return
		}
	}
}

// awaitUntil waits for f, or until stop closes: raft does not answer
// every future at shutdown (Host.shutdown), so a wait that may outlive
// raft must not rest on f alone.
func awaitUntil(f raft.Future, stop <-chan struct{}) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-stop:
		return raft.ErrRaftShutdown
	}
}

// isVoter reports whether this node is a voter in the group's latest
// configuration (committed or not), as far as this node knows it.
func (g *group) isVoter() bool {
	f := g.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(g.h.cfg.NodeID) {
			return s.Suffrage == raft.Voter
		}
	}
	return false
}

func (g *group) isReady() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.leader && g.ready
}

// notLeader is the error for an op or read on a shard this node does not
// lead: a *NotLeaderError naming the leader if one is known.
func (g *group) notLeader() error {
	addr, id := g.raft.LeaderWithID()
	if addr == "" || id == raft.ServerID(g.h.cfg.NodeID) {
		return fmt.Errorf("%w: shard %d", ErrNoLeader, g.id)
	}
	return &NotLeaderError{Shard: g.id, LeaderID: string(id), LeaderAddr: string(addr)}
}

// close shuts raft down and releases the group's files and listener.
func (g *group) close() error {
	g.departures.closing.Store(true)
	var errs []error
	var stopped raft.Future
	if g.raft != nil {
		// Shutdown returns at once; its future waits for raft's goroutines.
		stopped = g.raft.Shutdown()
	}
	if g.trans != nil {
		// Close the transport before waiting for raft, not after: once raft
		// is shut down, its transport holds every RPC it receives without
		// an answer until the transport closes. Two nodes stopping
		// together would each wait in raft.Shutdown for a replication RPC
		// the other holds, until the 10 s I/O timeout. Closing our pooled
		// connections ends the peers' handlers for them; Close answers the
		// held RPCs (ErrTransportShutdown), stops accepting and unregisters
		// from the mux.
		g.trans.CloseStreams()
		if err := g.trans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("shards: shard %d: close transport: %w", g.id, err))
		}
	}
	if stopped != nil {
		if err := stopped.Error(); err != nil {
			errs = append(errs, fmt.Errorf("shards: shard %d: raft shutdown: %w", g.id, err))
		}
		g.raft.DeregisterObserver(g.observer)
	}
	close(g.stopCh)
	g.watchWG.Wait()
	if g.store != nil {
		if err := g.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("shards: shard %d: close raft log: %w", g.id, err))
		}
	}
	return errors.Join(errs...)
}

// advertisedLayer reports AdvertiseAddr as its address, which raft uses as
// this node's address in its RPCs and configuration.
type advertisedLayer struct {
	*mux.Layer
	addr net.Addr
}

func (a advertisedLayer) Addr() net.Addr { return a.addr }

type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }
