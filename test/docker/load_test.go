package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ration/ration/client"
)

// retryBudget is how long a client keeps re-sending one write (same id)
// before it gives up: the Go client's default, and what the HTTP workers
// here allow themselves.
const retryBudget = client.DefaultRetryBudget

// ack is a write the cluster acknowledged, as the HTTP request that
// re-sends it.
type ack struct {
	path, body string
	via        string // "http" or "grpc"
}

// load drives writes at the cluster over HTTP (each request to a node in
// turn, retrying 503s and transport errors with the same id on the next
// node) and over gRPC through the Go client, and keeps every
// acknowledgement and every request that failed beyond the retry budget,
// by phase.
type load struct {
	c      *cluster
	cancel context.CancelFunc
	wg     sync.WaitGroup

	phase atomic.Pointer[string]
	grpc  atomic.Pointer[client.Client]

	mu       sync.Mutex
	acks     []ack
	perPhase map[string]*phaseStats
	phases   []string
	clients  []*client.Client
}

type phaseStats struct {
	acks, answered, retried int
	// slowest is the longest a request took, retries included: what a
	// client waited at worst.
	slowest  time.Duration
	failures []string
}

var httpc = &http.Client{Timeout: 5 * time.Second}

func startLoad(c *cluster, httpWorkers, grpcWorkers int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{c: c, cancel: cancel, perPhase: map[string]*phaseStats{}}
	l.setPhase("steady")
	l.swapGRPC()
	for w := range httpWorkers {
		l.wg.Go(func() { l.httpWorker(ctx, w) })
	}
	for w := range grpcWorkers {
		l.wg.Go(func() { l.grpcWorker(ctx, httpWorkers+w) })
	}
	return l
}

// setPhase attributes what happens from now on to name.
func (l *load) setPhase(name string) {
	l.mu.Lock()
	if _, ok := l.perPhase[name]; !ok {
		l.perPhase[name] = &phaseStats{}
		l.phases = append(l.phases, name)
	}
	l.mu.Unlock()
	l.phase.Store(&name)
}

// swapGRPC points the gRPC workers at the nodes' current addresses (a
// rescheduled node has a new one). The old client is closed only at the
// end, so calls in flight on it finish normally.
func (l *load) swapGRPC() {
	var endpoints []string
	for _, n := range l.c.nodes {
		endpoints = append(endpoints, n.addr(n.cfg.GRPCPort))
	}
	cl, err := client.New(context.Background(), client.Options{Endpoints: endpoints})
	if err != nil {
		l.c.t.Fatal(err)
	}
	l.mu.Lock()
	l.clients = append(l.clients, cl)
	l.mu.Unlock()
	l.grpc.Store(cl)
}

func (l *load) record(f func(s *phaseStats)) {
	l.mu.Lock()
	f(l.perPhase[*l.phase.Load()])
	l.mu.Unlock()
}

func (l *load) httpWorker(ctx context.Context, w int) {
	r := rand.New(rand.NewPCG(uint64(w), 42))
	for i := 0; ctx.Err() == nil; i++ {
		user := fmt.Sprintf("u%d", r.IntN(40))
		var path, body string
		if i%3 == 0 {
			path = "/v1/users/" + user + "/grants"
			body = fmt.Sprintf(`{"id":"h%d-g%d","amount":10,"timestamp":%d}`, w, i, i)
		} else {
			path = "/v1/users/" + user + "/deductions"
			body = fmt.Sprintf(`{"id":"h%d-d%d","amount":1,"timestamp":%d}`, w, i, 1_000_000+i)
		}
		began := time.Now()
		status, reply, retries, err := l.send(ctx, w+i, path, body)
		took := time.Since(began)
		if ctx.Err() != nil {
			return
		}
		l.record(func(s *phaseStats) {
			s.slowest = max(s.slowest, took)
			if retries > 0 {
				s.retried++
			}
			switch {
			case err != nil:
				s.failures = append(s.failures, fmt.Sprintf("%s %s: %v", path, body, err))
			case status == http.StatusOK:
				s.acks++
				l.acks = append(l.acks, ack{path: path, body: body, via: "http"})
			case status == http.StatusUnprocessableEntity:
				s.answered++ // the user ran out of credits: an answer
			default:
				s.failures = append(s.failures, fmt.Sprintf("%s %s: %d %s", path, body, status, reply))
			}
		})
	}
}

// send posts body to path, starting at node start%n and moving to the next
// node after a 503 or a transport error, with the client's backoff, until
// an answer or the retry budget is spent.
func (l *load) send(ctx context.Context, start int, path, body string) (status int, reply string, retries int, err error) {
	began := time.Now()
	var backoff client.Backoff
	for attempt := 0; ; attempt++ {
		n := l.c.nodes[(start+attempt)%len(l.c.nodes)]
		status, reply, err = post(ctx, "http://"+n.addr(n.cfg.HTTPPort)+path, body)
		if err == nil && status != http.StatusServiceUnavailable {
			return status, reply, attempt, nil
		}
		if ctx.Err() != nil {
			return 0, "", attempt, ctx.Err()
		}
		if time.Since(began) > retryBudget {
			if err == nil {
				err = fmt.Errorf("still %d after %d attempts in %v: %s", status, attempt+1, time.Since(began).Round(time.Millisecond), reply)
			} else {
				err = fmt.Errorf("after %d attempts in %v: %w", attempt+1, time.Since(began).Round(time.Millisecond), err)
			}
			return 0, "", attempt, err
		}
		select {
		case <-time.After(backoff.Delay(attempt + 1)):
		case <-ctx.Done():
			return 0, "", attempt, ctx.Err()
		}
	}
}

func (l *load) grpcWorker(ctx context.Context, w int) {
	for i := 0; ctx.Err() == nil; i++ {
		user := fmt.Sprintf("u%d", (w*7+i)%40)
		g := client.Grant{ID: fmt.Sprintf("r%d-g%d", w, i), Amount: 5, Timestamp: int64(i)}
		began := time.Now()
		_, err := l.grpc.Load().Grant(ctx, user, g)
		took := time.Since(began)
		if ctx.Err() != nil {
			return
		}
		l.record(func(s *phaseStats) {
			s.slowest = max(s.slowest, took)
			if err != nil {
				s.failures = append(s.failures, fmt.Sprintf("grpc grant %s/%s: %v", user, g.ID, err))
				return
			}
			s.acks++
			body, _ := json.Marshal(map[string]any{"id": g.ID, "amount": g.Amount, "timestamp": g.Timestamp})
			l.acks = append(l.acks, ack{path: "/v1/users/" + user + "/grants", body: string(body), via: "grpc"})
		})
	}
}

// stop ends the load and returns the acknowledged writes.
func (l *load) stop() []ack {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.clients {
		_ = c.Close()
	}
	return l.acks
}

// report logs each phase and fails the test for failures in the phases
// that must have none.
func (l *load) report(t *testing.T, strict map[string]bool) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, name := range l.phases {
		s := l.perPhase[name]
		t.Logf("phase %-11s acknowledged %5d, answered 422 %4d, needed retries (HTTP) %4d, slowest %7v, failed beyond the %v budget %d",
			name, s.acks, s.answered, s.retried, s.slowest.Round(time.Millisecond), retryBudget, len(s.failures))
		for i, f := range s.failures {
			if i == 5 {
				t.Logf("  ... %d more", len(s.failures)-5)
				break
			}
			t.Logf("  %s", f)
		}
		if strict[name] && len(s.failures) > 0 {
			t.Errorf("phase %s: %d requests failed beyond the client retry budget", name, len(s.failures))
		}
		if s.acks == 0 {
			t.Errorf("phase %s: no write was acknowledged", name)
		}
	}
}

// verifyAcks re-sends every acknowledged write over HTTP, spread over the
// nodes: each must come back 200 with "duplicate":true, that is, still be
// in the replicated log.
func verifyAcks(t *testing.T, c *cluster, acks []ack) {
	t.Helper()
	l := &load{c: c}
	lost := 0
	for i, a := range acks {
		status, reply, _, err := l.send(context.Background(), i, a.path, a.body)
		if err != nil || status != http.StatusOK || !strings.Contains(reply, `"duplicate":true`) {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged write (%s) lost: %s %s -> %d %s %v", a.via, a.path, a.body, status, reply, err)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged writes lost", lost, len(acks))
	}
}

func post(ctx context.Context, url, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, "", err
	}
	return resp.StatusCode, string(b), nil
}
