package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config configures Start. Zero durations and multipliers take the
// defaults below; see DESIGN.md for why they differ from memberlist's LAN
// profile.
type Config struct {
	// NodeID is the node's stable name in gossip (memberlist's Name). A
	// restarted node must come back with the same NodeID, so that peers
	// see the same member return rather than a stranger appear.
	NodeID string

	// BindHost is an IP address or DNS name to bind gossip to (TCP and
	// UDP); empty means all interfaces. BindPort 0 picks a free port.
	BindHost string
	BindPort int

	// AdvertiseHost is what peers dial: an IP address or a DNS name,
	// resolved once at Start. Empty lets memberlist choose: BindHost when
	// that is a specific address, a private interface address otherwise.
	// AdvertisePort 0 means the bound port.
	AdvertiseHost string
	AdvertisePort int

	// Join lists seeds as host or host:port; a missing port means this
	// node's gossip port. DNS names are resolved again on every attempt.
	Join []string

	// SecretKey enables gossip encryption (AES-GCM) when set: 16, 24 or
	// 32 bytes. Every member must share it.
	SecretKey []byte

	// Meta is announced to peers. Meta.NodeID may be left empty, it is
	// NodeID.
	Meta Meta

	// Logger receives this package's and memberlist's logs; nil discards
	// them.
	Logger *slog.Logger

	// ProbeInterval is how often memberlist probes one random member;
	// ProbeTimeout how long it waits for a direct ack before asking others
	// to probe indirectly. ProbeTimeout must be below ProbeInterval.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// SuspicionMult times ProbeInterval (times log10 of the cluster size
	// above 10 nodes) is how long a suspected member has to refute before
	// it is declared dead; SuspicionMaxTimeoutMult bounds how far
	// memberlist stretches that when it lacks peer confirmations.
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	// GossipInterval paces the gossip of state changes; PushPullInterval
	// the full state exchanges that repair anything gossip lost.
	GossipInterval   time.Duration
	PushPullInterval time.Duration
	// DeadNodeReclaimTime is how long a member must have been dead before
	// its NodeID may come back from another address (a pod rescheduled
	// with a new IP). memberlist's default, 0, would never allow it.
	DeadNodeReclaimTime time.Duration
	// TCPTimeout bounds memberlist's stream connections: joins, full state
	// exchanges and TCP fallback probes.
	TCPTimeout time.Duration
	// LeaveTimeout bounds the wait for each broadcast of Leave and
	// AnnounceStopping; a shorter context deadline bounds it more.
	LeaveTimeout time.Duration

	// JoinRetryMin and JoinRetryMax bound the exponential backoff between
	// join attempts while no other member is known.
	JoinRetryMin time.Duration
	JoinRetryMax time.Duration

	// lookupIP resolves seed, bind and advertise names; tests replace it
	// to make a name gain addresses over time.
	lookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
}

// Defaults. The probe timing is memberlist's LAN profile, except
// SuspicionMult: see DESIGN.md, "Failure detection".
const (
	DefaultProbeInterval           = time.Second
	DefaultProbeTimeout            = 500 * time.Millisecond
	DefaultSuspicionMult           = 6
	DefaultSuspicionMaxTimeoutMult = 6
	DefaultGossipInterval          = 200 * time.Millisecond
	DefaultPushPullInterval        = 30 * time.Second
	DefaultDeadNodeReclaimTime     = 5 * time.Second
	DefaultTCPTimeout              = 10 * time.Second
	DefaultJoinRetryMin            = time.Second
	DefaultJoinRetryMax            = 30 * time.Second
	// DefaultLeaveTimeout is LeaveTimeout's default: a broadcast reaches
	// the live peers within a few gossip rounds, and waiting longer does
	// not make unreachable ones hear it.
	DefaultLeaveTimeout = 5 * time.Second
)

// seedAddr is a parsed Join entry; port 0 means "this node's port".
type seedAddr struct {
	host string
	port uint16
}

func (s seedAddr) String() string {
	if s.port == 0 {
		return s.host
	}
	return net.JoinHostPort(s.host, strconv.Itoa(int(s.port)))
}

// withDefaults returns a copy of c with defaults filled in, validated.
func (c *Config) withDefaults() (Config, []seedAddr, error) {
	cfg := *c
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if cfg.NodeID == "" {
		bad("NodeID is empty")
	}
	switch {
	case cfg.Meta.NodeID == "":
		cfg.Meta.NodeID = cfg.NodeID
	case cfg.Meta.NodeID != cfg.NodeID:
		bad("Meta.NodeID %q differs from NodeID %q", cfg.Meta.NodeID, cfg.NodeID)
	}
	if cfg.Meta.Shards < 0 || cfg.Meta.Shards > maxShards {
		bad("Meta.Shards %d out of range 0-%d", cfg.Meta.Shards, maxShards)
	}
	if cfg.BindHost == "" {
		cfg.BindHost = "0.0.0.0"
	}
	for name, p := range map[string]int{"BindPort": cfg.BindPort, "AdvertisePort": cfg.AdvertisePort} {
		if p < 0 || p > 65535 {
			bad("%s %d out of range 0-65535", name, p)
		}
	}
	switch len(cfg.SecretKey) {
	case 0, 16, 24, 32:
	default:
		bad("SecretKey is %d bytes, want 16, 24 or 32", len(cfg.SecretKey))
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ProbeInterval", &cfg.ProbeInterval, DefaultProbeInterval},
		{"ProbeTimeout", &cfg.ProbeTimeout, DefaultProbeTimeout},
		{"GossipInterval", &cfg.GossipInterval, DefaultGossipInterval},
		{"PushPullInterval", &cfg.PushPullInterval, DefaultPushPullInterval},
		{"DeadNodeReclaimTime", &cfg.DeadNodeReclaimTime, DefaultDeadNodeReclaimTime},
		{"TCPTimeout", &cfg.TCPTimeout, DefaultTCPTimeout},
		{"LeaveTimeout", &cfg.LeaveTimeout, DefaultLeaveTimeout},
		{"JoinRetryMin", &cfg.JoinRetryMin, DefaultJoinRetryMin},
		{"JoinRetryMax", &cfg.JoinRetryMax, DefaultJoinRetryMax},
	}
	for _, d := range durations {
		switch {
		case *d.v < 0:
			bad("%s is negative: %s", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if cfg.ProbeTimeout >= cfg.ProbeInterval {
		bad("ProbeTimeout %s must be below ProbeInterval %s", cfg.ProbeTimeout, cfg.ProbeInterval)
	}
	if cfg.JoinRetryMin > cfg.JoinRetryMax {
		bad("JoinRetryMin %s exceeds JoinRetryMax %s", cfg.JoinRetryMin, cfg.JoinRetryMax)
	}
	for _, m := range []struct {
		name string
		v    *int
		def  int
	}{
		{"SuspicionMult", &cfg.SuspicionMult, DefaultSuspicionMult},
		{"SuspicionMaxTimeoutMult", &cfg.SuspicionMaxTimeoutMult, DefaultSuspicionMaxTimeoutMult},
	} {
		switch {
		case *m.v < 0:
			bad("%s is negative: %d", m.name, *m.v)
		case *m.v == 0:
			*m.v = m.def
		}
	}
	seeds := make([]seedAddr, 0, len(cfg.Join))
	for i, e := range cfg.Join {
		s, err := parseSeed(e)
		if err != nil {
			bad("Join entry %d: %v", i+1, err)
			continue
		}
		seeds = append(seeds, s)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.lookupIP == nil {
		cfg.lookupIP = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if err := checkMetaSize(cfg.Meta); err != nil {
		return cfg, nil, err
	}
	return cfg, seeds, nil
}

// parseSeed accepts host or host:port, where host is a DNS name, an IPv4
// address, or an IPv6 address bare or in brackets.
func parseSeed(e string) (seedAddr, error) {
	if e == "" {
		return seedAddr{}, errors.New("empty seed")
	}
	// A bare IPv6 address is all colons, which SplitHostPort would misread.
	if a, err := netip.ParseAddr(e); err == nil {
		return seedAddr{host: a.String()}, nil
	}
	if inner, ok := strings.CutPrefix(e, "["); ok {
		if inner, ok := strings.CutSuffix(inner, "]"); ok {
			if a, err := netip.ParseAddr(inner); err == nil {
				return seedAddr{host: a.String()}, nil
			}
		}
	}
	if !strings.Contains(e, ":") {
		return seedAddr{host: e}, nil
	}
	host, port, err := net.SplitHostPort(e)
	if err != nil || host == "" {
		return seedAddr{}, fmt.Errorf("seed %q: want host or host:port", e)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return seedAddr{}, fmt.Errorf("seed %q: bad port %q", e, port)
	}
	return seedAddr{host: host, port: uint16(p)}, nil
}

// resolveHost turns an IP literal or DNS name into one address, preferring
// IPv4 because memberlist advertises a single address and IPv4 is what a
// dual-stack peer is most likely to reach.
func resolveHost(ctx context.Context, lookup func(context.Context, string) ([]netip.Addr, error), host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, nil
	}
	addrs, err := lookup(ctx, host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve %q: %w", host, err)
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %q: no addresses", host)
	}
	return addrs[0], nil
}

// memberlistConfig builds memberlist's configuration from the LAN profile.
func (c *Config) memberlistConfig(bind, advertise netip.Addr, d *delegate) *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.NodeID
	mc.BindAddr = bind.String()
	mc.BindPort = c.BindPort
	if advertise.IsValid() {
		mc.AdvertiseAddr = advertise.String()
	}
	// memberlist defaults the advertised port to 7946 rather than to the
	// bound one, so pass the bound port explicitly (BindPort 0 is fixed up
	// by memberlist itself once it has bound).
	mc.AdvertisePort = c.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = c.BindPort
	}
	mc.SecretKey = c.SecretKey
	mc.ProbeInterval = c.ProbeInterval
	mc.ProbeTimeout = c.ProbeTimeout
	mc.SuspicionMult = c.SuspicionMult
	mc.SuspicionMaxTimeoutMult = c.SuspicionMaxTimeoutMult
	mc.GossipInterval = c.GossipInterval
	mc.PushPullInterval = c.PushPullInterval
	mc.DeadNodeReclaimTime = c.DeadNodeReclaimTime
	mc.TCPTimeout = c.TCPTimeout
	mc.Delegate = d
	mc.Events = d
	mc.Ping = d
	mc.Merge = d
	mc.Logger = newMemberlistLogger(c.Logger, d.m.expectedFailure)
	return mc
}
