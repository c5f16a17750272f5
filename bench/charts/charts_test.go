package charts

import (
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ration/ration/bench/report"
)

func cdf(scale time.Duration) []report.Point {
	var ps []report.Point
	for _, q := range report.CDFQuantiles() {
		ps = append(ps, report.Point{Q: q, Latency: time.Duration(q * q * float64(scale))})
	}
	return ps
}

func rows() []report.Row {
	var rs []report.Row
	for _, c := range []int{1, 8, 64, 256} {
		for _, s := range []report.Row{
			{System: report.Ration, Layout: "shared", Nodes: 3},
			{System: report.Ration, Layout: "bolt", Nodes: 3},
			{System: report.Etcd, Nodes: 3},
			{System: report.Postgres, Nodes: 1},
		} {
			s.Load, s.Clients, s.OpsPerSec, s.CDF = report.LoadWrite, c, float64(100*c), cdf(time.Duration(c)*time.Millisecond)
			rs = append(rs, s)
		}
	}
	return append(rs, report.Row{System: report.Etcd, Nodes: 1, Load: report.LoadOpen, Clients: 256, Rate: 5000, CDF: cdf(10 * time.Millisecond)})
}

func decodes(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() < 400 || b.Dy() < 300 {
		t.Errorf("%s is %v", path, b)
	}
}

func TestAllDrawsEveryChartWithRows(t *testing.T) {
	dir := t.TempDir()
	cs, err := All(rows(), filepath.Join(dir), filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 3 {
		t.Fatalf("charts %+v, want 3", cs)
	}
	base := filepath.Base(dir)
	for i, f := range []string{ThroughputFile, CDF64File, CDFOpenLoopFile} {
		if want := base + "/" + f; cs[i].Path != want {
			t.Errorf("chart %d path %q, want %q (relative to the doc)", i, cs[i].Path, want)
		}
		decodes(t, filepath.Join(dir, f))
	}
}

func TestChartsWithoutRows(t *testing.T) {
	dir := t.TempDir()
	if err := Throughput(nil, filepath.Join(dir, "t.png")); !errors.Is(err, ErrNoData) {
		t.Errorf("Throughput without rows: %v", err)
	}
	// The quick run has no open-loop rows: that chart is left out.
	var closed []report.Row
	for _, r := range rows() {
		if r.Load != report.LoadOpen {
			closed = append(closed, r)
		}
	}
	cs, err := All(closed, dir, dir)
	if err != nil || len(cs) != 2 {
		t.Errorf("All without open-loop rows: %+v, %v", cs, err)
	}
}

func TestSeriesNames(t *testing.T) {
	for _, c := range []struct {
		r    report.Row
		want string
	}{
		{report.Row{System: report.Ration, Nodes: 1, Layout: "bolt"}, "ration 1 node bolt"},
		{report.Row{System: report.Ration, Nodes: 3, Layout: "default"}, "ration 3 nodes default"},
		{report.Row{System: report.Etcd, Nodes: 3}, "etcd 3 members"},
		{report.Row{System: report.Postgres, Nodes: 1}, "postgres"},
	} {
		if got := Series(c.r); got != c.want {
			t.Errorf("Series = %q, want %q", got, c.want)
		}
	}
}
