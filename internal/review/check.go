package review

import (
	"fmt"
	"slices"
	"strings"
)

// Findings are what Check found: Problems fail the review, Notes do not
// (a map line number that drifted; `review -write` fixes them).
type Findings struct {
	Problems []string
	Notes    []string
}

func (f *Findings) problem(format string, args ...any) {
	f.Problems = append(f.Problems, fmt.Sprintf(format, args...))
}

// Check holds the diff, the Go tree and the map against each other:
//   - every definition the diff adds, changes or removes, and every one
//     of its own definitions the diff calls, has a Go twin (found through
//     doc comments) on each side it touches, and a row in the map, unless
//     the map lists it under "no Go twin";
//   - every function the diff calls either has a Go twin, then the map
//     has a row for it, or is listed under "no Go twin" with a reason;
//   - every twin the map names exists in the file it says and its doc
//     comment claims the upstream name (fields: by name or by doc);
//   - nothing under "no Go twin" has gained one, every D-number a row
//     cites is defined.
func Check(d *Diff, idx *GoIndex, m *UpMap) *Findings {
	f := &Findings{}
	for _, e := range required(d) {
		for _, v := range []View{Old, New} {
			if e.Touched(v) || (e.Change() == "context" && v == New) {
				checkEntity(f, idx, m, e, v)
			}
		}
	}
	for _, c := range d.Calls() {
		checkCall(f, idx, m, c)
	}
	for _, r := range m.Rows {
		checkRow(f, idx, m, r)
	}
	for name := range m.NoTwin {
		if ts := idx.Twins(name); len(ts) > 0 {
			f.problem("map: %s is listed as having no Go twin, but the doc comment of %s (%s) names it", name, ts[0].QualName(), ts[0].Where())
		}
	}
	return f
}

// required lists the definitions that must have twins: those the diff
// touches, and those of its context that touched code calls.
func required(d *Diff) []*Entity {
	var out []*Entity
	called := map[string]bool{}
	for _, e := range d.Entities {
		for _, v := range []View{Old, New} {
			for _, c := range e.Calls(v) {
				called[c] = true
			}
		}
	}
	for _, e := range d.Entities {
		if e.Change() != "context" || called[e.Name] {
			out = append(out, e)
		}
	}
	return out
}

func checkEntity(f *Findings, idx *GoIndex, m *UpMap, e *Entity, v View) {
	if _, noTwin := m.NoTwin[e.Key]; noTwin && twinOf(idx, e, v) == nil {
		// A definition of a later upstream text the port leaves out on
		// purpose (say a block layer limit below our model): listed with
		// its reason under "no Go twin".
		return
	}
	if twinOf(idx, e, v) == nil {
		if e.Kind == CField {
			f.problem("no Go twin for field %s (%s, %s): no field of the Go struct whose doc says \"is struct %s\" has that name or claims it",
				e.Key, e.Change(), v, e.CType)
		} else {
			f.problem("no Go twin for %s %s (%s, %s): no doc comment says \"X is %s\"", e.Kind, e.Name, e.Change(), v, e.Name)
		}
	}
	if len(m.RowsFor(e.Key, v)) == 0 {
		f.problem("map: no row for %s %s (%s %s); add one with its Go twin", e.Kind, e.Key, e.Change(), v)
	}
}

// twinOf resolves the Go twin of e on side v through doc comments: a
// declaration claiming the name (the one whose "before/after the patch"
// matches v first), or for a field, the matching field of its struct's twin.
func twinOf(idx *GoIndex, e *Entity, v View) *GoDecl {
	if e.Kind == CField {
		st := idx.StructTwin(e.CType)
		if st == nil {
			return nil
		}
		return idx.FieldTwin(st, e.Name)
	}
	var fallback *GoDecl
	for _, d := range idx.Twins(e.Name) {
		switch d.Variant {
		case v.variant():
			return d
		case "":
			if fallback == nil {
				fallback = d
			}
		}
	}
	return fallback
}

func checkCall(f *Findings, idx *GoIndex, m *UpMap, c string) {
	ts := idx.Twins(c)
	_, noTwin := m.NoTwin[c]
	switch {
	case len(ts) > 0 && !m.Has(c):
		f.problem("map: %s, called by the diff, has a Go twin (%s, %s) but no row in the map", c, ts[0].QualName(), ts[0].Where())
	case len(ts) == 0 && !noTwin:
		f.problem("%s is called by the diff but no doc comment names it and the map does not list it under \"no Go twin\"", c)
	}
}

func checkRow(f *Findings, idx *GoIndex, m *UpMap, r *MapRow) {
	d := idx.Lookup(r.File, r.Symbol)
	if d == nil {
		where := ""
		if alt := idx.Find(r.Symbol); len(alt) > 0 {
			where = "; it is now in " + alt[0].File
		}
		f.problem("map line %d: twin %s of %s no longer exists in %s%s", r.MDLine, r.Symbol, r.Key(), r.File, where)
		return
	}
	if !claims(d, r.Name) {
		f.problem("map line %d: %s (%s) is named as the twin of %s, but its doc comment does not say so",
			r.MDLine, d.QualName(), d.Where(), r.Key())
	}
	if d.Variant != "" && r.Variant != "" && d.Variant != r.Variant {
		f.problem("map line %d: %s is the code %s the patch, the map says %s", r.MDLine, d.QualName(), d.Variant, r.Variant)
	}
	for _, id := range r.Diffs {
		if _, ok := m.Diffs[id]; !ok {
			f.problem("map line %d: %s cites %s, which the list of deliberate differences does not define", r.MDLine, r.Key(), id)
		}
	}
	if d.Line != r.Line {
		f.Notes = append(f.Notes, fmt.Sprintf("map line %d: %s moved from %s:%d to %s (review -write updates it)",
			r.MDLine, r.Symbol, r.File, r.Line, d.Where()))
	}
}

// claims reports whether d's doc comment (or, for a field, its name) says
// it ports upstream name ("parent.field" for fields).
func claims(d *GoDecl, name string) bool {
	if slices.Contains(d.CNames, name) {
		return true
	}
	if i := strings.LastIndex(name, "."); i >= 0 && d.Field {
		field := name[i+1:]
		return slices.Contains(d.CNames, field) || sameName(d.Symbol[strings.LastIndex(d.Symbol, ".")+1:], field)
	}
	return false
}
