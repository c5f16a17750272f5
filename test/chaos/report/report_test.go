package report

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/test/chaos/check"
	"github.com/ration/ration/test/chaos/history"
)

func sample() (Report, []history.Op) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := Report{
		Pass: true, Seed: 7, Nodes: 3, Duration: 60 * time.Second, Started: start,
		Faults: []Fault{
			{Kind: "kill-leader", Target: "n2", Start: start.Add(5 * time.Second), End: start.Add(9 * time.Second)},
			{Kind: "partition-one", Target: "n1 <&> rest", Detail: "iptables DROP", Start: start.Add(15 * time.Second), End: start.Add(25 * time.Second)},
			{Kind: "clock-jump", Target: "n3", Detail: "+1h", Start: start.Add(30 * time.Second)},
			{Kind: "snapshot-catchup", Target: "n1", Start: start.Add(30*time.Second + 100*time.Millisecond), End: start.Add(40 * time.Second)},
		},
		Checks: map[string]CheckResult{
			CheckLinearizability: {Pass: true}, CheckInvariants: {Pass: true}, CheckStateHashes: {Pass: true},
			CheckLiveness: {Pass: true, Detail: "first write after heal in 1.2s"}, CheckThroughput: {Pass: true},
		},
	}
	var ops []history.Op
	for i := range 600 {
		t := start.Add(time.Duration(i) * 100 * time.Millisecond)
		op := history.Op{Seq: int64(i + 1), Kind: history.Grant, Outcome: history.OK, Invoke: t.UnixNano(), Return: t.Add(3 * time.Millisecond).UnixNano()}
		switch i % 5 {
		case 1:
			op.Kind = history.Balance
		case 2:
			op.Kind, op.Outcome = history.Deduct, history.Refused
		case 3:
			if i > 150 && i < 250 {
				op.Outcome, op.Return = history.Unknown, 0
			}
		}
		ops = append(ops, op)
	}
	r.Ops, r.OKWrites = len(ops), 200
	r.Throughput = 8
	return r, ops
}

func TestSummary(t *testing.T) {
	r, _ := sample()
	got := Summary(r)
	want := "PASS seed=7 nodes=3 duration=1m0s ops=600 ok-writes=200 faults=4 anomalies=0 throughput=8.0/s"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	r.Pass = false
	r.Checks[CheckLinearizability] = CheckResult{Pass: false}
	r.Checks[CheckInvariants] = CheckResult{Pass: false}
	r.Anomalies = []check.Anomaly{{Kind: check.KindLostWrite, User: "u-7-001", Detail: "grant g-1-2"}}
	got = Summary(r)
	for _, s := range []string{"FAIL seed=7", "anomalies=1", "failed=invariants,linearizability", "first-anomaly=lost-write/u-7-001"} {
		if !strings.Contains(got, s) {
			t.Errorf("%q lacks %q", got, s)
		}
	}
	if strings.Contains(got, "\n") {
		t.Error("summary is not one line")
	}
}

func TestWrite(t *testing.T) {
	r, ops := sample()
	dir := filepath.Join(t.TempDir(), "out")
	if err := Write(dir, r, ops); err != nil {
		t.Fatal(err)
	}
	back, err := Read(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if back.Duration != r.Duration || back.Seed != 7 || len(back.Faults) != 4 || !back.Faults[2].End.IsZero() ||
		back.Checks[CheckLiveness].Detail != r.Checks[CheckLiveness].Detail {
		t.Errorf("report.json round trip: %+v", back)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "report.json"))
	if !strings.Contains(string(raw), `"duration_s": 60`) {
		t.Errorf("report.json should give the duration in seconds:\n%s", raw)
	}

	svg, err := os.ReadFile(filepath.Join(dir, "timeline.svg"))
	if err != nil {
		t.Fatal(err)
	}
	texts := parseSVG(t, svg)
	all := strings.Join(texts, "\n")
	for _, want := range []string{"kill-leader n2", "partition-one n1 <&> rest", "clock-jump n3", "snapshot-catchup n1",
		"time since start (s)", "calls per second", "acknowledged writes/s", "failed or unknown/s", "PASS seed=7"} {
		if !strings.Contains(all, want) {
			t.Errorf("timeline lacks text %q", want)
		}
	}
	if n := bytes.Count(svg, []byte(`class="series"`)); n != 4 {
		t.Errorf("%d series, want 4", n)
	}
	if n := bytes.Count(svg, []byte(`class="fault"`)); n != 4 {
		t.Errorf("%d fault bands, want 4", n)
	}
}

// The two faults that start 100ms apart must not have their labels drawn
// over each other.
func TestLabelsDoNotOverlap(t *testing.T) {
	r, _ := sample()
	start, end := span(r, nil)
	lanes, laneOf := packLabels(r.Faults, start, end.Sub(start))
	if lanes < 2 || laneOf[2] == laneOf[3] {
		t.Errorf("lanes %d, lane of each fault %v", lanes, laneOf)
	}
}

func TestEmptyRunIsValidSVG(t *testing.T) {
	parseSVG(t, Timeline(Report{}, nil))
	parseSVG(t, Timeline(Report{Started: time.Now()}, nil))
}

// parseSVG checks the document is well-formed XML with an svg root and
// returns its texts.
func parseSVG(t *testing.T, b []byte) []string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	var texts []string
	root := ""
	depth := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("invalid XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				root = tok.Name.Local
			}
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			if s := strings.TrimSpace(string(tok)); s != "" {
				texts = append(texts, s)
			}
		}
	}
	if root != "svg" || depth != 0 {
		t.Fatalf("root %q, depth %d", root, depth)
	}
	return texts
}
