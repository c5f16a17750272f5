// Package rebalance moves shard replicas when the cluster's membership
// changes. Every node runs a Reconciler. For every shard it computes the
// target replica set with placement.ReplicaSet over the eligible members,
// and:
//
//   - opens an (unbootstrapped) group for a shard whose target includes
//     this node but which it does not host;
//   - on the shards it leads and is ready on, moves the raft configuration
//     towards the target one change at a time, in the safe order of
//     placement/DESIGN.md: add missing members as nonvoters, promote a
//     nonvoter once it has caught up, and only when every target member is
//     a voter remove the others, this leader last (it transfers the
//     leadership first, and the next leader removes it);
//   - once a shard led here has its target configuration, hands the
//     leadership to the shard's preferred leader (placement.Leaders) if
//     that is another node, alive and caught up, after LeaderSettle;
//   - closes and deletes a group whose configuration, as learned from the
//     leader, no longer includes this node, once it had included it.
//
// Changes are rate-limited by a token bucket, and at most MaxMoving
// shards led here are being changed at once, so a flapping member cannot
// churn the cluster. Suspect members stay eligible; Dead and Left members
// (and raft servers missing from the view) only drop out after DeadGrace.
package rebalance

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/ration/ration/cluster/membership"
	"github.com/ration/ration/cluster/placement"
)

// Host is the part of shards.Host the reconciler drives.
type Host interface {
	NodeID() string
	Shards() int
	Hosted() []uint32
	AddGroup(ctx context.Context, shard uint32) error
	RemoveGroup(ctx context.Context, shard uint32) error
	Configuration(shard uint32) (raft.Configuration, error)
	IsLeader(shard uint32) bool
	IsReady(shard uint32) bool
	Indexes(shard uint32) (commit, applied uint64, err error)
	AddNonvoter(ctx context.Context, shard uint32, id, addr string) error
	PromoteVoter(ctx context.Context, shard uint32, id, addr string) error
	RemoveServer(ctx context.Context, shard uint32, id string) error
	TransferLeadershipOf(ctx context.Context, shard uint32) error
	TransferLeadershipTo(ctx context.Context, shard uint32, id, addr string) error
}

// Members is the membership view (membership.Membership).
type Members interface {
	Members() []membership.Member
	Subscribe() (<-chan struct{}, func())
}

// AppliedIndexFunc asks member for its applied index of shard (over the
// Admin.Status API in a real node).
type AppliedIndexFunc func(ctx context.Context, member membership.Member, shard uint32) (uint64, error)

// LeaderReplicasFunc asks member whether it leads shard and, if it does,
// which servers its latest configuration of the shard holds (over the
// Admin.Status API in a real node).
type LeaderReplicasFunc func(ctx context.Context, member membership.Member, shard uint32) (servers []string, leads bool, err error)

// Config configures a Reconciler. Zero values mean the defaults.
type Config struct {
	Host         Host
	Members      Members
	AppliedIndex AppliedIndexFunc
	// LeaderReplicas, if set, lets a replica that placement drops learn
	// from the shard's leader that it was removed. raft sends the removing
	// configuration to the removed server only once, best effort; if that
	// is lost, the replica keeps its group and campaigns forever.
	LeaderReplicas LeaderReplicasFunc
	Replicas       int
	// DeadGrace is how long a Dead or Left member, or a raft server absent
	// from the view, keeps its replicas (placement.DefaultDeadGrace).
	DeadGrace time.Duration
	// Interval is the reconcile period besides membership changes (1s).
	Interval time.Duration
	// ChangesPerSecond and Burst bound this node's configuration changes
	// (2/s, burst 2).
	ChangesPerSecond float64
	Burst            int
	// MaxMoving bounds the shards led here whose configuration is being
	// changed at once (4).
	MaxMoving int
	// LeaderSettle is how long this node leads a shard before it hands
	// the shard to its preferred leader (placement.Leaders), if that is
	// another node (10s); negative turns leader balancing off.
	LeaderSettle time.Duration
	// MaxLag is how far, in log entries, a nonvoter's applied index may be
	// behind the leader's commit index to be promoted (64).
	MaxLag uint64
	Logger *slog.Logger
	// Registerer, if set, gets the metrics.
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Reconciler runs the rebalancing loop of one node.
type Reconciler struct {
	cfg Config
	log *slog.Logger

	changes *prometheus.CounterVec
	moving  prometheus.Gauge

	// changeRate bounds configuration changes (ChangesPerSecond, Burst).
	changeRate *rate.Limiter

	// Loop state, owned by the loop goroutine.
	seenSelf    map[uint32]bool      // shards whose configuration included this node
	askedLeader map[uint32]time.Time // last time a dropped replica asked the leader
	missingFrom map[string]time.Time // raft servers absent from the view, since
	leaderSince map[uint32]time.Time // shards led (and ready) here, since

	mu        sync.Mutex
	movingSet map[uint32]bool
	// eligible is the latest pass's eligible members (nil before the
	// first pass), for Target.
	eligible []string

	cancel context.CancelFunc
	done   chan struct{}
}

// New makes a Reconciler; Start runs it.
func New(cfg Config) *Reconciler {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.ChangesPerSecond <= 0 {
		cfg.ChangesPerSecond = 2
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 2
	}
	if cfg.MaxMoving <= 0 {
		cfg.MaxMoving = 4
	}
	if cfg.LeaderSettle == 0 {
		cfg.LeaderSettle = 10 * time.Second
	}
	if cfg.MaxLag == 0 {
		cfg.MaxLag = 64
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Reconciler{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "rebalance"),
		seenSelf:    map[uint32]bool{},
		askedLeader: map[uint32]time.Time{},
		missingFrom: map[string]time.Time{},
		leaderSince: map[uint32]time.Time{},
		movingSet:   map[uint32]bool{},
		changeRate:  rate.NewLimiter(rate.Limit(cfg.ChangesPerSecond), cfg.Burst),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ration_rebalance_changes_total",
			Help: "Raft configuration changes and group openings/closings made by this node's rebalancer, by kind.",
		}, []string{"kind"}),
		moving: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ration_rebalance_shards_moving",
			Help: "Shards led by this node whose replica set differs from the target.",
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(r.changes, r.moving)
	}
	return r
}

// Start runs the loop until Stop.
func (r *Reconciler) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan struct{})
	go r.loop(ctx)
}

// Stop ends the loop and waits for it (a change in progress is cancelled).
func (r *Reconciler) Stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	if r.cfg.Registerer != nil {
		r.cfg.Registerer.Unregister(r.changes)
		r.cfg.Registerer.Unregister(r.moving)
	}
}

// Moving reports whether shard, led here, is being moved towards its
// target replica set.
func (r *Reconciler) Moving(shard uint32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.movingSet[shard]
}

// Target returns shard's target replica set as of the latest pass: the
// one the pass moved (or would move, on a shard led here) the shard
// towards, preferred leader first. It is nil before the first pass.
func (r *Reconciler) Target(shard uint32) []string {
	r.mu.Lock()
	eligible := r.eligible
	r.mu.Unlock()
	if eligible == nil {
		return nil
	}
	return r.target(shard, eligible)
}

// target is placement's replica set of shard over the eligible members.
func (r *Reconciler) target(shard uint32, eligible []string) []string {
	return placement.ReplicaSet(shard, eligible, r.cfg.Replicas)
}

func (r *Reconciler) loop(ctx context.Context) {
	defer close(r.done)
	ch, unsubscribe := r.cfg.Members.Subscribe()
	defer unsubscribe()
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		r.Reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-tick.C:
		}
	}
}

// member info for one reconcile pass.
type view struct {
	eligible []string
	byID     map[string]membership.Member
}

func (r *Reconciler) view(now time.Time, servers map[string]bool) view {
	ms := r.cfg.Members.Members()
	v := view{byID: map[string]membership.Member{}}
	in := map[string]bool{}
	for i := range ms {
		m := &ms[i]
		// A member that left (a SIGTERM, often a rolling restart) keeps
		// its replicas for the grace period like a dead one.
		if m.State == membership.Left {
			m.State = membership.Dead
		}
		v.byID[m.NodeID] = *m
		in[m.NodeID] = true
	}
	// A raft server the view does not know (this node started while it
	// was down) is dead since it was first noticed missing.
	for id := range servers {
		if in[id] {
			delete(r.missingFrom, id)
			continue
		}
		since, ok := r.missingFrom[id]
		if !ok {
			since = now
			r.missingFrom[id] = now
		}
		ms = append(ms, membership.Member{Meta: membership.Meta{NodeID: id}, State: membership.Dead, Since: since})
	}
	for id := range r.missingFrom {
		if in[id] {
			delete(r.missingFrom, id)
		}
	}
	for i := range ms {
		if ms[i].State == membership.Left {
			ms[i].State = membership.Dead
		}
	}
	v.eligible = placement.Eligible(ms, now, r.cfg.DeadGrace)
	return v
}

// Reconcile makes one pass over every shard. The loop calls it; tests may
// call it directly instead of Start.
func (r *Reconciler) Reconcile(ctx context.Context) {
	h := r.cfg.Host
	self := h.NodeID()
	now := r.cfg.Now()

	hosted := map[uint32]bool{}
	for _, s := range h.Hosted() {
		hosted[s] = true
	}
	confs := map[uint32]raft.Configuration{}
	servers := map[string]bool{}
	for s := range hosted {
		c, err := h.Configuration(s)
		if err != nil {
			continue
		}
		confs[s] = c
		for _, srv := range c.Servers {
			servers[string(srv.ID)] = true
		}
	}
	v := r.view(now, servers)
	r.mu.Lock()
	r.eligible = v.eligible
	r.mu.Unlock()
	if !slices.Contains(v.eligible, self) {
		// This node does not see itself (it is leaving): do nothing.
		return
	}

	moving := map[uint32]bool{}
	r.mu.Lock()
	for s := range r.movingSet {
		if h.IsLeader(s) {
			moving[s] = true
		}
	}
	r.mu.Unlock()

	targets := make([][]string, h.Shards())
	for s := range targets {
		targets[s] = r.target(uint32(s), v.eligible)
	}
	leaders := placement.Leaders(targets)
	for s := range targets {
		if ctx.Err() != nil {
			return
		}
		shard := uint32(s)
		if !hosted[shard] {
			r.open(ctx, shard, targets[s])
			continue
		}
		r.reconcileShard(ctx, pass{shard: shard, conf: confs[shard], target: targets[s], leader: leaders[s], view: v, now: now}, moving)
	}
	r.mu.Lock()
	r.movingSet = moving
	r.mu.Unlock()
	r.moving.Set(float64(len(moving)))
}

// pass is what one reconcile pass knows of one hosted shard.
type pass struct {
	shard  uint32
	conf   raft.Configuration
	target []string
	leader string // placement.Leaders' preferred leader
	view   view
	now    time.Time
}

// open opens a group for shard if its target includes this node.
func (r *Reconciler) open(ctx context.Context, shard uint32, target []string) {
	if !slices.Contains(target, r.cfg.Host.NodeID()) {
		return
	}
	if err := r.cfg.Host.AddGroup(ctx, shard); err != nil {
		r.log.Warn("open group", "shard", shard, "err", err)
		return
	}
	r.changes.WithLabelValues("open_group").Inc()
	r.log.Info("opened group for a replica placed here", "shard", shard, "target", target)
}

// reconcileShard closes shard's group if placement dropped it here and
// the leader removed it; on a shard led here, it moves the configuration
// one step towards the target, and once there, the leadership to the
// preferred leader.
func (r *Reconciler) reconcileShard(ctx context.Context, p pass, moving map[uint32]bool) {
	h, self, shard := r.cfg.Host, r.cfg.Host.NodeID(), p.shard
	dropped := !slices.Contains(p.target, self)
	var removed bool
	if member(p.conf, self) {
		r.seenSelf[shard] = true
		// The leader may have removed this node without it hearing.
		removed = dropped && !h.IsLeader(shard) && r.removedByLeader(ctx, shard, p.view, p.now)
	} else {
		// Removed from the group by its leader.
		removed = dropped && len(p.conf.Servers) > 0 && r.seenSelf[shard]
	}
	if removed {
		if err := h.RemoveGroup(ctx, shard); err != nil {
			r.log.Warn("remove group", "shard", shard, "err", err)
		} else {
			delete(r.seenSelf, shard)
			r.changes.WithLabelValues("close_group").Inc()
			r.log.Info("closed group of a replica moved away", "shard", shard)
		}
		return
	}
	if !h.IsLeader(shard) || !h.IsReady(shard) {
		delete(moving, shard)
		delete(r.leaderSince, shard)
		return
	}
	if _, ok := r.leaderSince[shard]; !ok {
		r.leaderSince[shard] = p.now
	}
	if !r.step(ctx, shard, p.conf, p.target, p.view, moving) {
		moving[shard] = true
		return
	}
	delete(moving, shard)
	r.preferLeader(ctx, p)
}

// preferLeader hands shard's leadership to its preferred leader when it is
// not this node, once this node has led the shard for LeaderSettle (a
// leader just elected, or just handed the shard by an operator or a test,
// keeps it that long), and the preferred node is alive, a voter and caught
// up, so that the transfer is quick (raft refuses proposals during one).
// The preferred leader never hands the shard on, so this cannot ping-pong
// while the members stay the same.
func (r *Reconciler) preferLeader(ctx context.Context, p pass) {
	h, shard := r.cfg.Host, p.shard
	if r.cfg.LeaderSettle < 0 || p.leader == "" || p.leader == h.NodeID() {
		return
	}
	if p.now.Sub(r.leaderSince[shard]) < r.cfg.LeaderSettle {
		return
	}
	m, ok := p.view.byID[p.leader]
	if !ok || m.State != membership.Alive || m.Stopping {
		return
	}
	var addr string
	for _, s := range p.conf.Servers {
		if string(s.ID) == p.leader && s.Suffrage == raft.Voter {
			addr = string(s.Address)
		}
	}
	if addr == "" || !r.caughtUp(ctx, shard, m) || !r.take() {
		return
	}
	// Whatever the outcome, wait another LeaderSettle before retrying.
	r.leaderSince[shard] = p.now
	if err := h.TransferLeadershipTo(ctx, shard, p.leader, addr); err != nil {
		if !errors.Is(err, context.Canceled) {
			r.log.Warn("leadership transfer to the preferred leader failed", "shard", shard, "to", p.leader, "err", err)
		}
		return
	}
	r.changes.WithLabelValues("prefer_leader").Inc()
	r.log.Info("rebalance change", "shard", shard, "kind", "prefer_leader", "server", p.leader)
}

// caughtUp reports whether member m's applied index of shard, led here,
// is within MaxLag of this leader's commit index: false when either
// cannot be read.
func (r *Reconciler) caughtUp(ctx context.Context, shard uint32, m membership.Member) bool {
	if r.cfg.AppliedIndex == nil {
		return false
	}
	commit, _, err := r.cfg.Host.Indexes(shard)
	if err != nil {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	applied, err := r.cfg.AppliedIndex(cctx, m, shard)
	return err == nil && applied+r.cfg.MaxLag >= commit
}

// askLeaderEvery bounds how often a replica that placement drops asks
// the shard's leader whether it is still in the configuration.
const askLeaderEvery = 5 * time.Second

// removedByLeader reports whether a member that leads shard says its
// configuration no longer holds this node. Only a leader's word counts: a
// replica must never drop a group on a guess, as it may hold the only
// copy of committed entries.
func (r *Reconciler) removedByLeader(ctx context.Context, shard uint32, v view, now time.Time) bool {
	if r.cfg.LeaderReplicas == nil || now.Sub(r.askedLeader[shard]) < askLeaderEvery {
		return false
	}
	r.askedLeader[shard] = now
	self := r.cfg.Host.NodeID()
	for _, id := range slices.Sorted(maps.Keys(v.byID)) {
		m := v.byID[id]
		if id == self || m.State != membership.Alive {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		servers, leads, err := r.cfg.LeaderReplicas(cctx, m, shard)
		cancel()
		if err != nil || !leads {
			continue
		}
		return len(servers) > 0 && !slices.Contains(servers, self)
	}
	return false
}

// step applies at most one configuration change to shard, led here. It
// returns true when the configuration matches the target.
func (r *Reconciler) step(ctx context.Context, shard uint32, c raft.Configuration, target []string, v view, moving map[uint32]bool) bool {
	suffrage := map[string]raft.ServerSuffrage{}
	for _, s := range c.Servers {
		suffrage[string(s.ID)] = s.Suffrage
	}
	allVoters := true
	for _, id := range target {
		if s, ok := suffrage[id]; !ok || s != raft.Voter {
			allVoters = false
		}
	}
	// The safe order: add, promote, and only with every target member a
	// voter, remove.
	ch := r.addMissing(ctx, shard, target, suffrage, v)
	if ch == nil {
		ch = r.promoteCaughtUp(ctx, shard, target, suffrage, v)
	}
	if ch == nil && allVoters {
		ch = r.removeExtra(ctx, shard, c, target)
	}
	if ch == nil {
		// Nothing to do now: done if the configuration is the target,
		// else waiting (a nonvoter catching up, a member not alive).
		return allVoters && len(c.Servers) == len(target)
	}
	if !moving[shard] && len(moving) >= r.cfg.MaxMoving {
		return false
	}
	if !r.take() {
		return false
	}
	moving[shard] = true
	if err := ch.apply(); err != nil {
		if !errors.Is(err, context.Canceled) {
			r.log.Warn("rebalance change failed", "shard", shard, "kind", ch.kind, "server", ch.server, "err", err)
		}
		return false
	}
	r.changes.WithLabelValues(ch.kind).Inc()
	r.log.Info("rebalance change", "shard", shard, "kind", ch.kind, "server", ch.server, "target", target)
	return false
}

// change is one change to a shard's raft configuration: its kind (the
// metric's label), the server it is about, and what makes it.
type change struct {
	kind   string
	server string
	apply  func() error
}

// addMissing adds the first target member missing from the configuration,
// alive and with a raft address, as a nonvoter; nil if there is none.
func (r *Reconciler) addMissing(ctx context.Context, shard uint32, target []string, suffrage map[string]raft.ServerSuffrage, v view) *change {
	for _, id := range target {
		if _, ok := suffrage[id]; ok {
			continue
		}
		m, ok := v.byID[id]
		if !ok || m.Meta.RaftAddr == "" || m.State != membership.Alive || m.Stopping {
			continue
		}
		return &change{kind: "add_nonvoter", server: id, apply: func() error {
			return r.cfg.Host.AddNonvoter(ctx, shard, id, m.Meta.RaftAddr)
		}}
	}
	return nil
}

// promoteCaughtUp promotes the first target nonvoter that has caught up;
// nil if there is none.
func (r *Reconciler) promoteCaughtUp(ctx context.Context, shard uint32, target []string, suffrage map[string]raft.ServerSuffrage, v view) *change {
	for _, id := range target {
		if s, ok := suffrage[id]; !ok || s == raft.Voter {
			continue
		}
		m, ok := v.byID[id]
		if !ok || !r.caughtUp(ctx, shard, m) {
			continue
		}
		return &change{kind: "promote", server: id, apply: func() error {
			return r.cfg.Host.PromoteVoter(ctx, shard, id, m.Meta.RaftAddr)
		}}
	}
	return nil
}

// removeExtra removes the first server, by id, that is not in the target;
// this leader last, by handing over the leadership (the next leader
// removes it). Nil if every server is in the target.
func (r *Reconciler) removeExtra(ctx context.Context, shard uint32, c raft.Configuration, target []string) *change {
	h := r.cfg.Host
	self := h.NodeID()
	var extra []string
	for _, s := range c.Servers {
		if !slices.Contains(target, string(s.ID)) {
			extra = append(extra, string(s.ID))
		}
	}
	slices.Sort(extra)
	for _, id := range extra {
		if id != self {
			return &change{kind: "remove", server: id, apply: func() error { return h.RemoveServer(ctx, shard, id) }}
		}
	}
	if slices.Contains(extra, self) {
		return &change{kind: "transfer_leadership", server: self, apply: func() error { return h.TransferLeadershipOf(ctx, shard) }}
	}
	return nil
}

func member(c raft.Configuration, id string) bool {
	for _, s := range c.Servers {
		if string(s.ID) == id {
			return true
		}
	}
	return false
}

// take spends one of the changes the rate limit allows, if one is left.
func (r *Reconciler) take() bool {
	return r.changeRate.AllowN(r.cfg.Now(), 1)
}
