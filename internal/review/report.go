package review

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// printer writes the side-by-side review: per hunk, each upstream
// definition (before and after the patch) followed by its Go twin.
type printer struct {
	w     io.Writer
	d     *Diff
	idx   *GoIndex
	m     *UpMap
	only  string
	shown map[*GoDecl]bool // twins whose source was already printed
}

// Print writes the review of every hunk, or of the definitions named only.
func Print(w io.Writer, d *Diff, idx *GoIndex, m *UpMap, only string) {
	p := &printer{w: w, d: d, idx: idx, m: m, only: only, shown: map[*GoDecl]bool{}}
	for i := range d.Hunks {
		p.hunk(i)
	}
}

func (p *printer) hunk(i int) {
	h := p.d.Hunks[i]
	var ents []*Entity
	for _, e := range p.d.PerHunk[i] {
		if e.Kind != CField && (p.only == "" || e.Name == p.only) {
			ents = append(ents, e)
		}
	}
	if len(ents) == 0 {
		return
	}
	fmt.Fprintf(p.w, "\n%s\n== hunk %d of %d: %s %s\n", strings.Repeat("=", 78), i+1, len(p.d.Hunks), h.File, h.Header)
	if h.LostLines > 0 {
		fmt.Fprintf(p.w, "== (the patch as mailed lost %d context lines of this hunk, blank ones; indentation is lost too)\n", h.LostLines)
	}
	for _, e := range ents {
		p.entity(i, e)
	}
}

// entity prints what hunk i shows of e on each side, each side followed by
// its twin when the twins differ, else one twin after both.
func (p *printer) entity(hunk int, e *Entity) {
	sides := []View{Old, New}
	if e.Change() == "context" {
		sides = []View{New}
	}
	var printed []View
	for _, v := range sides {
		occ := occurrencesIn(e, hunk, v)
		if len(occ) == 0 {
			continue
		}
		fmt.Fprintf(p.w, "\n--- upstream %s %s (%s), %s:\n", e.Kind, e.Name, e.Change(), v)
		for _, o := range occ {
			for _, l := range o.Lines {
				fmt.Fprintf(p.w, "%c %s\n", markerOf(l.Kind), indent(l))
			}
		}
		printed = append(printed, v)
		if len(printed) == 2 && !slices.Equal(p.twins(e, Old), p.twins(e, New)) {
			p.printTwins(e, Old)
			printed = printed[1:]
		}
	}
	if len(printed) > 0 {
		p.printTwins(e, printed...)
	}
}

// indent gives a line back the indentation the mail took: a tab a brace.
func indent(l Line) string {
	text := strings.TrimSpace(l.Text)
	if text == "" {
		return ""
	}
	return strings.Repeat("\t", l.Depth) + text
}

func occurrencesIn(e *Entity, hunk int, v View) []*Occurrence {
	var out []*Occurrence
	for _, o := range e.Occ[v] {
		if o.Hunk == hunk {
			out = append(out, o)
		}
	}
	return out
}

func markerOf(k LineKind) byte {
	if k == Context {
		return ' '
	}
	return byte(k)
}

// twins are the map's twins of e on side v, in the map's order, else the
// one the doc comments give.
func (p *printer) twins(e *Entity, v View) []*GoDecl {
	var out []*GoDecl
	for _, r := range p.m.RowsFor(e.Key, v) {
		if d := p.idx.Lookup(r.File, r.Symbol); d != nil && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		if d := twinOf(p.idx, e, v); d != nil {
			out = append(out, d)
		}
	}
	return out
}

// printTwins prints the twins of e for sides (the map's rows of each), then
// its fields and what it calls on those sides.
func (p *printer) printTwins(e *Entity, sides ...View) {
	var ds []*GoDecl
	for _, v := range sides {
		for _, d := range p.twins(e, v) {
			if !slices.Contains(ds, d) {
				ds = append(ds, d)
			}
		}
	}
	switch {
	case len(ds) == 0 && e.Change() == "context":
		fmt.Fprintf(p.w, "+++ Go twin: none (context only, not required)\n")
	case len(ds) == 0:
		fmt.Fprintf(p.w, "+++ Go twin: NONE\n")
	}
	cited := map[string]bool{}
	for i, d := range ds {
		label := "Go twin"
		if i > 0 {
			label = "also ported by"
		}
		fmt.Fprintf(p.w, "+++ %s: %s  %s%s\n", label, d.QualName(), d.Where(), variantNote(d))
		p.differences(e, d, cited)
		p.source(e, d)
	}
	p.fields(e, sides[len(sides)-1])
	p.calls(e, sides)
}

// source prints d's Go source unless e is only context or d was shown.
func (p *printer) source(e *Entity, d *GoDecl) {
	switch {
	case e.Change() == "context":
		fmt.Fprintf(p.w, "    (context only; source not shown)\n")
	case p.shown[d]:
		fmt.Fprintf(p.w, "    (source shown above)\n")
	default:
		p.shown[d] = true
		fmt.Fprintf(p.w, "%s\n", p.idx.Source(d))
	}
}

func variantNote(d *GoDecl) string {
	if d.Variant == "" {
		return ""
	}
	return "  (" + d.Variant + " the patch)"
}

// differences prints the deliberate differences the map cites for d as
// the twin of e, those already cited for e by number only.
func (p *printer) differences(e *Entity, d *GoDecl, cited map[string]bool) {
	for _, r := range p.m.Rows {
		if r.Name != e.Key || r.Symbol != d.Symbol || r.File != d.File {
			continue
		}
		for _, id := range r.Diffs {
			if cited[id] {
				fmt.Fprintf(p.w, "    %s (above)\n", id)
				continue
			}
			cited[id] = true
			fmt.Fprintf(p.w, "    %s: %s\n", id, p.m.DiffTitle(id))
		}
	}
}

// fields lists a struct's or ops table's fields and their twins.
func (p *printer) fields(e *Entity, v View) {
	for _, f := range p.d.Entities {
		if f.Kind != CField || f.Parent != e.Name || !f.Shown(v) && !f.Shown(Old) {
			continue
		}
		if t := twinOf(p.idx, f, v); t != nil {
			fmt.Fprintf(p.w, "    field %-16s %-8s -> %s  %s\n", f.Name, f.Change(), t.Symbol, t.Where())
		} else {
			fmt.Fprintf(p.w, "    field %-16s %-8s -> NO TWIN\n", f.Name, f.Change())
		}
	}
}

// calls lists what e calls on sides and where each callee lives in Go.
func (p *printer) calls(e *Entity, sides []View) {
	var calls []string
	for _, v := range sides {
		for _, c := range e.Calls(v) {
			if !slices.Contains(calls, c) {
				calls = append(calls, c)
			}
		}
	}
	for _, c := range calls {
		if d := p.calleeTwin(c); d != nil {
			fmt.Fprintf(p.w, "    calls %-30s -> %s  %s\n", c, d.QualName(), d.Where())
		} else {
			fmt.Fprintf(p.w, "    calls %-30s -> no Go twin: %s\n", c, p.m.NoTwin[c])
		}
	}
}

// calleeTwin is the Go twin of a called function: the map's first row for
// it, the twin of the diff's own definition, or the doc comments' first.
func (p *printer) calleeTwin(c string) *GoDecl {
	for _, r := range p.m.Rows {
		if r.Name == c {
			if d := p.idx.Lookup(r.File, r.Symbol); d != nil {
				return d
			}
		}
	}
	if e := p.d.Entity(c); e != nil {
		if ts := p.twins(e, New); len(ts) > 0 {
			return ts[0]
		}
	}
	if ts := p.idx.Twins(c); len(ts) > 0 {
		return ts[0]
	}
	return nil
}
