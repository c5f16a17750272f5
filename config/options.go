package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

const envPrefix = "RATION_"

// option describes one setting. It is the only place a setting is named,
// defaulted, parsed and (for rules that involve it alone) validated, so the
// flag, environment and YAML spellings cannot drift apart.
type option struct {
	name    string // kebab-case flag name; env and YAML names derive from it
	kind    string // value syntax shown in Usage
	help    string
	def     string // default, in the same syntax as flags and env
	defText string // shown in Usage instead of def when the default is computed
	list    bool   // comma-separated; YAML also takes a sequence
	noFile  bool   // cannot be set from the YAML file
	boolean bool   // a switch: --name alone means true
	secret  bool   // redacted when the config is logged

	set      func(c *Config, raw string) error // parse raw and replace the value
	setItems func(c *Config, items []string)   // lists only: replace with items as given
	show     func(c *Config) string            // the value, in flag syntax
	check    func(c *Config) error             // rules on this value alone
}

func (o *option) flagName() string { return "--" + o.name }

func (o *option) envName() string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(o.name, "-", "_"))
}

func (o *option) yamlKey() string { return strings.ReplaceAll(o.name, "-", "_") }

// with* adjust a table entry; they take and return values so the table
// stays a single composite literal.
func (o option) withDefText(s string) option { o.defText = s; return o }
func (o option) withoutFile() option         { o.noFile = true; return o }
func (o option) asSecret() option            { o.secret = true; return o }

// scalar builds an option holding one value of type T.
func scalar[T any](name, kind, def, help string, field func(*Config) *T,
	parse func(string) (T, error), format func(T) string, check func(T) error) option {
	return option{
		name: name, kind: kind, def: def, help: help,
		set: func(c *Config, raw string) error {
			v, err := parse(raw)
			if err != nil {
				return err
			}
			*field(c) = v
			return nil
		},
		show: func(c *Config) string { return format(*field(c)) },
		check: func(c *Config) error {
			if check == nil {
				return nil
			}
			return check(*field(c))
		},
	}
}

func stringOpt(name, def, help string, field func(*Config) *string, check func(string) error) option {
	return scalar(name, "string", def, help, field,
		func(s string) (string, error) { return s, nil },
		func(s string) string { return s }, check)
}

func intOpt(name, def, help string, field func(*Config) *int, check func(int) error) option {
	return scalar(name, "int", def, help, field,
		func(s string) (int, error) {
			v, err := parseInteger(s, strconv.IntSize)
			return int(v), err
		},
		strconv.Itoa, check)
}

func int64Opt(name, def, help string, field func(*Config) *int64, check func(int64) error) option {
	return scalar(name, "int", def, help, field,
		func(s string) (int64, error) { return parseInteger(s, 64) },
		func(v int64) string { return strconv.FormatInt(v, 10) }, check)
}

func uint64Opt(name, def, help string, field func(*Config) *uint64, check func(uint64) error) option {
	return scalar(name, "uint", def, help, field, parseUnsigned,
		func(v uint64) string { return strconv.FormatUint(v, 10) }, check)
}

func boolOpt(name, def, help string, field func(*Config) *bool) option {
	o := scalar(name, "bool", def, help, field,
		func(s string) (bool, error) {
			v, err := strconv.ParseBool(s)
			if err != nil {
				return false, fmt.Errorf("not true or false: %q", s)
			}
			return v, nil
		}, strconv.FormatBool, nil)
	o.boolean = true
	return o
}

func portOpt(name, def, help string, field func(*Config) *int) option {
	return intOpt(name, def, help, field, checkPort)
}

func durationOpt(name, def, help string, field func(*Config) *time.Duration, check func(time.Duration) error) option {
	return scalar(name, "duration", def, help, field, parseDuration, time.Duration.String, check)
}

func base64Opt(name, help string, field func(*Config) *[]byte, check func([]byte) error) option {
	return scalar(name, "base64", "", help, field, parseBase64,
		base64.StdEncoding.EncodeToString, check)
}

func listOpt(name, help string, field func(*Config) *[]string, check func([]string) error) option {
	o := scalar(name, "list", "", help, field,
		func(s string) ([]string, error) { return splitList(s), nil },
		func(v []string) string { return strings.Join(v, ",") }, check)
	o.list = true
	o.setItems = func(c *Config, items []string) { *field(c) = items }
	return o
}

// options is the table every source, Usage, Flags, EnvVars and Validate
// are driven from. Its order is the order of Usage.
var options = []option{
	stringOpt("config", "", "Optional YAML file of settings, keys in snake_case; flags and environment override it.",
		func(c *Config) *string { return &c.ConfigFile }, nil).withoutFile(),

	stringOpt("node-id", "", "Unique, stable name of this node in the cluster ([A-Za-z0-9._-], at most 64).",
		func(c *Config) *string { return &c.NodeID }, checkNodeID).withDefText("hostname"),
	stringOpt("data-dir", "./data", "Directory for raft logs and snapshots; relative paths are from the working directory.",
		func(c *Config) *string { return &c.DataDir }, checkNotEmpty),

	stringOpt("bind-host", "127.0.0.1", "Address every listener binds to; 0.0.0.0 or :: for all interfaces.",
		func(c *Config) *string { return &c.BindHost }, checkHost),
	stringOpt("advertise-host", "", "Address other nodes and clients dial; required when --bind-host is 0.0.0.0 or ::.",
		func(c *Config) *string { return &c.AdvertiseHost }, checkAdvertiseHost).withDefText("--bind-host"),
	portOpt("http-port", "8080", "HTTP API port.", func(c *Config) *int { return &c.HTTPPort }),
	portOpt("grpc-port", "9090", "gRPC API port.", func(c *Config) *int { return &c.GRPCPort }),
	portOpt("gossip-port", "7946", "Gossip membership port (TCP and UDP).", func(c *Config) *int { return &c.GossipPort }),
	portOpt("raft-port", "7000", "Raft port; the port after it carries node-to-node actor traffic.", func(c *Config) *int { return &c.RaftPort }),

	listOpt("join", "Gossip seeds, host or host:port, comma-separated; a missing port means --gossip-port.",
		func(c *Config) *[]string { return &c.Join }, checkJoin),
	intOpt("bootstrap-expect", "1", "Number of nodes to wait for before bootstrapping the cluster.",
		func(c *Config) *int { return &c.BootstrapExpect }, atLeast(1)),
	intOpt("shards", "3", "Number of shards (1-4096) of a new cluster: at least the number of nodes it should grow to, as few as that (each shard is a raft group, and fewer, fuller groups write faster); all nodes of a cluster must agree. A data dir keeps the count it was created with, and a node with a new data dir takes the count of the cluster it joins: unset, the option gives way to them; set (flag, environment or file) to another count, the node refuses to start.",
		func(c *Config) *int { return &c.Shards }, checkShards),
	intOpt("replicas", "3", "Replicas per shard; capped at run time to the number of nodes.",
		func(c *Config) *int { return &c.Replicas }, atLeast(1)),
	stringOpt("raft-log-store", "shared", "Where raft logs live: shared (one storage engine for every shard on the node, one fsync for all) or bolt (one raft-boltdb file per shard). A data dir keeps the one it was created with.",
		func(c *Config) *string { return &c.RaftLogStore }, oneOf("shared", "bolt")),
	durationOpt("idle-passivation", "2m", "Idle time after which an actor is stopped.",
		func(c *Config) *time.Duration { return &c.IdlePassivation }, positive),
	scalar("memory-limit", "size", "0", "Memory the node should stay within, e.g. 2GiB or 512MiB (units B, KiB, MiB, GiB, TiB): the Go runtime's soft limit; a quarter of it bounds the cache of users' ledgers on shards this node leads, an eighth the ledgers kept for stale reads; the least recently used go first. 0: no limit (GOMEMLIMIT still applies).",
		func(c *Config) *int64 { return &c.MemoryLimit }, parseSize, formatSize, func(v int64) error {
			if v != 0 && v < minMemoryLimit {
				return fmt.Errorf("must be 0 or at least %s, got %s", formatSize(minMemoryLimit), formatSize(v))
			}
			return nil
		}),

	base64Opt("gossip-key", "Base64 key of 16, 24 or 32 bytes encrypting gossip; unset means no encryption.",
		func(c *Config) *[]byte { return &c.GossipKey }, checkGossipKey).asSecret(),
	stringOpt("tls-cert", "", "TLS certificate file; requires --tls-key.",
		func(c *Config) *string { return &c.TLSCert }, nil),
	stringOpt("tls-key", "", "TLS private key file; requires --tls-cert.",
		func(c *Config) *string { return &c.TLSKey }, nil),
	stringOpt("tls-ca", "", "CA bundle for verifying peers; requires --tls-cert and --tls-key.",
		func(c *Config) *string { return &c.TLSCA }, nil),
	boolOpt("insecure", "false", "Serve without TLS on a --bind-host that is not loopback: anyone who reaches the ports can read and write every ledger and join the cluster. Without it such a node refuses to start unless --tls-cert and --tls-key are set.",
		func(c *Config) *bool { return &c.Insecure }),

	stringOpt("log-level", "info", "Log level: debug, info, warn or error.",
		func(c *Config) *string { return &c.LogLevel }, oneOf("debug", "info", "warn", "error")),
	stringOpt("log-format", "text", "Log format: text or json.",
		func(c *Config) *string { return &c.LogFormat }, oneOf("text", "json")),

	durationOpt("dead-node-grace", "30s", "Grace period before an unreachable node is treated as dead.",
		func(c *Config) *time.Duration { return &c.DeadNodeGrace }, positive),
	uint64Opt("snapshot-threshold", "8192", "Raft log entries between snapshots.",
		func(c *Config) *uint64 { return &c.SnapshotThreshold }, func(v uint64) error {
			if v == 0 {
				return errors.New("must be positive, got 0")
			}
			return nil
		}),
	uint64Opt("raft-trailing-logs", "10240", "Raft log entries a snapshot leaves in the log; a follower further behind installs the leader's snapshot instead.",
		func(c *Config) *uint64 { return &c.RaftTrailingLogs }, func(v uint64) error {
			if v == 0 {
				return errors.New("must be positive, got 0")
			}
			return nil
		}),
	durationOpt("snapshot-interval", "30s", "How often raft checks whether to snapshot.",
		func(c *Config) *time.Duration { return &c.SnapshotInterval }, raftMinimum),
	durationOpt("raft-heartbeat-timeout", "1s", "Raft heartbeat timeout.",
		func(c *Config) *time.Duration { return &c.RaftHeartbeatTimeout }, raftMinimum),
	durationOpt("raft-election-timeout", "1s", "Raft election timeout; at least --raft-heartbeat-timeout.",
		func(c *Config) *time.Duration { return &c.RaftElectionTimeout }, raftMinimum),
	durationOpt("raft-leader-lease-timeout", "500ms", "Raft leader lease; at most --raft-heartbeat-timeout.",
		func(c *Config) *time.Duration { return &c.RaftLeaderLeaseTimeout }, raftMinimum),

	durationOpt("shutdown-timeout", "20s", "Time allowed for a graceful shutdown.",
		func(c *Config) *time.Duration { return &c.ShutdownTimeout }, positive),
	durationOpt("request-timeout", "5s", "Deadline of an API request that comes without one: a shard with no leader then answers unavailable within it.",
		func(c *Config) *time.Duration { return &c.RequestTimeout }, positive),
	durationOpt("max-request-timeout", "60s", "Longest deadline an API request may have; a later one is cut to it.",
		func(c *Config) *time.Duration { return &c.MaxRequestTimeout }, positive),
	intOpt("max-connections", "4096", "Open connections each API listener (gRPC, HTTP) takes; more wait until one closes. Nodes reach each other's gRPC too.",
		func(c *Config) *int { return &c.MaxConnections }, atLeast(1)),
	int64Opt("max-request-bytes", "1048576", "Largest accepted request body, in bytes.",
		func(c *Config) *int64 { return &c.MaxRequestBytes }, func(v int64) error {
			if v <= 0 {
				return fmt.Errorf("must be positive, got %d", v)
			}
			return nil
		}),
}

// lookup finds an option by flag name.
func lookup(name string) *option {
	for i := range options {
		if options[i].name == name {
			return &options[i]
		}
	}
	return nil
}

// Flags returns every flag name, without dashes, sorted.
func Flags() []string {
	names := make([]string, 0, len(options))
	for i := range options {
		names = append(names, options[i].name)
	}
	slices.Sort(names)
	return names
}

// EnvVars returns every accepted environment variable name, sorted.
func EnvVars() []string {
	names := make([]string, 0, len(options))
	for i := range options {
		names = append(names, options[i].envName())
	}
	slices.Sort(names)
	return names
}

// Usage returns help text for every option: flag, value syntax, meaning,
// default, environment variable and YAML key.
func Usage() string {
	var b strings.Builder
	b.WriteString("Every option can be given as a flag, as an environment variable, or as a key\n" +
		"in the YAML file named by --config. Flags override the environment, which\n" +
		"overrides the file, which overrides the defaults. Lists are comma-separated;\n" +
		"durations look like 500ms, 30s or 2m.\n\nOptions:\n")
	defaults := Default()
	for i := range options {
		o := &options[i]
		fmt.Fprintf(&b, "  %s %s\n        %s\n", o.flagName(), o.kind, o.help)
		def := o.defText
		if def == "" {
			def = o.show(defaults)
		}
		if def == "" {
			def = "none"
		}
		fmt.Fprintf(&b, "        default: %s   env: %s", def, o.envName())
		if !o.noFile {
			fmt.Fprintf(&b, "   yaml: %s", o.yamlKey())
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Parsers. Their messages quote the raw value and are prefixed by the
// caller with the source (flag, variable or file key) it came from.

func parseInteger(s string, bits int) (int64, error) {
	v, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("integer out of range: %q", s)
		}
		return 0, fmt.Errorf("not an integer: %q", s)
	}
	return v, nil
}

func parseUnsigned(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("integer out of range: %q", s)
		}
		return 0, fmt.Errorf("not a non-negative integer: %q", s)
	}
	return v, nil
}

// minMemoryLimit is the smallest --memory-limit: below it the runtime
// would collect garbage without pause to stay within it.
const minMemoryLimit = 64 << 20

// sizeUnits are the units of a size, largest first.
var sizeUnits = []struct {
	name  string
	bytes int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// parseSize reads a byte count: an integer with an optional binary unit.
func parseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(s, u.name); ok {
			num, mult = strings.TrimSpace(n), u.bytes
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64/mult {
		return 0, fmt.Errorf("not a size (want e.g. 2GiB, 512MiB or a byte count): %q", s)
	}
	return v * mult, nil
}

// formatSize writes a byte count in the largest unit that divides it.
func formatSize(v int64) string {
	for _, u := range sizeUnits {
		if v != 0 && v%u.bytes == 0 {
			if u.bytes == 1 {
				return strconv.FormatInt(v, 10)
			}
			return strconv.FormatInt(v/u.bytes, 10) + u.name
		}
	}
	return strconv.FormatInt(v, 10)
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("not a duration (want e.g. 500ms, 30s, 2m): %q", s)
	}
	return d, nil
}

func parseBase64(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		// The key itself is secret, so it is not quoted back.
		return nil, fmt.Errorf("not valid standard base64: %w", err)
	}
	return b, nil
}

// splitList keeps empty entries so Validate can point at "a,,b" rather
// than silently dropping a slot the user meant to fill.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}

// Single-value rules used by the table.

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func checkNodeID(s string) error {
	if s == "" {
		return errors.New("required (the hostname, its default, is unavailable)")
	}
	if !nodeIDPattern.MatchString(s) {
		return fmt.Errorf("must match [A-Za-z0-9._-]{1,64}, got %q", s)
	}
	return nil
}

func checkNotEmpty(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	return nil
}

func checkPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("must be 1-65535, got %d", p)
	}
	return nil
}

func checkShards(n int) error {
	if n < 1 || n > 4096 {
		return fmt.Errorf("must be 1-4096, got %d", n)
	}
	return nil
}

func atLeast(lo int) func(int) error {
	return func(n int) error {
		if n < lo {
			return fmt.Errorf("must be at least %d, got %d", lo, n)
		}
		return nil
	}
}

func positive(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("must be positive, got %s", d)
	}
	return nil
}

// raftMinimum mirrors hashicorp/raft's ValidateConfig floor so a bad value
// is reported against its flag at startup rather than by raft later.
func raftMinimum(d time.Duration) error {
	const floor = 5 * time.Millisecond
	if d < floor {
		return fmt.Errorf("must be at least %s, got %s", floor, d)
	}
	return nil
}

func oneOf(allowed ...string) func(string) error {
	return func(s string) error {
		if !slices.Contains(allowed, s) {
			return fmt.Errorf("must be one of %s, got %q", strings.Join(allowed, ", "), s)
		}
		return nil
	}
}

func checkGossipKey(k []byte) error {
	switch len(k) {
	case 0, 16, 24, 32:
		return nil
	}
	return fmt.Errorf("must decode to 16, 24 or 32 bytes, got %d", len(k))
}

// checkAdvertiseHost only judges an explicit value; whether one is needed
// depends on --bind-host and is checked in Validate.
func checkAdvertiseHost(s string) error {
	if s == "" {
		return nil
	}
	if err := checkHost(s); err != nil {
		return err
	}
	if isWildcard(s) {
		return fmt.Errorf("must be an address peers can dial, got wildcard %q", s)
	}
	return nil
}

// checkJoin reports every bad entry on one line, so each line of
// Validate's error still starts with the flag it is about.
func checkJoin(entries []string) error {
	var problems []string
	for i, e := range entries {
		if _, _, err := splitJoin(e); err != nil {
			problems = append(problems, fmt.Sprintf("entry %d: %v", i+1, err))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
