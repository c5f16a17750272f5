package report

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ration/ration/test/chaos/history"
)

// Layout of the timeline, in SVG user units.
const (
	svgWidth   = 1200
	plotLeft   = 70
	plotRight  = svgWidth - 30
	titleH     = 44
	laneH      = 15
	plotH      = 300
	axisH      = 40
	legendH    = 30
	labelFont  = 11
	charWidth  = 6.2 // of an 11px sans-serif character, for label packing
	maxBins    = 600
	minBinSize = time.Second
)

// series is one line of the chart.
type series struct {
	name, color string
	counts      []int
}

// Timeline draws the run: calls per second by outcome, and every fault as
// a labelled band over its duration. It is hand-written SVG so that the
// harness needs no plotting library.
func Timeline(r Report, ops []history.Op) []byte {
	start, end := span(r, ops)
	total := end.Sub(start)
	bin := minBinSize
	if n := total / bin; n > maxBins {
		bin = (total/maxBins + time.Second - 1).Truncate(time.Second)
	}
	nbins := max(1, int((total+bin-1)/bin))

	okWrites := series{name: "acknowledged writes/s", color: "#1f77b4", counts: make([]int, nbins)}
	okReads := series{name: "balance reads/s", color: "#2ca02c", counts: make([]int, nbins)}
	refused := series{name: "refused (insufficient, conflict, invalid)/s", color: "#7f7f7f", counts: make([]int, nbins)}
	bad := series{name: "failed or unknown/s", color: "#d62728", counts: make([]int, nbins)}
	for _, op := range ops {
		at := op.Return
		if at == 0 {
			at = op.Invoke
		}
		i := int(time.Unix(0, at).Sub(start) / bin)
		if i == nbins && !time.Unix(0, at).After(end) {
			i-- // at the very end: the last bin's
		}
		if i < 0 || i >= nbins {
			continue
		}
		switch {
		case op.Outcome == history.OK && op.Kind == history.Balance:
			okReads.counts[i]++
		case op.Outcome == history.OK:
			okWrites.counts[i]++
		case op.Outcome == history.Failed || op.Outcome == history.Unknown:
			bad.counts[i]++
		default:
			refused.counts[i]++
		}
	}
	all := []series{okWrites, okReads, refused, bad}

	lanes, laneOf := packLabels(r.Faults, start, total)
	plotTop := titleH + laneH*max(lanes, 1) + 6
	height := plotTop + plotH + axisH + legendH
	x := func(t time.Time) float64 {
		if total <= 0 {
			return plotLeft
		}
		return plotLeft + float64(t.Sub(start))/float64(total)*(plotRight-plotLeft)
	}
	peak := 1.0
	for _, s := range all {
		for _, c := range s.counts {
			peak = max(peak, float64(c)/bin.Seconds())
		}
	}
	yStep := niceStep(peak, 5)
	yMax := math.Ceil(peak/yStep) * yStep
	y := func(v float64) float64 { return float64(plotTop+plotH) - v/yMax*plotH }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="%d">
`, svgWidth, height, svgWidth, height, labelFont)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>
<text x="%d" y="18" font-size="14" font-weight="bold">%s</text>
<text x="%d" y="34" fill="#555">started %s; bins of %s</text>
`, plotLeft, esc(Summary(r)), plotLeft, esc(start.UTC().Format(time.RFC3339)), bin)

	// Fault bands under the lines, labels above the plot.
	for i, f := range r.Faults {
		x0 := x(f.Start)
		w := 2.0
		if !f.End.IsZero() && f.End.After(f.Start) {
			w = max(w, x(f.End)-x0)
		}
		color := faultColor(f.Kind)
		label := faultLabel(f)
		tip := label
		if f.Detail != "" {
			tip += ": " + f.Detail
		}
		ly := titleH + laneH*laneOf[i] + laneH - 3
		fmt.Fprintf(&b, `<g class="fault"><title>%s</title>
<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" fill-opacity="0.22"/>
<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="1"/>
<text x="%.1f" y="%d" fill="%s">%s</text></g>
`, esc(tip), x0, plotTop, w, plotH, color, x0, ly+3, x0, plotTop+plotH, color, x0+2, ly, darker(color), esc(label))
	}

	// Axes, grid and ticks.
	fmt.Fprintf(&b, `<g stroke="#ccc" stroke-width="1">`)
	for v := 0.0; v <= yMax+yStep/2; v += yStep {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`, plotLeft, y(v), plotRight, y(v))
	}
	fmt.Fprintf(&b, "</g>\n")
	for v := 0.0; v <= yMax+yStep/2; v += yStep {
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", plotLeft-6, y(v)+4, trimFloat(v))
	}
	xStep := niceDuration(total, 10)
	for t := time.Duration(0); t <= total; t += xStep {
		px := x(start.Add(t))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n",
			px, plotTop+plotH, px, plotTop+plotH+5, px, plotTop+plotH+18, fmtTick(t))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>
<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>
<text x="%d" y="%d" text-anchor="middle">time since start (s)</text>
<text transform="translate(16 %d) rotate(-90)" text-anchor="middle">calls per second</text>
`, plotLeft, plotTop+plotH, plotRight, plotTop+plotH, plotLeft, plotTop, plotLeft, plotTop+plotH,
		(plotLeft+plotRight)/2, plotTop+plotH+34, plotTop+plotH/2)

	// The lines, one point per bin at its middle.
	for _, s := range all {
		var pts []string
		for i, c := range s.counts {
			t := start.Add(time.Duration(i)*bin + bin/2)
			if t.After(end) {
				t = end
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(t), y(float64(c)/bin.Seconds())))
		}
		fmt.Fprintf(&b, `<polyline class="series" fill="none" stroke="%s" stroke-width="1.5" points="%s"><title>%s</title></polyline>`+"\n",
			s.color, strings.Join(pts, " "), esc(s.name))
	}

	// Legend.
	ly := plotTop + plotH + axisH + 14
	lx := plotLeft
	for _, s := range all {
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/><text x="%d" y="%d">%s</text>`+"\n",
			lx, ly-4, lx+20, ly-4, s.color, lx+24, ly, esc(s.name))
		lx += 24 + int(float64(len(s.name))*charWidth) + 24
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="20" height="10" fill="#ff7f0e" fill-opacity="0.22" stroke="#ff7f0e"/><text x="%d" y="%d">fault (kind target)</text>`+"\n",
		lx, ly-9, lx+24, ly)
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// span is the time the picture covers: the run, and anything recorded
// outside it.
func span(r Report, ops []history.Op) (time.Time, time.Time) {
	start, end := r.Started, r.Started.Add(r.Duration)
	for _, op := range ops {
		t0 := time.Unix(0, op.Invoke)
		t1 := t0
		if op.Return > 0 {
			t1 = time.Unix(0, op.Return)
		}
		if start.IsZero() || t0.Before(start) {
			start = t0
		}
		if t1.After(end) {
			end = t1
		}
	}
	for _, f := range r.Faults {
		if start.IsZero() || f.Start.Before(start) {
			start = f.Start
		}
		end = later(end, f.Start, f.End)
	}
	if end.Before(start) {
		end = start
	}
	return start, end
}

func later(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

// packLabels puts each fault's label in the first lane where it does not
// overlap the label before it, and returns the number of lanes.
func packLabels(faults []Fault, start time.Time, total time.Duration) (int, []int) {
	laneOf := make([]int, len(faults))
	var laneEnd []float64 // rightmost x used in each lane
	for i, f := range faults {
		x0 := plotLeft
		if total > 0 {
			x0 = plotLeft + int(float64(f.Start.Sub(start))/float64(total)*(plotRight-plotLeft))
		}
		x1 := float64(x0) + float64(len(faultLabel(f)))*charWidth + 6
		lane := 0
		for lane < len(laneEnd) && laneEnd[lane] > float64(x0) {
			lane++
		}
		if lane == len(laneEnd) {
			laneEnd = append(laneEnd, 0)
		}
		laneEnd[lane] = x1
		laneOf[i] = lane
	}
	return len(laneEnd), laneOf
}

func faultLabel(f Fault) string {
	if f.Target == "" {
		return f.Kind
	}
	return f.Kind + " " + f.Target
}

// faultColor groups fault kinds by family, so that a reader sees at a
// glance which were crashes, pauses, network faults or clock faults.
func faultColor(kind string) string {
	switch {
	case strings.HasPrefix(kind, "kill"):
		return "#ff7f0e"
	case strings.HasPrefix(kind, "pause"):
		return "#9467bd"
	case strings.HasPrefix(kind, "partition"):
		return "#bcbd22"
	case kind == "delay" || kind == "loss":
		return "#17becf"
	case strings.HasPrefix(kind, "clock"):
		return "#e377c2"
	case strings.HasPrefix(kind, "snapshot"):
		return "#8c564b"
	}
	return "#7f7f7f"
}

// darker makes a label readable on white.
func darker(hex string) string {
	var r, g, b int
	if _, err := fmt.Sscanf(hex, "#%02x%02x%02x", &r, &g, &b); err != nil {
		return hex
	}
	return fmt.Sprintf("#%02x%02x%02x", r*6/10, g*6/10, b*6/10)
}

// niceStep is a round step (1, 2 or 5 times a power of ten) that divides
// [0, peak] into about n intervals.
func niceStep(peak float64, n int) float64 {
	raw := peak / float64(n)
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// niceDuration is a round tick interval for about n ticks over total.
func niceDuration(total time.Duration, n int) time.Duration {
	for _, d := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second,
		15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute,
		15 * time.Minute, 30 * time.Minute, time.Hour} {
		if total/d <= time.Duration(n) {
			return d
		}
	}
	return (total / time.Duration(n)).Round(time.Hour)
}

func fmtTick(d time.Duration) string {
	return trimFloat(d.Seconds())
}

func trimFloat(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.2g", v)
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
