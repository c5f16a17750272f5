package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/shards"
)

// A write attempt its client gave up on must not start later. Here the
// router's forward to the shard's leader is held up in the network while
// the client, asking the leader directly, is told that the deduction does
// not fit, and more credits are granted. When the network heals and the
// held forward arrives, it must not take them.
func TestDelayedForwardNeverLandsAfterRefusal(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and iptables to hold packets up")
	}
	procs := newCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	user, leader := "", (*proc)(nil)
	lead := leadership(ctx, t, procs)
	for i := 0; user == ""; i++ {
		u := fmt.Sprintf("stale-u%d", i)
		shard := shards.ShardOf(u, 8)
		for _, p := range procs {
			if slices.Contains(lead[p.id], shard) {
				user, leader = u, p
			}
		}
	}
	router := procs[0]
	if router == leader {
		router = procs[1]
	}
	cLeader := newTestClient(ctx, t, leader, 5*time.Second)
	cRouter := newTestClient(ctx, t, router, time.Second)
	if _, err := cLeader.Grant(ctx, user, client.Grant{ID: "g1", Amount: 100, Timestamp: 1}); err != nil {
		t.Fatal(err)
	}
	// The router learns where the user's actor is, so that it sends the
	// request itself rather than first asking where to.
	if _, err := cRouter.Balance(ctx, user, nil); err != nil {
		t.Fatal(err)
	}

	// Drop what goes to the leader's actor port: forwards from the other
	// nodes. Raft has its own port, so the leader keeps leading.
	rule := []string{"OUTPUT", "-o", "lo", "-p", "tcp", "--dport", strconv.Itoa(leader.ports[3] + 1), "-j", "DROP"}
	iptables := func(op string) error {
		out, err := exec.Command("iptables", append([]string{op}, rule...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables %s: %v: %s", op, err, out)
		}
		return nil
	}
	if err := iptables("-I"); err != nil {
		t.Skip(err)
	}
	healed := false
	heal := func() {
		if !healed {
			healed = true
			if err := iptables("-D"); err != nil {
				t.Error(err)
			}
		}
	}
	defer heal()

	d := client.Deduction{ID: "d1", Amount: 150, Timestamp: 2}
	if _, err := cRouter.Deduct(ctx, user, d); err == nil {
		t.Fatal("deduct through a router cut off from the leader succeeded")
	}
	var ice *client.InsufficientCreditsError
	if _, err := cLeader.Deduct(ctx, user, d); !errors.As(err, &ice) {
		t.Fatalf("deduct at the leader after the abandoned attempt: %v, want insufficient credits", err)
	}
	if _, err := cLeader.Grant(ctx, user, client.Grant{ID: "g2", Amount: 100, Timestamp: 1}); err != nil {
		t.Fatal(err)
	}
	heal()

	// TCP retransmits what was dropped within a few seconds of the heal.
	time.Sleep(8 * time.Second)
	page, err := cLeader.Events(ctx, user, client.EventsQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range page.Events {
		if e.Kind == client.EventDeduction && e.ID == d.ID {
			t.Fatalf("deduction %s was refused, yet a forward abandoned before the refusal applied it later: %+v", d.ID, page.Events)
		}
	}
	// And the held forward did arrive, to be turned away: otherwise this
	// test showed nothing.
	if n := metricValue(t, leader, "ration_forward_expired_total"); n < 1 {
		t.Fatalf("the leader turned away %v expired forwards, want at least the held one", n)
	}
}

// metricValue reads an unlabelled sample from the node's /metrics.
func metricValue(t *testing.T, p *proc, name string) float64 {
	t.Helper()
	resp, err := httpc.Get(p.base() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// newTestClient is a client of one node that does not retry, and does not
// route: every call goes to that node.
func newTestClient(ctx context.Context, t *testing.T, p *proc, timeout time.Duration) *client.Client {
	t.Helper()
	c, err := client.New(ctx, client.Options{Endpoints: []string{p.grpcAddr()}, Timeout: timeout, RetryBudget: -1, DisableRouting: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
