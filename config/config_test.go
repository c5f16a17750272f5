package config

import (
	"encoding/base64"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// A fixed hostname makes the NodeID default predictable. Tests that
	// change it restore it and do not run in parallel.
	hostname = func() (string, error) { return "test-host", nil }
	os.Exit(m.Run())
}

// specFlags is the flag set the brief and the Kubernetes manifests rely
// on, written out by hand so a renamed option fails here first.
var specFlags = []string{
	"advertise-host", "bind-host", "bootstrap-expect", "config", "data-dir",
	"dead-node-grace", "gossip-key", "gossip-port", "grpc-port", "http-port",
	"idle-passivation", "insecure", "join", "log-format", "log-level",
	"max-connections", "max-request-bytes", "max-request-timeout", "memory-limit", "node-id", "raft-election-timeout", "raft-heartbeat-timeout",
	"raft-leader-lease-timeout", "raft-log-store", "raft-port", "raft-trailing-logs", "replicas", "request-timeout", "shards",
	"shutdown-timeout", "snapshot-interval", "snapshot-threshold", "tls-ca",
	"tls-cert", "tls-key",
}

var key16 = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ration.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("writing config file: %v", err)
	}
	return path
}

func mustLoad(t *testing.T, args, env []string) *Config {
	t.Helper()
	c, err := Load(args, env)
	if err != nil {
		t.Fatalf("Load(%q, %q): %v", args, env, err)
	}
	return c
}

func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

func TestDefaults(t *testing.T) {
	want := &Config{
		NodeID:                 "test-host",
		DataDir:                "./data",
		BindHost:               "127.0.0.1",
		AdvertiseHost:          "127.0.0.1",
		HTTPPort:               8080,
		GRPCPort:               9090,
		GossipPort:             7946,
		RaftPort:               7000,
		BootstrapExpect:        1,
		Shards:                 3,
		Replicas:               3,
		IdlePassivation:        2 * time.Minute,
		RaftLogStore:           "shared",
		LogLevel:               "info",
		LogFormat:              "text",
		DeadNodeGrace:          30 * time.Second,
		SnapshotThreshold:      8192,
		SnapshotInterval:       30 * time.Second,
		RaftTrailingLogs:       10240,
		RaftHeartbeatTimeout:   time.Second,
		RaftElectionTimeout:    time.Second,
		RaftLeaderLeaseTimeout: 500 * time.Millisecond,
		ShutdownTimeout:        20 * time.Second,
		MaxRequestBytes:        1 << 20,
		RequestTimeout:         5 * time.Second,
		MaxRequestTimeout:      time.Minute,
		MaxConnections:         4096,
	}
	got := mustLoad(t, nil, nil)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load defaults:\n got %+v\nwant %+v", got, want)
	}

	// Default leaves AdvertiseHost empty ("same as BindHost"); only Load
	// fills it in.
	d := Default()
	want.AdvertiseHost = ""
	if !reflect.DeepEqual(d, want) {
		t.Errorf("Default:\n got %+v\nwant %+v", d, want)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("Default does not validate: %v", err)
	}
}

func TestNodeIDWithoutHostname(t *testing.T) {
	saved := hostname
	t.Cleanup(func() { hostname = saved })
	hostname = func() (string, error) { return "", errors.New("no hostname") }

	_, err := Load(nil, nil)
	wantErr(t, err, "--node-id: required")

	c := mustLoad(t, []string{"--node-id", "n1"}, nil)
	if c.NodeID != "n1" {
		t.Errorf("NodeID = %q, want n1", c.NodeID)
	}
}

// TestEachSource sets one option of every value kind from each source in
// turn, with the names spelled out literally rather than derived.
func TestEachSource(t *testing.T) {
	tests := []struct {
		flag, env, yamlKey string
		raw                string // flag and env syntax
		yamlValue          string // YAML text for the value
		get                func(*Config) any
		want               any
	}{
		{"node-id", "RATION_NODE_ID", "node_id", "node-7", "node-7",
			func(c *Config) any { return c.NodeID }, "node-7"},
		{"data-dir", "RATION_DATA_DIR", "data_dir", "/var/lib/ration", "/var/lib/ration",
			func(c *Config) any { return c.DataDir }, "/var/lib/ration"},
		{"http-port", "RATION_HTTP_PORT", "http_port", "18080", "18080",
			func(c *Config) any { return c.HTTPPort }, 18080},
		{"max-request-bytes", "RATION_MAX_REQUEST_BYTES", "max_request_bytes", "4096", "4096",
			func(c *Config) any { return c.MaxRequestBytes }, int64(4096)},
		{"snapshot-threshold", "RATION_SNAPSHOT_THRESHOLD", "snapshot_threshold", "100", "100",
			func(c *Config) any { return c.SnapshotThreshold }, uint64(100)},
		{"raft-log-store", "RATION_RAFT_LOG_STORE", "raft_log_store", "bolt", `"bolt"`,
			func(c *Config) any { return c.RaftLogStore }, "bolt"},
		{"memory-limit", "RATION_MEMORY_LIMIT", "memory_limit", "2GiB", "2GiB",
			func(c *Config) any { return c.MemoryLimit }, int64(2 << 30)},
		{"idle-passivation", "RATION_IDLE_PASSIVATION", "idle_passivation", "90s", `"90s"`,
			func(c *Config) any { return c.IdlePassivation }, 90 * time.Second},
		{"raft-leader-lease-timeout", "RATION_RAFT_LEADER_LEASE_TIMEOUT", "raft_leader_lease_timeout", "250ms", "250ms",
			func(c *Config) any { return c.RaftLeaderLeaseTimeout }, 250 * time.Millisecond},
		{"join", "RATION_JOIN", "join", "a.example:7946, b.example", `"a.example:7946, b.example"`,
			func(c *Config) any { return c.Join }, []string{"a.example:7946", "b.example"}},
		{"gossip-key", "RATION_GOSSIP_KEY", "gossip_key", key16, key16,
			func(c *Config) any { return c.GossipKey }, []byte("0123456789abcdef")},
		{"log-level", "RATION_LOG_LEVEL", "log_level", "debug", "debug",
			func(c *Config) any { return c.LogLevel }, "debug"},
	}
	for _, tt := range tests {
		sources := []struct {
			name string
			args []string
			env  func(t *testing.T) []string
		}{
			{"flag", []string{"--" + tt.flag + "=" + tt.raw}, func(*testing.T) []string { return nil }},
			{"env", nil, func(*testing.T) []string { return []string{tt.env + "=" + tt.raw} }},
			{"yaml", nil, func(t *testing.T) []string {
				return []string{"RATION_CONFIG=" + writeFile(t, tt.yamlKey+": "+tt.yamlValue+"\n")}
			}},
		}
		for _, src := range sources {
			t.Run(tt.flag+"/"+src.name, func(t *testing.T) {
				c := mustLoad(t, src.args, src.env(t))
				if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
					t.Errorf("got %#v, want %#v", got, tt.want)
				}
			})
		}
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "http_port: 1001\njoin: [file-seed]\n")
	tests := []struct {
		name     string
		args     []string
		env      []string
		wantPort int
		wantJoin []string
	}{
		{"defaults", nil, nil, 8080, nil},
		{"file over defaults", []string{"--config", file}, nil, 1001, []string{"file-seed"}},
		{"env over file", nil, []string{"RATION_CONFIG=" + file, "RATION_HTTP_PORT=1002", "RATION_JOIN=env-seed"},
			1002, []string{"env-seed"}},
		{"flag over env and file", []string{"--http-port=1003", "--join=flag-seed"},
			[]string{"RATION_CONFIG=" + file, "RATION_HTTP_PORT=1002", "RATION_JOIN=env-seed"},
			1003, []string{"flag-seed"}},
		{"flag over env", []string{"--http-port=1003"}, []string{"RATION_HTTP_PORT=1002"}, 1003, nil},
		{"empty env list clears file list", nil, []string{"RATION_CONFIG=" + file, "RATION_JOIN="}, 1001, nil},
		{"last env duplicate wins", nil, []string{"RATION_HTTP_PORT=1", "RATION_HTTP_PORT=1004"}, 1004, nil},
		{"last scalar flag wins", []string{"--http-port=1", "--http-port=1005"}, nil, 1005, nil},
		{"repeated list flag accumulates", []string{"--join=a", "--join", "b,c"}, nil, 8080, []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, tt.args, tt.env)
			if c.HTTPPort != tt.wantPort {
				t.Errorf("HTTPPort = %d, want %d", c.HTTPPort, tt.wantPort)
			}
			if !slices.Equal(c.Join, tt.wantJoin) {
				t.Errorf("Join = %q, want %q", c.Join, tt.wantJoin)
			}
		})
	}
}

func TestConfigPathPrecedence(t *testing.T) {
	fromEnv := writeFile(t, "shards: 11\n")
	fromFlag := writeFile(t, "shards: 22\n")
	c := mustLoad(t, []string{"--config", fromFlag}, []string{"RATION_CONFIG=" + fromEnv})
	if c.Shards != 22 || c.ConfigFile != fromFlag {
		t.Errorf("Shards = %d, ConfigFile = %q; want 22 from %q", c.Shards, c.ConfigFile, fromFlag)
	}
	c = mustLoad(t, nil, []string{"RATION_CONFIG=" + fromEnv})
	if c.Shards != 11 || c.ConfigFile != fromEnv {
		t.Errorf("Shards = %d, ConfigFile = %q; want 11 from %q", c.Shards, c.ConfigFile, fromEnv)
	}
}

// TestExplicit: an option is explicit when any source names it, even at
// its default value; a YAML key without a value, a Config built by hand
// and a default are not.
func TestExplicit(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  func(t *testing.T) []string
		want bool
	}{
		{"default", nil, nil, false},
		{"flag", []string{"--shards", "8"}, nil, true},
		{"flag at the default value", []string{"--shards=3"}, nil, true},
		{"env", nil, func(*testing.T) []string { return []string{"RATION_SHARDS=8"} }, true},
		{"yaml", nil, func(t *testing.T) []string { return []string{"RATION_CONFIG=" + writeFile(t, "shards: 8\n")} }, true},
		{"yaml without a value", nil, func(t *testing.T) []string { return []string{"RATION_CONFIG=" + writeFile(t, "shards:\n")} }, false},
		{"another option", []string{"--replicas", "5"}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var env []string
			if tt.env != nil {
				env = tt.env(t)
			}
			c := mustLoad(t, tt.args, env)
			if got := c.Explicit("shards"); got != tt.want {
				t.Errorf("Explicit(shards) = %v, want %v", got, tt.want)
			}
		})
	}
	// Lists from each source, and the file path itself.
	c := mustLoad(t, nil, []string{"RATION_CONFIG=" + writeFile(t, "join: [a, b]\n")})
	if !c.Explicit("join") || !c.Explicit("config") || c.Explicit("shards") {
		t.Errorf("join %v, config %v, shards %v; want true, true, false", c.Explicit("join"), c.Explicit("config"), c.Explicit("shards"))
	}
	if !mustLoad(t, []string{"--join", "a"}, nil).Explicit("join") {
		t.Error("--join a: not explicit")
	}
	if Default().Explicit("shards") {
		t.Error("a Config built by hand has an explicit option")
	}
	defer func() {
		if recover() == nil {
			t.Error("Explicit of an unknown option did not panic")
		}
	}()
	Default().Explicit("shard")
}

func TestYAML(t *testing.T) {
	tests := []struct {
		name    string
		content string
		wantErr string            // empty: must load
		check   func(*Config) any // with want, when it loads
		want    any
	}{
		{name: "empty file", content: "",
			check: func(c *Config) any { return c.HTTPPort }, want: 8080},
		{name: "comments only", content: "# nothing\n",
			check: func(c *Config) any { return c.HTTPPort }, want: 8080},
		{name: "null value leaves default", content: "data_dir:\nshards: ~\n",
			check: func(c *Config) any { return []any{c.DataDir, c.Shards} }, want: []any{"./data", 3}},
		{name: "join as list", content: "join:\n  - a:1\n  - '[::1]:2'\n",
			check: func(c *Config) any { return c.Join }, want: []string{"a:1", "[::1]:2"}},
		{name: "join as empty list", content: "join: []\n",
			check: func(c *Config) any { return c.Join }, want: []string{}},
		{name: "full settings", content: "node_id: n9\nbind_host: 0.0.0.0\nadvertise_host: n9.ration\nshutdown_timeout: 1m\ntls_cert: c.pem\ntls_key: k.pem\n",
			check: func(c *Config) any { return []any{c.NodeID, c.AdvertiseHost, c.ShutdownTimeout, c.TLSKey} },
			want:  []any{"n9", "n9.ration", time.Minute, "k.pem"}},

		{name: "unknown key", content: "http_port: 1\nnodeid: x\n", wantErr: "nodeid (line 2): unknown key"},
		{name: "flag spelling", content: "node-id: x\n", wantErr: "unknown key, did you mean node_id?"},
		{name: "config key", content: "config: other.yaml\n", wantErr: "config (line 1): unknown key"},
		{name: "duplicate key", content: "shards: 1\nshards: 2\n", wantErr: "shards (line 2): duplicate key, first set on line 1"},
		{name: "list for scalar", content: "http_port: [1, 2]\n", wantErr: "expected a single value, got a list"},
		{name: "mapping value", content: "http_port: {a: 1}\n", wantErr: "expected a value, got a mapping"},
		{name: "nested list item", content: "join: [[a]]\n", wantErr: "must be a plain value"},
		{name: "bad integer", content: "http_port: eighty\n", wantErr: `http_port (line 1): not an integer: "eighty"`},
		{name: "bad duration", content: "dead_node_grace: 30\n", wantErr: `dead_node_grace (line 1): not a duration`},
		{name: "bad base64", content: "gossip_key: '!!'\n", wantErr: "gossip_key (line 1): not valid standard base64"},
		{name: "two documents", content: "shards: 1\n---\nshards: 2\n", wantErr: "single YAML document"},
		{name: "top-level list", content: "- shards\n", wantErr: "top level must be a mapping"},
		{name: "syntax error", content: "shards: [\n", wantErr: "config file"},
		{name: "validated too", content: "shards: 0\n", wantErr: "--shards: must be 1-4096, got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.content)
			c, err := Load([]string{"--config", path}, nil)
			if tt.wantErr != "" {
				wantErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := tt.check(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "absent.yaml")
		_, err := Load([]string{"--config", path}, nil)
		wantErr(t, err, path)
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("error %v does not wrap os.ErrNotExist", err)
		}
	})
}

func TestEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		wantErr string
	}{
		{"unrelated variables ignored", []string{"PATH=/bin", "RATIONAL=1", "HOME", "ration_node_id=x"}, ""},
		{"typo rejected with hint", []string{"RATION_NODEID=x"}, "RATION_NODEID: unknown environment variable, did you mean RATION_NODE_ID?"},
		{"unknown rejected", []string{"RATION_BOGUS=1"}, "RATION_BOGUS: unknown environment variable"},
		{"bad value names variable", []string{"RATION_HTTP_PORT=http"}, `RATION_HTTP_PORT: not an integer: "http"`},
		{"empty integer", []string{"RATION_SHARDS="}, `RATION_SHARDS: not an integer: ""`},
		{"empty string is a value", []string{"RATION_DATA_DIR="}, "--data-dir: must not be empty"},
		{"kubernetes service links ignored", []string{
			"RATION_SERVICE_HOST=10.0.0.1",
			"RATION_SERVICE_PORT=8080",
			"RATION_SERVICE_PORT_HTTP=8080",
			"RATION_PORT=tcp://10.0.0.1:8080",
			"RATION_PORT_8080_TCP=tcp://10.0.0.1:8080",
			"RATION_PORT_8080_TCP_PROTO=tcp",
			"RATION_PORT_8080_TCP_PORT=8080",
			"RATION_PORT_8080_TCP_ADDR=10.0.0.1",
			"RATION_HEADLESS_SERVICE_HOST=10.0.0.2",
			"RATION_HEADLESS_PORT=udp://10.0.0.2:7946",
		}, ""},
		{"bare PORT without link value is a typo", []string{"RATION_PORT=8080"}, "RATION_PORT: unknown environment variable"},
		{"service link colliding with a setting", []string{"RATION_HTTP_PORT=tcp://10.0.0.3:8080"},
			"RATION_HTTP_PORT: value \"tcp://10.0.0.3:8080\" is a Kubernetes service link"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(nil, tt.env)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			wantErr(t, err, tt.wantErr)
		})
	}
}

func TestCommandLine(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"single dash accepted", []string{"-shards", "5"}, ""},
		{"unknown flag", []string{"--shard=5"}, "command line: flag provided but not defined: -shard"},
		{"positional argument", []string{"--shards=5", "extra"}, `unexpected argument "extra"`},
		{"missing value", []string{"--node-id"}, "flag needs an argument"},
		{"bad value names flag", []string{"--raft-port=x"}, `--raft-port: not an integer: "x"`},
		{"bad duration names flag", []string{"--shutdown-timeout=20"}, "--shutdown-timeout: not a duration"},
		{"negative unsigned", []string{"--snapshot-threshold=-1"}, `--snapshot-threshold: not a non-negative integer: "-1"`},
		{"out of range", []string{"--max-request-bytes=99999999999999999999"}, "--max-request-bytes: integer out of range"},
		{"all problems reported", []string{"--raft-port=x", "--shards=0"}, "--shards: must be 1-4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.args, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			wantErr(t, err, tt.wantErr)
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"--shards=4", "-h"}} {
		c, err := Load(args, nil)
		if !errors.Is(err, ErrHelp) || !errors.Is(err, flag.ErrHelp) || c != nil {
			t.Errorf("Load(%q) = %v, %v; want nil, ErrHelp", args, c, err)
		}
	}

	usage := Usage()
	for i := range options {
		o := &options[i]
		for _, want := range []string{"--" + o.name + " ", o.envName()} {
			if !strings.Contains(usage, want) {
				t.Errorf("Usage lacks %q", want)
			}
		}
		if !o.noFile && !strings.Contains(usage, "yaml: "+o.yamlKey()+"\n") {
			t.Errorf("Usage lacks YAML key %q", o.yamlKey())
		}
	}
	for _, want := range []string{
		"default: 8080   env: RATION_HTTP_PORT",
		"default: 2m0s   env: RATION_IDLE_PASSIVATION",
		"default: hostname   env: RATION_NODE_ID",
		"default: --bind-host   env: RATION_ADVERTISE_HOST",
		"default: none   env: RATION_JOIN",
		"env: RATION_CONFIG\n",
	} {
		if !strings.Contains(usage, want) {
			t.Errorf("Usage lacks %q", want)
		}
	}
}

// validConfig is a Config that passes Validate, for cases to break.
func validConfig() *Config {
	c := Default()
	c.AdvertiseHost = c.BindHost
	return c
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // one line of the error; empty: valid
	}{
		{"http port zero", func(c *Config) { c.HTTPPort = 0 }, "--http-port: must be 1-65535, got 0"},
		{"grpc port too big", func(c *Config) { c.GRPCPort = 65536 }, "--grpc-port: must be 1-65535, got 65536"},
		{"gossip port negative", func(c *Config) { c.GossipPort = -1 }, "--gossip-port: must be 1-65535, got -1"},
		{"raft port zero", func(c *Config) { c.RaftPort = 0 }, "--raft-port: must be 1-65535, got 0"},
		{"ports clash", func(c *Config) { c.RaftPort = c.HTTPPort },
			"--raft-port: 8080 is already used by --http-port (all listeners share --bind-host)"},
		{"highest port", func(c *Config) { c.HTTPPort = 65535 }, ""},
		{"actor port clashes", func(c *Config) { c.GRPCPort = c.RaftPort + 1 },
			"--raft-port: 7001 (+ 1, the actor port) is already used by --grpc-port (all listeners share --bind-host)"},
		{"raft port leaves no actor port", func(c *Config) { c.RaftPort = 65535 },
			"--raft-port: 65535 leaves no port after it for actor traffic"},

		{"shards zero", func(c *Config) { c.Shards = 0 }, "--shards: must be 1-4096, got 0"},
		{"shards too many", func(c *Config) { c.Shards = 4097 }, "--shards: must be 1-4096, got 4097"},
		{"shards max", func(c *Config) { c.Shards = 4096 }, ""},
		{"replicas zero", func(c *Config) { c.Replicas = 0 }, "--replicas: must be at least 1, got 0"},
		{"replicas above node count", func(c *Config) { c.Replicas = 9; c.BootstrapExpect = 1 }, ""},
		{"bootstrap expect zero", func(c *Config) { c.BootstrapExpect = 0 }, "--bootstrap-expect: must be at least 1, got 0"},

		{"idle passivation zero", func(c *Config) { c.IdlePassivation = 0 }, "--idle-passivation: must be positive, got 0s"},
		{"request timeout above its cap", func(c *Config) { c.RequestTimeout = 2 * time.Minute }, "--request-timeout: must not exceed --max-request-timeout (1m0s), got 2m0s"},
		{"memory limit tiny", func(c *Config) { c.MemoryLimit = 1 << 20 }, "--memory-limit: must be 0 or at least 64MiB, got 1MiB"},
		{"memory limit smallest", func(c *Config) { c.MemoryLimit = 64 << 20 }, ""},
		{"dead node grace negative", func(c *Config) { c.DeadNodeGrace = -time.Second }, "--dead-node-grace: must be positive, got -1s"},
		{"shutdown timeout zero", func(c *Config) { c.ShutdownTimeout = 0 }, "--shutdown-timeout: must be positive, got 0s"},
		{"snapshot interval tiny", func(c *Config) { c.SnapshotInterval = time.Millisecond },
			"--snapshot-interval: must be at least 5ms, got 1ms"},
		{"heartbeat zero", func(c *Config) { c.RaftHeartbeatTimeout = 0 }, "--raft-heartbeat-timeout: must be at least 5ms, got 0s"},
		{"election zero", func(c *Config) { c.RaftElectionTimeout = 0 }, "--raft-election-timeout: must be at least 5ms, got 0s"},
		{"lease zero", func(c *Config) { c.RaftLeaderLeaseTimeout = 0 }, "--raft-leader-lease-timeout: must be at least 5ms, got 0s"},
		{"lease above heartbeat", func(c *Config) { c.RaftLeaderLeaseTimeout = 2 * time.Second },
			"--raft-leader-lease-timeout: must not exceed --raft-heartbeat-timeout (1s), got 2s"},
		{"election below heartbeat", func(c *Config) { c.RaftElectionTimeout = 500 * time.Millisecond },
			"--raft-election-timeout: must be at least --raft-heartbeat-timeout (1s), got 500ms"},
		{"snapshot threshold zero", func(c *Config) { c.SnapshotThreshold = 0 }, "--snapshot-threshold: must be positive, got 0"},
		{"max request bytes zero", func(c *Config) { c.MaxRequestBytes = 0 }, "--max-request-bytes: must be positive, got 0"},

		{"node id empty", func(c *Config) { c.NodeID = "" }, "--node-id: required"},
		{"node id with space", func(c *Config) { c.NodeID = "a b" }, `--node-id: must match [A-Za-z0-9._-]{1,64}, got "a b"`},
		{"node id too long", func(c *Config) { c.NodeID = strings.Repeat("n", 65) }, "--node-id: must match"},
		{"node id longest", func(c *Config) { c.NodeID = strings.Repeat("n", 64) }, ""},
		{"data dir empty", func(c *Config) { c.DataDir = "" }, "--data-dir: must not be empty"},
		{"log level", func(c *Config) { c.LogLevel = "verbose" },
			`--log-level: must be one of debug, info, warn, error, got "verbose"`},
		{"log format", func(c *Config) { c.LogFormat = "xml" }, `--log-format: must be one of text, json, got "xml"`},
		{"raft log store", func(c *Config) { c.RaftLogStore = "pebble" }, `--raft-log-store: must be one of shared, bolt, got "pebble"`},

		{"gossip key short", func(c *Config) { c.GossipKey = make([]byte, 10) },
			"--gossip-key: must decode to 16, 24 or 32 bytes, got 10"},
		{"gossip key 24", func(c *Config) { c.GossipKey = make([]byte, 24) }, ""},
		{"gossip key 32", func(c *Config) { c.GossipKey = make([]byte, 32) }, ""},
		{"tls cert alone", func(c *Config) { c.TLSCert = "c.pem" }, "--tls-key: required when --tls-cert is set"},
		{"tls key alone", func(c *Config) { c.TLSKey = "k.pem" }, "--tls-cert: required when --tls-key is set"},
		{"tls ca alone", func(c *Config) { c.TLSCA = "ca.pem" }, "--tls-ca: requires --tls-cert and --tls-key"},
		{"tls complete", func(c *Config) { c.TLSCert, c.TLSKey, c.TLSCA = "c", "k", "ca" }, ""},

		{"join empty entry", func(c *Config) { c.Join = []string{"a", ""} }, "--join: entry 2: empty seed"},
		{"join port zero", func(c *Config) { c.Join = []string{"a:0"} }, `--join: entry 1: seed "a:0": port must be 1-65535, got "0"`},
		{"join named port", func(c *Config) { c.Join = []string{"a:http"} }, `port must be 1-65535, got "http"`},
		{"join too many colons", func(c *Config) { c.Join = []string{"a:b:c"} }, `seed "a:b:c": want host or host:port`},
		{"join bad host", func(c *Config) { c.Join = []string{"bad host:1"} }, `not an IP address or DNS name: "bad host"`},
		{"join several bad", func(c *Config) { c.Join = []string{"", "x:0"} }, "--join: entry 1: empty seed; entry 2:"},
		{"join valid forms", func(c *Config) {
			c.Join = []string{"a", "a.b.svc.cluster.local:7946", "10.0.0.1", "10.0.0.1:1", "::1", "[::1]", "[fe80::1]:7946"}
		}, ""},

		{"bind host empty", func(c *Config) { c.BindHost = "" }, "--bind-host: must not be empty"},
		{"bind host bracketed", func(c *Config) { c.BindHost = "[::1]" }, "--bind-host: write IPv6 addresses without brackets"},
		{"bind host garbage", func(c *Config) { c.BindHost = "host name" }, `--bind-host: not an IP address or DNS name: "host name"`},
		{"bind wildcard without advertise", func(c *Config) { c.BindHost, c.AdvertiseHost = "0.0.0.0", "" },
			`--advertise-host: required when --bind-host is the wildcard "0.0.0.0", which peers cannot dial`},
		{"bind v6 wildcard without advertise", func(c *Config) { c.BindHost, c.AdvertiseHost = "::", "" },
			"--advertise-host: required when --bind-host is the wildcard"},
		{"bind wildcard with advertise", func(c *Config) { c.BindHost, c.AdvertiseHost, c.Insecure = "::", "ration-0.ration", true }, ""},
		{"beyond loopback without TLS", func(c *Config) { c.BindHost, c.AdvertiseHost = "10.1.2.3", "10.1.2.3" }, "--bind-host: \"10.1.2.3\" is reachable beyond this machine: serve with TLS (--tls-cert and --tls-key), or give --insecure to serve without it"},
		{"beyond loopback with TLS", func(c *Config) { c.BindHost, c.AdvertiseHost, c.TLSCert, c.TLSKey = "0.0.0.0", "10.1.2.3", "c", "k" }, ""},
		{"a name is not loopback", func(c *Config) { c.BindHost, c.AdvertiseHost = "node.example", "node.example" }, "--bind-host: \"node.example\" is reachable beyond this machine: serve with TLS (--tls-cert and --tls-key), or give --insecure to serve without it"},
		{"localhost and ::1 are", func(c *Config) { c.BindHost, c.AdvertiseHost = "::1", "localhost" }, ""},
		{"insecure with TLS", func(c *Config) { c.Insecure, c.TLSCert, c.TLSKey = true, "c", "k" }, "--insecure: contradicts --tls-cert; give one or the other"},
		{"advertise wildcard", func(c *Config) { c.AdvertiseHost = "0.0.0.0" },
			`--advertise-host: must be an address peers can dial, got wildcard "0.0.0.0"`},
		{"advertise empty falls back to bind", func(c *Config) { c.AdvertiseHost = "" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			wantErr(t, err, tt.want)
			checkLinesNameFlags(t, err)
		})
	}
}

// checkLinesNameFlags holds Validate to its promise that every line of
// its error starts with a real flag.
func checkLinesNameFlags(t *testing.T, err error) {
	t.Helper()
	for _, line := range strings.Split(err.Error(), "\n") {
		name, _, ok := strings.Cut(line, ": ")
		if !ok || !strings.HasPrefix(name, "--") || !slices.Contains(Flags(), name[2:]) {
			t.Errorf("error line %q does not start with a known --flag", line)
		}
	}
}

func TestValidateReportsEverything(t *testing.T) {
	c := validConfig()
	c.HTTPPort = 0
	c.Shards = 0
	c.LogFormat = "xml"
	c.TLSKey = "k.pem"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a broken config")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 4 {
		t.Errorf("got %d problems, want 4:\n%v", len(lines), err)
	}
	checkLinesNameFlags(t, err)
}

func TestLoadFillsAdvertiseHost(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"from bind host", []string{"--bind-host=10.1.2.3", "--insecure"}, "10.1.2.3"},
		{"explicit wins", []string{"--bind-host=10.1.2.3", "--advertise-host=node.example", "--insecure"}, "node.example"},
		{"explicit with wildcard", []string{"--bind-host=0.0.0.0", "--advertise-host=10.1.2.3", "--insecure=true"}, "10.1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustLoad(t, tt.args, nil).AdvertiseHost; got != tt.want {
				t.Errorf("AdvertiseHost = %q, want %q", got, tt.want)
			}
		})
	}
	_, err := Load([]string{"--bind-host=0.0.0.0"}, nil)
	wantErr(t, err, "--advertise-host: required")
}

// TestOptionsCoverConfig fails when a Config field is added without an
// option (it could then be set by no source) or two options share one.
func TestOptionsCoverConfig(t *testing.T) {
	samples := map[string]string{
		"string": "x", "int": "7", "uint": "7", "duration": "7s", "list": "h", "base64": key16, "size": "7MiB", "bool": "true",
	}
	owner := make(map[string]string)
	typ := reflect.TypeFor[Config]()
	for i := range options {
		o := &options[i]
		sample, ok := samples[o.kind]
		if !ok {
			t.Fatalf("--%s: no sample for kind %q", o.name, o.kind)
		}
		var c Config
		if err := o.set(&c, sample); err != nil {
			t.Fatalf("--%s: setting %q: %v", o.name, sample, err)
		}
		changed := 0
		for f := range typ.NumField() {
			if !typ.Field(f).IsExported() {
				continue // Load's bookkeeping (explicit), not a setting
			}
			if reflect.ValueOf(c).Field(f).IsZero() {
				continue
			}
			changed++
			field := typ.Field(f).Name
			if prev, dup := owner[field]; dup {
				t.Errorf("field %s is set by both --%s and --%s", field, prev, o.name)
			}
			owner[field] = o.name
		}
		if changed != 1 {
			t.Errorf("--%s sets %d fields, want 1", o.name, changed)
		}
		if got := o.show(&c); got != sample {
			t.Errorf("--%s: show after set(%q) = %q", o.name, sample, got)
		}
	}
	for f := range typ.NumField() {
		if name := typ.Field(f).Name; owner[name] == "" && typ.Field(f).IsExported() {
			t.Errorf("field %s has no option", name)
		}
	}
}

func TestFlagsAndEnvVars(t *testing.T) {
	if got := Flags(); !slices.Equal(got, specFlags) {
		t.Errorf("Flags() = %q\nwant %q", got, specFlags)
	}
	env := EnvVars()
	if !slices.IsSorted(env) || len(env) != len(specFlags) {
		t.Errorf("EnvVars() = %q, want %d sorted names", env, len(specFlags))
	}
	for _, want := range []string{"RATION_CONFIG", "RATION_NODE_ID", "RATION_JOIN", "RATION_GOSSIP_KEY",
		"RATION_TLS_CA", "RATION_RAFT_LEADER_LEASE_TIMEOUT", "RATION_MAX_REQUEST_BYTES"} {
		if !slices.Contains(env, want) {
			t.Errorf("EnvVars() lacks %s", want)
		}
	}

	// Every advertised name must be accepted by Load: a value may be
	// refused, the name may not. This is what the manifest test relies on.
	for _, name := range Flags() {
		_, err := Load([]string{"--" + name + "=@"}, nil)
		if err != nil && strings.Contains(err.Error(), "not defined") {
			t.Errorf("Load rejects flag --%s: %v", name, err)
		}
	}
	for _, name := range env {
		_, err := Load(nil, []string{name + "=@"})
		if err != nil && strings.Contains(err.Error(), "unknown environment variable") {
			t.Errorf("Load rejects %s: %v", name, err)
		}
	}
}

func TestAddrs(t *testing.T) {
	c := validConfig()
	c.BindHost, c.AdvertiseHost = "::", "2001:db8::7"
	c.Join = []string{"seed", "seed:1", "::1", "[::2]", "[::3]:3", "10.0.0.1"}
	tests := []struct {
		name, got, want string
	}{
		{"HTTPAddr", c.HTTPAddr(), "[::]:8080"},
		{"GRPCAddr", c.GRPCAddr(), "[::]:9090"},
		{"GossipAddr", c.GossipAddr(), "[::]:7946"},
		{"RaftAddr", c.RaftAddr(), "[::]:7000"},
		{"AdvertiseHTTPAddr", c.AdvertiseHTTPAddr(), "[2001:db8::7]:8080"},
		{"AdvertiseGRPCAddr", c.AdvertiseGRPCAddr(), "[2001:db8::7]:9090"},
		{"AdvertiseGossipAddr", c.AdvertiseGossipAddr(), "[2001:db8::7]:7946"},
		{"AdvertiseRaftAddr", c.AdvertiseRaftAddr(), "[2001:db8::7]:7000"},
		{"JoinAddrs", strings.Join(c.JoinAddrs(), " "), "seed:7946 seed:1 [::1]:7946 [::2]:7946 [::3]:3 10.0.0.1:7946"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}

	// An empty AdvertiseHost means BindHost, for hand-built configs.
	d := Default()
	if got := d.AdvertiseRaftAddr(); got != "127.0.0.1:7000" {
		t.Errorf("AdvertiseRaftAddr with empty AdvertiseHost = %q, want 127.0.0.1:7000", got)
	}
}

func TestSlogLevel(t *testing.T) {
	tests := []struct {
		level string
		want  slog.Level
	}{
		{"debug", slog.LevelDebug},
		{"info", slog.LevelInfo},
		{"warn", slog.LevelWarn},
		{"error", slog.LevelError},
		{"bogus", slog.LevelInfo},
	}
	for _, tt := range tests {
		c := Config{LogLevel: tt.level}
		if got := c.SlogLevel(); got != tt.want {
			t.Errorf("SlogLevel(%q) = %v, want %v", tt.level, got, tt.want)
		}
	}
}

func TestLogValueRedactsGossipKey(t *testing.T) {
	c := mustLoad(t, []string{"--gossip-key=" + key16, "--join=a,b"}, nil)
	attrs := c.LogValue().Group()
	got := make(map[string]string, len(attrs))
	for _, a := range attrs {
		got[a.Key] = a.Value.String()
	}
	if got["gossip_key"] != "<redacted>" {
		t.Errorf("gossip_key logged as %q", got["gossip_key"])
	}
	if got["join"] != "a,b" || got["http_port"] != "8080" || got["node_id"] != "test-host" {
		t.Errorf("LogValue = %v", got)
	}
	if len(attrs) != len(specFlags) {
		t.Errorf("LogValue has %d attributes, want %d", len(attrs), len(specFlags))
	}
}

func TestSizes(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		show string
	}{
		{"0", 0, "0"}, {"1234", 1234, "1234"}, {"2GiB", 2 << 30, "2GiB"}, {"512 MiB", 512 << 20, "512MiB"},
		{"1536MiB", 1536 << 20, "1536MiB"}, {"1TiB", 1 << 40, "1TiB"}, {"10B", 10, "10"}, {"3KiB", 3072, "3KiB"},
	} {
		got, err := parseSize(tt.in)
		if err != nil || got != tt.want || formatSize(got) != tt.show {
			t.Errorf("parseSize(%q) = %d, %v (shown %q), want %d (%q)", tt.in, got, err, formatSize(got), tt.want, tt.show)
		}
	}
	for _, bad := range []string{"", "GiB", "2GB", "-1", "1.5GiB", "9999999999TiB", "two"} {
		if _, err := parseSize(bad); err == nil || !strings.Contains(err.Error(), "not a size") {
			t.Errorf("parseSize(%q): %v, want a 'not a size' error", bad, err)
		}
	}
}

// FuzzParseSize: any accepted size is a non-negative byte count that
// formats to a text parsing back to it.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "2GiB", "512 MiB", "7B", "8589934591TiB", "-1KiB", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseSize(s)
		if err != nil {
			return
		}
		back, err := parseSize(formatSize(v))
		if v < 0 || err != nil || back != v {
			t.Fatalf("parseSize(%q) = %d, formatted %q parses to %d, %v", s, v, formatSize(v), back, err)
		}
	})
}
