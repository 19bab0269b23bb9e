package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
)

// diff is the bounce path's change against zero-copy, in percent.
func diff(bounce, zerocopy float64) float64 {
	if zerocopy == 0 {
		return 0
	}
	return (bounce/zerocopy - 1) * 100
}

// pairedDiff is the median over rounds of each round's diff: both cells
// of a round ran interleaved, so this cancels most of what other load on
// the machine does to a whole round.
func pairedDiff(c, zerocopy *Cell) float64 {
	d := &Cell{}
	for i := range min(len(c.MiBs), len(zerocopy.MiBs)) {
		d.MiBs = append(d.MiBs, diff(c.MiBs[i], zerocopy.MiBs[i]))
	}
	return d.Median()
}

// modeTitle is how the table names a mode.
func modeTitle(mode string) string {
	switch mode {
	case "bounce":
		return "bounce (pooled)"
	case "faithful":
		return "bounce --faithful"
	case "raw":
		return "raw file"
	}
	return mode
}

// WriteTable prints the seed's table: rows Read/Write x {zerocopy, bounce
// (pooled), bounce --faithful}, columns nodatasum and datasum, each cell the
// median MiB/s with the min-max range of the rounds, its diff against
// zero-copy and its ratio to the raw backing file; then the raw file and
// the QD load.
func (r *Result) WriteTable(w io.Writer) {
	cfg := r.Config
	raw := "buffered"
	if r.RawDirect {
		raw = "O_DIRECT"
	}
	fmt.Fprintf(w, "%s, %d x %d KiB direct IO, %d rounds: median [min-max] MiB/s, median of the rounds' diffs vs zerocopy, x raw file (%s)\n",
		cfg.Profile, cfg.Bytes/int64(cfg.BS), cfg.BS>>10, cfg.Rounds, raw)
	const first, col = 26, 40
	fmt.Fprintf(w, "%-*s| %-*s| %-*s|\n", first, "", col, "Nodatasum", col, "Datasum")
	line := strings.Repeat("-", first) + "+" + strings.Repeat("-", col+1) + "+" + strings.Repeat("-", col+1) + "+"
	for _, op := range []string{"read", "write"} {
		fmt.Fprintln(w, line)
		title := strings.ToUpper(op[:1]) + op[1:]
		rawMed := r.Cell(op, "raw", false).Median()
		for _, mode := range Modes {
			fmt.Fprintf(w, "%-*s|", first, fmt.Sprintf("%s (%s)", title, modeTitle(mode)))
			for _, sum := range []bool{false, true} {
				c := r.Cell(op, mode, sum)
				cell := fmt.Sprintf("%.0f [%.0f-%.0f]", c.Median(), c.Min(), c.Max())
				if mode != "zerocopy" {
					cell += fmt.Sprintf(" %+.1f%%", pairedDiff(c, r.Cell(op, "zerocopy", sum)))
				}
				if rawMed > 0 {
					cell += fmt.Sprintf(" %.2fx", c.Median()/rawMed)
				}
				fmt.Fprintf(w, " %-*s|", col, cell)
			}
			fmt.Fprintln(w)
		}
		c := r.Cell(op, "raw", false)
		fmt.Fprintf(w, "%-*s| %-*s| %-*s|\n", first, fmt.Sprintf("%s (raw file)", title), col,
			fmt.Sprintf("%.0f [%.0f-%.0f] 1.00x", c.Median(), c.Min(), c.Max()), col, "")
	}
	fmt.Fprintln(w, line)
	fmt.Fprintf(w, "Datasum writes take the buffered fallback in every mode but iomap-bounce (not in these diffs): their diffs, at most %.1f%% either way here, are what this run can resolve.\n", r.Resolution)
	r.writeCPU(w)
	r.writeLoad(w)
}

// resolution is the largest paired diff between configurations that run
// the same code: datasum writes, which fall back to buffered IO in every
// mode but iomap-bounce (commit 968f19c5b1b7; iomap-bounce bounces them
// instead), so any difference between them is noise.
func (r *Result) resolution() float64 {
	var worst float64
	zc := r.Cell("write", "zerocopy", true)
	for _, mode := range Modes {
		if c := r.Cell("write", mode, true); mode != "zerocopy" && mode != "iomap-bounce" && c != nil && zc != nil {
			worst = max(worst, math.Abs(pairedDiff(c, zc)))
		}
	}
	return worst
}

// writeCPU prints the CPU each cell spent per MiB, and what the copy a
// bounce request adds costs on its own: how far bounce would fall behind
// zero-copy if that copy never overlapped the IO.
func (r *Result) writeCPU(w io.Writer) {
	if r.Memcpy == nil || len(r.Memcpy.MiBs) == 0 {
		return
	}
	fmt.Fprintln(w, "\nCPU per MiB, µs (user + system of the whole process, the backing files' kernel work included), median [vs zerocopy]:")
	const first, col = 26, 20
	fmt.Fprintf(w, "%-*s| %-*s| %-*s|\n", first, "", col, "Nodatasum", col, "Datasum")
	for _, op := range []string{"read", "write"} {
		title := strings.ToUpper(op[:1]) + op[1:]
		for _, mode := range append(append([]string(nil), Modes...), "raw") {
			fmt.Fprintf(w, "%-*s|", first, fmt.Sprintf("%s (%s)", title, modeTitle(mode)))
			for _, sum := range []bool{false, true} {
				c := r.Cell(op, mode, sum)
				cell := ""
				if c != nil {
					cell = fmt.Sprintf("%.0f", c.CPUMedian())
					if mode != "zerocopy" && mode != "raw" {
						cell += fmt.Sprintf(" [%+.0f]", c.CPUMedian()-r.Cell(op, "zerocopy", sum).CPUMedian())
					}
				}
				fmt.Fprintf(w, " %-*s|", col, cell)
			}
			fmt.Fprintln(w)
		}
	}
	copyUs := 1e6 / r.Memcpy.Median()
	fmt.Fprintf(w, "memcpy %d KiB at a time: %.0f MiB/s, %.0f µs per MiB.", r.Config.BS>>10, r.Memcpy.Median(), copyUs)
	fmt.Fprintf(w, " Were that copy never overlapped with IO, bounce nodatasum would run at %.2fx (read) and %.2fx (write) of zerocopy here.\n",
		r.copyBound("read"), r.copyBound("write"))
}

// copyBound is zero-copy's time per MiB over that time plus one memcpy of
// the MiB: the ratio bounce gets when its copy adds to the IO in full.
func (r *Result) copyBound(op string) float64 {
	zc := r.Cell(op, "zerocopy", false).Median()
	if zc == 0 || r.Memcpy.Median() == 0 {
		return 0
	}
	t := 1 / zc
	return t / (t + 1/r.Memcpy.Median())
}

// writeLoad prints the QD load: per mode its throughput (median, each
// round's figure, the median of the rounds' diffs vs zero-copy, as the QD1
// table pairs them), peak RSS and allocations per request; then what the
// section can resolve (loadResolution).
func (r *Result) writeLoad(w io.Writer) {
	if len(r.Load) == 0 {
		return
	}
	l0 := r.Load[0]
	fmt.Fprintf(w, "\nQD%d x 1 MiB, %s nodatasum, each mode on a fresh filesystem, %d rounds in rotated order: median MiB/s [each round], median of the rounds' diffs vs zerocopy:\n",
		l0.QD, r.Config.Profile, len(l0.Rounds))
	const col = 34
	fmt.Fprintf(w, "%-19s %-*s %-*s %10s %10s %9s %10s %s\n",
		"mode", col, "write", col, "read", "base RSS", "peak RSS", "allocs/rq", "bytes/rq", "bounce pool")
	zc := r.loadOf("zerocopy")
	for _, l := range r.Load {
		pool := "-"
		if l.PoolPeak > 0 {
			pool = fmt.Sprintf("peak %d MiB, %d waits", l.PoolPeak>>20, l.PoolWaits)
		}
		var figs [2]string
		for i, write := range []bool{true, false} {
			c := l.roundCell(write)
			rs := make([]string, len(c.MiBs))
			for k, v := range c.MiBs {
				rs[k] = fmt.Sprintf("%.0f", v)
			}
			figs[i] = fmt.Sprintf("%.0f [%s]", c.Median(), strings.Join(rs, " "))
			if zc != nil && l != zc {
				figs[i] += fmt.Sprintf(" %+.1f%%", pairedDiff(c, zc.roundCell(write)))
			}
		}
		fmt.Fprintf(w, "%-19s %-*s %-*s %9dM %9dM %9.1f %10.0f %s\n", modeTitle(l.Mode), col, figs[0], col, figs[1],
			l.BaseRSS>>20, l.PeakRSS>>20, l.AllocsPerReq, l.BytesPerReq, pool)
	}
	if r.loadOf("fallback") != nil && zc != nil {
		fmt.Fprintf(w, "Reads of zerocopy and fallback run the same code (the fallback changes writes only): their diff, %.1f%% either way here, is what this section can resolve.\n", r.LoadResolution)
	}
	if l0.PeakReset {
		fmt.Fprintln(w, "peak RSS is VmHWM after the load, reset (clear_refs 5) before each run once the last one's memory was freed; base RSS is VmRSS before it; both the median of the rounds.")
	} else {
		fmt.Fprintln(w, "peak RSS is VmHWM, the process's peak since start: the kernel refused to reset it, so only the first run's figure is its own.")
	}
	fmt.Fprintln(w, "allocs/rq and bytes/rq count every Go heap allocation of the process during the load, per request (median of the rounds).")
}

// loadOf is the QD load summary of a mode, or nil.
func (r *Result) loadOf(mode string) *Load {
	for _, l := range r.Load {
		if l.Mode == mode {
			return l
		}
	}
	return nil
}

// loadResolution is resolution for the QD load, which runs nodatasum only:
// there the configurations that run the same code are the reads of
// zero-copy and of the fallback (7c2830f00c3e sends only writes to the
// buffered path), so their paired diff is noise.
func (r *Result) loadResolution() float64 {
	zc, fb := r.loadOf("zerocopy"), r.loadOf("fallback")
	if zc == nil || fb == nil {
		return 0
	}
	return math.Abs(pairedDiff(fb.roundCell(false), zc.roundCell(false)))
}

// WriteJSON writes the whole result.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// MarshalJSON writes the configuration in snake_case, the profile by name
// (docs/json.md, bench).
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Dir        string `json:"dir"`
		Profile    string `json:"profile"`
		Devices    int    `json:"devices"`
		Bytes      int64  `json:"bytes"`
		BS         int    `json:"bs"`
		Rounds     int    `json:"rounds"`
		BouncePool int64  `json:"bounce_pool"`
		QD         int    `json:"qd"`
		QDBytes    int64  `json:"qd_bytes"`
	}{c.Dir, c.Profile.String(), c.Devices, c.Bytes, c.BS, c.Rounds, c.BouncePool, c.QD, c.QDBytes})
}

// WriteSVG draws the medians as a grouped bar chart.
func (r *Result) WriteSVG(w io.Writer) error {
	type bar struct {
		label string
		v     float64
		color string
	}
	colors := map[string]string{"zerocopy": "#4e79a7", "bounce": "#e15759", "faithful": "#f28e2b", "fallback": "#76b7b2", "iomap-bounce": "#59a14f", "raw": "#9c9c9c"}
	var bars []bar
	top := 1.0
	for _, op := range []string{"read", "write"} {
		for _, sum := range []bool{false, true} {
			for _, mode := range Modes {
				v := r.Cell(op, mode, sum).Median()
				bars = append(bars, bar{fmt.Sprintf("%s %s %s", op, modeTitle(mode), sumName(sum)), v, colors[mode]})
				top = max(top, v)
			}
		}
		v := r.Cell(op, "raw", false).Median()
		bars = append(bars, bar{op + " raw file", v, colors["raw"]})
		top = max(top, v)
	}
	const rowH, left, width = 26, 260, 420
	h := len(bars)*rowH + 50
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+120, h)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14">btrfsdio %s, %d KiB direct IO, median MiB/s</text>`+"\n", r.Config.Profile, r.Config.BS>>10)
	for i, br := range bars {
		y := 36 + i*rowH
		wd := int(br.v / top * width)
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`+"\n", y+15, br.label)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", left, y+2, wd, rowH-6, br.color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%.0f</text>`+"\n", left+wd+6, y+15, br.v)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
