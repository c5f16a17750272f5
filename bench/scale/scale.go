// Package scale is the memory and restart benchmark of one node holding
// many users (issue 12, `make bench-scale`): it ingests users × events
// through Batch calls, samples the node's RSS throughout, kills it with
// SIGKILL, restarts it on the same data directory, and times the restart
// and the first reads of cold users.
package scale

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ration/ration/bench/procs"
	"github.com/ration/ration/bench/ration"
	"github.com/ration/ration/client"
	"github.com/ration/ration/internal/hist"
)

// Config is one run.
type Config struct {
	Binary string
	// Users each get Events operations: a grant, then deductions.
	Users, Events int
	// ColdUsers each get ColdEvents operations, and are read cold after
	// the restart.
	ColdUsers, ColdEvents int
	// MemoryLimit is the node's --memory-limit ("" for none).
	MemoryLimit string
	// Workers send Batch calls of BatchSize operations at once.
	Workers, BatchSize int
	// Progress, if set, receives a line now and then.
	Progress func(format string, args ...any)
}

// Result is what a run measured.
type Result struct {
	Ops          int64
	LoadTime     time.Duration
	PeakRSS      int64 // bytes, during the load
	SettledRSS   int64 // bytes, 10 s after the load
	RestartRSS   int64 // bytes, after the restart and the cold reads
	DiskBytes    int64
	ToReady      time.Duration // restart to /readyz
	ToFirstRead  time.Duration // restart to a cold user's first answered read
	ColdRead     *hist.Histogram
	ColdReadErrs int
}

const (
	host     = "127.0.0.1"
	initial  = int64(1) << 40
	settle   = 10 * time.Second
	startMax = 5 * time.Minute
)

func (cfg Config) args(dataDir string) []string {
	a := []string{
		"--node-id", "n1", "--data-dir", dataDir, "--bind-host", host,
		"--http-port", strconv.Itoa(ration.HTTPPort), "--grpc-port", strconv.Itoa(ration.GRPCPort),
		"--gossip-port", strconv.Itoa(ration.GossipPort), "--raft-port", strconv.Itoa(ration.RaftPort),
		"--log-level", "warn", "--shutdown-timeout", "5s",
	}
	if cfg.MemoryLimit != "" {
		a = append(a, "--memory-limit", cfg.MemoryLimit)
	}
	return a
}

func (cfg Config) progress(format string, args ...any) {
	if cfg.Progress != nil {
		cfg.Progress(format, args...)
	}
}

// Run runs the benchmark with the processes and directories of g.
func Run(ctx context.Context, g *procs.Group, cfg Config) (Result, error) {
	var res Result
	dir, err := g.TempDir("ration-bench-scale-", procs.Owner{})
	if err != nil {
		return res, err
	}
	dataDir := filepath.Join(dir, "n1")
	spec := procs.Spec{Name: "n1", Path: cfg.Binary, Args: cfg.args(dataDir), Dir: dir, Log: filepath.Join(dir, "n1.log")}
	readyz := procs.HTTPOK("http://" + net.JoinHostPort(host, strconv.Itoa(ration.HTTPPort)) + "/readyz")
	p, err := g.Start(spec)
	if err != nil {
		return res, err
	}
	wctx, cancel := context.WithTimeout(ctx, startMax)
	defer cancel()
	if err := procs.WaitFor(wctx, "the node's /readyz", readyz, p); err != nil {
		return res, err
	}
	c, err := client.New(ctx, client.Options{Endpoints: []string{net.JoinHostPort(host, strconv.Itoa(ration.GRPCPort))}})
	if err != nil {
		return res, err
	}
	defer c.Close()

	rss := startRSS(p.Pid())
	start := time.Now()
	res.Ops, err = ingest(ctx, c, cfg)
	res.LoadTime = time.Since(start)
	res.PeakRSS = rss.stop()
	if err != nil {
		return res, err
	}
	cfg.progress("loaded %d ops in %v, peak RSS %d MiB; settling %v", res.Ops, res.LoadTime.Round(time.Second), res.PeakRSS>>20, settle)
	time.Sleep(settle)
	res.SettledRSS = readRSS(p.Pid())
	if res.DiskBytes, err = diskUsage(dataDir); err != nil {
		return res, err
	}

	p.Stop(syscall.SIGKILL, 0)
	if err := restart(ctx, g, spec, readyz, cfg, &res); err != nil {
		return res, err
	}
	return res, nil
}

// restart starts the node again on its data directory, times it to
// /readyz and to a cold user's first read, then reads every cold user
// once, the first time each is asked for since the start.
func restart(ctx context.Context, g *procs.Group, spec procs.Spec, readyz func(context.Context) error, cfg Config, res *Result) error {
	start := time.Now()
	p, err := g.Start(spec)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, startMax)
	defer cancel()
	if err := procs.WaitFor(wctx, "the restarted node's /readyz", readyz, p); err != nil {
		return err
	}
	res.ToReady = time.Since(start)
	c, err := client.New(ctx, client.Options{Endpoints: []string{net.JoinHostPort(host, strconv.Itoa(ration.GRPCPort))}})
	if err != nil {
		return err
	}
	defer c.Close()
	first := func(ctx context.Context) error {
		_, err := c.Balance(ctx, coldUser(0), nil)
		return err
	}
	if err := procs.WaitFor(wctx, "a cold user's first read", first, p); err != nil {
		return err
	}
	res.ToFirstRead = time.Since(start)
	res.ColdRead = &hist.Histogram{}
	for u := 1; u < cfg.ColdUsers; u++ {
		t := time.Now()
		b, err := c.Balance(ctx, coldUser(u), nil)
		if err != nil || b.Balance != initial-int64(cfg.ColdEvents-1) {
			res.ColdReadErrs++
			continue
		}
		res.ColdRead.Record(int64(time.Since(t)))
	}
	res.RestartRSS = readRSS(p.Pid())
	return nil
}

func user(i int) string     { return fmt.Sprintf("s-%07d", i) }
func coldUser(i int) string { return fmt.Sprintf("c-%05d", i) }

// history is one user's operations: a grant of initial, then deductions
// of 1, all in the past so that none is refused and nothing expires.
func history(name string, events int, base int64) []client.Op {
	ops := make([]client.Op, 0, events)
	ops = append(ops, client.GrantOp(name, client.Grant{ID: "g", Amount: initial, Timestamp: base}))
	for k := 1; k < events; k++ {
		ops = append(ops, client.DeductOp(name, client.Deduction{ID: "d" + strconv.Itoa(k), Amount: 1, Timestamp: base + int64(k)}))
	}
	return ops
}

// ingest sends the cold users' histories, then every user's, in Batch
// calls of whole histories, from cfg.Workers workers.
func ingest(ctx context.Context, c *client.Client, cfg Config) (int64, error) {
	base := time.Now().Add(-time.Hour).UnixMilli()
	type job struct{ ops []client.Op }
	jobs := make(chan job)
	var sent atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range cfg.Workers {
		wg.Go(func() {
			for j := range jobs {
				if err := send(wctx, c, j.ops); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					continue
				}
				sent.Add(int64(len(j.ops)))
			}
		})
	}
	feed := func(ops []client.Op) bool {
		select {
		case jobs <- job{ops}:
			return true
		case <-wctx.Done():
			return false
		}
	}
	next := time.Now().Add(10 * time.Second)
	var batch []client.Op
	for u := 0; u < cfg.ColdUsers+cfg.Users && wctx.Err() == nil; u++ {
		h := history(user(u-cfg.ColdUsers), cfg.Events, base)
		if u < cfg.ColdUsers {
			h = history(coldUser(u), cfg.ColdEvents, base)
		}
		for len(h) > 0 {
			n := min(cfg.BatchSize-len(batch), len(h))
			batch, h = append(batch, h[:n]...), h[n:]
			if len(batch) < cfg.BatchSize {
				continue
			}
			if !feed(batch) {
				break
			}
			batch = nil
		}
		if time.Now().After(next) {
			cfg.progress("%d of %d users, %d ops", u, cfg.ColdUsers+cfg.Users, sent.Load())
			next = time.Now().Add(10 * time.Second)
		}
	}
	if len(batch) > 0 {
		feed(batch)
	}
	close(jobs)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return sent.Load(), firstErr
}

// send makes one Batch call; any op's failure fails it.
func send(ctx context.Context, c *client.Client, ops []client.Op) error {
	res, err := c.Batch(ctx, ops)
	if err != nil {
		return fmt.Errorf("batch: %w", err)
	}
	for i, r := range res {
		if r.Err != nil {
			return fmt.Errorf("batch op %d: %w", i, r.Err)
		}
	}
	return nil
}

// rssSampler records the highest RSS of a process.
type rssSampler struct {
	stopc chan struct{}
	done  chan struct{}
	peak  atomic.Int64
}

func startRSS(pid int) *rssSampler {
	s := &rssSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v := readRSS(pid); v > s.peak.Load() {
				s.peak.Store(v)
			}
			select {
			case <-s.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) stop() int64 {
	close(s.stopc)
	<-s.done
	return s.peak.Load()
}

// readRSS is a process's resident set in bytes (0 if it cannot be read).
func readRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// diskUsage sums the sizes of the files under dir.
func diskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}
