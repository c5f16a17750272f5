package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ration/ration/internal/contract"
)

// Every scenario of the shared vectors through the HTTP API of a real
// node process. Then the node restarts, and every user's history and
// balances must read back exactly as before: the state is rebuilt from
// raft.
func TestVectorsThroughNodeProcess(t *testing.T) {
	v, err := contract.Load()
	if err != nil {
		t.Fatal(err)
	}
	p := newProc(t)
	p.start()
	if err := contract.Replay(httpc, []string{p.base()}, v, "run1-", 4); err != nil {
		t.Fatalf("%v\n%s", err, p.log())
	}
	before := snapshotState(t, p.base(), v, "run1-")
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, p.log())
	}
	p.start()
	after := snapshotState(t, p.base(), v, "run1-")
	for k, b := range before {
		if after[k] != b {
			t.Fatalf("after restart %s:\n got %s\nwant %s", k, after[k], b)
		}
	}
}

// snapshotState reads every scenario user's full history and balance at
// every timestamp the scenario checks, as raw response bodies.
func snapshotState(t *testing.T, base string, v contract.Vectors, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	get := func(url string) string {
		resp, err := httpc.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", url, resp.StatusCode, b)
		}
		return string(b)
	}
	for _, sc := range v.Scenarios {
		user := prefix + sc.User
		out[user+" events"] = get(base + "/v1/users/" + user + "/events?limit=1000")
		for _, st := range sc.Steps {
			if st.Op == "balance" {
				key := fmt.Sprintf("%s balance@%d", user, st.At)
				out[key] = get(fmt.Sprintf("%s/v1/users/%s/balance?at=%d", base, user, st.At))
			}
		}
	}
	return out
}

// ack is an acknowledged write, to be checked after a crash.
type ack struct {
	url, body string
}

// writeLoad runs writers until ctx ends and returns the acknowledged writes.
func writeLoad(ctx context.Context, base string, writers int, tag string) []ack {
	acks, _ := writeLoadCounting(ctx, base, writers, tag)
	return acks
}

// writeLoadCounting is writeLoad that also counts the requests that got no
// answer (a transport error or a status other than 200 and 422) while the
// load ran; requests cut short by the end of ctx are not counted.
func writeLoadCounting(ctx context.Context, base string, writers int, tag string) ([]ack, int) {
	var failed atomic.Int64
	var mu sync.Mutex
	var acks []ack
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for i := 0; ctx.Err() == nil; i++ {
				user := fmt.Sprintf("%s-u%d", tag, r.IntN(20))
				var url, body string
				if i%3 == 0 {
					url = base + "/v1/users/" + user + "/grants"
					body = fmt.Sprintf(`{"id":"%s-g-%d-%d","amount":10,"timestamp":%d}`, tag, w, i, i)
				} else {
					url = base + "/v1/users/" + user + "/deductions"
					body = fmt.Sprintf(`{"id":"%s-d-%d-%d","amount":1,"timestamp":%d}`, tag, w, i, i+1000000)
				}
				status, _, err := post(ctx, url, body)
				switch {
				case err == nil && status == 200:
					mu.Lock()
					acks = append(acks, ack{url, body})
					mu.Unlock()
				case err == nil && status == 422:
					// An answer: credits ran out for this user.
				case ctx.Err() == nil:
					failed.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	return acks, int(failed.Load())
}

// checkAcks resends every acknowledged write: each must be a duplicate,
// that is, still in the log.
func checkAcks(t *testing.T, base string, acks []ack, oldBase string) {
	t.Helper()
	lost := 0
	for _, a := range acks {
		url := strings.Replace(a.url, oldBase, base, 1)
		status, body, err := post(context.Background(), url, a.body)
		if err != nil || status != 200 || !strings.Contains(body, `"duplicate":true`) {
			lost++
			if lost < 5 {
				t.Errorf("acknowledged write lost: %s %s -> %d %s %v", a.url, a.body, status, body, err)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged writes lost", lost, len(acks))
	}
}

// kill -9 at random moments under write load loses no acknowledged write.
func TestKill9LosesNoAcknowledgedWrite(t *testing.T) {
	p := newProc(t)
	p.start()
	var all []ack
	for round := 0; round < 3; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan []ack)
		go func() { done <- writeLoad(ctx, p.base(), 16, fmt.Sprintf("k%d", round)) }()
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
		p.kill9()
		cancel()
		acks := <-done
		if len(acks) == 0 {
			t.Fatalf("round %d: no write was acknowledged\n%s", round, p.log())
		}
		all = append(all, acks...)
		p.start()
		checkAcks(t, p.base(), all, p.base())
	}
	t.Logf("%d acknowledged writes survived 3 kill -9s", len(all))
}

// SIGTERM under load: the node stops taking requests, finishes the ones in
// flight, exits cleanly, and comes back with every acknowledged write.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	p := newProc(t)
	p.start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []ack)
	go func() { done <- writeLoad(ctx, p.base(), 8, "term") }()
	time.Sleep(500 * time.Millisecond)
	var refused atomic.Int64
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.log())
	}
	cancel()
	acks := <-done
	_ = refused.Load()
	p.start()
	checkAcks(t, p.base(), acks, p.base())
	resp, err := http.Get(p.base() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz after restart: %v", err)
	}
	resp.Body.Close()
}
