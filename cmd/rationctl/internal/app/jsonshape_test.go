package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/ration/ration/actors"
	"github.com/ration/ration/actors/actorstest"
	"github.com/ration/ration/grpcapi"
	"github.com/ration/ration/httpapi"
	"github.com/ration/ration/service"
)

// rationctl's -o json and the HTTP API print a user's events and balance
// byte for byte alike: both are api/ledgerjson's shapes. One real node's
// service answers both, the HTTP handler directly and rationctl over gRPC.
func TestJSONLikeHTTP(t *testing.T) {
	rep := actorstest.NewReplica(4)
	dir := actors.New(rep, actors.Options{IdleTimeout: time.Minute})
	t.Cleanup(func() { _ = dir.Shutdown(context.Background()) })
	svc := service.New(dir, func() time.Time { return now })
	reg := prometheus.NewRegistry()
	web := httptest.NewServer(httpapi.Handler(svc, httpapi.Options{Ready: func() bool { return true }, Gatherer: reg, Registerer: reg}))
	t.Cleanup(web.Close)
	gs := grpc.NewServer()
	grpcapi.Register(gs, svc, nil, reg)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)

	post := func(path, body string) {
		t.Helper()
		resp, err := http.Post(web.URL+"/v1/users/alice/"+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s %s: %s", path, body, resp.Status)
		}
	}
	get := func(path string) []byte {
		t.Helper()
		resp, err := http.Get(web.URL + "/v1/users/alice/" + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %v", path, resp.Status, err)
		}
		return bytes.TrimSpace(b)
	}
	// A grant of each sort (never expiring at priority 0 and expiring at
	// another priority), deductions drawing on one and on two grants, and
	// an expiration.
	post("grants", fmt.Sprintf(`{"id":"g1","amount":100,"timestamp":%d}`, t0))
	post("grants", fmt.Sprintf(`{"id":"g2","amount":50,"timestamp":%d,"expires_at":%d,"priority":-1}`, t0, t0+10_000))
	post("deductions", fmt.Sprintf(`{"id":"d1","amount":30,"timestamp":%d}`, t0+1000))
	post("deductions", fmt.Sprintf(`{"id":"d2","amount":40,"timestamp":%d}`, t0+2000))

	ctl := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb,
			Getenv: func(string) string { return "" }, Now: func() time.Time { return now }}
		if code := a.Run(context.Background(), append([]string{"--addr", lis.Addr().String(), "--no-routing", "-o", "json"}, args...)); code != 0 {
			t.Fatalf("rationctl %v: exit %d: %s", args, code, errb.String())
		}
		return out.String()
	}

	var page struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(get("events"), &page); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(ctl("events", "alice")), "\n")
	if len(page.Events) != 5 || len(lines) != len(page.Events) {
		t.Fatalf("HTTP has %d events, rationctl %d lines, want 5 each:\n%s", len(page.Events), len(lines), strings.Join(lines, "\n"))
	}
	for i, raw := range page.Events {
		if lines[i] != string(raw) {
			t.Errorf("event %d:\n rationctl %s\n      HTTP %s", i, lines[i], raw)
		}
	}

	for _, at := range []int64{t0 + 5000, t0 + 20_000} {
		httpBody := get(fmt.Sprintf("balance?at=%d", at))
		var ctlBody bytes.Buffer
		if err := json.Compact(&ctlBody, []byte(ctl("balance", "alice", "--at", fmt.Sprint(at)))); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ctlBody.Bytes(), httpBody) {
			t.Errorf("balance at %d:\n rationctl %s\n      HTTP %s", at, ctlBody.Bytes(), httpBody)
		}
	}
}
