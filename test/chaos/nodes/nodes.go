// Package nodes runs the ration-node processes of a chaos run, one per
// network namespace, and does to them what the faults ask: kill -9,
// SIGSTOP and SIGCONT, SIGTERM, restart on the same data directory. It
// also answers the questions the faults and checks ask the cluster: is a
// node ready, which node leads a shard, what does a node report.
//
// A node that exits without the harness asking is a crash: it is logged,
// kept in Crashes, and left down until the next Start.
package nodes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/test/chaos/netns"
)

// Every node has its own address, so all use the same ports.
const (
	HTTPPort   = 8080
	GRPCPort   = 9090
	GossipPort = 7946
	RaftPort   = 7000
	// ActorPort is not a flag: a node's protoactor remote listens on
	// --raft-port + 1.
	ActorPort = RaftPort + 1
)

// Config describes the cluster.
type Config struct {
	// Binary is the ration-node executable.
	Binary string
	// Dir is the run's output directory: node i keeps its data in
	// Dir/n<i+1>/data and its log in Dir/n<i+1>/node.log.
	Dir string
	// Net holds one namespace per node.
	Net *netns.Net

	Shards, Replicas  int
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs is the nodes' --raft-trailing-logs: low, so a follower
	// that was away installs the leader's snapshot instead of the log.
	TrailingLogs uint64
	// ShutdownTimeout is the nodes' --shutdown-timeout: how long a
	// SIGTERM may take. 0 leaves the node's default; Close waits a second
	// longer than it before it kills.
	ShutdownTimeout time.Duration
	// LogLevel of the nodes; "info" if empty.
	LogLevel string
	// Args are appended to every node's command line.
	Args   []string
	Logger *slog.Logger
}

// State is what the harness last did to a node's process.
type State int

const (
	Down State = iota
	Running
	Paused
)

func (s State) String() string {
	switch s {
	case Running:
		return "running"
	case Paused:
		return "paused"
	}
	return "down"
}

// Crash is a node exit that the harness did not cause.
type Crash struct {
	Node string
	At   time.Time
	Err  string
}

// Errors.
var (
	ErrNotRunning  = errors.New("nodes: node not running")
	ErrNoLeader    = errors.New("nodes: no leader known")
	ErrNoClockHook = errors.New("nodes: node has no chaos clock (binary built without -tags chaos)")
)

// Cluster is the set of node processes.
type Cluster struct {
	cfg   Config
	log   *slog.Logger
	nodes []*node
	admin []*client.Client // one per node, for questions to that node only
	http  *http.Client

	mu      sync.Mutex
	crashes []Crash
}

type node struct {
	id      string
	ip      string
	dataDir string
	logPath string

	mu       sync.Mutex
	state    State
	proc     *os.Process
	exited   chan struct{} // closed when the current process has exited
	expected bool          // the harness asked the current process to exit
	starts   int
}

// New prepares the cluster (fresh data directories) without starting it.
func New(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Net == nil || len(cfg.Net.Nodes) == 0 {
		return nil, errors.New("nodes: no network")
	}
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("nodes: binary: %w", err)
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{cfg: cfg, log: cfg.Logger, http: &http.Client{Timeout: 2 * time.Second}}
	for i, nd := range cfg.Net.Nodes {
		id := "n" + strconv.Itoa(i+1)
		dir := filepath.Join(cfg.Dir, id)
		// A run starts from nothing: a data directory left by an earlier
		// run would be another cluster's state.
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("nodes: %w", err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			return nil, fmt.Errorf("nodes: %w", err)
		}
		c.nodes = append(c.nodes, &node{
			id: id, ip: nd.IP, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "node.log"),
		})
		cl, err := client.New(ctx, client.Options{
			Endpoints:   []string{c.GRPCAddr(i)},
			Timeout:     2 * time.Second,
			RetryBudget: -1,
		})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("nodes: %w", err)
		}
		c.admin = append(c.admin, cl)
	}
	return c, nil
}

// Size is the number of nodes.
func (c *Cluster) Size() int { return len(c.nodes) }

// ID is node i's id, n<i+1>.
func (c *Cluster) ID(i int) string { return c.nodes[i].id }

// Index is the index of the node with id, or -1.
func (c *Cluster) Index(id string) int {
	for i, n := range c.nodes {
		if n.id == id {
			return i
		}
	}
	return -1
}

// GRPCAddr and HTTPBase are where node i serves.
func (c *Cluster) GRPCAddr(i int) string {
	return c.nodes[i].ip + ":" + strconv.Itoa(GRPCPort)
}

func (c *Cluster) HTTPBase(i int) string {
	return "http://" + c.nodes[i].ip + ":" + strconv.Itoa(HTTPPort)
}

// Endpoints are every node's gRPC address.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for i := range c.nodes {
		eps = append(eps, c.GRPCAddr(i))
	}
	return eps
}

// LogPath is node i's log file; DataDir its --data-dir.
func (c *Cluster) LogPath(i int) string { return c.nodes[i].logPath }

func (c *Cluster) DataDir(i int) string { return c.nodes[i].dataDir }

// State is node i's process state.
func (c *Cluster) State(i int) State {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

// Crashes are the exits the harness did not cause, so far.
func (c *Cluster) Crashes() []Crash {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Crash(nil), c.crashes...)
}

func (c *Cluster) args(i int) []string {
	var join []string
	for _, n := range c.nodes {
		join = append(join, n.ip+":"+strconv.Itoa(GossipPort))
	}
	n := c.nodes[i]
	args := []string{
		"--node-id", n.id, "--data-dir", n.dataDir,
		"--bind-host", n.ip, "--advertise-host", n.ip,
		// The harness's own network namespaces; TLS is not what it tests.
		"--insecure",
		"--http-port", strconv.Itoa(HTTPPort), "--grpc-port", strconv.Itoa(GRPCPort),
		"--gossip-port", strconv.Itoa(GossipPort), "--raft-port", strconv.Itoa(RaftPort),
		"--join", strings.Join(join, ","), "--bootstrap-expect", strconv.Itoa(len(c.nodes)),
		"--log-level", c.cfg.LogLevel,
	}
	if c.cfg.Shards > 0 {
		args = append(args, "--shards", strconv.Itoa(c.cfg.Shards))
	}
	if c.cfg.Replicas > 0 {
		args = append(args, "--replicas", strconv.Itoa(c.cfg.Replicas))
	}
	if c.cfg.SnapshotThreshold > 0 {
		args = append(args, "--snapshot-threshold", strconv.FormatUint(c.cfg.SnapshotThreshold, 10))
	}
	if c.cfg.TrailingLogs > 0 {
		args = append(args, "--raft-trailing-logs", strconv.FormatUint(c.cfg.TrailingLogs, 10))
	}
	if c.cfg.ShutdownTimeout > 0 {
		args = append(args, "--shutdown-timeout", c.cfg.ShutdownTimeout.String())
	}
	if c.cfg.SnapshotInterval > 0 {
		args = append(args, "--snapshot-interval", c.cfg.SnapshotInterval.String())
	}
	return append(args, c.cfg.Args...)
}

// Start launches node i's process on its data directory, without waiting
// for it to be ready. Starting a running node is a no-op.
func (c *Cluster) Start(i int) error {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != Down {
		return nil
	}
	cmd, err := c.cfg.Net.Command(i, c.cfg.Binary, c.args(i)...)
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(n.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("nodes: %w", err)
	}
	n.starts++
	fmt.Fprintf(logf, "=== chaos harness: start #%d of %s at %s ===\n", n.starts, n.id, time.Now().Format(time.RFC3339Nano))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	// Own process group: a ^C at the terminal reaches the harness only,
	// which then stops the nodes itself. Pdeathsig takes them down if the
	// harness is killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("nodes: start %s: %w", n.id, err)
	}
	exited := make(chan struct{})
	n.proc, n.exited, n.expected, n.state = cmd.Process, exited, false, Running
	c.log.Info("node started", "node", n.id, "pid", cmd.Process.Pid, "start", n.starts)
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		expected := n.expected
		if n.exited == exited {
			n.state, n.proc = Down, nil
		}
		n.mu.Unlock()
		close(exited)
		if !expected {
			c.mu.Lock()
			c.crashes = append(c.crashes, Crash{Node: n.id, At: time.Now(), Err: fmt.Sprint(err)})
			c.mu.Unlock()
			c.log.Warn("node exited on its own", "node", n.id, "err", err)
		}
	}()
	return nil
}

// StartAll starts every node that is down.
func (c *Cluster) StartAll() error {
	var errs []error
	for i := range c.nodes {
		errs = append(errs, c.Start(i))
	}
	return errors.Join(errs...)
}

// signal sends sig to node i's process. SIGKILL and SIGTERM mark the
// exit they cause as expected; the node is Down only once the process is
// gone, so that no restart races the old process for its data directory.
// It returns the channel closed at the exit.
func (c *Cluster) signal(i int, sig syscall.Signal) (<-chan struct{}, error) {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state == Down {
		return nil, fmt.Errorf("%w: %s", ErrNotRunning, n.id)
	}
	if err := n.proc.Signal(sig); err != nil {
		return nil, fmt.Errorf("nodes: %s %s: %w", sig, n.id, err)
	}
	switch sig {
	case syscall.SIGKILL, syscall.SIGTERM:
		n.expected = true
	case syscall.SIGSTOP:
		n.state = Paused
	case syscall.SIGCONT:
		n.state = Running
	}
	return n.exited, nil
}

// Kill sends SIGKILL to node i and waits for it to be gone.
func (c *Cluster) Kill(i int) error {
	exited, err := c.signal(i, syscall.SIGKILL)
	if err != nil {
		return err
	}
	<-exited
	c.log.Info("node killed", "node", c.nodes[i].id)
	return nil
}

// Pause freezes node i with SIGSTOP; Resume thaws it with SIGCONT.
func (c *Cluster) Pause(i int) error {
	if c.State(i) != Running {
		return fmt.Errorf("%w: %s", ErrNotRunning, c.nodes[i].id)
	}
	_, err := c.signal(i, syscall.SIGSTOP)
	return err
}

func (c *Cluster) Resume(i int) error {
	if c.State(i) != Paused {
		return nil
	}
	_, err := c.signal(i, syscall.SIGCONT)
	return err
}

// Stop asks node i to shut down with SIGTERM and waits up to timeout,
// then kills it. The error says whether it had to.
func (c *Cluster) Stop(i int, timeout time.Duration) error {
	paused := c.State(i) == Paused
	exited, err := c.signal(i, syscall.SIGTERM)
	if err != nil {
		return err
	}
	if paused {
		// A stopped process does not act on SIGTERM until continued.
		_, _ = c.signal(i, syscall.SIGCONT)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(timeout):
		_ = c.Kill(i)
		return fmt.Errorf("nodes: %s did not exit within %v of SIGTERM", c.nodes[i].id, timeout)
	}
}

// Close stops every node (SIGTERM, then SIGKILL after a short grace: the
// run is over and teardown should be quick) and releases the clients.
func (c *Cluster) Close() error {
	grace := 3 * time.Second
	if c.cfg.ShutdownTimeout > 0 {
		grace = c.cfg.ShutdownTimeout + time.Second
	}
	var wg sync.WaitGroup
	for i := range c.nodes {
		if c.State(i) != Down {
			wg.Go(func() { _ = c.Stop(i, grace) })
		}
	}
	wg.Wait()
	var errs []error
	for _, cl := range c.admin {
		errs = append(errs, cl.Close())
	}
	return errors.Join(errs...)
}

// Ready reports whether node i answers /readyz with 200.
func (c *Cluster) Ready(ctx context.Context, i int) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.HTTPBase(i)+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitReady waits until node i is ready. It fails early if the node is
// not running (or stops running while waited for).
func (c *Cluster) WaitReady(ctx context.Context, i int) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if st := c.State(i); st == Down {
			return fmt.Errorf("%w: %s", ErrNotRunning, c.nodes[i].id)
		}
		if c.Ready(ctx, i) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes: %s not ready: %w", c.nodes[i].id, ctx.Err())
		case <-tick.C:
		}
	}
}

// WaitAllReady waits until every node is ready.
func (c *Cluster) WaitAllReady(ctx context.Context) error {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Go(func() { errs[i] = c.WaitReady(ctx, i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Status asks node i alone how it sees the cluster.
func (c *Cluster) Status(ctx context.Context, i int, opts ...client.StatusOption) (client.ClusterStatus, error) {
	if c.State(i) != Running {
		return client.ClusterStatus{}, fmt.Errorf("%w: %s", ErrNotRunning, c.nodes[i].id)
	}
	return c.admin[i].Status(ctx, opts...)
}

// Statuses asks every running node at once; failures are left out.
func (c *Cluster) Statuses(ctx context.Context, opts ...client.StatusOption) map[int]client.ClusterStatus {
	var mu sync.Mutex
	out := map[int]client.ClusterStatus{}
	var wg sync.WaitGroup
	for i := range c.nodes {
		if c.State(i) != Running {
			continue
		}
		wg.Go(func() {
			st, err := c.Status(ctx, i, opts...)
			if err != nil {
				return
			}
			mu.Lock()
			out[i] = st
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// Leader is the index of the node that leads shard; see Shard.
func (c *Cluster) Leader(ctx context.Context, shard uint32) (int, error) {
	leader, _, err := c.Shard(ctx, shard)
	return leader, err
}

// Shard is who leads shard and which nodes hold a replica of it, by the
// word of the running nodes: the leader most of them name (a leader cut
// off from the others may still believe in itself; the majority's view
// wins), and the replicas that leader's own status lists, or else those
// of any node.
func (c *Cluster) Shard(ctx context.Context, shard uint32) (leader int, replicas []int, err error) {
	sts := c.Statuses(ctx)
	votes := map[string]int{}
	for _, st := range sts {
		for _, s := range st.Shards {
			if s.ID == shard && s.Leader != "" {
				votes[s.Leader]++
			}
		}
	}
	best, most := "", 0
	for id, v := range votes {
		if v > most || v == most && id < best {
			best, most = id, v
		}
	}
	leader = c.Index(best)
	var from []string
	for i, st := range sts {
		for _, s := range st.Shards {
			if s.ID == shard && (from == nil || i == leader) {
				from = s.Replicas
			}
		}
	}
	for _, id := range from {
		if i := c.Index(id); i >= 0 {
			replicas = append(replicas, i)
		}
	}
	slices.Sort(replicas)
	if leader < 0 {
		return -1, replicas, fmt.Errorf("%w: shard %d", ErrNoLeader, shard)
	}
	return leader, replicas, nil
}

// SetClock shifts node i's clock by offset (0 puts it back), through the
// debug endpoint of a binary built with -tags chaos; ErrNoClockHook if
// the binary has none.
func (c *Cluster) SetClock(ctx context.Context, i int, offset time.Duration) error {
	u := c.HTTPBase(i) + "/debug/chaos/clock?offset=" + url.QueryEscape(offset.String())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return fmt.Errorf("nodes: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("nodes: clock of %s: %w", c.nodes[i].id, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed:
		return ErrNoClockHook
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("nodes: clock of %s: %s: %s", c.nodes[i].id, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
