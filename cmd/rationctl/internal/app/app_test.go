package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/api/ledgerjson"
	"github.com/ration/ration/client/clienttest"
)

// t0 is 2026-01-01T00:00:00Z.
const t0 = int64(1767225600000)

var now = time.UnixMilli(t0 + 3_600_000) // 01:00

type harness struct {
	t   *testing.T
	srv *clienttest.Server
	env map[string]string
	in  string
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, srv: clienttest.Start(t, clienttest.Options{Now: func() int64 { return now.UnixMilli() }}), env: map[string]string{}}
}

// run runs one command line against the harness's server.
func (h *harness) run(args ...string) (code int, stdout, stderr string) {
	h.t.Helper()
	var out, errb bytes.Buffer
	a := &App{
		Stdin: strings.NewReader(h.in), Stdout: &out, Stderr: &errb,
		Getenv:           func(k string) string { return h.env[k] },
		Now:              func() time.Time { return now },
		ProgressInterval: 10 * time.Millisecond,
	}
	full := append([]string{"--addr", h.srv.Addr(), "--retry-budget", "2s"}, args...)
	code = a.Run(context.Background(), full)
	return code, out.String(), errb.String()
}

// ok runs a command that must succeed and returns its stdout.
func (h *harness) ok(args ...string) string {
	h.t.Helper()
	code, out, errs := h.run(args...)
	if code != 0 {
		h.t.Fatalf("rationctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func (h *harness) seed() {
	h.t.Helper()
	h.ok("grant", "alice", "--id", "g1", "--amount", "100", "--at", fmt.Sprint(t0), "--expires", "2026-01-02T00:00:00Z")
	h.ok("grant", "alice", "--id", "g2", "--amount", "50", "--at", fmt.Sprint(t0), "--priority", "-1")
}

func TestGrantAndDeduct(t *testing.T) {
	h := newHarness(t)
	out := h.ok("grant", "alice", "--id", "g1", "--amount", "100", "--at", fmt.Sprint(t0), "--expires", "+23h")
	if want := "applied grant \"g1\" for alice at 2026-01-01T00:00:00Z (1767225600000); ledger version 1\n"; out != want {
		t.Errorf("grant output %q, want %q", out, want)
	}
	out = h.ok("grant", "alice", "--id", "g1", "--amount", "100", "--at", fmt.Sprint(t0), "--expires", "2026-01-02T00:00:00Z")
	if !strings.Contains(out, "already applied (duplicate)") {
		t.Errorf("repeated grant output %q, want a duplicate", out)
	}
	out = h.ok("-o", "json", "grant", "alice", "--id", "g2", "--amount", "50", "--at", "-1h", "--priority", "-1")
	var gj jsonGrantResult
	if err := json.Unmarshal([]byte(out), &gj); err != nil || gj != (jsonGrantResult{User: "alice", ID: "g2", Timestamp: t0, Version: 2}) {
		t.Errorf("grant json %s: %+v, %v", out, gj, err)
	}

	out = h.ok("deduct", "alice", "--id", "d1", "--amount", "70", "--at", "now")
	want := `applied deduction "d1" for alice at 2026-01-01T01:00:00Z (1767229200000); ledger version 3
GRANT  AMOUNT
g2     50
g1     20
`
	if out != want {
		t.Errorf("deduct output:\n%s\nwant:\n%s", out, want)
	}
	out = h.ok("deduct", "alice", "--id", "d1", "--amount", "70", "--at", "now", "--output", "json")
	var dj jsonDeductResult
	if err := json.Unmarshal([]byte(out), &dj); err != nil || !dj.Duplicate || len(dj.Allocations) != 2 ||
		dj.Allocations[1] != (ledgerjson.Allocation{GrantID: "g1", Amount: 20}) {
		t.Errorf("deduct json %s: %+v, %v", out, dj, err)
	}

	code, _, errs := h.run("deduct", "alice", "--id", "d2", "--amount", "1000", "--at", fmt.Sprint(now.UnixMilli()+1))
	if code != 1 || !strings.Contains(errs, `insufficient credits: deduction "d2" at 2026-01-01T01:00:00.001Z would be short by 920`) {
		t.Errorf("insufficient: exit %d, stderr %q", code, errs)
	}
	code, _, errs = h.run("grant", "alice", "--id", "g1", "--amount", "5")
	if code != 1 || !strings.Contains(errs, "id conflict") {
		t.Errorf("conflict: exit %d, stderr %q", code, errs)
	}
	// A repeat with a relative time is not the same write: say why.
	h.ok("grant", "alice", "--id", "g9", "--amount", "5", "--at", "-1s")
	code, _, errs = h.run("grant", "alice", "--id", "g9", "--amount", "5")
	if code != 1 || !strings.Contains(errs, "rationctl: id conflict: grant \"g9\"") || !strings.Contains(errs, "relative times differ on each run") {
		t.Errorf("relative conflict: exit %d, stderr %q", code, errs)
	}
	code, _, errs = h.run("grant", "alice", "--id", "bad id", "--amount", "5")
	if code != 1 || !strings.Contains(errs, "rationctl: invalid argument: id: may only contain") {
		t.Errorf("invalid id: exit %d, stderr %q", code, errs)
	}
}

func TestUsageErrors(t *testing.T) {
	h := newHarness(t)
	for _, args := range [][]string{
		{"grant", "alice", "--amount", "5"},     // no --id
		{"grant", "--id", "x", "--amount", "5"}, // no user
		{"grant", "alice", "--id", "x", "--amount", "five"},
		{"deduct", "alice", "--id", "x", "--amount", "5", "--at", "yesterday"},
		{"balance", "alice", "--at", "30m"}, // unsigned offset
		{"events", "alice", "--limit", "5000"},
		{"status", "--output", "yaml"},
		{"bench", "--mix", "grant=1,refund=2"},
		{"import", "x.csv", "--batch-size", "5000"},
	} {
		code, _, errs := h.run(args...)
		if code != 2 || errs == "" {
			t.Errorf("rationctl %s: exit %d (stderr %q), want 2 with a message", strings.Join(args, " "), code, errs)
		}
	}
}

func TestBalance(t *testing.T) {
	h := newHarness(t)
	h.seed()
	out := h.ok("balance", "alice")
	want := `user alice at 2026-01-01T01:00:00Z: balance 150
ID  REMAINING  EXPIRES
g2  50         never
g1  100        2026-01-02T00:00:00Z
`
	if out != want {
		t.Errorf("balance:\n%s\nwant:\n%s", out, want)
	}
	out = h.ok("balance", "alice", "--at", "2026-01-02T00:00:00Z", "--stale")
	if !strings.HasPrefix(out, "user alice at 2026-01-02T00:00:00Z: balance 50\n") {
		t.Errorf("balance after expiry:\n%s", out)
	}
	out = h.ok("balance", "nobody")
	if out != "user nobody at 2026-01-01T01:00:00Z: balance 0\n" {
		t.Errorf("unknown user: %q", out)
	}
	out = h.ok("balance", "alice", "--output", "json")
	var bj ledgerjson.Balance
	if err := json.Unmarshal([]byte(out), &bj); err != nil {
		t.Fatal(err)
	}
	exp := t0 + 86_400_000
	if bj.At != now.UnixMilli() || bj.Balance != 150 || len(bj.Grants) != 2 || bj.Grants[0].ExpiresAt != nil ||
		bj.Grants[1].ExpiresAt == nil || *bj.Grants[1].ExpiresAt != exp || bj.Grants[1].Timestamp != t0 {
		t.Errorf("balance json: %s", out)
	}
	if !strings.Contains(out, `"expires_at": 1767312000000`) {
		t.Errorf("balance json times are not integers:\n%s", out)
	}
}

func TestEvents(t *testing.T) {
	h := newHarness(t)
	h.seed()
	for i := range 5 {
		h.ok("deduct", "alice", "--id", fmt.Sprintf("d%d", i), "--amount", "20", "--at", fmt.Sprint(t0+int64(i+1)*1000))
	}
	// Page size 2 over 8 events: the command must page through them all.
	out := h.ok("events", "alice", "--limit", "2")
	want := `TIME                  KIND        ID  AMOUNT  BALANCE  DETAILS
2026-01-01T00:00:00Z  grant       g1  100     100      expires 2026-01-02T00:00:00Z
2026-01-01T00:00:00Z  grant       g2  50      150      expires never, priority -1
2026-01-01T00:00:01Z  deduction   d0  20      130      from g2:20
2026-01-01T00:00:02Z  deduction   d1  20      110      from g2:20
2026-01-01T00:00:03Z  deduction   d2  20      90       from g2:10 g1:10
2026-01-01T00:00:04Z  deduction   d3  20      70       from g1:20
2026-01-01T00:00:05Z  deduction   d4  20      50       from g1:20
2026-01-02T00:00:00Z  expiration  g1  50      0        forfeited
`
	if out != want {
		t.Errorf("events:\n%s\nwant:\n%s", out, want)
	}
	out = h.ok("events", "alice", "--from", fmt.Sprint(t0+2000), "--to", "2026-01-01T00:00:04Z", "-o", "json", "--limit", "1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("ranged events json: %d lines:\n%s", len(lines), out)
	}
	var ev ledgerjson.Event
	if err := json.Unmarshal([]byte(lines[1]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Kind != "deduction" || ev.ID != "d2" || ev.Timestamp != t0+3000 || ev.BalanceAfter != 90 || len(ev.Allocations) != 2 {
		t.Errorf("event json: %s", lines[1])
	}
}

func TestStatus(t *testing.T) {
	h := newHarness(t)
	h.seed()
	out := h.ok("status")
	for _, want := range []string{
		"answered by node fake-1\n",
		"NODE    STATE  GRPC",
		"fake-1  alive  " + h.srv.Addr(),
		"SHARD  LEADER  STATE   REPLICAS  VOTERS  APPLIED  COMMIT  USERS",
		"0      fake-1  Leader  fake-1    fake-1  2        2       1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	out = h.ok("status", "-o", "json")
	var sj jsonStatus
	if err := json.Unmarshal([]byte(out), &sj); err != nil {
		t.Fatal(err)
	}
	if sj.NodeID != "fake-1" || len(sj.Nodes) != 1 || sj.Nodes[0].GRPCAddr != h.srv.Addr() || len(sj.Shards) != 1 || sj.Shards[0].AppliedIndex != 2 {
		t.Errorf("status json: %s", out)
	}
}

func TestAddrFromEnvAndFailover(t *testing.T) {
	h := newHarness(t)
	dead := "127.0.0.1:1"
	var out, errb bytes.Buffer
	a := &App{Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		if k == "RATION_ADDR" {
			return dead + "," + h.srv.Addr()
		}
		return ""
	}}
	for range 3 {
		out.Reset()
		if code := a.Run(context.Background(), []string{"status", "-o", "json"}); code != 0 {
			t.Fatalf("status via RATION_ADDR with a dead first node: exit %d: %s", code, errb.String())
		}
	}
	code := a.Run(context.Background(), []string{"status", "--addr", dead, "--retry-budget", "100ms", "--timeout", "50ms"})
	if code != 1 || !strings.Contains(errb.String(), "unavailable") {
		t.Errorf("dead --addr overrides env: exit %d, stderr %q", code, errb.String())
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestImportCSV(t *testing.T) {
	h := newHarness(t)
	csv := `op,user,id,amount,timestamp,expires_at,priority
grant,alice,g1,100,1767225600000,1767312000000,0
deduct,alice,d1,30,1767225601000,,
grant,bob,g1,10,2026-01-01T00:00:00Z,,
deduct,bob,d1,50,1767225601000,,
grant,carol,g1,-5,1767225600000,,
deduct,alice,d2,1,notatime,,
grant,bob,g1,11,1767225600000,,
`
	path := writeFile(t, "ops.csv", csv)
	code, out, errs := h.run("import", path, "--batch-size", "2", "--concurrency", "2")
	if code != 1 {
		t.Errorf("exit %d, want 1 for the unparsable line", code)
	}
	want := `operations              7
applied                 3
duplicates              0
refused                 3
  conflict              1
  insufficient_credits  1
  invalid_argument      1
failed                  1
  parse                 1
`
	if out != want {
		t.Errorf("summary:\n%s\nwant:\n%s\nstderr:\n%s", out, want, errs)
	}
	for _, w := range []string{"line 7: unreadable: timestamp: invalid time", "line 5: refused: insufficient credits: deduction", "line 8: refused: id conflict: "} {
		if !strings.Contains(errs, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errs)
		}
	}
	if h.srv.Balance("alice", t0+2000) != 70 || h.srv.Balance("bob", t0+2000) != 10 {
		t.Errorf("balances alice %d bob %d", h.srv.Balance("alice", t0+2000), h.srv.Balance("bob", t0+2000))
	}

	// Importing again is safe: everything applied is a duplicate.
	code, out, _ = h.run("import", path, "-o", "json")
	var sum jsonImportSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatal(err)
	}
	if code != 1 || sum.Operations != 7 || sum.Applied != 0 || sum.Duplicates != 3 || sum.Refused != 3 || sum.Failed != 1 ||
		sum.RefusedByReason["insufficient_credits"] != 1 || sum.FailedByReason["parse"] != 1 {
		t.Errorf("re-import: exit %d, %+v", code, sum)
	}
	if h.srv.Version("alice") != 2 {
		t.Errorf("alice version %d after re-import, want 2", h.srv.Version("alice"))
	}
}

func TestImportJSONLFromStdinWithRetries(t *testing.T) {
	h := newHarness(t)
	var b strings.Builder
	for i := range 300 {
		u := fmt.Sprintf("u%d", i%7)
		fmt.Fprintf(&b, `{"op":"grant","user":%q,"id":"g%d","amount":10,"timestamp":%d}`+"\n", u, i, t0)
		fmt.Fprintf(&b, `{"op":"deduct","user":%q,"id":"d%d","amount":10,"timestamp":"2026-01-01T00:00:01Z"}`+"\n", u, i)
	}
	b.WriteString("\n{\"op\":\"grant\",\"user\":\"x\",\"id\":\"g\",\"amount\":1,\"timestamp\":1,\"expires\":5}\n")
	h.in = b.String()
	h.srv.FailNext(2)
	h.srv.FailUser("u3", 3)
	code, out, errs := h.run("import", "-", "--batch-size", "50", "-o", "json")
	var sum jsonImportSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// Every deduction is paid by the grant before it: per-user order held.
	if code != 1 || sum.Operations != 601 || sum.Applied != 600 || sum.Refused != 0 || sum.Failed != 1 {
		t.Errorf("exit %d, summary %+v\nstderr:\n%s", code, sum, errs)
	}
	if !strings.Contains(errs, `line 602: unreadable: bad JSON: json: unknown field "expires"`) {
		t.Errorf("stderr lacks the bad line:\n%s", errs)
	}
}

func TestImportProgressLines(t *testing.T) {
	h := newHarness(t)
	var b strings.Builder
	b.WriteString("op,user,id,amount,timestamp\n")
	for i := range 3000 {
		fmt.Fprintf(&b, "grant,u%d,g%d,1,%d\n", i%50, i, t0)
	}
	path := writeFile(t, "big.data", b.String()) // no known extension: sniffed
	code, out, errs := h.run("import", path, "--batch-size", "10", "--concurrency", "1")
	if code != 0 || !regexp.MustCompile(`(?m)^applied +3000$`).MatchString(out) {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	if !strings.Contains(errs, " of 3000 operations done (applied ") {
		t.Errorf("no periodic progress line on a non-terminal stderr:\n%s", errs)
	}
}

func TestBenchGRPC(t *testing.T) {
	h := newHarness(t)
	code, out, errs := h.run("bench", "--ops", "400", "--clients", "8", "--users", "20", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var rep jsonBench
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rep.Ops != 400 || rep.Errors != 0 || rep.Refused != 0 || rep.Throughput <= 0 || rep.Mix["deduct"] != 80 {
		t.Errorf("report %+v", rep)
	}
	var total uint64
	kinds := map[string]bool{}
	for _, r := range rep.Results {
		total += r.Count
		kinds[r.Op] = true
		if r.Outcome != "ok" || r.LatencyUS.P50 > r.LatencyUS.P99 || r.LatencyUS.P99 > r.LatencyUS.P999 || r.LatencyUS.P999 > r.LatencyUS.Max || r.LatencyUS.Max <= 0 {
			t.Errorf("row %+v", r)
		}
	}
	if total != 400 || !kinds["deduct"] {
		t.Errorf("rows count %d ops over %v", total, kinds)
	}
	// 20 users: one initial grant each, plus the run's grants and deductions.
	var ops uint64
	for i := range 20 {
		ops += h.srv.Version(fmt.Sprintf("bench-u%d", i))
	}
	writes := uint64(0)
	for _, r := range rep.Results {
		if r.Op != "balance" {
			writes += r.Count
		}
	}
	if ops != 20+writes {
		t.Errorf("server applied %d ops, want 20 initial grants + %d writes", ops, writes)
	}
	// The fake has no routing table: every attempt went through --addr.
	if r := rep.Routing; r == nil || !r.Enabled || r.Direct != 0 || r.Fallback < 400 {
		t.Errorf("routing %+v, want enabled, every attempt a fallback", r)
	}
	code, out, errs = h.run("--no-routing", "bench", "--ops", "10", "--clients", "2", "--users", "2", "-o", "json")
	rep = jsonBench{}
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil {
		t.Fatalf("--no-routing: exit %d, %v: %s", code, err, errs)
	}
	if r := rep.Routing; r == nil || r.Enabled || r.Fallback != 0 {
		t.Errorf("--no-routing: routing %+v, want disabled", r)
	}

	// Table output, a refusing mix (deductions bigger than the grants) and a rate.
	h = newHarness(t)
	start := time.Now()
	code, out, errs = h.run("bench", "--ops", "60", "--clients", "4", "--users", "3", "--mix", "deduct=1",
		"--initial-credits", "5", "--rate", "300")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("60 ops at 300/s took %v, want about 200ms", d)
	}
	if !strings.Contains(out, "grpc, 4 clients, 3 users") || !strings.Contains(out, "deduct  refused") ||
		!strings.Contains(out, "OP      OUTCOME  COUNT") || !strings.Contains(out, "0 attempts straight to the leader") {
		t.Errorf("table:\n%s", out)
	}
}

// TestBenchBatch: --batch sends writes as Batch calls, --ops still counts
// operations, and every one of them reaches the server once.
func TestBenchBatch(t *testing.T) {
	h := newHarness(t)
	code, out, errs := h.run("bench", "--ops", "1005", "--clients", "4", "--users", "30", "--batch", "50",
		"--mix", "grant=1,deduct=3", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var rep jsonBench
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rep.Ops != 1005 || rep.Errors != 0 || rep.Batch != 50 {
		t.Fatalf("report %+v", rep)
	}
	var ops uint64
	for i := range 30 {
		ops += h.srv.Version(fmt.Sprintf("bench-u%d", i))
	}
	if ops != 30+1005 {
		t.Errorf("server applied %d ops, want 30 initial grants + 1005 writes", ops)
	}
	if code, _, errs := h.run("bench", "--ops", "10", "--batch", "5", "--protocol", "http"); code != 2 || !strings.Contains(errs, "--batch needs --protocol grpc") {
		t.Errorf("--batch over HTTP: exit %d: %s", code, errs)
	}
}

func TestBenchDurationAndProgress(t *testing.T) {
	h := newHarness(t)
	code, out, errs := h.run("bench", "--duration", "1200ms", "--clients", "2", "--users", "5", "--rate", "50")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(errs, "ops/s  total") {
		t.Errorf("no live progress line on stderr:\n%s", errs)
	}
	if !strings.Contains(out, "ok") {
		t.Errorf("table:\n%s", out)
	}
}

func TestBenchHTTP(t *testing.T) {
	h := newHarness(t)
	fake := newHTTPFake()
	srv := newTestHTTPServer(t, fake)
	fake.unavailable.Store(3)
	code, out, errs := h.run("bench", "--protocol", "http", "--http-addr", srv, "--ops", "300", "--clients", "6", "--users", "10", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var rep jsonBench
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rep.Protocol != "http" || rep.Ops != 300 || rep.Errors != 0 {
		t.Errorf("report %+v\nstderr: %s", rep, errs)
	}
	if fake.count(503) != 3 {
		t.Errorf("%d 503s, want the 3 injected (then retried)", fake.count(503))
	}
	if fake.balance(t, "bench-u0") == 0 {
		t.Error("user bench-u0 got no initial grant over HTTP")
	}
	// Refusals are told apart from errors over HTTP too.
	fake = newHTTPFake()
	srv = newTestHTTPServer(t, fake)
	code, out, errs = h.run("bench", "--protocol", "http", "--http-addr", srv, "--ops", "40", "--clients", "2", "--users", "2",
		"--mix", "deduct=1", "--initial-credits", "3", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Refused == 0 || rep.Errors != 0 || fake.count(422) == 0 {
		t.Errorf("refusing run: %+v, %d 422s", rep, fake.count(422))
	}
}

func TestImportUnavailableUser(t *testing.T) {
	h := newHarness(t)
	h.srv.FailUser("down", 1<<30)
	path := writeFile(t, "ops.jsonl", `{"op":"grant","user":"up","id":"g","amount":5,"timestamp":1}
{"op":"grant","user":"down","id":"g","amount":5,"timestamp":1}
`)
	code, out, errs := h.run("import", path, "--retry-budget", "200ms")
	if code != 1 || !regexp.MustCompile(`(?m)^applied +1$`).MatchString(out) || !regexp.MustCompile(`(?m)^  unavailable +1$`).MatchString(out) {
		t.Errorf("exit %d\n%s", code, out)
	}
	if !strings.Contains(errs, "line 2: failed (unavailable)") {
		t.Errorf("stderr:\n%s", errs)
	}
}
