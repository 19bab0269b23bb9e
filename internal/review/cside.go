package review

import (
	"regexp"
	"slices"
	"strings"
)

// View is one side of a hunk: the file before or after the patch.
type View int

// The two sides of a diff.
const (
	Old View = iota
	New
)

func (v View) String() string {
	if v == Old {
		return "before the patch"
	}
	return "after the patch"
}

// variant is how the map and doc comments name a view: "before", "after".
func (v View) variant() string {
	if v == Old {
		return "before"
	}
	return "after"
}

// keeps reports whether a line of kind k exists on this side.
func (v View) keeps(k LineKind) bool {
	return k == Context || (v == Old && k == Removed) || (v == New && k == Added)
}

// changed is the marker of the lines this side has and the other lacks.
func (v View) changed() LineKind {
	if v == Old {
		return Removed
	}
	return Added
}

// CKind is what a C definition is.
type CKind int

// Kinds of C definitions the review tracks.
const (
	CFunc CKind = iota
	CStruct
	CVar // a variable: a declaration or an initialized struct (ops tables)
	CField
)

func (k CKind) String() string {
	return [...]string{"function", "struct", "variable", "field"}[k]
}

// Occurrence is a C definition, or the part of it, that one hunk shows on
// one side of the diff.
type Occurrence struct {
	Name string
	Kind CKind
	// Parent is the struct or variable a field belongs to.
	Parent string
	// CType is the struct type: a struct's own name, a variable's type, a
	// field's parent's type.
	CType string
	// Lines are the occurrence's lines on its side, with the comments just
	// above it.
	Lines []Line
	// Touched is set when one of its lines exists on this side only.
	Touched bool
	// Calls are the functions and macros its lines call.
	Calls  []string
	Fields []*Occurrence
	Hunk   int
	View   View

	bodyOpen bool // a function's body has started, or a struct's braces
}

// Key names the definition: "name", or "parent.field" for fields.
func (o *Occurrence) Key() string {
	if o.Kind == CField {
		return o.Parent + "." + o.Name
	}
	return o.Name
}

var (
	cStructDef   = regexp.MustCompile(`^struct\s+(\w+)\s*\{`)
	cInitializer = regexp.MustCompile(`^(?:static\s+)?(?:const\s+)?struct\s+(\w+)\s+(\w+)\s*(?:\[\s*\])?\s*=\s*\{`)
	cVarDecl     = regexp.MustCompile(`^(?:static\s+)?(?:const\s+)?struct\s+(\w+)\s+\**(\w+)\s*;`)
	cFuncDef     = regexp.MustCompile(`^(?:[A-Za-z_]\w*[\s*]+)+\**([A-Za-z_]\w*)\s*\(`)
	cStructField = regexp.MustCompile(`(\w+)\s*(?:\[[^\]]*\])?\s*;$`)
	cInitField   = regexp.MustCompile(`^\.(\w+)\s*=`)
	cCall        = regexp.MustCompile(`\b([A-Za-z_]\w*)\s*\(`)
	cStringLit   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
)

// cKeywords look like calls but are not.
var cKeywords = map[string]bool{"if": true, "for": true, "while": true, "switch": true, "return": true,
	"sizeof": true, "typeof": true, "do": true}

// scanView finds the definitions hunk h shows on side v. Indentation may be
// lost, so the structure comes from brace depth; the depth a hunk starts at
// is how far its lines close braces they did not open.
func scanView(h Hunk, hunk int, v View) []*Occurrence {
	var lines []Line
	for _, l := range h.Lines {
		if v.keeps(l.Kind) {
			lines = append(lines, l)
		}
	}
	s := viewScanner{hunk: hunk, view: v}
	if s.depth = startDepth(lines); s.depth > 0 {
		if o := s.definition(h.Heading, Line{}); o != nil {
			o.bodyOpen = true
			o.Lines = nil
			s.open(o)
		}
	}
	for _, l := range lines {
		s.line(l)
	}
	return s.out
}

type viewScanner struct {
	hunk      int
	view      View
	depth     int
	inComment bool
	cur       *Occurrence
	pending   []Line
	out       []*Occurrence
}

func (s *viewScanner) open(o *Occurrence) {
	s.cur = o
	s.out = append(s.out, o)
}

// line places one line: in the open definition, as the start of a new
// one, or as a comment waiting for the next.
func (s *viewScanner) line(l Line) {
	var code string
	code, s.inComment = stripComments(l.Text, s.inComment)
	code = strings.TrimSpace(code)
	startDepth := s.depth
	l.Depth = s.depth
	if strings.HasPrefix(code, "}") {
		l.Depth = max(0, l.Depth-1)
	}
	switch {
	case s.cur != nil:
		s.cur.Lines = append(s.cur.Lines, l)
	case code == "":
		s.pending = append(s.pending, l)
		return
	default:
		o := s.definition(code, l)
		if o == nil {
			s.pending = nil
			return
		}
		s.open(o)
	}
	o := s.cur
	s.mark(o, l, code)
	if startDepth == 1 && o.Kind != CFunc {
		s.field(o, l, code)
	}
	s.depth = max(0, s.depth+strings.Count(code, "{")-strings.Count(code, "}"))
	if s.depth > 0 {
		o.bodyOpen = true
	}
	if s.depth == 0 && (o.bodyOpen || strings.HasSuffix(code, ";")) {
		s.cur = nil
	}
}

// definition recognizes the first line of a definition at file level and
// returns its occurrence, with the comments collected above it.
func (s *viewScanner) definition(code string, l Line) *Occurrence {
	o := &Occurrence{Hunk: s.hunk, View: s.view}
	if m := cStructDef.FindStringSubmatch(code); m != nil {
		o.Name, o.Kind, o.CType = m[1], CStruct, m[1]
	} else if m := cInitializer.FindStringSubmatch(code); m != nil {
		o.Name, o.Kind, o.CType = m[2], CVar, m[1]
	} else if m := cVarDecl.FindStringSubmatch(code); m != nil {
		o.Name, o.Kind, o.CType = m[2], CVar, m[1]
	} else if m := cFuncDef.FindStringSubmatch(code); m != nil && !strings.HasSuffix(code, ";") && !cKeywords[m[1]] {
		o.Name, o.Kind = m[1], CFunc
	} else {
		return nil
	}
	for len(s.pending) > 0 && strings.TrimSpace(s.pending[0].Text) == "" {
		s.pending = s.pending[1:]
	}
	o.Lines = append(s.pending, l)
	for _, p := range s.pending {
		s.mark(o, p, "")
	}
	s.pending = nil
	return o
}

// mark notes what the code of line l calls, and whether o has a line
// only this side has (blank ones aside).
func (s *viewScanner) mark(o *Occurrence, l Line, code string) {
	if l.Kind == s.view.changed() && strings.TrimSpace(l.Text) != "" {
		o.Touched = true
	}
	for _, m := range cCall.FindAllStringSubmatch(cStringLit.ReplaceAllString(code, `""`), -1) {
		name := m[1]
		if cKeywords[name] || (name == o.Name && o.Kind == CFunc) || slices.Contains(o.Calls, name) {
			continue
		}
		o.Calls = append(o.Calls, name)
	}
}

// field records a member line of a struct or an initializer.
func (s *viewScanner) field(o *Occurrence, l Line, code string) {
	re := cStructField
	if o.Kind == CVar {
		re = cInitField
	}
	m := re.FindStringSubmatch(code)
	if m == nil || strings.HasPrefix(code, "}") {
		return
	}
	f := &Occurrence{Name: m[1], Kind: CField, Parent: o.Name, CType: o.CType, Lines: []Line{l},
		Hunk: s.hunk, View: s.view}
	f.Touched = l.Kind == s.view.changed()
	o.Fields = append(o.Fields, f)
}

// startDepth is the brace depth the lines start at: how many braces they
// close beyond those they open, at their lowest point.
func startDepth(lines []Line) int {
	depth, lowest := 0, 0
	inComment := false
	for _, l := range lines {
		var code string
		code, inComment = stripComments(l.Text, inComment)
		code = cStringLit.ReplaceAllString(code, `""`)
		for _, c := range code {
			switch c {
			case '{':
				depth++
			case '}':
				depth--
				lowest = min(lowest, depth)
			}
		}
	}
	return -lowest
}

// stripComments removes /* */ and // comments from one line, given whether
// it starts inside a block comment; it returns the code and whether the
// next line does.
func stripComments(s string, inComment bool) (string, bool) {
	var b strings.Builder
	for len(s) > 0 {
		if inComment {
			i := strings.Index(s, "*/")
			if i < 0 {
				return b.String(), true
			}
			s, inComment = s[i+2:], false
			continue
		}
		i := strings.Index(s, "/*")
		j := strings.Index(s, "//")
		switch {
		case j >= 0 && (i < 0 || j < i):
			b.WriteString(s[:j])
			return b.String(), false
		case i >= 0:
			b.WriteString(s[:i])
			s, inComment = s[i+2:], true
		default:
			b.WriteString(s)
			s = ""
		}
	}
	return b.String(), inComment
}
