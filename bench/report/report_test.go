package report

import (
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/bench/load"
	"github.com/ration/ration/internal/hist"
)

func row(system, layout string, nodes int, load string, clients int, ops float64, p99 time.Duration) Row {
	return Row{System: system, Layout: layout, Nodes: nodes, Load: load, Clients: clients, OpsPerSec: ops, P99: p99}
}

// sample is a run with every row the targets need, for one layout.
func sample() []Row {
	ms := time.Millisecond
	return []Row{
		row(Ration, "shared", 3, LoadWrite, 64, 12000, 20*ms),
		row(Ration, "shared", 3, LoadBatch, 64, 60000, 120*ms),
		row(Ration, "shared", 3, LoadRead, 64, 30000, 5*ms),
		row(Ration, "shared", 3, LoadStale, 64, 50000, 3*ms),
		{System: Ration, Layout: "shared", Nodes: 3, Load: LoadOpen, Clients: 256, Rate: 6000, P99: 40 * ms},
		row(Ration, "shared", 1, LoadWrite, 64, 15000, 9*ms),
		row(Ration, "shared", 1, LoadRead, 64, 40000, 2*ms),
		{System: Ration, Layout: "shared", Nodes: 1, Load: LoadOpen, Clients: 256, Rate: 7500, P99: 25 * ms},
		row(Etcd, "", 3, LoadWrite, 64, 10000, 30*ms),
		row(Etcd, "", 3, LoadCAS, 64, 2000, 90*ms),
		row(Etcd, "", 3, LoadRead, 64, 20000, 6*ms),
		row(Etcd, "", 1, LoadWrite, 64, 16000, 8*ms),
		row(Etcd, "", 1, LoadRead, 64, 25000, 3*ms),
		row(Postgres, "", 1, LoadWrite, 64, 7000, 15*ms),
	}
}

func TestTargetsFollowTheIssue(t *testing.T) {
	got := Targets(sample(), []string{"shared"})
	want := []struct {
		ratio float64
		met   bool
	}{
		{1.2, true},     // 12k vs etcd 10k
		{1.5, true},     // p99 20 ms vs etcd's 30 ms
		{6, true},       // vs CAS 2k, goal 4x
		{0.9375, false}, // 15k vs etcd 1 member 16k
		{15000.0 / 7000, true},
		{6, true},   // batch 60k vs 10k, goal 5x
		{0, false},  // batch p99 120 ms > 100 ms
		{1.6, true}, // 40k vs 25k
		{1.5, true}, // 30k vs 20k
		{2.5, false},
		{0, false}, // 1 node open loop p99 25 ms > 20 ms
		{0, true},  // 3 nodes open loop p99 40 ms <= 50 ms
	}
	if len(got) != len(want) {
		t.Fatalf("%d targets, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if d := got[i].Ratio - w.ratio; d > 1e-9 || d < -1e-9 || got[i].Met != w.met {
			t.Errorf("target %d (%s): ratio %v met %v, want %v %v", i, got[i].Name, got[i].Ratio, got[i].Met, w.ratio, w.met)
		}
		if got[i].Layout != "shared" {
			t.Errorf("target %d layout %q", i, got[i].Layout)
		}
	}
}

func TestTargetsSkipMissingRowsAndOtherLayouts(t *testing.T) {
	rows := []Row{
		row(Ration, "bolt", 3, LoadWrite, 64, 5000, time.Millisecond),
		row(Etcd, "", 3, LoadWrite, 64, 10000, time.Millisecond),
	}
	if got := Targets(rows, []string{"shared"}); len(got) != 0 {
		t.Errorf("shared targets from bolt rows: %+v", got)
	}
	got := Targets(rows, []string{"bolt"})
	if len(got) != 2 || got[0].Met || got[0].Ratio != 0.5 {
		t.Errorf("bolt targets: %+v, want the throughput one at 0.5x unmet, and the p99 one", got)
	}
}

func TestTargetsFailRowsWithErrors(t *testing.T) {
	rows := sample()
	rows[0].Errors = 1
	if got := Targets(rows, []string{"shared"}); got[0].Met {
		t.Errorf("a row with failed calls met its target: %+v", got[0])
	}
}

func TestBestWriteRateIsTheSweepsMaximum(t *testing.T) {
	rows := []Row{
		row(Etcd, "", 3, LoadWrite, 1, 500, 0),
		row(Etcd, "", 3, LoadWrite, 64, 9000, 0),
		row(Etcd, "", 3, LoadWrite, 256, 8000, 0),
		row(Etcd, "", 3, LoadRead, 64, 20000, 0),
		row(Etcd, "", 1, LoadWrite, 64, 15000, 0),
	}
	if got := BestWriteRate(rows, Etcd, "", 3); got != 9000 {
		t.Errorf("best rate %v, want 9000", got)
	}
	if got := BestWriteRate(rows, Ration, "", 3); got != 0 {
		t.Errorf("best rate with no rows %v, want 0", got)
	}
}

func TestFromResultTakesPercentilesOfTheCalls(t *testing.T) {
	h := &hist.Histogram{}
	for i := 1; i <= 1000; i++ {
		h.Record(int64(i) * int64(time.Millisecond))
	}
	r := FromResult(Row{}, load.Result{Window: 2 * time.Second, Calls: 1000, Ops: 64000, Errors: 3, Latency: h})
	if r.OpsPerSec != 32000 || r.CallsPerSec != 500 || r.Errors != 3 {
		t.Errorf("rates %v %v errors %d", r.OpsPerSec, r.CallsPerSec, r.Errors)
	}
	near := func(name string, got time.Duration, want time.Duration) {
		if got < want || float64(got) > float64(want)*1.01 {
			t.Errorf("%s = %v, want %v (to 1%% above)", name, got, want)
		}
	}
	near("p50", r.P50, 500*time.Millisecond)
	near("p99", r.P99, 990*time.Millisecond)
	near("p99.9", r.P999, 999*time.Millisecond)
	if r.Max != time.Second {
		t.Errorf("max %v", r.Max)
	}
	if len(r.CDF) != len(CDFQuantiles()) || r.CDF[len(r.CDF)-1].Latency != time.Second {
		t.Errorf("CDF has %d points ending at %v", len(r.CDF), r.CDF[len(r.CDF)-1])
	}
	for i := 1; i < len(r.CDF); i++ {
		if r.CDF[i].Q <= r.CDF[i-1].Q || r.CDF[i].Latency < r.CDF[i-1].Latency {
			t.Fatalf("CDF not monotonic at %d: %v then %v", i, r.CDF[i-1], r.CDF[i])
		}
	}
}

func TestFromResultOfOnlyFailures(t *testing.T) {
	r := FromResult(Row{}, load.Result{Window: time.Second, Errors: 5, Latency: &hist.Histogram{}})
	if r.OpsPerSec != 0 || r.P99 != 0 || r.CDF != nil {
		t.Errorf("a run without successes reports %+v", r)
	}
}

func TestVsEtcdComparesLikeWithLike(t *testing.T) {
	rows := sample()
	cases := map[int]string{0: "1.20×", 1: "6.00×", 2: "1.50×", 3: "2.50×", 4: "", 8: ""}
	for i, want := range cases {
		if got := VsEtcd(rows, rows[i]); got != want {
			t.Errorf("row %d (%s %s): %q, want %q", i, rows[i].System, rows[i].Load, got, want)
		}
	}
}

func TestFormatting(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999.4: "999", 1000: "1,000", 1234567.8: "1,234,568"} {
		if got := Rate(v); got != want {
			t.Errorf("Rate(%v) = %q, want %q", v, got, want)
		}
	}
	for d, want := range map[time.Duration]string{
		1234 * time.Microsecond: "1.23 ms", 12345 * time.Microsecond: "12.3 ms",
		123456 * time.Microsecond: "123 ms", 0: "0.00 ms",
	} {
		if got := Latency(d); got != want {
			t.Errorf("Latency(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestMarkdownHasTheTablesAndCharts(t *testing.T) {
	run := Run{Command: "make bench", Layouts: []string{"shared"}, Rows: sample(), Failures: []string{"postgres: boom | bang"}}
	md := Markdown(run, []Chart{{Title: "Throughput", Path: "bench/t.png"}})
	for _, want := range []string{
		"`make bench`", "### Targets", "### Every row", "![Throughput](bench/t.png)",
		"| ration | shared | 3 | write | ", "| 12,000 |", `boom | bang`,
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	// Every table line has the header's number of cells.
	for line := range strings.Lines(md) {
		if strings.HasPrefix(line, "| ration") && strings.Count(strings.ReplaceAll(line, `\|`, ""), "|") != len(rowHeader)+1 {
			t.Errorf("row line with the wrong number of cells: %q", line)
		}
	}
}

func TestReplaceSection(t *testing.T) {
	doc := "# Title\n\nintro\n" + BeginMarker + "\nold\ntable\n" + EndMarker + "\n\nafter\n"
	got, err := ReplaceSection(doc, "new")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Title\n\nintro\n" + BeginMarker + "\nnew\n" + EndMarker + "\n\nafter\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	again, err := ReplaceSection(got, "new")
	if err != nil || again != got {
		t.Errorf("rewriting with the same section changed the document: %q, %v", again, err)
	}
	for _, bad := range []string{
		"no markers", BeginMarker + " only", EndMarker + " before " + BeginMarker,
		BeginMarker + BeginMarker + EndMarker,
	} {
		if _, err := ReplaceSection(bad, "x"); err == nil {
			t.Errorf("ReplaceSection(%q) did not fail", bad)
		}
	}
	if _, err := ReplaceSection(doc, "a "+EndMarker); err == nil {
		t.Error("a section holding a marker was written")
	}
}

func FuzzReplaceSection(f *testing.F) {
	f.Add("a\n"+BeginMarker+"\nold\n"+EndMarker+"\nb", "new")
	f.Add(EndMarker+BeginMarker, "")
	f.Add("x", "y")
	f.Fuzz(func(t *testing.T, doc, section string) {
		out, err := ReplaceSection(doc, section)
		if err != nil {
			return
		}
		b, e := strings.Index(doc, BeginMarker), strings.Index(doc, EndMarker)
		ob, oe := strings.Index(out, BeginMarker), strings.Index(out, EndMarker)
		if out[:ob] != doc[:b] || out[oe:] != doc[e:] {
			t.Fatalf("text outside the markers changed: %q -> %q", doc, out)
		}
		if !strings.Contains(out[ob:oe], section) {
			t.Fatalf("section %q missing from %q", section, out)
		}
		if again, err := ReplaceSection(out, section); err != nil || again != out {
			t.Fatalf("second rewrite: %q, %v; want %q", again, err, out)
		}
	})
}
