// Package config gathers a node's settings from command-line flags,
// RATION_* environment variables and an optional YAML file, in that order
// of precedence over the built-in defaults, and validates the result.
//
// Every option is described once, in the options table (options.go); flag
// names, environment variable names, YAML keys, defaults, help text and
// per-option validation are all derived from that table. See DESIGN.md.
package config

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// Config is a node's complete configuration. Load returns it validated;
// code that builds one by hand should start from Default and call Validate.
type Config struct {
	// ConfigFile is the YAML file the settings were read from, empty when
	// there was none. It is kept so the node can log where its settings
	// came from; the file cannot set it.
	ConfigFile string

	// NodeID names the node in raft and gossip. It defaults to the
	// hostname, which is stable for a Kubernetes StatefulSet pod.
	NodeID  string
	DataDir string

	// BindHost is the address every listener binds to.
	BindHost string
	// AdvertiseHost is the address peers and clients dial. Load fills it
	// from BindHost when BindHost is a specific address; it must be given
	// when BindHost is a wildcard, since peers cannot dial 0.0.0.0.
	AdvertiseHost string

	HTTPPort   int
	GRPCPort   int
	GossipPort int
	// RaftPort carries raft; the port after it (ActorPort) carries
	// node-to-node actor traffic.
	RaftPort int

	// Join lists gossip seeds as host or host:port; JoinAddrs supplies the
	// missing ports.
	Join            []string
	BootstrapExpect int
	Shards          int
	// Replicas is the desired replica count per shard. It may exceed the
	// number of nodes: the cluster caps it at run time to the nodes it has,
	// so one configuration serves clusters as they grow.
	Replicas int

	// RaftLogStore is where raft logs live: "shared" (one engine per
	// node for every group) or "bolt" (one raft-boltdb file per group).
	// A data dir keeps the one it was created with.
	RaftLogStore string

	// IdlePassivation is how long an actor may stay idle before it is
	// stopped.
	IdlePassivation time.Duration

	// MemoryLimit, in bytes, is the Go runtime's soft memory limit, and
	// bounds the caches of users' ledgers (node.cacheBudgets). 0: no
	// limit of the node's own (the runtime's GOMEMLIMIT still applies).
	MemoryLimit int64

	// GossipKey encrypts gossip when set; it is 16, 24 or 32 bytes
	// (AES-128, -192 or -256) and given base64-encoded.
	GossipKey []byte

	// Insecure allows serving without TLS on a BindHost that is not
	// loopback; without it such a node needs TLSCert and TLSKey.
	Insecure bool

	// TLSCert and TLSKey are file paths, set together or not at all.
	// TLSCA, when set, also requires them.
	TLSCert string
	TLSKey  string
	TLSCA   string

	LogLevel  string
	LogFormat string

	DeadNodeGrace time.Duration

	// SnapshotThreshold is the number of raft log entries between snapshots.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// RaftTrailingLogs is how many entries a snapshot leaves in the log.
	RaftTrailingLogs       uint64
	RaftHeartbeatTimeout   time.Duration
	RaftElectionTimeout    time.Duration
	RaftLeaderLeaseTimeout time.Duration

	ShutdownTimeout time.Duration
	MaxRequestBytes int64
	// RequestTimeout is the deadline of an API request that comes without
	// one; MaxRequestTimeout cuts a longer one (service.WithDeadlines).
	RequestTimeout    time.Duration
	MaxRequestTimeout time.Duration
	// MaxConnections caps the open connections of each API listener.
	MaxConnections int

	// explicit names (by flag name) the options Load found in a flag,
	// the environment or the file, whatever the value: a setting the
	// operator wrote down is a statement about this node, a default is
	// not (see Explicit). nil for a Config built by hand.
	explicit map[string]bool
}

// hostname is a variable so tests get a predictable default NodeID.
var hostname = os.Hostname

// Default returns the built-in defaults, with NodeID taken from the
// hostname (left empty, and so refused by Validate, if the hostname is
// unavailable) and AdvertiseHost empty, which means "same as BindHost".
func Default() *Config {
	c := &Config{}
	for i := range options {
		o := &options[i]
		if err := o.set(c, o.def); err != nil {
			// The table is static and a test parses every default, so
			// this can only be reached by a broken edit of the table.
			panic("config: default of --" + o.name + ": " + err.Error())
		}
	}
	if h, err := hostname(); err == nil {
		c.NodeID = h
	}
	return c
}

// Explicit reports whether Load found the option named (its flag name,
// without dashes) in a flag, the environment or the file, even at its
// default value. A Config built by hand has no explicit option. The node
// needs it for settings a data dir or the cluster may already have
// decided: --shards set explicitly must match them, a default gives way.
// It panics on a name that is no option, a caller's typo that would
// otherwise read as "not set" for ever.
func (c *Config) Explicit(name string) bool {
	if lookup(name) == nil {
		panic("config: Explicit: no option --" + name)
	}
	return c.explicit[name]
}

func (c *Config) markExplicit(name string) {
	if c.explicit == nil {
		c.explicit = make(map[string]bool)
	}
	c.explicit[name] = true
}

// HTTPAddr is the address the HTTP listener binds to.
func (c *Config) HTTPAddr() string { return hostPort(c.BindHost, c.HTTPPort) }

// GRPCAddr is the address the gRPC listener binds to.
func (c *Config) GRPCAddr() string { return hostPort(c.BindHost, c.GRPCPort) }

// GossipAddr is the address gossip binds to (TCP and UDP).
func (c *Config) GossipAddr() string { return hostPort(c.BindHost, c.GossipPort) }

// RaftAddr is the address the raft transport binds to.
func (c *Config) RaftAddr() string { return hostPort(c.BindHost, c.RaftPort) }

// AdvertiseHTTPAddr is the HTTP address other nodes and clients dial.
func (c *Config) AdvertiseHTTPAddr() string { return hostPort(c.advertiseHost(), c.HTTPPort) }

// AdvertiseGRPCAddr is the gRPC address other nodes and clients dial.
func (c *Config) AdvertiseGRPCAddr() string { return hostPort(c.advertiseHost(), c.GRPCPort) }

// AdvertiseGossipAddr is the gossip address other nodes dial.
func (c *Config) AdvertiseGossipAddr() string { return hostPort(c.advertiseHost(), c.GossipPort) }

// AdvertiseRaftAddr is the raft address other nodes dial.
func (c *Config) AdvertiseRaftAddr() string { return hostPort(c.advertiseHost(), c.RaftPort) }

// ActorPort is where a clustered node's protoactor remote listens:
// --raft-port + 1. The remote binds its own listener and cannot take one
// from the raft port's mux (cluster/actorcluster/DESIGN.md).
func (c *Config) ActorPort() int { return c.RaftPort + 1 }

// AdvertiseActorAddr is the actor address other nodes dial.
func (c *Config) AdvertiseActorAddr() string { return hostPort(c.advertiseHost(), c.ActorPort()) }

// JoinAddrs returns the Join seeds as host:port, giving seeds without a
// port this node's GossipPort. That is the same default memberlist applies,
// made explicit so logs show what is actually dialled; it assumes every
// node uses the same gossip port, as pods of one StatefulSet do.
func (c *Config) JoinAddrs() []string {
	addrs := make([]string, 0, len(c.Join))
	for _, entry := range c.Join {
		host, port, err := splitJoin(entry)
		switch {
		case err != nil:
			// Validate refuses such entries; pass them through so a
			// caller that skipped validation fails loudly when dialling.
			addrs = append(addrs, entry)
		case port == "":
			addrs = append(addrs, hostPort(host, c.GossipPort))
		default:
			addrs = append(addrs, net.JoinHostPort(host, port))
		}
	}
	return addrs
}

// SlogLevel maps LogLevel to a slog level. An unknown level, which Validate
// refuses, maps to Info so a hand-built config still logs.
func (c *Config) SlogLevel() slog.Level {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// LogValue lets the node log its whole configuration at startup without
// leaking the gossip key. Keys are the YAML keys.
func (c *Config) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, len(options))
	for i := range options {
		o := &options[i]
		v := o.show(c)
		if o.secret && v != "" {
			v = "<redacted>"
		}
		attrs = append(attrs, slog.String(o.yamlKey(), v))
	}
	return slog.GroupValue(attrs...)
}

func (c *Config) advertiseHost() string {
	if c.AdvertiseHost != "" {
		return c.AdvertiseHost
	}
	return c.BindHost
}

func hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// isWildcard reports whether host means "all interfaces", which can be
// bound to but not dialled by a peer.
func isWildcard(host string) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsUnspecified()
}
