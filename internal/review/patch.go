// Package review holds the Go port against the seed patch: it parses the
// patch's hunks, finds the C functions, structs and fields each hunk touches,
// looks up their Go twins through the doc comments of the tree ("X is
// btrfs_foo ..."), checks them against docs/upstream-map.md and prints each
// upstream function next to the Go function that ports it.
package review

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// LineKind says which side of the diff a line belongs to.
type LineKind byte

// Kinds of hunk lines.
const (
	Context LineKind = ' '
	Added   LineKind = '+'
	Removed LineKind = '-'
)

// Line is one line of a hunk, its marker removed.
type Line struct {
	Kind LineKind
	Text string
	// N is the line's number in the patch file, for messages.
	N int
	// Depth is the brace depth the line sits at, once a side of its hunk
	// has been scanned (the patch as mailed lost its indentation).
	Depth int
}

// Hunk is one @@ section of a file's diff.
type Hunk struct {
	File     string // path after "b/"
	Header   string // the @@ line
	OldStart int
	NewStart int
	// Heading is the text git prints after the second @@: the nearest
	// line above the hunk that looks like the start of a definition.
	Heading string
	Lines   []Line
	// LostLines is how many lines the header counts that the hunk does
	// not have: context lines a mail client dropped (blank ones, mostly).
	LostLines int
	oldCount  int
	newCount  int
}

var (
	hunkHeader = regexp.MustCompile(`^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$`)
	// versionLine is what git format-patch puts after the "--" that ends
	// the diff.
	versionLine = regexp.MustCompile(`^\d+(\.\d+)+`)
)

// ParsePatch reads the hunks of every file in a unified diff, skipping the
// mail around it. It is lenient with patches that went through mail: a
// context line that lost its leading space is still context, blank context
// lines may be missing (the header counts are then not trusted, a hunk ends
// at the next @@, diff or signature line), and "-- " ends the diff.
func ParsePatch(r io.Reader) ([]Hunk, error) {
	p := patchParser{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		p.n++
		if done := p.line(strings.TrimRight(sc.Text(), "\r")); done {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("review: reading patch: %w", err)
	}
	p.flush()
	if len(p.hunks) == 0 {
		return nil, fmt.Errorf("review: no hunk found (is this a unified diff?)")
	}
	return p.hunks, nil
}

type patchParser struct {
	n      int
	file   string
	inDiff bool
	cur    *Hunk
	hunks  []Hunk
	// sig is set after a "--" line: the mail signature starts if a
	// version number follows.
	sig bool
}

// line consumes one line; true means the diff is over.
func (p *patchParser) line(s string) bool {
	if p.sig {
		p.sig = false
		if versionLine.MatchString(s) {
			return true
		}
		p.add(Line{Kind: Removed, Text: "-", N: p.n - 1})
	}
	switch {
	case strings.HasPrefix(s, "diff --git "):
		p.flush()
		p.inDiff = true
		if i := strings.LastIndex(s, " b/"); i >= 0 {
			p.file = s[i+3:]
		}
		return false
	case !p.inDiff:
		return false
	case s == "-- " || s == "--":
		if s == "-- " {
			return true
		}
		p.sig = true
		return false
	case strings.HasPrefix(s, "@@ "):
		return p.header(s)
	case p.cur == nil:
		return false // index, ---, +++ lines
	}
	switch {
	case strings.HasPrefix(s, "+"):
		p.add(Line{Kind: Added, Text: s[1:], N: p.n})
	case strings.HasPrefix(s, "-"):
		p.add(Line{Kind: Removed, Text: s[1:], N: p.n})
	case strings.HasPrefix(s, " "):
		p.add(Line{Kind: Context, Text: s[1:], N: p.n})
	case strings.HasPrefix(s, `\ `): // "\ No newline at end of file"
	default:
		p.add(Line{Kind: Context, Text: s, N: p.n})
	}
	return false
}

func (p *patchParser) header(s string) bool {
	p.flush()
	m := hunkHeader.FindStringSubmatch(s)
	if m == nil {
		return false
	}
	count := func(v string) int {
		if v == "" {
			return 1
		}
		n, _ := strconv.Atoi(v)
		return n
	}
	oldStart, _ := strconv.Atoi(m[1])
	newStart, _ := strconv.Atoi(m[3])
	p.cur = &Hunk{File: p.file, Header: s, OldStart: oldStart, NewStart: newStart,
		Heading: strings.TrimSpace(m[5]), oldCount: count(m[2]), newCount: count(m[4])}
	return false
}

func (p *patchParser) add(l Line) {
	if p.cur != nil {
		p.cur.Lines = append(p.cur.Lines, l)
	}
}

// flush closes the current hunk, noting how many lines it is short of its
// header's counts.
func (p *patchParser) flush() {
	h := p.cur
	if h == nil {
		return
	}
	p.cur = nil
	// Trailing blank context lines are the gap before the next diff.
	for len(h.Lines) > 0 {
		last := h.Lines[len(h.Lines)-1]
		if last.Kind != Context || strings.TrimSpace(last.Text) != "" {
			break
		}
		h.Lines = h.Lines[:len(h.Lines)-1]
	}
	var old, nw int
	for _, l := range h.Lines {
		if l.Kind != Added {
			old++
		}
		if l.Kind != Removed {
			nw++
		}
	}
	h.LostLines = max(h.oldCount-old, h.newCount-nw, 0)
	p.hunks = append(p.hunks, *h)
}
