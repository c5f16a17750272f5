package netns

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Port selects one kind of traffic: the packets to or from Port over
// Proto ("tcp" or "udp").
type Port struct {
	Proto string
	Port  int
}

// TCP and UDP build a Port.
func TCP(port int) Port { return Port{Proto: "tcp", Port: port} }
func UDP(port int) Port { return Port{Proto: "udp", Port: port} }

// ErrNodeIndex is wrapped by errors about a node index out of range.
var ErrNodeIndex = errors.New("netns: no such node")

func (n *Net) node(i int) (Node, error) {
	if i < 0 || i >= len(n.Nodes) {
		return Node{}, fmt.Errorf("%w: %d of %d", ErrNodeIndex, i, len(n.Nodes))
	}
	return n.Nodes[i], nil
}

// Partition cuts the traffic between every two nodes a and b (indexes
// into Nodes) for which connected(a, b) is false: all of it, or only
// the given ports. connected must be symmetric. Cuts add up until Heal.
//
// Packets are dropped on arrival in both namespaces, so neither side
// learns anything (no reset, no ICMP): what a pulled cable does.
func (n *Net) Partition(ctx context.Context, connected func(a, b int) bool, ports ...Port) error {
	rules := make([][]string, len(n.Nodes))
	for a := range n.Nodes {
		for b := range n.Nodes {
			if a == b || connected(a, b) {
				continue
			}
			rules[a] = append(rules[a], dropFrom(n.Nodes[b].IP, ports)...)
		}
	}
	return n.apply(ctx, rules)
}

// Cut cuts the traffic between nodes a and b (all of it, or the ports).
func (n *Net) Cut(ctx context.Context, a, b int, ports ...Port) error {
	if _, err := n.node(a); err != nil {
		return err
	}
	if _, err := n.node(b); err != nil {
		return err
	}
	return n.Partition(ctx, func(x, y int) bool {
		return !(x == a && y == b || x == b && y == a)
	}, ports...)
}

func dropFrom(ip string, ports []Port) []string {
	if len(ports) == 0 {
		return []string{"-A " + chainIn + " -s " + ip + "/32 -j DROP"}
	}
	var rules []string
	for _, p := range ports {
		// --ports matches source or destination: the listener's side
		// and the dialer's side of the same connection.
		rules = append(rules, fmt.Sprintf("-A %s -s %s/32 -p %s -m multiport --ports %d -j DROP",
			chainIn, ip, p.Proto, p.Port))
	}
	return rules
}

// apply appends rules[i] to node i's filter table, one atomic restore
// per namespace.
func (n *Net) apply(ctx context.Context, rules [][]string) error {
	var errs []error
	for i, rs := range rules {
		if len(rs) == 0 {
			continue
		}
		in := "*filter\n" + strings.Join(rs, "\n") + "\nCOMMIT\n"
		if _, err := inNS(ctx, n.Nodes[i].NS, in, "iptables-restore", "--noflush"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Shaping tells how Delay or Loss was carried out: tc netem if the
// kernel has it, else the fallback named.
type Shaping string

const (
	Netem             Shaping = "netem"
	TBF               Shaping = "tbf"                // htb+tbf rate limit: delay by queueing
	IptablesStatistic Shaping = "iptables-statistic" // random drops
)

// Slowdown is a degraded link. Netem adds Latency (+/- Jitter) to every
// packet. Without netem, the node's traffic to the other nodes is rate
// limited to Rate instead, so packets wait in a queue of at most Latency
// (and are dropped beyond): delay that grows with the traffic, not a
// fixed one.
type Slowdown struct {
	Latency time.Duration
	Jitter  time.Duration
	Rate    string // tc rate, e.g. "256kbit"
}

// Delay slows the packets node i sends. Its traffic to the harness is not
// shaped by the tbf fallback, only by netem.
func (n *Net) Delay(ctx context.Context, i int, s Slowdown) (Shaping, error) {
	nd, err := n.node(i)
	if err != nil {
		return "", err
	}
	if s.Latency <= 0 {
		return "", errors.New("netns: delay: latency must be positive")
	}
	if s.Rate == "" {
		s.Rate = "256kbit"
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tryNetem(ctx, nd.NS, "delay", ms(s.Latency), ms(s.Jitter)) {
		n.shaped[i] = true
		return Netem, nil
	}
	// htb sends the harness's traffic through an unlimited class and the
	// rest through a limited one whose tbf bounds the queue.
	batch := strings.Join([]string{
		"qdisc replace dev eth0 root handle 1: htb default 20",
		"class add dev eth0 parent 1: classid 1:10 htb rate 10gbit quantum 1514",
		"class add dev eth0 parent 1: classid 1:20 htb rate " + s.Rate + " ceil " + s.Rate + " quantum 1514",
		"qdisc add dev eth0 parent 1:20 handle 20: tbf rate " + s.Rate + " burst 4kb latency " + ms(s.Latency),
		"filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst " + n.HostIP + "/32 flowid 1:10",
	}, "\n") + "\n"
	n.shaped[i] = true
	if _, err := inNS(ctx, nd.NS, batch, "tc", "-batch", "-"); err != nil {
		return TBF, err
	}
	return TBF, nil
}

// Loss drops fraction p (0 < p < 1) of the packets between node i and
// the other nodes, both ways.
func (n *Net) Loss(ctx context.Context, i int, p float64) (Shaping, error) {
	nd, err := n.node(i)
	if err != nil {
		return "", err
	}
	if !(p > 0 && p < 1) {
		return "", fmt.Errorf("netns: loss %v: want 0 < p < 1", p)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tryNetem(ctx, nd.NS, "loss", strconv.FormatFloat(p*100, 'f', 2, 64)+"%") {
		n.shaped[i] = true
		return Netem, nil
	}
	prob := strconv.FormatFloat(p, 'f', 4, 64)
	rules := make([][]string, len(n.Nodes))
	rules[i] = []string{
		"-A " + chainIn + " -s " + n.Subnet() + " -m statistic --mode random --probability " + prob + " -j DROP",
		"-A " + chainOut + " -d " + n.Subnet() + " -m statistic --mode random --probability " + prob + " -j DROP",
	}
	return IptablesStatistic, n.apply(ctx, rules)
}

// tryNetem installs a netem qdisc unless the kernel has been seen to
// lack it. Called with n.mu held.
func (n *Net) tryNetem(ctx context.Context, ns string, args ...string) bool {
	if n.netem != nil && !*n.netem {
		return false
	}
	full := append([]string{"tc", "qdisc", "replace", "dev", "eth0", "root", "netem"}, args...)
	_, err := inNS(ctx, ns, "", full...)
	ok := err == nil
	if n.netem == nil {
		n.netem = &ok
		if !ok {
			n.log.Info("tc netem unavailable; falling back to tbf and iptables statistic", "err", err)
		}
	}
	return ok
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }

// Heal removes every cut, delay and loss of every node.
func (n *Net) Heal(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	flush := "*filter\n-F " + chainIn + "\n-F " + chainOut + "\nCOMMIT\n"
	for i, nd := range n.Nodes {
		if _, err := inNS(ctx, nd.NS, flush, "iptables-restore", "--noflush"); err != nil {
			errs = append(errs, err)
		}
		if n.shaped[i] {
			if _, err := inNS(ctx, nd.NS, "", "tc", "qdisc", "del", "dev", "eth0", "root"); err != nil {
				errs = append(errs, err)
			}
			delete(n.shaped, i)
		}
	}
	return errors.Join(errs...)
}
