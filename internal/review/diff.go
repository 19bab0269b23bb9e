package review

import "slices"

// Entity is one C definition of the diff (a function, struct, variable or
// field) with what each side of each hunk shows of it.
type Entity struct {
	Key    string
	Name   string
	Kind   CKind
	Parent string
	CType  string
	// Occ lists the occurrences on each side, indexed by View.
	Occ [2][]*Occurrence
}

// Shown reports whether side v shows the definition at all.
func (e *Entity) Shown(v View) bool { return len(e.Occ[v]) > 0 }

// Touched reports whether side v has lines of it the other side lacks.
func (e *Entity) Touched(v View) bool {
	for _, o := range e.Occ[v] {
		if o.Touched {
			return true
		}
	}
	return false
}

// Change is "added", "removed", "changed" or "context".
func (e *Entity) Change() string {
	oldT, newT := e.Touched(Old), e.Touched(New)
	switch {
	case !oldT && !newT:
		return "context"
	case oldT && !e.Shown(New):
		return "removed"
	case newT && !e.Shown(Old):
		return "added"
	}
	return "changed"
}

// Calls are the functions that what side v shows of the definition calls,
// when that side touches it.
func (e *Entity) Calls(v View) []string {
	if !e.Touched(v) {
		return nil
	}
	var out []string
	for _, o := range e.Occ[v] {
		for _, c := range o.Calls {
			if !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// Diff is a patch seen as the C definitions its hunks show.
type Diff struct {
	Hunks    []Hunk
	Entities []*Entity // in order of first appearance
	// PerHunk lists, for each hunk, the entities it shows: the new side's
	// order first, then what only the old side has.
	PerHunk [][]*Entity
	byKey   map[string]*Entity
}

// NewDiff finds the definitions of every hunk on both sides.
func NewDiff(hunks []Hunk) *Diff {
	d := &Diff{Hunks: hunks, byKey: map[string]*Entity{}, PerHunk: make([][]*Entity, len(hunks))}
	for i, h := range hunks {
		for _, v := range []View{New, Old} {
			for _, o := range scanView(h, i, v) {
				d.add(i, o)
				for _, f := range o.Fields {
					d.add(i, f)
				}
			}
		}
	}
	return d
}

func (d *Diff) add(hunk int, o *Occurrence) {
	e := d.byKey[o.Key()]
	if e == nil {
		e = &Entity{Key: o.Key(), Name: o.Name, Kind: o.Kind, Parent: o.Parent, CType: o.CType}
		d.byKey[e.Key] = e
		d.Entities = append(d.Entities, e)
	}
	e.Occ[o.View] = append(e.Occ[o.View], o)
	if !slices.Contains(d.PerHunk[hunk], e) {
		d.PerHunk[hunk] = append(d.PerHunk[hunk], e)
	}
}

// Entity returns the definition called key, or nil.
func (d *Diff) Entity(key string) *Entity { return d.byKey[key] }

// Calls lists every function the touched definitions of the diff call that
// the diff does not itself define, in order of first call.
func (d *Diff) Calls() []string {
	var out []string
	for _, e := range d.Entities {
		for _, v := range []View{Old, New} {
			for _, c := range e.Calls(v) {
				if d.byKey[c] == nil && !slices.Contains(out, c) {
					out = append(out, c)
				}
			}
		}
	}
	return out
}
