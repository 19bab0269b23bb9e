package review

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// GoDecl is a declaration of the Go tree: a function or method, a type, a
// struct field, a variable or constant.
type GoDecl struct {
	// Symbol is Name, Recv.Name for methods, Type.Field for fields.
	Symbol string
	Pkg    string
	File   string // slash path from the module root
	Line   int    // line of the name
	// Start and End are byte offsets of the source, doc comment included.
	Start, End int
	Field      bool
	// CNames are the kernel names the doc comment says this ports: the
	// first sentence's "X is c_name" (several when joined by "+", "/",
	// "," or "and").
	CNames []string
	// Variant is "before" or "after" when the doc comment says the twin
	// is the code "before the patch" or "after the patch".
	Variant string
	Doc     string
}

// QualName is the symbol with its package: "btrfsdio.FsInfo.submitIOBounce".
func (d *GoDecl) QualName() string { return d.Pkg + "." + d.Symbol }

// Where is "file:line".
func (d *GoDecl) Where() string { return fmt.Sprintf("%s:%d", d.File, d.Line) }

// GoIndex is every declaration of a module's non-test Go files.
type GoIndex struct {
	Root  string
	Decls []*GoDecl
	byC   map[string][]*GoDecl
	bySym map[string]*GoDecl // file + "\x00" + symbol
	src   map[string][]byte
}

// skipDirs are not part of the port; the review tool itself is not either.
var skipDirs = map[string]bool{".git": true, ".vm-work": true, "testdata": true, "vendor": true,
	"internal/review": true, "cmd/review": true}

// IndexTree parses every non-test .go file under root.
func IndexTree(root string) (*GoIndex, error) {
	idx := &GoIndex{Root: root, byC: map[string][]*GoDecl{}, bySym: map[string]*GoDecl{}, src: map[string][]byte{}}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			rel, _ := filepath.Rel(root, path)
			if path != root && (skipDirs[d.Name()] || skipDirs[filepath.ToSlash(rel)] || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		return idx.parseFile(path)
	})
	if err != nil {
		return nil, fmt.Errorf("review: indexing %s: %w", root, err)
	}
	return idx, nil
}

func (idx *GoIndex) parseFile(path string) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(idx.Root, path)
	if err != nil {
		return err
	}
	rel = filepath.ToSlash(rel)
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, parser.ParseComments)
	if err != nil {
		return err
	}
	idx.src[rel] = src
	fi := fileIndexer{idx: idx, fset: fset, file: rel, pkg: f.Name.Name}
	for _, decl := range f.Decls {
		fi.decl(decl)
	}
	return nil
}

type fileIndexer struct {
	idx  *GoIndex
	fset *token.FileSet
	file string
	pkg  string
}

func (fi *fileIndexer) decl(decl ast.Decl) {
	switch d := decl.(type) {
	case *ast.FuncDecl:
		sym := d.Name.Name
		if d.Recv != nil && len(d.Recv.List) > 0 {
			sym = recvName(d.Recv.List[0].Type) + "." + sym
		}
		fi.add(sym, d.Name, d.Doc, d.Pos(), d.End(), false)
	case *ast.GenDecl:
		for _, spec := range d.Specs {
			doc := specDoc(spec, d)
			start := spec.Pos()
			if len(d.Specs) == 1 {
				start = d.Pos()
			}
			switch s := spec.(type) {
			case *ast.TypeSpec:
				fi.add(s.Name.Name, s.Name, doc, start, s.End(), false)
				if st, ok := s.Type.(*ast.StructType); ok {
					fi.fields(s.Name.Name, st)
				}
			case *ast.ValueSpec:
				for _, n := range s.Names {
					fi.add(n.Name, n, doc, start, s.End(), false)
				}
			}
		}
	}
}

func (fi *fileIndexer) fields(typ string, st *ast.StructType) {
	for _, f := range st.Fields.List {
		doc := f.Doc
		if doc == nil {
			doc = f.Comment
		}
		for _, n := range f.Names {
			fi.add(typ+"."+n.Name, n, doc, f.Pos(), f.End(), true)
		}
		if len(f.Names) == 0 { // embedded
			fi.add(typ+"."+recvName(f.Type), f.Type, doc, f.Pos(), f.End(), true)
		}
	}
}

func (fi *fileIndexer) add(sym string, name ast.Node, doc *ast.CommentGroup, start, end token.Pos, field bool) {
	if doc != nil && doc.Pos() < start {
		start = doc.Pos()
	}
	d := &GoDecl{Symbol: sym, Pkg: fi.pkg, File: fi.file, Line: fi.fset.Position(name.Pos()).Line,
		Start: fi.fset.Position(start).Offset, End: fi.fset.Position(end).Offset, Field: field}
	if doc != nil {
		d.Doc = doc.Text()
		last := sym[strings.LastIndex(sym, ".")+1:]
		d.CNames, d.Variant = docTwins(last, d.Doc)
	}
	fi.idx.Decls = append(fi.idx.Decls, d)
	fi.idx.bySym[fi.file+"\x00"+sym] = d
	for _, c := range d.CNames {
		fi.idx.byC[c] = append(fi.idx.byC[c], d)
	}
}

func specDoc(spec ast.Spec, d *ast.GenDecl) *ast.CommentGroup {
	var doc *ast.CommentGroup
	switch s := spec.(type) {
	case *ast.TypeSpec:
		doc = s.Doc
	case *ast.ValueSpec:
		doc = s.Doc
		if doc == nil {
			doc = s.Comment
		}
	}
	if doc == nil && len(d.Specs) == 1 {
		doc = d.Doc
	}
	return doc
}

// recvName is the type name of a receiver or embedded field: T for *T,
// T[K], pkg.T.
func recvName(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return recvName(t.X)
	case *ast.IndexExpr:
		return recvName(t.X)
	case *ast.SelectorExpr:
		return t.Sel.Name
	case *ast.Ident:
		return t.Name
	}
	return "?"
}

var (
	// docIs finds "Name is [the] [struct|enum] c_name" at the start of a
	// doc comment; the name may be a member path (bbio->end_io, ->bio_set).
	docIs  = regexp.MustCompile(`^(\w+)(?: \([^)]*\))? is (?:the )?((?:(?:struct|enum) )?(?:->)?[A-Za-z_][\w]*(?:(?:->|\.)[A-Za-z_]\w*)*)`)
	docAlt = regexp.MustCompile(`^\s*(?:\+|/|,|and|or)\s+((?:->)?[A-Za-z_][\w]*(?:(?:->|\.)[A-Za-z_]\w*)*)`)
)

// docTwins reads the kernel names a doc comment claims for name. A kernel
// name has an underscore or comes after "struct"/"enum" or "->", so that
// "X is the seed's ..." names nothing.
func docTwins(name, doc string) ([]string, string) {
	text := strings.Join(strings.Fields(doc), " ")
	m := docIs.FindStringSubmatch(text)
	if m == nil || m[1] != name {
		return nil, ""
	}
	first, rest := m[2], text[len(m[0]):]
	var names []string
	if n, ok := kernelName(first); ok {
		names = append(names, n)
	}
	for len(names) > 0 {
		a := docAlt.FindStringSubmatch(rest)
		if a == nil {
			break
		}
		rest = rest[len(a[0]):]
		if n, ok := kernelName(a[1]); ok {
			names = append(names, n)
		}
	}
	sentence, _, _ := strings.Cut(text, ". ")
	variant := ""
	switch {
	case strings.Contains(sentence, "before the patch"):
		variant = "before"
	case strings.Contains(sentence, "after the patch"):
		variant = "after"
	}
	return names, variant
}

// kernelName normalizes a claimed name: "struct bio" -> "bio",
// "bbio->end_io" -> "end_io"; ok is false for plain English words.
func kernelName(s string) (string, bool) {
	if t, ok := strings.CutPrefix(s, "struct "); ok {
		return t, true
	}
	if t, ok := strings.CutPrefix(s, "enum "); ok {
		return t, true
	}
	if strings.HasSuffix(s, ".c") || strings.HasSuffix(s, ".h") {
		return "", false // "raid56.c's helper": a file, not a name
	}
	member := strings.Contains(s, "->") || strings.Contains(s, ".")
	if i := strings.LastIndexAny(s, ">."); i >= 0 {
		s = s[i+1:]
	}
	return s, member || strings.Contains(s, "_")
}

// Twins are the declarations whose doc comment claims the kernel name c.
func (idx *GoIndex) Twins(c string) []*GoDecl { return idx.byC[c] }

// Lookup finds symbol in file, or nil.
func (idx *GoIndex) Lookup(file, symbol string) *GoDecl { return idx.bySym[file+"\x00"+symbol] }

// Find returns every declaration called symbol, in any file.
func (idx *GoIndex) Find(symbol string) []*GoDecl {
	var out []*GoDecl
	for _, d := range idx.Decls {
		if d.Symbol == symbol {
			out = append(out, d)
		}
	}
	return out
}

// Source is the declaration's text, doc comment included.
func (idx *GoIndex) Source(d *GoDecl) string { return string(idx.src[d.File][d.Start:d.End]) }

// StructTwin is the Go type whose doc comment claims struct c (a struct
// type, not a function that builds one).
func (idx *GoIndex) StructTwin(c string) *GoDecl {
	for _, d := range idx.byC[c] {
		if !d.Field && !strings.Contains(d.Symbol, ".") && len(idx.FieldsOf(d)) > 0 {
			return d
		}
	}
	return nil
}

// FieldsOf lists the fields of type decl t.
func (idx *GoIndex) FieldsOf(t *GoDecl) []*GoDecl {
	var out []*GoDecl
	for _, d := range idx.Decls {
		if d.Field && d.File == t.File && strings.HasPrefix(d.Symbol, t.Symbol+".") {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	return out
}

// FieldTwin is the field of Go struct t that ports C field c: the one whose
// doc claims it, else the one with the same name in Go case (saved_src_iter
// and SavedSrcIter).
func (idx *GoIndex) FieldTwin(t *GoDecl, c string) *GoDecl {
	fields := idx.FieldsOf(t)
	for _, f := range fields {
		if slices.Contains(f.CNames, c) {
			return f
		}
	}
	for _, f := range fields {
		if sameName(f.Symbol[len(t.Symbol)+1:], c) {
			return f
		}
	}
	return nil
}

// sameName compares a Go and a C identifier ignoring case and underscores.
func sameName(goName, c string) bool {
	return strings.EqualFold(goName, strings.ReplaceAll(c, "_", ""))
}
