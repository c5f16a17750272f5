package node_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/shards"
)

// notLed sums ration_grpc_not_led_total over ms: the calls a node answered
// for a shard it did not lead (forwarded them).
func notLed(t *testing.T, ms []*member) int {
	t.Helper()
	total := 0
	for _, m := range ms {
		res, err := http.Get("http://" + m.n.HTTPAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "ration_grpc_not_led_total{") {
				continue
			}
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			total += int(v)
		}
		res.Body.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return total
}

// calls reads every user's balance and deducts 1 from each; none may
// fail. It returns the number of calls.
func calls(t *testing.T, c *client.Client, users []string, round string) int {
	t.Helper()
	ctx := context.Background()
	for _, u := range users {
		if _, err := c.Deduct(ctx, u, client.Deduction{ID: round + "-" + u, Amount: 1, Timestamp: 2}); err != nil {
			t.Fatalf("%s: deduct for %s: %v", round, u, err)
		}
		if _, err := c.Balance(ctx, u, nil); err != nil {
			t.Fatalf("%s: balance of %s: %v", round, u, err)
		}
	}
	return 2 * len(users)
}

// allDirect waits until a round of calls goes entirely straight to the
// leaders, as the nodes count it: every call failing the test.
func allDirect(t *testing.T, ms []*member, c *client.Client, users []string, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		before := notLed(t, ms)
		n := calls(t, c, users, fmt.Sprintf("%s-%d", what, i))
		forwarded := notLed(t, ms) - before
		if forwarded == 0 {
			t.Logf("%s: a round of %d calls all straight to the leaders after %d round(s) with forwards", what, n, i)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d calls still forwarded after 20 s (%+v)", what, forwarded, n, c.RouteStats())
		}
	}
}

// A routing client sends each call straight to its shard's leader; one
// that does not route has most of them forwarded. After a leadership
// transfer and after a node leaves, the routing client's calls all
// succeed, and go straight to the new leaders again once its table has
// caught up.
func TestClientRoutesToLeaders(t *testing.T) {
	ms := startCluster(t, 3)
	waitFor(t, 10*time.Second, "agreed leaders", func() (bool, string) { ls, why := leaders(ms); return ls != nil, why })
	// Three users in every shard.
	var users []string
	per := map[uint32]int{}
	for i := 0; len(users) < 3*testShards; i++ {
		u := fmt.Sprintf("route-u%d", i)
		if s := shards.ShardOf(u, testShards); per[s] < 3 {
			per[s]++
			users = append(users, u)
		}
	}
	ctx := context.Background()
	for _, u := range users {
		if _, err := ms[0].c.Grant(ctx, u, client.Grant{ID: "g", Amount: 1000, Timestamp: 1}); err != nil {
			t.Fatal(err)
		}
	}

	// Without routing, through n1 only: the calls for the shards the
	// other two lead are forwarded.
	plain, err := client.New(ctx, client.Options{Endpoints: []string{ms[0].n.GRPCAddr()}, DisableRouting: true})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	before := notLed(t, ms)
	n := calls(t, plain, users, "plain")
	ls, _ := leaders(ms)
	want := 0
	for _, u := range users {
		if ls[shards.ShardOf(u, testShards)] != ms[0] {
			want += 2
		}
	}
	if got := notLed(t, ms) - before; got < want {
		t.Errorf("without routing %d of %d calls were forwarded, want at least the %d for shards n1 does not lead", got, n, want)
	}

	// The member's client routes (the default), with only n1 as its
	// endpoint and a table it refreshes only when told it is stale.
	routed, err := client.New(ctx, client.Options{Endpoints: []string{ms[0].n.GRPCAddr()}, RoutingRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer routed.Close()
	allDirect(t, ms, routed, users, "routed")

	// A leadership transfer: the next calls for the shard go to the old
	// leader, which forwards them and says who leads now.
	transferShard0(t, ms)
	redirected := routed.RouteStats().Redirected
	allDirect(t, ms, routed, users, "transfer")
	if routed.RouteStats().Redirected == redirected {
		t.Errorf("no call was redirected after the transfer: %+v", routed.RouteStats())
	}

	// A node leaves (gracefully, handing its shards over): its calls fail
	// over, then go to the new leaders.
	ms[2].stop(t)
	rest := ms[:2]
	waitFor(t, 20*time.Second, "agreed leaders without n3", func() (bool, string) { ls, why := leaders(rest); return ls != nil, why })
	allDirect(t, rest, routed, users, "n3-left")
}
