package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ration/ration/client"
)

// httpDriver speaks the HTTP/JSON API:
//
//	POST /v1/users/{user}/grants      {"id","amount","timestamp","expires_at"?,"priority"?}
//	POST /v1/users/{user}/deductions  {"id","amount","timestamp"}
//	GET  /v1/users/{user}/balance
//
// 200 is success (an idempotent retry included), 400/409/422 are refusals,
// 503 with Retry-After means no leader. Like the gRPC client it re-sends
// the same request (same id) on 503 and transport errors within the retry
// budget, so both protocols measure the same thing.
type httpDriver struct {
	base    string
	hc      *http.Client
	timeout time.Duration
	budget  time.Duration
	backoff client.Backoff
}

func newHTTPDriver(addr string, clients int, timeout, budget time.Duration) *httpDriver {
	base := strings.TrimRight(addr, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// One idle connection per client, or every request past the default
	// two would open a new connection and the benchmark would measure TCP
	// handshakes.
	tr.MaxIdleConns = 2 * clients
	tr.MaxIdleConnsPerHost = 2 * clients
	if timeout == 0 {
		timeout = client.DefaultTimeout
	}
	if budget == 0 {
		budget = client.DefaultRetryBudget
	}
	return &httpDriver{base: base, hc: &http.Client{Transport: tr}, timeout: timeout, budget: budget}
}

// batch is not offered over HTTP: the command refuses --batch with it.
func (d *httpDriver) batch(context.Context, []client.Op) []error {
	panic("bench: --batch over HTTP")
}

// routing: HTTP clients do not route; the node forwards.
func (d *httpDriver) routing() *jsonRouting { return nil }

func (d *httpDriver) close() error {
	d.hc.CloseIdleConnections()
	return nil
}

type httpGrant struct {
	ID        string `json:"id"`
	Amount    int64  `json:"amount"`
	Timestamp int64  `json:"timestamp"`
	ExpiresAt *int64 `json:"expires_at,omitempty"`
	Priority  int32  `json:"priority,omitempty"`
}

type httpDeduction struct {
	ID        string `json:"id"`
	Amount    int64  `json:"amount"`
	Timestamp int64  `json:"timestamp"`
}

func userPath(user, rest string) string {
	return "/v1/users/" + url.PathEscape(user) + rest
}

func (d *httpDriver) grant(ctx context.Context, user string, g client.Grant) error {
	return d.do(ctx, http.MethodPost, userPath(user, "/grants"),
		httpGrant{ID: g.ID, Amount: g.Amount, Timestamp: g.Timestamp, ExpiresAt: g.ExpiresAt, Priority: g.Priority})
}

func (d *httpDriver) deduct(ctx context.Context, user string, dd client.Deduction) error {
	return d.do(ctx, http.MethodPost, userPath(user, "/deductions"),
		httpDeduction{ID: dd.ID, Amount: dd.Amount, Timestamp: dd.Timestamp})
}

func (d *httpDriver) balance(ctx context.Context, user string) error {
	return d.do(ctx, http.MethodGet, userPath(user, "/balance"), nil)
}

func (d *httpDriver) setup(ctx context.Context, ops []client.Op, parallel int) error {
	work := make(chan client.Op)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range max(parallel, 1) {
		wg.Go(func() {
			for op := range work {
				if err := d.grant(ctx, op.User, *op.Grant); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("grant to %s: %w", op.User, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, op := range ops {
		select {
		case work <- op:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// httpError is a non-200 answer.
type httpError struct {
	Status  int
	Code    string // the body's error.code, e.g. "insufficient_credits"
	Message string
}

func (e *httpError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("http %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("http %d %s: %s", e.Status, e.Code, e.Message)
}

// Unwrap maps the statuses to the client's sentinels, so that refusals
// classify alike over both protocols.
func (e *httpError) Unwrap() error {
	switch e.Status {
	case http.StatusBadRequest:
		return client.ErrInvalidArgument
	case http.StatusConflict:
		return client.ErrConflict
	case http.StatusUnprocessableEntity:
		return client.ErrInsufficientCredits
	case http.StatusServiceUnavailable:
		return client.ErrUnavailable
	}
	return nil
}

func (d *httpDriver) do(ctx context.Context, method, path string, body any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(d.budget)
	for attempt := 1; ; attempt++ {
		retryAfter, err := d.once(ctx, method, path, payload)
		if err == nil || ctx.Err() != nil {
			return err
		}
		var he *httpError
		if errors.As(err, &he) && he.Status != http.StatusServiceUnavailable {
			return err
		}
		if d.budget < 0 {
			return err
		}
		wait := max(retryAfter, d.backoff.Delay(attempt))
		if time.Now().Add(wait).After(deadline) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// once sends one attempt. It returns the Retry-After of a 503.
func (d *httpDriver) once(ctx context.Context, method, path string, payload []byte) (time.Duration, error) {
	actx, cancel := ctx, context.CancelFunc(func() {})
	if d.timeout > 0 {
		actx, cancel = context.WithTimeout(ctx, d.timeout)
	}
	defer cancel()
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(actx, method, d.base+path, body)
	if err != nil {
		return 0, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	// Read the body in full so the connection can be reused.
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode == http.StatusOK {
		return 0, nil
	}
	he := &httpError{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
		he.Code, he.Message = eb.Error.Code, eb.Error.Message
	}
	var retryAfter time.Duration
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	return retryAfter, he
}
