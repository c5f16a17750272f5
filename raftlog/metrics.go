package raftlog

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Collector exports the engine's own metrics, read at scrape time.
func (s *Store) Collector() prometheus.Collector { return collector{s} }

var (
	descFsync = prometheus.NewDesc("ration_raftlog_wal_fsync_duration_seconds",
		"Latency of the raft log engine's WAL fsyncs; its count is the number of fsyncs.", nil, nil)
	descWALBytes = prometheus.NewDesc("ration_raftlog_wal_bytes_written_total",
		"Bytes written to the raft log engine's WAL.", nil, nil)
	descFlushes = prometheus.NewDesc("ration_raftlog_flushes_total",
		"Memtable flushes of the raft log engine.", nil, nil)
	descCompactions = prometheus.NewDesc("ration_raftlog_compactions_total",
		"Compactions of the raft log engine.", nil, nil)
	descCompactBytes = prometheus.NewDesc("ration_raftlog_compaction_bytes_written_total",
		"Bytes written by the raft log engine's flushes and compactions.", nil, nil)
	descReadAmp = prometheus.NewDesc("ration_raftlog_read_amplification",
		"Sstable layers a point read may visit in the raft log engine.", nil, nil)
	descDisk = prometheus.NewDesc("ration_raftlog_disk_bytes",
		"Disk space used by the raft log engine.", nil, nil)
	descMemtable = prometheus.NewDesc("ration_raftlog_memtable_bytes",
		"Memory held by the raft log engine's memtables.", nil, nil)
	descCacheBytes = prometheus.NewDesc("ration_raftlog_block_cache_bytes",
		"Bytes in the raft log engine's block cache.", nil, nil)
	descCacheHits = prometheus.NewDesc("ration_raftlog_block_cache_hits_total",
		"Block cache hits of the raft log engine.", nil, nil)
	descCacheMisses = prometheus.NewDesc("ration_raftlog_block_cache_misses_total",
		"Block cache misses of the raft log engine.", nil, nil)
	descStalls = prometheus.NewDesc("ration_raftlog_write_stalls_total",
		"Times the raft log engine delayed writes for flushes or compactions to catch up.", nil, nil)
	descBgErrors = prometheus.NewDesc("ration_raftlog_background_errors_total",
		"Errors in the raft log engine's background work.", nil, nil)
)

type collector struct{ s *Store }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFsync, descWALBytes, descFlushes, descCompactions,
		descCompactBytes, descReadAmp, descDisk, descMemtable, descCacheBytes, descCacheHits,
		descCacheMisses, descStalls, descBgErrors} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	if c.s.enter() != nil {
		return
	}
	m := c.s.db.Metrics()
	c.s.leave()
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	if h, ok := fsyncHistogram(m.LogWriter.FsyncLatency); ok {
		ch <- h
	}
	total := m.Total()
	counter(descWALBytes, float64(m.WAL.BytesWritten))
	counter(descFlushes, float64(m.Flush.Count))
	counter(descCompactions, float64(m.Compact.Count))
	counter(descCompactBytes, float64(total.TableBytesFlushed+total.TableBytesCompacted))
	gauge(descReadAmp, float64(m.ReadAmp()))
	gauge(descDisk, float64(m.DiskSpaceUsage()))
	gauge(descMemtable, float64(m.MemTable.Size))
	gauge(descCacheBytes, float64(m.BlockCache.Size))
	counter(descCacheHits, float64(m.BlockCache.Hits))
	counter(descCacheMisses, float64(m.BlockCache.Misses))
	counter(descStalls, float64(c.s.ev.writeStalls.Load()))
	counter(descBgErrors, float64(c.s.ev.bgErrors.Load()))
}

// fsyncBuckets are the exported fsync histogram's bounds, in seconds.
// Pebble's own has a hundred buckets; these are enough to see a disk slow
// down and cheap to scrape.
var fsyncBuckets = []float64{.0001, .00025, .0005, .001, .002, .003, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}

// fsyncHistogram re-exports Pebble's WAL fsync histogram, which counts
// nanoseconds, under our name, in seconds and on fsyncBuckets: each
// bucket counts the fsyncs Pebble placed at or below its bound, so where
// the bounds do not line up it undercounts, never overcounts.
func fsyncHistogram(h prometheus.Histogram) (prometheus.Metric, bool) {
	if h == nil {
		return nil, false
	}
	var pb dto.Metric
	if err := h.Write(&pb); err != nil || pb.Histogram == nil {
		return nil, false
	}
	ns := float64(time.Second)
	buckets := make(map[float64]uint64, len(fsyncBuckets))
	for _, bound := range fsyncBuckets {
		var n uint64
		for _, b := range pb.Histogram.Bucket {
			if b.GetUpperBound()/ns <= bound*(1+1e-9) {
				n = b.GetCumulativeCount()
			}
		}
		buckets[bound] = n
	}
	m, err := prometheus.NewConstHistogram(descFsync, pb.Histogram.GetSampleCount(), pb.Histogram.GetSampleSum()/ns, buckets)
	return m, err == nil
}

// Fsyncs is the number of WAL fsyncs since the engine opened.
func (s *Store) Fsyncs() uint64 {
	if s.enter() != nil {
		return 0
	}
	h := s.db.Metrics().LogWriter.FsyncLatency
	s.leave()
	var pb dto.Metric
	if h == nil || h.Write(&pb) != nil || pb.Histogram == nil {
		return 0
	}
	return pb.Histogram.GetSampleCount()
}
