// Package ration runs a Ration cluster of bin/ration-node processes on
// loopback (node i on 127.0.0.i) for the benchmark, and drives it through
// the Go client: one deduction per call, Batches of deductions, and
// linearizable or stale balance reads.
package ration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/ration/ration/bench/load"
	"github.com/ration/ration/bench/procs"
	"github.com/ration/ration/client"
)

// Ports every node uses on its own loopback address. They are away from
// the node's defaults so that a `make cluster` left running elsewhere on
// the machine is not what gets benchmarked (procs.CheckFree checks).
const (
	HTTPPort   = 23080
	GRPCPort   = 23090
	GossipPort = 23046
	RaftPort   = 23070 // the actor remote listens on RaftPort+1
)

// LayoutFlag is the node flag that picks the raft log layout.
const LayoutFlag = "--raft-log-store"

// ErrNoLayoutFlag is returned when a layout is asked of a node binary
// that does not have LayoutFlag.
var ErrNoLayoutFlag = errors.New("ration-node has no " + LayoutFlag + " flag")

// Config describes the cluster.
type Config struct {
	Binary string
	Nodes  int
	// Layout is passed as LayoutFlag; empty passes nothing (the node's
	// default layout).
	Layout string
	// BatchSize is the number of deductions per Batch call.
	BatchSize int
}

// Cluster is a running cluster and a client connected to all its nodes.
type Cluster struct {
	cfg           Config
	procs.Running // Stop and Exited
	client        *client.Client
	alone         *client.Client // sends every write alone: no coalescing
	users         []string
}

// SupportsLayout reports whether the node binary has LayoutFlag.
func SupportsLayout(ctx context.Context, binary string) (bool, error) {
	out, err := exec.CommandContext(ctx, binary, "--help").CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("ration: %s --help: %w", binary, err)
	}
	return strings.Contains(string(out), LayoutFlag), nil
}

func host(i int) string { return "127.0.0." + strconv.Itoa(i+1) }

// nodeArgs is node i's command line.
func nodeArgs(cfg Config, i int, dataDir string) []string {
	args := []string{
		"--node-id", "n" + strconv.Itoa(i+1), // Start passes these ids to waitLeadersSettled
		"--data-dir", dataDir, "--bind-host", host(i),
		"--http-port", strconv.Itoa(HTTPPort), "--grpc-port", strconv.Itoa(GRPCPort),
		"--gossip-port", strconv.Itoa(GossipPort), "--raft-port", strconv.Itoa(RaftPort),
		"--bootstrap-expect", strconv.Itoa(cfg.Nodes), "--log-level", "warn",
		"--shutdown-timeout", "5s",
	}
	if cfg.Nodes > 1 {
		seeds := make([]string, cfg.Nodes)
		for j := range seeds {
			seeds[j] = net.JoinHostPort(host(j), strconv.Itoa(GossipPort))
		}
		args = append(args, "--join", strings.Join(seeds, ","))
	}
	if cfg.Layout != "" {
		args = append(args, LayoutFlag, cfg.Layout)
	}
	return args
}

func checkPorts(nodes int) error {
	var tcp, udp []string
	for i := range nodes {
		for _, p := range []int{HTTPPort, GRPCPort, GossipPort, RaftPort, RaftPort + 1} {
			tcp = append(tcp, net.JoinHostPort(host(i), strconv.Itoa(p)))
		}
		udp = append(udp, net.JoinHostPort(host(i), strconv.Itoa(GossipPort)))
	}
	return procs.CheckFree(tcp, udp)
}

// Start starts cfg.Nodes nodes with fresh data directories and returns
// once every node answers /readyz.
func Start(ctx context.Context, g *procs.Group, cfg Config) (*Cluster, error) {
	if err := checkPorts(cfg.Nodes); err != nil {
		return nil, fmt.Errorf("ration: %w", err)
	}
	dir, err := g.TempDir("ration-bench-ration-", procs.Owner{})
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, Running: procs.Running{Grace: 7 * time.Second}}
	c.Set, err = g.StartSet(cfg.Nodes, procs.SetSpec{Dir: dir, Path: cfg.Binary, Prefix: "n"},
		func(i int, dataDir string) []string { return nodeArgs(cfg, i, dataDir) })
	if err != nil {
		return nil, fmt.Errorf("ration: %w", err)
	}
	var eps []string
	for i := range cfg.Nodes {
		eps = append(eps, net.JoinHostPort(host(i), strconv.Itoa(GRPCPort)))
	}
	err = c.Set.WaitHTTP(ctx, 2*time.Minute, func(i int) string {
		return "http://" + net.JoinHostPort(host(i), strconv.Itoa(HTTPPort)) + "/readyz"
	})
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("ration: %w", err)
	}
	ids := make([]string, cfg.Nodes)
	for i := range ids {
		ids[i] = "n" + strconv.Itoa(i+1)
	}
	if err := waitLeadersSettled(ctx, eps, ids); err != nil {
		c.Stop()
		return nil, err
	}
	if c.client, err = client.New(ctx, client.Options{Endpoints: eps}); err != nil {
		c.Stop()
		return nil, fmt.Errorf("ration: %w", err)
	}
	if c.alone, err = client.New(ctx, client.Options{Endpoints: eps, MaxInflight: -1}); err != nil {
		c.client.Close()
		c.Stop()
		return nil, fmt.Errorf("ration: %w", err)
	}
	c.Client = closers{c.client, c.alone}
	return c, nil
}

// Prepare grants every user initial credits, far more than any run
// deducts, so deductions are never refused.
func (c *Cluster) Prepare(ctx context.Context, users []string, initial int64) error {
	c.users = users
	at := time.Now().UnixMilli()
	ops := make([]client.Op, len(users))
	for i, u := range users {
		ops[i] = client.GrantOp(u, client.Grant{ID: "bench-init-" + u, Amount: initial, Timestamp: at})
	}
	res, err := c.client.Batch(ctx, ops)
	if err != nil {
		return fmt.Errorf("ration: prepare: %w", err)
	}
	for _, r := range res {
		if r.Err != nil {
			return fmt.Errorf("ration: prepare: %w", r.Err)
		}
	}
	return nil
}

func (c *Cluster) user(w *load.Worker) string { return c.users[w.Rand.IntN(len(c.users))] }

func deduction(w *load.Worker, i int) client.Deduction {
	return client.Deduction{
		ID: w.UniqueID() + "-" + strconv.Itoa(i), Amount: 1 + w.Rand.Int64N(10),
		Timestamp: time.Now().UnixMilli(),
	}
}

// Deduct is one deduction per call.
func (c *Cluster) Deduct(ctx context.Context, w *load.Worker) (int, error) {
	_, err := c.client.Deduct(ctx, c.user(w), deduction(w, 0))
	return 1, err
}

// DeductAlone is Deduct through a client that sends every call alone.
func (c *Cluster) DeductAlone(ctx context.Context, w *load.Worker) (int, error) {
	_, err := c.alone.Deduct(ctx, c.user(w), deduction(w, 0))
	return 1, err
}

// closers closes both clients when the cluster stops.
type closers []io.Closer

func (cs closers) Close() error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// Batch is one Batch call of BatchSize deductions for random users.
func (c *Cluster) Batch(ctx context.Context, w *load.Worker) (int, error) {
	ops := make([]client.Op, c.cfg.BatchSize)
	for i := range ops {
		ops[i] = client.DeductOp(c.user(w), deduction(w, i))
	}
	res, err := c.client.Batch(ctx, ops)
	if err != nil {
		return len(ops), err
	}
	for _, r := range res {
		if r.Err != nil {
			return len(ops), r.Err
		}
	}
	return len(ops), nil
}

// Balance is a linearizable balance read.
func (c *Cluster) Balance(ctx context.Context, w *load.Worker) (int, error) {
	_, err := c.client.Balance(ctx, c.user(w), nil)
	return 1, err
}

// StaleBalance is a balance read that any replica answers.
func (c *Cluster) StaleBalance(ctx context.Context, w *load.Worker) (int, error) {
	_, err := c.client.Balance(ctx, c.user(w), nil, client.Stale())
	return 1, err
}
