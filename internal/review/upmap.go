package review

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// MapRow is a row of a twin table of docs/upstream-map.md: an upstream
// definition, its Go twin and where that is.
type MapRow struct {
	// Name is the upstream name as the review keys it: "func",
	// "struct_name", "struct_name.field"; Variant is "before", "after" or
	// "" (both).
	Name    string
	Variant string
	Symbol  string // Go symbol: Name, Recv.Name, Type.Field
	File    string
	Line    int
	Diffs   []string // D-numbers of the deliberate differences
	// MDLine is the row's line in the map (1-based).
	MDLine int
}

// Key is the row's name with its variant: "btrfs_dio_submit_io (after)".
func (r *MapRow) Key() string {
	if r.Variant == "" {
		return r.Name
	}
	return r.Name + " (" + r.Variant + ")"
}

// UpMap is docs/upstream-map.md as the review reads it.
type UpMap struct {
	Path  string
	Rows  []*MapRow
	Lines []string
	// NoTwin holds the upstream names that deliberately have no Go twin,
	// with the reason.
	NoTwin map[string]string
	// Diffs maps a D-number to its text.
	Diffs map[string]string
}

var (
	backticked = regexp.MustCompile("`([^`]+)`")
	mdWhere    = regexp.MustCompile(`([\w./-]+\.go):(\d+)`)
	mdDiffRef  = regexp.MustCompile(`\bD\d+\b`)
	mdDiffItem = regexp.MustCompile(`^\s*[-*] \*\*(D\d+)\*\*:?\s*(.*)$`)
	mdVariant  = regexp.MustCompile(`\((before|after)\)`)
)

// ParseMap reads the map's tables: those with "upstream", "Go twin" and
// "where" columns list twins; one with "upstream" and "why" lists what has
// no twin on purpose; "- **Dn** text" items are the deliberate differences.
func ParseMap(path string) (*UpMap, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("review: reading the map: %w", err)
	}
	m := &UpMap{Path: path, Lines: strings.Split(string(b), "\n"), NoTwin: map[string]string{}, Diffs: map[string]string{}}
	var cols map[string]int
	for i, line := range m.Lines {
		if d := mdDiffItem.FindStringSubmatch(line); d != nil {
			m.Diffs[d[1]] = d[2]
			continue
		}
		if !strings.HasPrefix(strings.TrimSpace(line), "|") {
			cols = nil
			continue
		}
		cells := splitRow(line)
		switch {
		case cols == nil:
			cols = headerColumns(cells)
		case strings.HasPrefix(cells[0], "---") || strings.HasPrefix(cells[0], ":-"):
		default:
			if err := m.row(cols, cells, i+1); err != nil {
				return nil, fmt.Errorf("review: %s:%d: %w", path, i+1, err)
			}
		}
	}
	if len(m.Rows) == 0 {
		return nil, fmt.Errorf("review: %s has no twin table (columns upstream, Go twin, where)", path)
	}
	return m, nil
}

func splitRow(line string) []string {
	s := strings.TrimSpace(line)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "|"), "|")
	cells := strings.Split(s, "|")
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	return cells
}

func headerColumns(cells []string) map[string]int {
	cols := map[string]int{}
	for i, c := range cells {
		cols[strings.ToLower(c)] = i
	}
	return cols
}

// row reads one table row under header cols.
func (m *UpMap) row(cols map[string]int, cells []string, mdLine int) error {
	cell := func(name string) (string, bool) {
		i, ok := cols[name]
		if !ok || i >= len(cells) {
			return "", false
		}
		return cells[i], true
	}
	up, ok := cell("upstream")
	if !ok {
		return nil // some other table
	}
	name := firstBackticked(up)
	if name == "" {
		return fmt.Errorf("upstream cell %q has no `name`", up)
	}
	name = strings.TrimPrefix(strings.TrimPrefix(name, "struct "), "enum ")
	if why, ok := cell("why"); ok {
		if _, twin := cols["go twin"]; !twin {
			m.NoTwin[name] = why
			return nil
		}
	}
	twin, okTwin := cell("go twin")
	where, okWhere := cell("where")
	if !okTwin || !okWhere {
		return nil
	}
	r := &MapRow{Name: name, Symbol: firstBackticked(twin), MDLine: mdLine}
	if v := mdVariant.FindStringSubmatch(up); v != nil {
		r.Variant = v[1]
	}
	w := mdWhere.FindStringSubmatch(where)
	if r.Symbol == "" || w == nil {
		return fmt.Errorf("row for %s needs a `Go symbol` and a file.go:line", name)
	}
	r.File = w[1]
	r.Line, _ = strconv.Atoi(w[2])
	if d, ok := cell("differences"); ok {
		r.Diffs = mdDiffRef.FindAllString(d, -1)
	}
	m.Rows = append(m.Rows, r)
	return nil
}

func firstBackticked(s string) string {
	if m := backticked.FindStringSubmatch(s); m != nil {
		return strings.TrimSpace(m[1])
	}
	return ""
}

// RowsFor lists the rows for name on side v: those of its variant and
// those without one.
func (m *UpMap) RowsFor(name string, v View) []*MapRow {
	var out []*MapRow
	for _, r := range m.Rows {
		if r.Name == name && (r.Variant == "" || r.Variant == v.variant()) {
			out = append(out, r)
		}
	}
	return out
}

// Has reports whether any row names upstream name.
func (m *UpMap) Has(name string) bool {
	for _, r := range m.Rows {
		if r.Name == name {
			return true
		}
	}
	return false
}

// DiffTitle is the first sentence of deliberate difference id.
func (m *UpMap) DiffTitle(id string) string {
	t := m.Diffs[id]
	if i := strings.Index(t, ". "); i >= 0 {
		t = t[:i+1]
	}
	return t
}

// Rewrite returns the map with every row's line number set to where its
// twin is now, and how many rows changed. Rows whose twin is gone are left
// alone (Check reports them).
func (m *UpMap) Rewrite(idx *GoIndex) (string, int) {
	lines := append([]string(nil), m.Lines...)
	changed := 0
	for _, r := range m.Rows {
		d := idx.Lookup(r.File, r.Symbol)
		if d == nil || d.Line == r.Line {
			continue
		}
		old := fmt.Sprintf("%s:%d", r.File, r.Line)
		lines[r.MDLine-1] = strings.Replace(lines[r.MDLine-1], old, fmt.Sprintf("%s:%d", r.File, d.Line), 1)
		changed++
	}
	return strings.Join(lines, "\n"), changed
}
