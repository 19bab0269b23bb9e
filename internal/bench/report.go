package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// diff is the bounce path's change against zero-copy, in percent.
func diff(bounce, zerocopy float64) float64 {
	if zerocopy == 0 {
		return 0
	}
	return (bounce/zerocopy - 1) * 100
}

// WriteTable prints the seed's table: rows Read/Write x {zerocopy, bounce}
// and their diff, columns nodatasum and datasum, median MiB/s with the
// min-max range of the rounds, then the raw backing file.
func (r *Result) WriteTable(w io.Writer) {
	cfg := r.Config
	fmt.Fprintf(w, "%s, %d x %d KiB direct IO, %d rounds (median [min-max] MiB/s)\n",
		cfg.Profile, cfg.Bytes/int64(cfg.BS), cfg.BS>>10, cfg.Rounds)
	fmt.Fprintf(w, "%-17s| %-26s| %-26s|\n", "", "Nodatasum", "Datasum")
	line := strings.Repeat("-", 17) + "+" + strings.Repeat("-", 27) + "+" + strings.Repeat("-", 27) + "+"
	for _, op := range []string{"read", "write"} {
		fmt.Fprintln(w, line)
		title := strings.ToUpper(op[:1]) + op[1:]
		for _, mode := range []string{"zerocopy", "bounce"} {
			fmt.Fprintf(w, "%-17s|", fmt.Sprintf("%s (%s)", title, mode))
			for _, sum := range []bool{false, true} {
				c := r.Cell(op, mode, sum)
				fmt.Fprintf(w, " %-26s|", fmt.Sprintf("%.1f [%.1f-%.1f]", c.Median(), c.Min(), c.Max()))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%-17s|", "Diff")
		for _, sum := range []bool{false, true} {
			d := diff(r.Cell(op, "bounce", sum).Median(), r.Cell(op, "zerocopy", sum).Median())
			fmt.Fprintf(w, " %-26s|", fmt.Sprintf("%+.1f %%", d))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, line)
	for _, op := range []string{"read", "write"} {
		raw := r.Cell(op, "raw", false)
		zc := r.Cell(op, "zerocopy", false).Median()
		bo := r.Cell(op, "bounce", false).Median()
		fmt.Fprintf(w, "raw file %-5s   %.1f MiB/s; nodatasum zerocopy %.2fx, bounce %.2fx of it\n",
			op, raw.Median(), zc/raw.Median(), bo/raw.Median())
	}
}

// WriteJSON writes the whole result.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteSVG draws the medians as a grouped bar chart.
func (r *Result) WriteSVG(w io.Writer) error {
	type bar struct {
		label string
		v     float64
		color string
	}
	colors := map[string]string{"zerocopy": "#4e79a7", "bounce": "#e15759", "raw": "#9c9c9c"}
	var bars []bar
	top := 1.0
	for _, op := range []string{"read", "write"} {
		for _, sum := range []bool{false, true} {
			for _, mode := range []string{"zerocopy", "bounce"} {
				s := "nodatasum"
				if sum {
					s = "datasum"
				}
				v := r.Cell(op, mode, sum).Median()
				bars = append(bars, bar{fmt.Sprintf("%s %s %s", op, mode, s), v, colors[mode]})
				top = max(top, v)
			}
		}
		v := r.Cell(op, "raw", false).Median()
		bars = append(bars, bar{op + " raw file", v, colors["raw"]})
		top = max(top, v)
	}
	const rowH, left, width = 26, 220, 420
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
