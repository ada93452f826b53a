package console

import (
	"fmt"
	"html/template"
	"strings"
)

// chart draws the per-minute series as a small inline SVG (no script, no
// library): received as a line, synced as bars.
func chart(series []Point) template.HTML {
	const w, h, pad = 600.0, 140.0, 4.0
	peak := 1
	for _, p := range series {
		peak = max(peak, p.Received, p.Synced)
	}
	n := len(series)
	if n == 0 {
		return ""
	}
	step := (w - 2*pad) / float64(n)
	y := func(v int) float64 { return h - pad - (h-2*pad)*float64(v)/float64(peak) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" preserveAspectRatio="none" role="img" aria-label="Events per minute, last hour: peak %d">`, w, h, peak)
	fmt.Fprintf(&b, `<line class="axis" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, pad, h-pad, w-pad, h-pad)
	for i, p := range series {
		if p.Synced > 0 {
			x := pad + float64(i)*step
			fmt.Fprintf(&b, `<rect class="synced" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %d synced</title></rect>`,
				x+step*0.15, y(p.Synced), step*0.7, h-pad-y(p.Synced), p.Start.Format("15:04"), p.Synced)
		}
	}
	var pts []string
	for i, p := range series {
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", pad+(float64(i)+0.5)*step, y(p.Received)))
	}
	fmt.Fprintf(&b, `<polyline class="received" points="%s"/>`, strings.Join(pts, " "))
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built only from numbers and times formatted above
}
