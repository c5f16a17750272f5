package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/actors/actorstest"
	"github.com/ration/ration/internal/contract"
	"github.com/ration/ration/ledger"
	"github.com/ration/ration/service"
)

type fixture struct {
	srv   *httptest.Server
	rep   *actorstest.Replica
	ready bool
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{rep: actorstest.NewReplica(4), ready: true}
	dir := actors.New(f.rep, actors.Options{IdleTimeout: time.Minute})
	t.Cleanup(func() { _ = dir.Shutdown(t.Context()) })
	clock := func() time.Time { return time.UnixMilli(5_000) }
	reg := prometheus.NewRegistry()
	h := Handler(service.New(dir, clock), Options{
		Ready: func() bool { return f.ready }, Gatherer: reg, Registerer: reg, MaxBodyBytes: 1 << 20,
	})
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) call(t *testing.T, method, path, body string) (int, map[string]any, http.Header) {
	t.Helper()
	return f.callAs(t, method, path, body, "application/json")
}

// callAs is call with a Content-Type of its own ("" for none), set on
// requests with a body.
func (f *fixture) callAs(t *testing.T, method, path, body, contentType string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if body != "" && contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s %s: bad JSON %q", method, path, data)
		}
	}
	return resp.StatusCode, m, resp.Header
}

func TestVectorsOverHTTP(t *testing.T) {
	f := newFixture(t)
	v, err := contract.Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := contract.Replay(http.DefaultClient, []string{f.srv.URL}, v, "h-", 4); err != nil {
		t.Fatal(err)
	}
}

func errField(m map[string]any, k string) any {
	e, _ := m["error"].(map[string]any)
	return e[k]
}

func TestContract(t *testing.T) {
	f := newFixture(t)
	grant := `{"id":"g1","amount":10,"timestamp":0,"expires_at":1000}`
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code, field              string
	}{
		{"grant", "POST", "/v1/users/u1/grants", grant, 200, "", ""},
		{"retry is 200", "POST", "/v1/users/u1/grants", grant, 200, "", ""},
		{"conflict", "POST", "/v1/users/u1/grants", `{"id":"g1","amount":11,"timestamp":0}`, 409, "conflict", ""},
		{"float amount", "POST", "/v1/users/u1/grants", `{"id":"g2","amount":1.5,"timestamp":0}`, 400, "invalid_argument", "amount"},
		{"exponent", "POST", "/v1/users/u1/grants", `{"id":"g2","amount":1e3,"timestamp":0}`, 400, "invalid_argument", "amount"},
		{"string amount", "POST", "/v1/users/u1/grants", `{"id":"g2","amount":"5","timestamp":0}`, 400, "invalid_argument", "amount"},
		{"number id", "POST", "/v1/users/u1/grants", `{"id":5,"amount":5,"timestamp":0}`, 400, "invalid_argument", "id"},
		{"duplicate key", "POST", "/v1/users/u1/grants", `{"id":"g2","amount":5,"amount":500,"timestamp":0}`, 400, "invalid_argument", "amount"},
		{"not an object", "POST", "/v1/users/u1/grants", `["id"]`, 400, "invalid_argument", "body"},
		{"nested unknown", "POST", "/v1/users/u1/grants", `{"id":"g2","amount":5,"timestamp":0,"x":{"y":1}}`, 400, "invalid_argument", "x"},
		{"null expiry is none", "POST", "/v1/users/u2/grants", `{"id":"g3","amount":1,"timestamp":0,"expires_at":null}`, 200, "", ""},
		{"missing timestamp", "POST", "/v1/users/u1/grants", `{"id":"g2","amount":5}`, 400, "invalid_argument", "timestamp"},
		{"unknown field", "POST", "/v1/users/u1/grants", `{"id":"g2","amount":5,"timestamp":0,"x":1}`, 400, "invalid_argument", "x"},
		{"trailing data", "POST", "/v1/users/u1/grants", `{"id":"g2","amount":5,"timestamp":0} {}`, 400, "invalid_argument", "body"},
		{"bad id", "POST", "/v1/users/u1/grants", `{"id":"a b","amount":5,"timestamp":0}`, 400, "invalid_argument", "id"},
		{"bad user", "POST", "/v1/users/a%20b/grants", `{"id":"g2","amount":5,"timestamp":0}`, 400, "invalid_argument", "user"},
		{"expiry before start", "POST", "/v1/users/u1/grants", `{"id":"g2","amount":5,"timestamp":9,"expires_at":9}`, 400, "invalid_argument", "expires_at"},
		{"deduct", "POST", "/v1/users/u1/deductions", `{"id":"d1","amount":4,"timestamp":10}`, 200, "", ""},
		{"insufficient", "POST", "/v1/users/u1/deductions", `{"id":"d2","amount":7,"timestamp":5}`, 422, "insufficient_credits", ""},
		{"bad at", "GET", "/v1/users/u1/balance?at=x", "", 400, "invalid_argument", "at"},
		{"bad consistency", "GET", "/v1/users/u1/balance?consistency=eventual", "", 400, "invalid_argument", "consistency"},
		{"bad page token", "GET", "/v1/users/u1/events?page_token=zzz", "", 400, "invalid_argument", "page_token"},
		{"wrong method", "GET", "/v1/users/u1/grants", "", 405, "method_not_allowed", ""},
		{"no such path", "GET", "/v1/nothing", "", 404, "not_found", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m, _ := f.call(t, tc.method, tc.path, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, m)
			}
			if tc.code != "" && errField(m, "code") != tc.code {
				t.Fatalf("code %v, want %s", errField(m, "code"), tc.code)
			}
			if tc.field != "" && errField(m, "field") != tc.field {
				t.Fatalf("field %v, want %s", errField(m, "field"), tc.field)
			}
		})
	}
	// Insufficient credits name the deduction that fails and the shortfall.
	_, m, _ := f.call(t, "POST", "/v1/users/u1/deductions", `{"id":"d3","amount":7,"timestamp":20}`)
	if errField(m, "deduction_id") != "d3" || errField(m, "shortfall") != 1.0 || errField(m, "at") != 20.0 {
		t.Fatalf("insufficient details: %v", m)
	}
	// Deductions report allocations; retries are duplicates with the same.
	_, m, _ = f.call(t, "POST", "/v1/users/u1/deductions", `{"id":"d1","amount":4,"timestamp":10}`)
	allocs, _ := m["allocations"].([]any)
	if m["duplicate"] != true || len(allocs) != 1 || allocs[0].(map[string]any)["grant_id"] != "g1" {
		t.Fatalf("retry reply: %v", m)
	}
	// Balance now (the clock says 5000: g1 expired at 1000) and in the past.
	_, m, _ = f.call(t, "GET", "/v1/users/u1/balance", "")
	if m["at"] != 5000.0 || m["balance"] != 0.0 || m["user"] != "u1" {
		t.Fatalf("balance now: %v", m)
	}
	_, m, _ = f.call(t, "GET", "/v1/users/u1/balance?at=10&consistency=stale", "")
	grants, _ := m["grants"].([]any)
	if m["balance"] != 6.0 || len(grants) != 1 || grants[0].(map[string]any)["expires_at"] != 1000.0 {
		t.Fatalf("balance at 10: %v", m)
	}
	// A body over the cap is refused.
	big := `{"id":"g9","amount":1,"timestamp":0,"pad":"` + strings.Repeat("x", 1<<20) + `"}`
	if status, m, _ := f.call(t, "POST", "/v1/users/u1/grants", big); status != 413 || errField(m, "code") != "payload_too_large" {
		t.Fatalf("big body: %d %v", status, m)
	}
	// The method a path takes is named.
	if _, _, h := f.call(t, "DELETE", "/v1/users/u1/grants", ""); h.Get("Allow") != "POST" {
		t.Fatalf("Allow: %q, want POST", h.Get("Allow"))
	}
}

// Writes take JSON only, by Content-Type: a form post, as a web page can
// send across origins without asking, changes nothing.
func TestWritesRequireJSON(t *testing.T) {
	f := newFixture(t)
	body := `{"id":"g1","amount":10,"timestamp":0}`
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx"} {
		status, m, _ := f.callAs(t, "POST", "/v1/users/u1/grants", body, ct)
		if status != 415 || errField(m, "code") != "unsupported_media_type" {
			t.Fatalf("Content-Type %q: %d %v", ct, status, m)
		}
	}
	if status, m, _ := f.call(t, "GET", "/v1/users/u1/balance", ""); status != 200 || m["balance"] != 0.0 {
		t.Fatalf("a refused write changed the balance: %d %v", status, m)
	}
	if status, m, _ := f.callAs(t, "POST", "/v1/users/u1/grants", body, "application/json; charset=utf-8"); status != 200 {
		t.Fatalf("with a charset: %d %v", status, m)
	}
}

func TestEventsPaging(t *testing.T) {
	f := newFixture(t)
	f.call(t, "POST", "/v1/users/p/grants", `{"id":"g","amount":100,"timestamp":0,"expires_at":50}`)
	for i := 0; i < 7; i++ {
		f.call(t, "POST", "/v1/users/p/deductions", `{"id":"d`+string(rune('0'+i))+`","amount":1,"timestamp":10}`)
	}
	var kinds []string
	token := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		_, m, _ := f.call(t, "GET", "/v1/users/p/events?limit=3&page_token="+token, "")
		for _, e := range m["events"].([]any) {
			kinds = append(kinds, e.(map[string]any)["kind"].(string))
		}
		tok, _ := m["next_page_token"].(string)
		if tok == "" {
			break
		}
		token = tok
	}
	want := "grant deduction deduction deduction deduction deduction deduction deduction expiration"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("events %s\nwant %s", got, want)
	}
	// A token used with another range is refused.
	_, m, _ := f.call(t, "GET", "/v1/users/p/events?limit=3", "")
	tok := m["next_page_token"].(string)
	if status, _, _ := f.call(t, "GET", "/v1/users/p/events?from=5&page_token="+tok, ""); status != 400 {
		t.Fatalf("token reused with another range: %d", status)
	}
}

func TestUnavailableAndProbes(t *testing.T) {
	f := newFixture(t)
	if status, _, _ := f.call(t, "GET", "/healthz", ""); status != 200 {
		t.Fatal("healthz")
	}
	if status, _, _ := f.call(t, "GET", "/readyz", ""); status != 200 {
		t.Fatal("readyz")
	}
	f.ready = false
	if status, _, h := f.call(t, "GET", "/readyz", ""); status != 503 || h.Get("Retry-After") == "" {
		t.Fatal("readyz when not ready")
	}
	f.rep.Unavailable.Store(true)
	status, m, h := f.call(t, "POST", "/v1/users/z/grants", `{"id":"g","amount":1,"timestamp":0}`)
	if status != 503 || errField(m, "code") != "unavailable" || h.Get("Retry-After") == "" {
		t.Fatalf("no leader: %d %v", status, m)
	}
	f.rep.Unavailable.Store(false)
	if status, _, _ := f.call(t, "POST", "/v1/users/z/grants", `{"id":"g","amount":1,"timestamp":0}`); status != 200 {
		t.Fatalf("after recovery: %d", status)
	}
	req, _ := http.NewRequest("GET", f.srv.URL+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `ration_request_duration_seconds_count{op="grant",outcome="unavailable",transport="http"} 1`) {
		t.Fatalf("metrics missing request outcome:\n%s", body)
	}
}

// FuzzFlatObject: any body is either refused with an invalid argument or
// read as an object of known, distinct keys that encodes back to an
// object read the same way.
func FuzzFlatObject(f *testing.F) {
	for _, s := range []string{`{"id":"g","amount":5,"timestamp":0}`, `{"amount":1,"amount":2}`, `{"x":1}`, `[1]`, `{"id":"a"} x`, `{`, `{"id":{"a":[1,{"b":2}]}}`, `{"id":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := flatObject(data, grantFields)
		if err != nil {
			if !errors.Is(err, ledger.ErrInvalidArgument) {
				t.Fatalf("%q: %v is not an invalid argument", data, err)
			}
			return
		}
		for k := range m {
			if !slices.Contains(grantFields, k) {
				t.Fatalf("%q: unknown key %q accepted", data, k)
			}
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("%q: accepted values do not encode: %v", data, err)
		}
		m2, err := flatObject(again, grantFields)
		if err != nil || len(m2) != len(m) {
			t.Fatalf("%q: re-encoded %q reads as %v, %v", data, again, m2, err)
		}
	})
}
