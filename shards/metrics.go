package shards

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcome classifies the end of a Propose call, for metrics.
type Outcome string

// Outcomes, the values of the outcome label.
const (
	OutcomeApplied   Outcome = "applied"
	OutcomeMismatch  Outcome = "version_mismatch"
	OutcomeNotLeader Outcome = "not_leader"
	OutcomeNoLeader  Outcome = "no_leader"
	OutcomeUnknown   Outcome = "outcome_unknown"
	OutcomeCanceled  Outcome = "canceled" // never proposed: the context ended first
	OutcomeShutdown  Outcome = "shutting_down"
	OutcomeError     Outcome = "error"
)

var outcomes = []Outcome{OutcomeApplied, OutcomeMismatch, OutcomeNotLeader, OutcomeNoLeader,
	OutcomeUnknown, OutcomeCanceled, OutcomeShutdown, OutcomeError}

func outcomeOf(applied bool, err error) Outcome {
	switch {
	case err == nil && applied:
		return OutcomeApplied
	case err == nil:
		return OutcomeMismatch
	case errors.Is(err, ErrOutcomeUnknown):
		return OutcomeUnknown
	case errors.Is(err, ErrNotLeader):
		return OutcomeNotLeader
	case errors.Is(err, ErrNoLeader):
		return OutcomeNoLeader
	case errors.Is(err, ErrShuttingDown):
		return OutcomeShutdown
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return OutcomeCanceled
	}
	return OutcomeError
}

// sink receives the proposal path's measurements. Its methods run on the
// hot path, from many goroutines: cheap, concurrency-safe, non-blocking.
type sink interface {
	// batchProposed: the proposer of shard handed raft an entry of ops ops.
	batchProposed(shard uint32, ops int)
	// proposalDone: a Propose call with a valid op for a hosted shard
	// ended, latency after it started.
	proposalDone(shard uint32, outcome Outcome, latency time.Duration)
}

type sinks []sink

func (s sinks) batchProposed(shard uint32, ops int) {
	for _, k := range s {
		k.batchProposed(shard, ops)
	}
}

func (s sinks) proposalDone(shard uint32, o Outcome, d time.Duration) {
	for _, k := range s {
		k.proposalDone(shard, o, d)
	}
}

// proposalsDone is proposalDone for each of n ops that ended alike.
func (s sinks) proposalsDone(shard uint32, n int, o Outcome, d time.Duration) {
	for range n {
		s.proposalDone(shard, o, d)
	}
}

// promMetrics exports the Host to prometheus: histograms and counters fed
// by the proposal path, and per-shard gauges read from raft and the state
// machines at scrape time (so they cost nothing between scrapes).
type promMetrics struct {
	h         *Host
	reg       prometheus.Registerer
	latency   *prometheus.HistogramVec
	batchOps  prometheus.Histogram
	proposals *prometheus.CounterVec
	// Pre-resolved children, so the hot path does no label lookup.
	latencyBy   map[Outcome]prometheus.Observer
	proposalsBy map[Outcome]prometheus.Counter

	stateDesc, commitDesc, appliedDesc, usersDesc *prometheus.Desc
	mismatchDesc, ignoredDesc, invalidDesc        *prometheus.Desc
}

func newPromMetrics(h *Host, reg prometheus.Registerer) (*promMetrics, error) {
	m := &promMetrics{
		h:   h,
		reg: reg,
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ration_propose_duration_seconds",
			Help:    "Time from Propose to its result, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5ms to 4s
		}, []string{"outcome"}),
		batchOps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ration_propose_batch_ops",
			Help:    "Ops per raft entry written by the proposers (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10), // 1 to 512
		}),
		proposals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ration_proposals_total",
			Help: "Propose calls, by outcome.",
		}, []string{"outcome"}),
		latencyBy:   map[Outcome]prometheus.Observer{},
		proposalsBy: map[Outcome]prometheus.Counter{},
		stateDesc: prometheus.NewDesc("ration_raft_state",
			"Raft state of the shard's group on this node: 0 follower, 1 candidate, 2 leader, 3 shutdown.", []string{"shard"}, nil),
		commitDesc: prometheus.NewDesc("ration_raft_commit_index",
			"Raft commit index of the shard's group on this node.", []string{"shard"}, nil),
		appliedDesc: prometheus.NewDesc("ration_raft_applied_index",
			"Last raft index applied to the shard's state machine on this node.", []string{"shard"}, nil),
		usersDesc: prometheus.NewDesc("ration_shard_users",
			"Users with at least one operation in the shard.", []string{"shard"}, nil),
		mismatchDesc: prometheus.NewDesc("ration_fsm_version_mismatches_total",
			"Ops the shard's state machine refused for a stale expected version.", []string{"shard"}, nil),
		ignoredDesc: prometheus.NewDesc("ration_fsm_ignored_commands_total",
			"Unknown ignorable commands the shard's state machine skipped.", []string{"shard"}, nil),
		invalidDesc: prometheus.NewDesc("ration_fsm_invalid_ops_total",
			"Ops or entries the shard's state machine refused as malformed (proposer bugs).", []string{"shard"}, nil),
	}
	for _, o := range outcomes {
		m.latencyBy[o] = m.latency.WithLabelValues(string(o))
		m.proposalsBy[o] = m.proposals.WithLabelValues(string(o))
	}
	var done []prometheus.Collector
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("shards: register metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}

// collectors are what the Host registers: its own, and the shared raft
// log engine's (WAL fsync latency, bytes written, compactions, read
// amplification).
func (m *promMetrics) collectors() []prometheus.Collector {
	cs := []prometheus.Collector{m.latency, m.batchOps, m.proposals, m}
	if m.h.logs != nil {
		cs = append(cs, m.h.logs.Collector())
	}
	return cs
}

func (m *promMetrics) unregister() {
	for _, c := range m.collectors() {
		m.reg.Unregister(c)
	}
}

func (m *promMetrics) batchProposed(_ uint32, ops int) { m.batchOps.Observe(float64(ops)) }

func (m *promMetrics) proposalDone(_ uint32, o Outcome, d time.Duration) {
	m.latencyBy[o].Observe(d.Seconds())
	m.proposalsBy[o].Inc()
}

// Describe implements prometheus.Collector.
func (m *promMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.stateDesc, m.commitDesc, m.appliedDesc, m.usersDesc,
		m.mismatchDesc, m.ignoredDesc, m.invalidDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *promMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, g := range m.h.hostedGroups() {
		shard := strconv.FormatUint(uint64(g.id), 10)
		st := g.fsm.Stats()
		ch <- prometheus.MustNewConstMetric(m.stateDesc, prometheus.GaugeValue, float64(g.raft.State()), shard)
		ch <- prometheus.MustNewConstMetric(m.commitDesc, prometheus.GaugeValue, float64(g.raft.CommitIndex()), shard)
		ch <- prometheus.MustNewConstMetric(m.appliedDesc, prometheus.GaugeValue, float64(g.fsm.AppliedIndex()), shard)
		ch <- prometheus.MustNewConstMetric(m.usersDesc, prometheus.GaugeValue, float64(g.fsm.Users()), shard)
		ch <- prometheus.MustNewConstMetric(m.mismatchDesc, prometheus.CounterValue, float64(st.Mismatches), shard)
		ch <- prometheus.MustNewConstMetric(m.ignoredDesc, prometheus.CounterValue, float64(st.Ignored), shard)
		ch <- prometheus.MustNewConstMetric(m.invalidDesc, prometheus.CounterValue, float64(st.Invalid+st.Malformed), shard)
	}
}
