package shards

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestPrometheusMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	n := newNode(t, "n1", t.TempDir())
	cfg := fastConfig(2)
	cfg.Bootstrap = true
	cfg.Registerer = reg
	n.start(cfg)
	t.Cleanup(n.stop)
	waitReady(t, n.host)
	writeSome(t, n.host, 4, 3)
	propose(t, n.host, grant("user-0", 0, "stale", 1))

	fams := gather(t, reg)
	for _, s := range []string{"0", "1"} {
		if v := gauge(fams, "ration_raft_state", s); v != float64(2) {
			t.Errorf("raft state of shard %s = %v, want 2 (leader)", s, v)
		}
		if v := gauge(fams, "ration_raft_applied_index", s); v < 2 {
			t.Errorf("applied index of shard %s = %v", s, v)
		}
	}
	if v := counterByOutcome(fams, "applied"); v != 12 {
		t.Errorf("applied proposals %v, want 12", v)
	}
	if v := counterByOutcome(fams, "version_mismatch"); v != 1 {
		t.Errorf("mismatched proposals %v, want 1", v)
	}
	if h := fams["ration_propose_batch_ops"]; h == nil || h.Metric[0].GetHistogram().GetSampleCount() == 0 {
		t.Error("no batch size samples")
	}
	if h := fams["ration_propose_duration_seconds"]; h == nil {
		t.Error("no latency histogram")
	}
	// The shared raft log engine's own metrics: every acknowledged write
	// was fsynced, and its bytes went through the WAL.
	fsync := fams["ration_raftlog_wal_fsync_duration_seconds"].GetMetric()
	if len(fsync) != 1 || fsync[0].GetHistogram().GetSampleCount() == 0 {
		t.Errorf("WAL fsync histogram %v", fsync)
	} else if b := fsync[0].GetHistogram().GetBucket(); len(b) == 0 || b[len(b)-1].GetCumulativeCount() > fsync[0].GetHistogram().GetSampleCount() {
		t.Errorf("WAL fsync buckets %v", b)
	}
	for _, name := range []string{"ration_raftlog_wal_bytes_written_total"} {
		if m := fams[name].GetMetric(); len(m) != 1 || m[0].GetCounter().GetValue() == 0 {
			t.Errorf("%s = %v", name, m)
		}
	}
	for _, name := range []string{"ration_raftlog_read_amplification", "ration_raftlog_disk_bytes", "ration_raftlog_memtable_bytes",
		"ration_raftlog_compactions_total", "ration_raftlog_flushes_total", "ration_raftlog_write_stalls_total"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}

	// Shutdown unregisters, so the same registry serves the reopened Host.
	n.restart()
	waitReady(t, n.host)
	if fams := gather(t, reg); fams["ration_raft_state"] == nil {
		t.Error("metrics missing after reopen")
	}
}

func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	list, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range list {
		out[f.GetName()] = f
	}
	return out
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func gauge(fams map[string]*dto.MetricFamily, name, shard string) float64 {
	for _, m := range fams[name].GetMetric() {
		if labelValue(m, "shard") == shard {
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

func counterByOutcome(fams map[string]*dto.MetricFamily, outcome string) float64 {
	for _, m := range fams["ration_proposals_total"].GetMetric() {
		if labelValue(m, "outcome") == outcome {
			return m.GetCounter().GetValue()
		}
	}
	return -1
}
