// Package charts draws the benchmark's PNG charts with gonum plot:
// throughput against concurrency for one write per call, and the latency
// CDFs of the 64-client writes and of the open-loop writes at half of
// each system's best rate.
package charts

import (
	"errors"
	"fmt"
	"image/color"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/ration/ration/bench/report"
)

// ErrNoData is returned for a chart none of the rows can draw.
var ErrNoData = errors.New("charts: no rows to draw")

// File names of the charts in the chart directory.
const (
	ThroughputFile  = "throughput-vs-concurrency.png"
	CDF64File       = "latency-cdf-64-clients.png"
	CDFOpenLoopFile = "latency-cdf-half-rate.png"
)

// Series names a system configuration: "ration 3 nodes bolt", "etcd 1
// member", "postgres".
func Series(r report.Row) string {
	if r.System == report.Postgres {
		return r.System
	}
	unit := " node"
	if r.System == report.Etcd {
		unit = " member"
	}
	if r.Nodes != 1 {
		unit += "s"
	}
	s := r.System + " " + strconv.Itoa(r.Nodes) + unit
	if r.Layout != "" {
		s += " " + r.Layout
	}
	return s
}

// style gives each configuration a colour (by system and size) and a
// dash pattern (by layout), stable whatever rows a run has.
func style(r report.Row) (color.Color, []vg.Length) {
	i := map[string]int{report.Ration: 0, report.Etcd: 2, report.Postgres: 4}[r.System]
	if r.Nodes > 1 {
		i++
	}
	var dashes []vg.Length
	if r.Layout == "bolt" {
		dashes = []vg.Length{vg.Points(6), vg.Points(3)}
	}
	return plotutil.Color(i), dashes
}

// Throughput plots ops/s against clients for every configuration's
// closed-loop one-write-per-call rows, both axes logarithmic.
func Throughput(rows []report.Row, path string) error {
	bySeries := map[string][]report.Row{}
	var order []string
	var ticks []float64
	for _, r := range rows {
		if r.Load != report.LoadWrite || r.OpsPerSec <= 0 {
			continue
		}
		s := Series(r)
		if _, ok := bySeries[s]; !ok {
			order = append(order, s)
		}
		bySeries[s] = append(bySeries[s], r)
		if !slices.Contains(ticks, float64(r.Clients)) {
			ticks = append(ticks, float64(r.Clients))
		}
	}
	if len(order) == 0 {
		return fmt.Errorf("%w: throughput", ErrNoData)
	}
	p := plot.New()
	p.Title.Text = "One write per call: throughput against concurrency"
	p.X.Label.Text = "concurrent clients"
	p.Y.Label.Text = "operations/s"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	slices.Sort(ticks)
	var xt plot.ConstantTicks
	for _, t := range ticks {
		xt = append(xt, plot.Tick{Value: t, Label: strconv.Itoa(int(t))})
	}
	p.X.Tick.Marker = xt
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	for _, s := range order {
		rs := bySeries[s]
		slices.SortFunc(rs, func(a, b report.Row) int { return a.Clients - b.Clients })
		xys := make(plotter.XYs, len(rs))
		for i, r := range rs {
			xys[i] = plotter.XY{X: float64(r.Clients), Y: r.OpsPerSec}
		}
		if err := addLine(p, s, rs[0], xys); err != nil {
			return err
		}
		// Points mark the measured client counts; the lines only join them.
		pts, err := plotter.NewScatter(xys)
		if err != nil {
			return fmt.Errorf("charts: %s: %w", s, err)
		}
		pts.Color, _ = style(rs[0])
		p.Add(pts)
	}
	return save(p, path)
}

// CDF plots the call latency distribution of every row of the load (and,
// for closed loops, the client count), latency on a logarithmic axis.
func CDF(rows []report.Row, load string, clients int, title, path string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "call latency (ms)"
	p.Y.Label.Text = "fraction of calls at or below"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top, p.Legend.Left = false, false
	n := 0
	for _, r := range rows {
		if r.Load != load || (load != report.LoadOpen && r.Clients != clients) || len(r.CDF) == 0 {
			continue
		}
		xys := make(plotter.XYs, 0, len(r.CDF))
		for _, pt := range r.CDF {
			// A log axis cannot show 0; a sub-microsecond latency is
			// drawn at 1 µs.
			ms := max(float64(pt.Latency), float64(time.Microsecond)) / float64(time.Millisecond)
			xys = append(xys, plotter.XY{X: ms, Y: pt.Q})
		}
		name := Series(r)
		if load == report.LoadOpen {
			name += " @ " + report.Rate(r.Rate) + "/s"
		}
		if err := addLine(p, name, r, xys); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", ErrNoData, title)
	}
	return save(p, path)
}

func addLine(p *plot.Plot, name string, r report.Row, xys plotter.XYs) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return fmt.Errorf("charts: %s: %w", name, err)
	}
	l.Color, l.Dashes = style(r)
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

func save(p *plot.Plot, path string) error {
	p.Add(plotter.NewGrid())
	if err := p.Save(22*vg.Centimeter, 14*vg.Centimeter, path); err != nil {
		return fmt.Errorf("charts: save %s: %w", path, err)
	}
	return nil
}

// All draws every chart into dir and returns them with paths relative to
// docDir, the directory of the document that shows them. A chart without
// rows is left out.
func All(rows []report.Row, dir, docDir string) ([]report.Chart, error) {
	type chart struct {
		title, file string
		draw        func(path string) error
	}
	cdf := func(load string, clients int, title string) func(string) error {
		return func(path string) error { return CDF(rows, load, clients, title, path) }
	}
	list := []chart{
		{"Throughput against concurrency", ThroughputFile, func(path string) error { return Throughput(rows, path) }},
		{"Latency CDF, one write per call, 64 clients", CDF64File, cdf(report.LoadWrite, 64, "One write per call, 64 clients: latency CDF")},
		{"Latency CDF at half the best write rate, open loop", CDFOpenLoopFile, cdf(report.LoadOpen, 0, "Writes at half the best rate (open loop): latency CDF")},
	}
	var out []report.Chart
	for _, c := range list {
		path := filepath.Join(dir, c.file)
		err := c.draw(path)
		if errors.Is(err, ErrNoData) {
			continue
		}
		if err != nil {
			return out, err
		}
		rel, err := filepath.Rel(docDir, path)
		if err != nil {
			return out, fmt.Errorf("charts: %w", err)
		}
		out = append(out, report.Chart{Title: c.title, Path: filepath.ToSlash(rel)})
	}
	return out, nil
}
