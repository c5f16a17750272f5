// Package etcd runs an etcd cluster (Debian's etcd-server) on loopback
// (member i on 127.0.0.i) for the benchmark, and drives it through
// go.etcd.io/etcd/client/v3 the way a team would build a credit ledger on
// it: a durable Put per operation (etcd's best case, no check at all), a
// compare-and-swap deduction (read the balance, then a Txn conditioned on
// its mod revision that writes the new balance and the event), and
// linearizable Gets.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ration/ration/bench/load"
	"github.com/ration/ration/bench/procs"
)

// Ports every member uses on its own loopback address.
const (
	ClientPort = 23379
	PeerPort   = 23380
)

// ErrRefused is a CAS deduction the balance does not cover. Prepare
// grants enough that a run never sees it.
var ErrRefused = errors.New("etcd: insufficient balance")

// Config describes the cluster.
type Config struct {
	Binary  string // the etcd executable
	Members int
}

// Cluster is a running etcd cluster and a client of all its members.
type Cluster struct {
	procs.Running // Stop and Exited
	client        *clientv3.Client
	users         []string
}

func host(i int) string { return "127.0.0." + strconv.Itoa(i+1) }

func url(i, port int) string { return "http://" + net.JoinHostPort(host(i), strconv.Itoa(port)) }

// memberArgs is member i's command line: default durability (fsync on
// every commit), no auto-compaction.
func memberArgs(cfg Config, i int, dataDir string) []string {
	initial := make([]string, cfg.Members)
	for j := range initial {
		initial[j] = fmt.Sprintf("m%d=%s", j+1, url(j, PeerPort))
	}
	return []string{
		"--name", fmt.Sprintf("m%d", i+1), "--data-dir", dataDir,
		"--listen-client-urls", url(i, ClientPort), "--advertise-client-urls", url(i, ClientPort),
		"--listen-peer-urls", url(i, PeerPort), "--initial-advertise-peer-urls", url(i, PeerPort),
		"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
		"--initial-cluster-token", "ration-bench", "--logger", "zap", "--log-level", "warn",
	}
}

// Version is the first line of `etcd --version`.
func Version(ctx context.Context, binary string) string {
	out, err := exec.CommandContext(ctx, binary, "--version").Output()
	if err != nil {
		return "etcd (version unknown)"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return first
}

// Start starts cfg.Members members with fresh data directories and
// returns once every member reports itself healthy.
func Start(ctx context.Context, g *procs.Group, cfg Config) (*Cluster, error) {
	var tcp []string
	for i := range cfg.Members {
		tcp = append(tcp, net.JoinHostPort(host(i), strconv.Itoa(ClientPort)), net.JoinHostPort(host(i), strconv.Itoa(PeerPort)))
	}
	if err := procs.CheckFree(tcp, nil); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	dir, err := g.TempDir("ration-bench-etcd-", procs.Owner{})
	if err != nil {
		return nil, err
	}
	c := &Cluster{Running: procs.Running{Grace: 5 * time.Second}}
	c.Set, err = g.StartSet(cfg.Members, procs.SetSpec{Dir: dir, Path: cfg.Binary, Prefix: "m"},
		func(i int, dataDir string) []string { return memberArgs(cfg, i, dataDir) })
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	var eps []string
	for i := range cfg.Members {
		eps = append(eps, url(i, ClientPort))
	}
	// /health answers 200 once the member has a leader.
	if err := c.Set.WaitHTTP(ctx, time.Minute, func(i int) string { return url(i, ClientPort) + "/health" }); err != nil {
		c.Stop()
		return nil, fmt.Errorf("etcd: %w", err)
	}
	c.client, err = clientv3.New(clientv3.Config{
		Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), Context: ctx,
	})
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("etcd: client: %w", err)
	}
	c.Client = c.client
	return c, nil
}

func balanceKey(user string) string { return "balance/" + user }

// Prepare writes every user's initial balance, 100 keys per Txn (etcd's
// default limit is 128 operations per Txn).
func (c *Cluster) Prepare(ctx context.Context, users []string, initial int64) error {
	c.users = users
	for lo := 0; lo < len(users); lo += 100 {
		var puts []clientv3.Op
		for _, u := range users[lo:min(lo+100, len(users))] {
			puts = append(puts, clientv3.OpPut(balanceKey(u), strconv.FormatInt(initial, 10)))
		}
		if _, err := c.client.Txn(ctx).Then(puts...).Commit(); err != nil {
			return fmt.Errorf("etcd: prepare: %w", err)
		}
	}
	return nil
}

func (c *Cluster) user(w *load.Worker) string { return c.users[w.Rand.IntN(len(c.users))] }

// event is the value written for one deduction: its id, user, amount and
// time, about what a ledger event holds.
func event(id, user string, amount int64) string {
	return fmt.Sprintf(`{"id":%q,"user":%q,"amount":%d,"at":%d}`, id, user, amount, time.Now().UnixMilli())
}

// Put is a durable Put of a deduction event per call: no balance check.
func (c *Cluster) Put(ctx context.Context, w *load.Worker) (int, error) {
	u, id := c.user(w), w.UniqueID()
	_, err := c.client.Put(ctx, "events/"+id, event(id, u, 1+w.Rand.Int64N(10)))
	return 1, err
}

// CASDeduct deducts with compare-and-swap: read the balance
// (linearizable), and if it covers the amount, a Txn that writes the new
// balance and the event only if the balance key's mod revision is still
// the one read. A lost race reads again.
func (c *Cluster) CASDeduct(ctx context.Context, w *load.Worker) (int, error) {
	u, id, amount := c.user(w), w.UniqueID(), 1+w.Rand.Int64N(10)
	key := balanceKey(u)
	for {
		got, err := c.client.Get(ctx, key)
		if err != nil {
			return 1, err
		}
		if len(got.Kvs) != 1 {
			return 1, fmt.Errorf("etcd: no balance for %s", u)
		}
		bal, err := strconv.ParseInt(string(got.Kvs[0].Value), 10, 64)
		if err != nil {
			return 1, fmt.Errorf("etcd: balance of %s: %w", u, err)
		}
		if bal < amount {
			return 1, ErrRefused
		}
		resp, err := c.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", got.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, strconv.FormatInt(bal-amount, 10)), clientv3.OpPut("events/"+id, event(id, u, amount))).
			Commit()
		if err != nil {
			return 1, err
		}
		if resp.Succeeded {
			return 1, nil
		}
	}
}

// Get is a linearizable read of a user's balance key.
func (c *Cluster) Get(ctx context.Context, w *load.Worker) (int, error) {
	_, err := c.client.Get(ctx, balanceKey(c.user(w)))
	return 1, err
}
