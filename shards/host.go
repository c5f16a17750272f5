// Package shards runs every raft group of one node: one hashicorp/raft
// instance per shard, all sharing the node's mux port, each replicating a
// raftfsm.Shard. It proposes ops with group commit, serves linearizable read
// barriers, and tells the node's actors when it gains or loses the
// leadership of a shard. See DESIGN.md.
package shards

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ration/ration/mux"
	"github.com/ration/ration/raftfsm"
	"github.com/ration/ration/raftlog"
)

// Config configures a Host. Zero durations and sizes mean the defaults.
type Config struct {
	// NodeID is this node's raft server id in every group.
	NodeID  string
	DataDir string
	// Mux carries every group's raft traffic (mux.TypeRaft, shard id).
	Mux *mux.Mux
	// AdvertiseAddr is the raft address peers dial, host:port of Mux.
	// Empty means Mux.Addr(), which is right when the Mux was created with
	// mux.WithAdvertiseAddr.
	AdvertiseAddr string
	// Resolve, if set, gives a peer's current raft address by server id.
	// Raft keeps each peer's address in its replicated configuration, so
	// without it a peer that comes back at a new address (a rescheduled
	// pod gets a new IP) would be dialled at the old one forever. An error
	// falls back to the address in the configuration.
	Resolve raft.ServerAddressProvider
	// Departing, if set, reports whether a peer (by server id, raft
	// address, or both; either may be empty) is going away on purpose: a
	// node that stops gracefully announces it first. Raft's failures to
	// reach such a peer are then logged at DEBUG, not as the errors they
	// are while everyone stays, and TransferLeadership hands shards only
	// to voters that stay. Asked about this node (its NodeID), it says
	// whether this node is going away, which makes every failure to
	// reach a peer expected; so does closing a group or the Host.
	Departing func(id raft.ServerID, addr raft.ServerAddress) bool
	// Shards is the number of shards of the cluster; users map to them by
	// ShardOf, so it must not change once data exists. Open records it in
	// DataDir/shard-count and refuses a data dir that records another
	// (ErrShardCountMismatch); ChooseCount decides it for a node.
	Shards int
	// Hosted lists the shards this node hosts; nil means all of them.
	Hosted []uint32
	// Bootstrap forms each hosted group that has no raft state yet, with
	// Peers as its voters (this node alone if Peers is empty). Only one
	// node of a new cluster should bootstrap; the others start with
	// Bootstrap false and are contacted by the bootstrapped leader.
	Bootstrap bool
	// Peers is the initial configuration for Bootstrap; it must include
	// this node.
	Peers []raft.Server
	// PeersOf, if set, gives each shard its own initial configuration
	// instead of Peers: with more nodes than replicas every shard has its
	// own replica set. Every replica of a shard may bootstrap it, as long
	// as all of them use the identical configuration.
	PeersOf func(shard uint32) []raft.Server

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	// SnapshotOps also makes a group snapshot when it applied more ops
	// than this (and than an eighth of its state) since its last snapshot
	// (snapshots.go); default 1Mi ops.
	SnapshotOps uint64
	// TrailingLogs is how many entries a snapshot leaves in the log, so a
	// lagging follower can catch up without a snapshot install.
	TrailingLogs uint64

	// MaxBatchOps bounds the ops the proposer puts in one raft entry
	// (default 257: one op plus up to 256 queued behind it).
	MaxBatchOps int
	// MaxInflight bounds the entries of one shard handed to raft and not
	// yet applied (default 32). It is the pipeline depth: more lets
	// proposals overlap more fsyncs, fewer keeps latency under overload
	// flatter.
	MaxInflight int
	// QueueDepth is each shard's proposal queue (default 4096). Propose
	// blocks, within its context, while the queue is full.
	QueueDepth int

	Logger *slog.Logger
	// Registerer, if set, gets the Host's metrics (see DESIGN.md); they
	// are unregistered by Shutdown, so a Host can be reopened on it.
	Registerer prometheus.Registerer

	// LogStore is where raft logs live (default LogStoreShared). A data
	// dir keeps the one it was created with; Open refuses the other.
	LogStore LogStore

	// testSink also receives the proposal path's measurements (tests).
	testSink sink
}

const (
	defaultMaxBatchOps = 257
	defaultMaxInflight = 32
	defaultQueueDepth  = 4096
)

func (c *Config) validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("shards: NodeID is required")
	case c.DataDir == "":
		return errors.New("shards: DataDir is required")
	case c.Mux == nil:
		return errors.New("shards: Mux is required")
	case c.Shards <= 0:
		return fmt.Errorf("shards: Shards must be positive, got %d", c.Shards)
	case c.MaxBatchOps < 0 || c.MaxBatchOps > raftfsm.MaxBatchOps:
		return fmt.Errorf("shards: MaxBatchOps must be 0 to %d, got %d", raftfsm.MaxBatchOps, c.MaxBatchOps)
	case c.MaxInflight < 0 || c.QueueDepth < 0:
		return errors.New("shards: MaxInflight and QueueDepth must not be negative")
	}
	if _, err := ParseLogStore(string(c.LogStore)); err != nil {
		return fmt.Errorf("shards: %w", err)
	}
	for _, s := range c.Hosted {
		if int64(s) >= int64(c.Shards) {
			return fmt.Errorf("shards: hosted shard %d out of range [0, %d)", s, c.Shards)
		}
	}
	if c.Bootstrap && len(c.Peers) > 0 {
		if !slices.ContainsFunc(c.Peers, func(s raft.Server) bool { return s.ID == raft.ServerID(c.NodeID) }) {
			return fmt.Errorf("shards: Peers must include this node %q", c.NodeID)
		}
	}
	return nil
}

// Host owns the raft groups of this node.
type Host struct {
	cfg     Config
	log     *slog.Logger
	metrics sinks
	prom    *promMetrics // nil without a Registerer
	// logs is the node's shared raft log engine; nil with LogStoreBolt.
	logs *raftlog.Store

	// gmu guards groups and hosted, which AddGroup and RemoveGroup change
	// at run time; readers take a snapshot (hostedGroups) or look one
	// group up (group) under the read lock.
	gmu    sync.RWMutex
	groups []*group // indexed by shard id; nil where not hosted
	hosted []*group // the non-nil groups, by shard id
	// changeMu serializes AddGroup, RemoveGroup and Shutdown's snapshot
	// of the groups, so that no group is opened behind Shutdown's back.
	changeMu sync.Mutex

	// mu orders Propose's enqueue against Shutdown: Shutdown takes it
	// exclusively to set closed, after which nothing new is queued, so the
	// proposers' final drain fails every queued op.
	mu      sync.RWMutex
	closed  bool
	closing chan struct{}

	shutdownOnce sync.Once
	shutdownErr  error

	// snapLoopDone is closed when snapshotBySize has returned; nil if it
	// never started.
	snapLoopDone chan struct{}

	changed broadcast // some group's leader or readiness changed
	events  *dispatcher
	wg      sync.WaitGroup // leadership confirmations
}

// Open opens (creating if need be) every hosted group under
// DataDir/shards/<id>/ and starts them. It does not wait for elections; see
// WaitReady. On error every group opened so far is shut down again.
func Open(ctx context.Context, cfg Config) (*Host, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBatchOps == 0 {
		cfg.MaxBatchOps = defaultMaxBatchOps
	}
	if cfg.MaxInflight == 0 {
		cfg.MaxInflight = defaultMaxInflight
	}
	if cfg.QueueDepth == 0 {
		cfg.QueueDepth = defaultQueueDepth
	}
	if cfg.SnapshotOps == 0 {
		cfg.SnapshotOps = defaultSnapshotOps
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.LogStore, _ = ParseLogStore(string(cfg.LogStore))
	if err := checkLayout(cfg.DataDir, cfg.LogStore); err != nil {
		return nil, err
	}
	if err := checkCount(cfg.DataDir, cfg.Shards); err != nil {
		return nil, err
	}
	h := &Host{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "shards", "node", cfg.NodeID),
		groups:  make([]*group, cfg.Shards),
		closing: make(chan struct{}),
	}
	if cfg.testSink != nil {
		h.metrics = append(h.metrics, cfg.testSink)
	}
	h.events = newDispatcher()
	if cfg.LogStore == LogStoreShared {
		logs, err := raftlog.Open(raftlog.Options{Dir: filepath.Join(cfg.DataDir, "raftlog"), Logger: h.log})
		if err != nil {
			h.events.close()
			return nil, fmt.Errorf("shards: %w", err)
		}
		h.logs = logs
	}

	ids := cfg.Hosted
	if ids == nil {
		ids = make([]uint32, cfg.Shards)
		for i := range ids {
			ids[i] = uint32(i)
		}
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			h.shutdownNow()
			return nil, fmt.Errorf("shards: open: %w", err)
		}
		g, err := h.openGroup(id, cfg.Bootstrap)
		if err != nil {
			h.shutdownNow()
			return nil, err
		}
		h.groups[id] = g
		h.hosted = append(h.hosted, g)
	}
	if cfg.Registerer != nil {
		m, err := newPromMetrics(h, cfg.Registerer)
		if err != nil {
			h.shutdownNow()
			return nil, err
		}
		h.prom = m
		h.metrics = append(h.metrics, m)
	}
	for _, g := range h.hosted {
		g.start()
	}
	h.snapLoopDone = make(chan struct{})
	go h.snapshotBySize()
	return h, nil
}

// shutdownNow shuts down without waiting for in-flight ops, for failed Opens.
func (h *Host) shutdownNow() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = h.Shutdown(ctx)
}

// Shutdown stops the Host: queued ops that were not yet handed to raft fail
// with ErrShuttingDown, ops in raft are waited for until ctx ends (after
// which they fail with ErrOutcomeUnknown), then every group is shut down and
// its files closed. It returns when every goroutine of the Host has ended.
// Calling it again returns the first call's result.
func (h *Host) Shutdown(ctx context.Context) error {
	h.shutdownOnce.Do(func() { h.shutdownErr = h.shutdown(ctx) })
	return h.shutdownErr
}

func (h *Host) shutdown(ctx context.Context) error {
	close(h.closing)
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	// An AddGroup or RemoveGroup in progress finishes first; later ones
	// see closing and do nothing.
	h.changeMu.Lock()
	hosted := h.hostedGroups()
	h.changeMu.Unlock()

	for _, g := range hosted {
		g.stopProposing()
	}
	var errs []error
wait:
	for _, g := range hosted {
		select {
		case <-g.pipelineDone:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("shards: shutdown: abandoning in-flight ops: %w", ctx.Err()))
			break wait
		}
	}

	// raft's Shutdown waits for its goroutines, a running snapshot
	// included; the groups are independent, so do them all at once.
	closeErrs := make([]error, len(hosted))
	var wg sync.WaitGroup
	for i, g := range hosted {
		wg.Go(func() { closeErrs[i] = g.close() })
	}
	wg.Wait()
	errs = append(errs, closeErrs...)
	if h.snapLoopDone != nil {
		// It saw closing, or its snapshot failed as raft shut down.
		<-h.snapLoopDone
	}

	// With raft down nearly every future has resolved, so these end now.
	// Not all: raft v1.7.3's FSM goroutine returns at shutdown without
	// answering batches still queued for it (fsmMutateCh), and a completer
	// or leadership confirmation waiting on one would wait forever. Their
	// callers have contexts of their own; give stragglers a moment, then
	// leave them.
	if n := h.awaitStragglers(ctx, hosted, stragglerGrace); n > 0 {
		h.log.Warn("shutdown: raft left futures unanswered; abandoning their waiters", "waiters", n)
		errs = append(errs, fmt.Errorf("shards: shutdown: %d waiters on futures raft never answered", n))
	}
	h.events.close()
	h.changed.notify()
	if h.prom != nil {
		h.prom.unregister()
	}
	if h.logs != nil {
		// Every raft is down, so nothing writes to the engine any more
		// (a straggler would get raftlog.ErrClosed).
		errs = append(errs, h.logs.Close())
	}
	return errors.Join(errs...)
}

// stragglerGrace bounds the wait for goroutines waiting on raft futures
// once every raft has shut down: what raft answers, it answers at once.
const stragglerGrace = 2 * time.Second

// awaitStragglers waits for the groups' completers and the host's
// goroutines until grace passes or ctx ends, and returns how many of them
// it left waiting.
func (h *Host) awaitStragglers(ctx context.Context, hosted []*group, grace time.Duration) int {
	var pending atomic.Int64
	done := make(chan struct{})
	var all sync.WaitGroup
	for _, g := range hosted {
		pending.Add(1)
		all.Go(func() { <-g.pipelineDone; pending.Add(-1) })
	}
	pending.Add(1)
	all.Go(func() { h.wg.Wait(); pending.Add(-1) })
	go func() { all.Wait(); close(done) }()

	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return 0
	case <-t.C:
	case <-ctx.Done():
	}
	return int(pending.Load())
}

func (h *Host) isClosing() bool {
	select {
	case <-h.closing:
		return true
	default:
		return false
	}
}

func (h *Host) group(shard uint32) (*group, error) {
	h.gmu.RLock()
	defer h.gmu.RUnlock()
	if int64(shard) >= int64(len(h.groups)) || h.groups[shard] == nil {
		return nil, fmt.Errorf("%w: shard %d", ErrNotHosted, shard)
	}
	return h.groups[shard], nil
}

// hostedGroups is a snapshot of the hosted groups, by shard id.
func (h *Host) hostedGroups() []*group {
	h.gmu.RLock()
	defer h.gmu.RUnlock()
	return slices.Clone(h.hosted)
}

// NodeID is this node's raft server id.
func (h *Host) NodeID() string { return h.cfg.NodeID }

// Shards is the cluster's shard count.
func (h *Host) Shards() int { return h.cfg.Shards }

// Hosted lists the shards this node hosts, in increasing order.
func (h *Host) Hosted() []uint32 {
	hosted := h.hostedGroups()
	ids := make([]uint32, len(hosted))
	for i, g := range hosted {
		ids[i] = g.id
	}
	return ids
}

// FSM is the replicated state of shard, or nil if it is not hosted here.
// On a follower it may lag the leader; see ReadBarrier.
func (h *Host) FSM(shard uint32) *raftfsm.Shard {
	g, err := h.group(shard)
	if err != nil {
		return nil
	}
	return g.fsm
}

// IsLeader reports raft's view of whether this node leads shard. A new
// leader may not be ready for reads yet; ReadBarrier waits for that, and
// Subscribe reports leadership only once it is.
func (h *Host) IsLeader(shard uint32) bool {
	g, err := h.group(shard)
	return err == nil && g.raft.State() == raft.Leader
}

// Leader is the shard's leader as this node knows it: its server id and
// raft address, both empty if unknown.
func (h *Host) Leader(shard uint32) (id, addr string) {
	g, err := h.group(shard)
	if err != nil {
		return "", ""
	}
	a, i := g.raft.LeaderWithID()
	return string(i), string(a)
}

// Ready reports whether every hosted shard of which this node is a voter
// has a known leader and this node is ready on every shard it leads (its
// first entry as leader has been applied, so reads and actor activations
// see every earlier write).
//
// Groups in which this node is not a voter (per its latest configuration)
// do not count: a group just opened by AddGroup has an empty configuration
// until the leader contacts it, a nonvoter is still catching up, and a
// removed replica waits for RemoveGroup. None of them serves requests, and
// counting them would make /readyz flap on every move.
func (h *Host) Ready() bool {
	for _, g := range h.hostedGroups() {
		if !g.isVoter() {
			continue
		}
		if addr, _ := g.raft.LeaderWithID(); addr == "" {
			return false
		}
		if g.raft.State() == raft.Leader && !g.isReady() {
			return false
		}
	}
	return true
}

// WaitReady blocks until Ready or ctx ends.
func (h *Host) WaitReady(ctx context.Context) error {
	// Changes wake it up; the ticker is a backstop for leader changes of
	// other nodes whose observation raft dropped.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ch := h.changed.wait()
		if h.Ready() {
			return nil
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-h.closing:
			return ErrShuttingDown
		case <-ctx.Done():
			return fmt.Errorf("shards: waiting for leaders: %w", ctx.Err())
		}
	}
}

// Snapshot makes shard's raft take a snapshot now and waits for it. It
// returns an error wrapping raft.ErrNothingNewToSnapshot if nothing was
// applied since the last one.
func (h *Host) Snapshot(shard uint32) error {
	g, err := h.group(shard)
	if err != nil {
		return err
	}
	if err := g.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("shards: shard %d: snapshot: %w", shard, err)
	}
	return nil
}

// ShardStatus describes one hosted group.
type ShardStatus struct {
	Shard uint32
	// State is raft's state: Follower, Candidate, Leader or Shutdown.
	State string
	// Ready is true when this node leads the shard and may serve reads.
	Ready        bool
	LeaderID     string
	LeaderAddr   string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64 // of the state machine
	LastIndex    uint64
	Users        int
	Voters       []string // server ids
	// Replicas are every server of the latest configuration, voters and
	// nonvoters (a nonvoter is a replica being added by rebalancing).
	Replicas []string
}

// Status describes every hosted group, by shard id.
func (h *Host) Status() []ShardStatus {
	hosted := h.hostedGroups()
	out := make([]ShardStatus, 0, len(hosted))
	for _, g := range hosted {
		addr, id := g.raft.LeaderWithID()
		st := ShardStatus{
			Shard:        g.id,
			State:        g.raft.State().String(),
			Ready:        g.raft.State() == raft.Leader && g.isReady(),
			LeaderID:     string(id),
			LeaderAddr:   string(addr),
			Term:         g.raft.CurrentTerm(),
			CommitIndex:  g.raft.CommitIndex(),
			AppliedIndex: g.fsm.AppliedIndex(),
			LastIndex:    g.raft.LastIndex(),
			Users:        g.fsm.Users(),
		}
		if f := g.raft.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				if s.Suffrage == raft.Voter {
					st.Voters = append(st.Voters, string(s.ID))
				}
				st.Replicas = append(st.Replicas, string(s.ID))
			}
		}
		out = append(out, st)
	}
	return out
}

// broadcast wakes every waiter once per notify, without allocating when
// nobody waits.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) notify() {
	b.mu.Lock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
	b.mu.Unlock()
}
