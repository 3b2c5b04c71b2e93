package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strings"
)

// Plot draws two charts as one SVG: enrolments/s and p99 latency against
// concurrency, one line per path (and batch size). Hand-written SVG: the
// report needs lines and labels, not a plotting library.
func Plot(results []Result, w io.Writer) error {
	type series struct {
		name   string
		points []Result
	}
	byName := map[string]*series{}
	var names []string
	concs := map[int]bool{}
	for _, r := range results {
		name := r.Path
		if r.BatchSize > 0 {
			name = fmt.Sprintf("%s ×%d", r.Path, r.BatchSize)
		}
		if byName[name] == nil {
			byName[name] = &series{name: name}
			names = append(names, name)
		}
		byName[name].points = append(byName[name].points, r)
		concs[r.Concurrency] = true
	}
	var xs []int
	for c := range concs {
		xs = append(xs, c)
	}
	sort.Ints(xs)
	if len(xs) == 0 {
		return fmt.Errorf("plot: no results")
	}
	const (
		width, height = 900, 360
		left, right   = 70, 220
		top, bottom   = 30, 40
		plotW, plotH  = width - left - right, height - top - bottom
	)
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"}
	xAt := func(c int) float64 {
		i := sort.SearchInts(xs, c)
		if len(xs) == 1 {
			return left + plotW/2
		}
		return left + float64(i)*plotW/float64(len(xs)-1)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, 2*height)
	chart := func(offset int, title string, value func(Result) float64, unit string) {
		maxV := 0.0
		for _, r := range results {
			maxV = math.Max(maxV, value(r))
		}
		if maxV == 0 {
			maxV = 1
		}
		yAt := func(v float64) float64 { return float64(offset+top) + plotH - v/maxV*plotH }
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", left, offset+18, html.EscapeString(title))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", left, offset+top, plotW, plotH)
		for i := 0; i <= 4; i++ {
			v := maxV * float64(i) / 4
			fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="end">%.0f%s</text>`+"\n", left-6, yAt(v)+4, v, unit)
		}
		for _, c := range xs {
			fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%d</text>`+"\n", xAt(c), offset+top+plotH+16, c)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">concurrent clients</text>`+"\n", left+plotW/2, offset+top+plotH+32)
		for i, name := range names {
			s := byName[name]
			color := colors[i%len(colors)]
			var pts []string
			for _, r := range s.points {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", xAt(r.Concurrency), yAt(value(r))))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", left+plotW+10, offset+top+14+16*i, color, html.EscapeString(name))
		}
	}
	chart(0, "enrolments per second", func(r Result) float64 { return r.PerSecond }, "")
	chart(height, "p99 latency", func(r Result) float64 { return float64(r.P99.Milliseconds()) }, " ms")
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
