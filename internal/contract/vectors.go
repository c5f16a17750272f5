// Package contract replays the shared ledger vectors
// (ledger/testdata/ledger-v1.json) through Ration's HTTP API, against an
// in-process handler or a real node or cluster.
package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// Vectors is the shared contract file.
type Vectors struct {
	Scenarios []Scenario `json:"scenarios"`
}

// Scenario is one named sequence of steps for one user.
type Scenario struct {
	Name  string `json:"name"`
	User  string `json:"user"`
	Steps []Step `json:"steps"`
}

// Step is an operation or a balance check with its expected outcome.
type Step struct {
	Op        string `json:"op"`
	ID        string `json:"id"`
	Amount    int64  `json:"amount"`
	Timestamp int64  `json:"timestamp"`
	ExpiresAt *int64 `json:"expires_at"`
	Priority  *int32 `json:"priority"`
	At        int64  `json:"at"`
	Balance   int64  `json:"balance"`
	Expect    string `json:"expect"`
}

// Load reads the vectors from the repository's ledger/testdata.
func Load() (Vectors, error) {
	_, here, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(here), "..", "..", "ledger", "testdata", "ledger-v1.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return Vectors{}, err
	}
	var v Vectors
	return v, json.Unmarshal(data, &v)
}

// Replay runs every scenario, workers of them at a time (each scenario's
// steps in order: scenarios are independent users). bases are the HTTP base
// URLs of the nodes; step i of a scenario goes to bases[i % len(bases)], so
// a cluster is exercised from every node. userPrefix keeps runs against one
// server apart. It returns the first mismatch, and starts no scenario after
// one.
func Replay(client *http.Client, bases []string, v Vectors, userPrefix string, workers int) error {
	if workers < 1 {
		workers = 1
	}
	var (
		mu    sync.Mutex
		first error
		next  int
		wg    sync.WaitGroup
	)
	take := func() (Scenario, bool) {
		mu.Lock()
		defer mu.Unlock()
		if first != nil || next == len(v.Scenarios) {
			return Scenario{}, false
		}
		next++
		return v.Scenarios[next-1], true
	}
	for range workers {
		wg.Go(func() {
			for sc, ok := take(); ok; sc, ok = take() {
				if err := replayScenario(client, bases, sc, userPrefix); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

func replayScenario(client *http.Client, bases []string, sc Scenario, userPrefix string) error {
	user := userPrefix + sc.User
	for i, st := range sc.Steps {
		base := bases[i%len(bases)]
		got, detail, err := do(client, base, user, st)
		if err != nil {
			return fmt.Errorf("%s step %d (%s %s): %w", sc.Name, i, st.Op, st.ID, err)
		}
		if got != st.Expect {
			return fmt.Errorf("%s step %d (%s %s via %s): got %s (%s), want %s", sc.Name, i, st.Op, st.ID, base, got, detail, st.Expect)
		}
	}
	return nil
}

// do runs one step and returns its outcome in the vectors' words. A 503 is
// retried with the same request, as a client should.
func do(client *http.Client, base, user string, st Step) (string, string, error) {
	var req func() (*http.Request, error)
	switch st.Op {
	case "grant":
		body := map[string]any{"id": st.ID, "amount": st.Amount, "timestamp": st.Timestamp}
		if st.ExpiresAt != nil {
			body["expires_at"] = *st.ExpiresAt
		}
		if st.Priority != nil {
			body["priority"] = *st.Priority
		}
		req = post(base+"/v1/users/"+user+"/grants", body)
	case "deduct":
		req = post(base+"/v1/users/"+user+"/deductions", map[string]any{"id": st.ID, "amount": st.Amount, "timestamp": st.Timestamp})
	case "balance":
		req = func() (*http.Request, error) {
			return http.NewRequest("GET", base+"/v1/users/"+user+"/balance?at="+strconv.FormatInt(st.At, 10), nil)
		}
	default:
		return "", "", fmt.Errorf("unknown op %q", st.Op)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := req()
		if err != nil {
			return "", "", err
		}
		resp, err := client.Do(r)
		if err != nil {
			if time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return "", "", err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		switch resp.StatusCode {
		case http.StatusOK:
			if st.Op == "balance" {
				var b struct{ Balance int64 }
				if err := json.Unmarshal(body, &b); err != nil {
					return "", "", err
				}
				if b.Balance != st.Balance {
					return "balance " + strconv.FormatInt(b.Balance, 10), string(body), nil
				}
			}
			return "ok", "", nil
		case http.StatusBadRequest:
			return "invalid", string(body), nil
		case http.StatusConflict:
			return "conflict", string(body), nil
		case http.StatusUnprocessableEntity:
			return "insufficient", string(body), nil
		}
		return fmt.Sprintf("status %d", resp.StatusCode), string(body), nil
	}
}

func post(url string, body any) func() (*http.Request, error) {
	data, _ := json.Marshal(body)
	return func() (*http.Request, error) {
		r, err := http.NewRequest("POST", url, bytes.NewReader(data))
		if err == nil {
			r.Header.Set("Content-Type", "application/json")
		}
		return r, err
	}
}
