package netns

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests use their own prefix, so that they never touch a real run.
const testPrefix = "rcht"

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range []string{"ip", "iptables", "iptables-restore", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// within runs fn on an OS thread moved into namespace ns. The thread is
// never handed back to the scheduler: it dies with its goroutine, so no
// other goroutine ever runs in the wrong namespace. Sockets made by fn stay
// in ns whichever thread uses them later.
func within(t *testing.T, ns string, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// serve listens on addr inside ns and answers "ok" to every connection.
func serve(t *testing.T, ns, addr string) {
	t.Helper()
	var ln net.Listener
	err := within(t, ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
}

// reach reports whether a connection from namespace ns ("" for the root
// namespace) to addr gets the server's answer.
func reach(t *testing.T, ns, addr string) bool {
	t.Helper()
	try := func() error {
		c, err := net.DialTimeout("tcp", addr, 700*time.Millisecond)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(700 * time.Millisecond))
		b, err := io.ReadAll(c)
		if err == nil && string(b) != "ok" {
			t.Fatalf("%s answered %q", addr, b)
		}
		return err
	}
	if ns == "" {
		return try() == nil
	}
	return within(t, ns, try) == nil
}

func newNet(t *testing.T, nodes int) *Net {
	t.Helper()
	ctx := context.Background()
	if _, err := CleanupStale(ctx, testPrefix, nil); err != nil {
		t.Fatal(err)
	}
	n, err := Create(ctx, Config{Prefix: testPrefix, Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return n
}

func TestPartitionCutsPortsAndHeals(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	n := newNet(t, 3)
	a, b, c := n.Nodes[0], n.Nodes[1], n.Nodes[2]
	raft, gossip := a.IP+":7000", a.IP+":7946"
	serve(t, a.NS, raft)
	serve(t, a.NS, gossip)

	check := func(step string, want map[string]bool) {
		t.Helper()
		for key, ok := range want {
			ns, addr, _ := strings.Cut(key, "->")
			if got := reach(t, ns, addr); got != ok {
				t.Errorf("%s: %s reaches %s = %v, want %v", step, ns, addr, got, ok)
			}
		}
	}
	check("fresh", map[string]bool{
		b.NS + "->" + raft: true, b.NS + "->" + gossip: true, c.NS + "->" + raft: true,
		"->" + raft: true,
	})

	// Only the raft port between a and b.
	if err := n.Cut(ctx, 0, 1, TCP(7000)); err != nil {
		t.Fatal(err)
	}
	check("raft cut a-b", map[string]bool{
		b.NS + "->" + raft: false, b.NS + "->" + gossip: true, c.NS + "->" + raft: true,
		"->" + raft: true, // the harness is never cut
	})

	if err := n.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	check("healed", map[string]bool{b.NS + "->" + raft: true, b.NS + "->" + gossip: true})

	// a isolated from everyone, all ports.
	if err := n.Partition(ctx, func(x, y int) bool { return x != 0 && y != 0 }); err != nil {
		t.Fatal(err)
	}
	check("a isolated", map[string]bool{
		b.NS + "->" + raft: false, b.NS + "->" + gossip: false, c.NS + "->" + gossip: false,
		"->" + gossip: true,
	})
	if err := n.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	check("healed again", map[string]bool{c.NS + "->" + gossip: true})
}

func TestDelayAndLossInstallAndHeal(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	n := newNet(t, 2)
	serve(t, n.Nodes[0].NS, n.Nodes[0].IP+":7000")
	how, err := n.Delay(ctx, 0, Slowdown{Latency: 200 * time.Millisecond, Rate: "128kbit"})
	if err != nil {
		t.Fatal(err)
	}
	if how != Netem && how != TBF {
		t.Fatalf("delay via %q", how)
	}
	qd, _ := inNS(ctx, n.Nodes[0].NS, "", "tc", "qdisc", "show", "dev", "eth0")
	if !strings.Contains(qd, string(how)) {
		t.Fatalf("no %s qdisc after Delay:\n%s", how, qd)
	}
	// Slower, but still through.
	if !reach(t, n.Nodes[1].NS, n.Nodes[0].IP+":7000") {
		t.Error("delayed node unreachable")
	}
	how, err = n.Loss(ctx, 1, 0.3)
	if err != nil {
		t.Fatal(err)
	}
	if how == IptablesStatistic {
		rules, _ := inNS(ctx, n.Nodes[1].NS, "", "iptables", "-S", chainIn)
		if !strings.Contains(rules, "statistic") {
			t.Fatalf("no statistic rule after Loss:\n%s", rules)
		}
	}
	if _, err := n.Loss(ctx, 1, 1.5); err == nil {
		t.Error("loss 1.5 accepted")
	}
	if _, err := n.Delay(ctx, 7, Slowdown{Latency: time.Second}); err == nil {
		t.Error("delay of node 7 of 2 accepted")
	}
	if err := n.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	qd, _ = inNS(ctx, n.Nodes[0].NS, "", "tc", "qdisc", "show", "dev", "eth0")
	if strings.Contains(qd, "tbf") || strings.Contains(qd, "netem") {
		t.Fatalf("qdisc left after Heal:\n%s", qd)
	}
	rules, _ := inNS(ctx, n.Nodes[1].NS, "", "iptables", "-S", chainIn)
	if strings.Contains(rules, "DROP") {
		t.Fatalf("rules left after Heal:\n%s", rules)
	}
}

// A run whose owner died (and was reaped, or is a zombie not reaped yet)
// is removed by CleanupStale, its processes included; a live owner's run
// is not.
func TestCleanupStale(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	live := newNet(t, 1)

	// Owners: a process that exited and was reaped, and a zombie.
	reaped := exec.Command("true")
	if err := reaped.Run(); err != nil {
		t.Fatal(err)
	}
	zombie := exec.Command("sleep", "60")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	zombie.Process.Signal(syscall.SIGKILL)
	t.Cleanup(func() { zombie.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(zombie.Process.Pid) + "/stat")
		if _, rest, _ := strings.Cut(string(b), ") "); strings.HasPrefix(rest, "Z") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no zombie")
		}
		time.Sleep(10 * time.Millisecond)
	}

	var dead []*Net
	var exited []chan struct{}
	for _, owner := range []int{reaped.Process.Pid, zombie.Process.Pid} {
		n, err := Create(ctx, Config{Prefix: testPrefix, Nodes: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close(context.Background()) })
		if n.ID == live.ID {
			t.Fatalf("two runs share number %d", n.ID)
		}
		// A leftover process in the dead run's namespace.
		cmd, err := n.Command(0, "sleep", "60")
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		if err := os.WriteFile(n.pidFile, []byte(strconv.Itoa(owner)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		dead, exited = append(dead, n), append(exited, done)
	}

	cleaned, err := CleanupStale(ctx, testPrefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(cleaned, live.ID) {
		t.Fatalf("cleaned %v, including the live run %d", cleaned, live.ID)
	}
	if !linkExists(live.Bridge) {
		t.Errorf("live run's bridge %s removed", live.Bridge)
	}
	nss, _ := namespaces(ctx)
	rules, _ := forwardRules(ctx)
	for i, n := range dead {
		if !slices.Contains(cleaned, n.ID) {
			t.Errorf("dead run %d not cleaned (cleaned %v)", n.ID, cleaned)
		}
		select {
		case <-exited[i]:
		case <-time.After(5 * time.Second):
			t.Errorf("leftover process of run %d still running", n.ID)
		}
		for _, ns := range nss {
			if strings.HasPrefix(ns, n.Tag()+"-") {
				t.Errorf("namespace %s left", ns)
			}
		}
		if linkExists(n.Bridge) {
			t.Errorf("bridge %s left", n.Bridge)
		}
		for _, r := range rules {
			if strings.Contains(r, n.Bridge) {
				t.Errorf("FORWARD rule left: %s", r)
			}
		}
	}
}

// Runs with different prefixes, created at the same time, never share a
// subnet: their traffic would go to each other's nodes.
func TestRunsNeverShareASubnet(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	const other = "rchu"
	if _, err := CleanupStale(ctx, other, nil); err != nil {
		t.Fatal(err)
	}
	nets := make([]*Net, 6)
	errs := make([]error, len(nets))
	var wg sync.WaitGroup
	for i := range nets {
		prefix := testPrefix
		if i%2 == 1 {
			prefix = other
		}
		wg.Go(func() { nets[i], errs[i] = Create(ctx, Config{Prefix: prefix, Nodes: 1}) })
	}
	wg.Wait()
	for _, n := range nets {
		if n != nil {
			t.Cleanup(func() { _ = n.Close(context.Background()) })
		}
	}
	seen := map[int]bool{}
	for i, n := range nets {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if seen[n.ID] {
			t.Fatalf("subnet %s given twice", n.Subnet())
		}
		seen[n.ID] = true
	}
}

func TestCreateRefusesBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []Config{
		{Prefix: "toolong", Nodes: 3},
		{Prefix: "ab-c", Nodes: 3},
		{Nodes: 0},
		{Nodes: MaxNodes + 1},
	} {
		if n, err := Create(ctx, cfg); err == nil {
			n.Close(ctx)
			t.Errorf("Create(%+v) succeeded", cfg)
		}
	}
}
