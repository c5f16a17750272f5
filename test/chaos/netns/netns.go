// Package netns gives every node of a chaos run its own network stack: a
// Linux network namespace with its own address, joined to the others by a
// bridge in the root namespace. Cutting traffic between nodes is then a
// matter of iptables rules inside their namespaces, which hits gossip and
// raft for real, sockets already open included, while the harness (on the
// bridge's own address) keeps reaching every node.
//
// Everything a run creates carries its name: prefix + subnet number
// ("rch7"), so that two runs on one machine do not collide and the
// leftovers of a run that died can be found and removed (CleanupStale).
//
// It needs root (CAP_NET_ADMIN) and the ip, iptables and tc tools.
package netns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
)

// DefaultPrefix starts the name of everything a run creates.
const DefaultPrefix = "rch"

// StateDir holds one pid file per live run, naming the harness process
// that owns the run's namespaces: cleanup leaves a live owner's alone.
const StateDir = "/run/ration-chaos"

// subnetBase is the first two octets of every run's /24; the third octet
// is the run's number and .254 is the bridge (the harness's address).
const subnetBase = "10.213"

// MaxNodes bounds the nodes of one run (addresses .1 to .MaxNodes).
const MaxNodes = 32

// ErrNotRoot is returned by Create without the privileges it needs.
var ErrNotRoot = errors.New("netns: must run as root")

// Config configures Create.
type Config struct {
	// Prefix of every name; DefaultPrefix if empty. At most 5 characters
	// of [a-z], so interface names stay within the kernel's 15.
	Prefix string
	// Nodes is the number of namespaces, 1 to MaxNodes.
	Nodes  int
	Logger *slog.Logger
}

// Node is one node's namespace.
type Node struct {
	// NS is the namespace's name, for ip netns exec.
	NS string
	// IP is the node's address.
	IP string
	// Veth is the root-namespace end of the node's link to the bridge.
	Veth string
}

// Net is one run's network: a bridge and a namespace per node.
type Net struct {
	Prefix string
	// ID is the run's number, the third octet of its subnet.
	ID     int
	Bridge string
	// HostIP is the bridge's address: where the harness's traffic to the
	// nodes comes from.
	HostIP string
	Nodes  []Node

	log     *slog.Logger
	pidFile string

	mu     sync.Mutex
	shaped map[int]bool // nodes with a qdisc installed
	netem  *bool        // whether tc netem worked, once tried
}

var prefixRE = regexp.MustCompile(`^[a-z]{1,5}$`)

// name is the tag of run id: every name the run creates starts with it.
func name(prefix string, id int) string { return prefix + strconv.Itoa(id) }

// Create builds the bridge and the namespaces of a new run. It picks the
// first run number that no live run holds; call CleanupStale first so
// that dead runs' numbers are free again.
func Create(ctx context.Context, cfg Config) (*Net, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !prefixRE.MatchString(cfg.Prefix) {
		return nil, fmt.Errorf("netns: prefix %q: want 1 to 5 letters a-z", cfg.Prefix)
	}
	if cfg.Nodes < 1 || cfg.Nodes > MaxNodes {
		return nil, fmt.Errorf("netns: %d nodes: want 1 to %d", cfg.Nodes, MaxNodes)
	}
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// The claim lock is held until the bridge has its address, which is
	// what tells every other run, whatever its prefix, that the subnet is
	// taken.
	unlock, err := lockClaims()
	if err != nil {
		return nil, err
	}
	defer unlock()
	id, pidFile, err := claim(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	tag := name(cfg.Prefix, id)
	n := &Net{
		Prefix: cfg.Prefix, ID: id, Bridge: tag + "br",
		HostIP: fmt.Sprintf("%s.%d.254", subnetBase, id),
		log:    cfg.Logger.With("net", tag), pidFile: pidFile, shaped: map[int]bool{},
	}
	for i := range cfg.Nodes {
		n.Nodes = append(n.Nodes, Node{
			NS:   fmt.Sprintf("%s-n%d", tag, i+1),
			IP:   fmt.Sprintf("%s.%d.%d", subnetBase, id, i+1),
			Veth: fmt.Sprintf("%sv%d", tag, i+1),
		})
	}
	if err := n.build(ctx); err != nil {
		// Do not leave half a network behind; the build error is the
		// one that matters.
		_ = n.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	n.log.Info("network up", "bridge", n.Bridge, "subnet", n.Subnet(), "nodes", len(n.Nodes))
	return n, nil
}

// Subnet is the run's /24.
func (n *Net) Subnet() string { return fmt.Sprintf("%s.%d.0/24", subnetBase, n.ID) }

// Tag is the prefix every name of this run starts with.
func (n *Net) Tag() string { return name(n.Prefix, n.ID) }

// lockClaims serializes run-number claims on this machine, across
// harnesses and prefixes.
func lockClaims() (func(), error) {
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(StateDir, "claim.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("netns: lock: %w", err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// claim reserves the first free run number by creating its pid file
// exclusively. A number is free if no interface on the machine has an
// address in its subnet: runs with another prefix (the tests use their
// own) share the address space, and two bridges with one subnet would
// send a run's traffic to the other's nodes. Call it under lockClaims.
func claim(prefix string) (int, string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return 0, "", fmt.Errorf("netns: %w", err)
	}
	for id := 1; id <= 250; id++ {
		if linkExists(name(prefix, id)+"br") || subnetInUse(addrs, id) {
			continue
		}
		path := filepath.Join(StateDir, name(prefix, id)+".pid")
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return 0, "", fmt.Errorf("netns: %w", err)
		}
		_, err = fmt.Fprintf(f, "%d\n", os.Getpid())
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return 0, "", fmt.Errorf("netns: %w", err)
		}
		return id, path, nil
	}
	return 0, "", errors.New("netns: no free subnet (250 runs alive?)")
}

func subnetInUse(addrs []net.Addr, id int) bool {
	_, subnet, _ := net.ParseCIDR(fmt.Sprintf("%s.%d.0/24", subnetBase, id))
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && subnet.Contains(ipn.IP) {
			return true
		}
	}
	return false
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// build creates the bridge, then each namespace with its link and its
// base firewall.
func (n *Net) build(ctx context.Context) error {
	steps := [][]string{
		{"ip", "link", "add", n.Bridge, "type", "bridge"},
		{"ip", "addr", "add", n.HostIP + "/24", "dev", n.Bridge},
		{"ip", "link", "set", n.Bridge, "up"},
		// With br_netfilter loaded, frames crossing the bridge go
		// through the root namespace's FORWARD chain, whose policy may
		// be DROP (Docker sets it): let this bridge's traffic through.
		{"iptables", "-I", "FORWARD", "1", "-i", n.Bridge, "-o", n.Bridge,
			"-m", "comment", "--comment", n.Tag(), "-j", "ACCEPT"},
	}
	for _, s := range steps {
		if _, err := run(ctx, "", s...); err != nil {
			return err
		}
	}
	for _, nd := range n.Nodes {
		steps := [][]string{
			{"ip", "netns", "add", nd.NS},
			{"ip", "link", "add", nd.Veth, "type", "veth", "peer", "name", "eth0", "netns", nd.NS},
			{"ip", "link", "set", nd.Veth, "master", n.Bridge, "up"},
			{"ip", "-n", nd.NS, "addr", "add", nd.IP + "/24", "dev", "eth0"},
			{"ip", "-n", nd.NS, "link", "set", "eth0", "up"},
			{"ip", "-n", nd.NS, "link", "set", "lo", "up"},
		}
		for _, s := range steps {
			if _, err := run(ctx, "", s...); err != nil {
				return err
			}
		}
		if _, err := inNS(ctx, nd.NS, baseRules(n.HostIP), "iptables-restore"); err != nil {
			return err
		}
	}
	return nil
}

// Chains every fault rule goes to; Heal flushes them. The harness's own
// traffic is accepted before them, so faults cut nodes from each other
// but never from the harness.
const (
	chainIn  = "CHAOS-IN"
	chainOut = "CHAOS-OUT"
)

func baseRules(host string) string {
	return "*filter\n" +
		":" + chainIn + " - [0:0]\n" +
		":" + chainOut + " - [0:0]\n" +
		"-A INPUT -s " + host + "/32 -j ACCEPT\n" +
		"-A INPUT -j " + chainIn + "\n" +
		"-A OUTPUT -d " + host + "/32 -j ACCEPT\n" +
		"-A OUTPUT -j " + chainOut + "\n" +
		"COMMIT\n"
}

// Command prepares a command to run inside node i's namespace. The
// process is ip netns exec, which execs the command in place: its pid is
// the command's, so signals reach it directly.
func (n *Net) Command(i int, path string, args ...string) (*exec.Cmd, error) {
	nd, err := n.node(i)
	if err != nil {
		return nil, err
	}
	return exec.Command("ip", append([]string{"netns", "exec", nd.NS, path}, args...)...), nil
}

// Close removes everything the run created. Processes still running in
// its namespaces are killed first: a namespace outlives its deletion
// while a process holds it, and so would its address.
func (n *Net) Close(ctx context.Context) error {
	err := removeRun(ctx, n.Prefix, n.ID, n.log)
	if n.pidFile != "" {
		if rerr := os.Remove(n.pidFile); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}
