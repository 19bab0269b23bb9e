package review

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// SeedName is the seed patch's file name in shared/seed/.
const SeedName = "btrfs-allocate-bounce-pages-for-direct-io.patch.txt"

// MapPath is the map's path in the repository.
const MapPath = "docs/upstream-map.md"

// DefaultSeed is where CI puts the seed: shared/ beside the repository.
func DefaultSeed(root string) string {
	return filepath.Join(root, "..", "shared", "seed", SeedName)
}

// UpstreamTexts are the files of shared/upstream/ (issue 18) whose diffs the
// port follows and scripts/review-upstream holds against the tree, by their
// number prefix; the others are not diffs (02, 18) or change code the port
// does not model (docs/upstream-map.md, D37).
var UpstreamTexts = []string{"01", "08", "09", "10", "11", "12", "13", "16", "19"}

// DefaultUpstream is where the upstream texts are: shared/upstream/ beside
// the repository.
func DefaultUpstream(root string) string {
	return filepath.Join(root, "..", "shared", "upstream")
}

// ModuleRoot finds the directory holding go.mod at or above dir.
func ModuleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("review: no go.mod at or above the working directory")
		}
		dir = parent
	}
}

// Options configure Run.
type Options struct {
	Root string // module root
	Seed string // the seed patch
	Map  string // the upstream map
	// Only limits the printout to the upstream definition of that name.
	Only string
	// Quiet prints nothing but the findings.
	Quiet bool
	// Write updates the map's line numbers before checking.
	Write bool
}

// Run reviews the tree at opts.Root against the seed and the map, writing
// the printout and the findings to w. An error means the review could not
// run; problems found are in the Findings.
func Run(opts Options, w io.Writer) (*Findings, error) {
	pf, err := os.Open(opts.Seed)
	if err != nil {
		return nil, fmt.Errorf("review: the seed patch: %w", err)
	}
	defer pf.Close()
	hunks, err := ParsePatch(pf)
	if err != nil {
		return nil, fmt.Errorf("review: %s: %w", opts.Seed, err)
	}
	idx, err := IndexTree(opts.Root)
	if err != nil {
		return nil, err
	}
	m, err := ParseMap(opts.Map)
	if err != nil {
		return nil, err
	}
	if opts.Write {
		if m, err = rewriteMap(m, idx, w); err != nil {
			return nil, err
		}
	}
	d := NewDiff(hunks)
	if !opts.Quiet {
		Print(w, d, idx, m, opts.Only)
	}
	f := Check(d, idx, m)
	for _, n := range f.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, p := range f.Problems {
		fmt.Fprintf(w, "PROBLEM: %s\n", p)
	}
	fmt.Fprintf(w, "review: %d hunks, %d upstream definitions, %d map rows, %d problems\n",
		len(hunks), len(d.Entities), len(m.Rows), len(f.Problems))
	return f, nil
}

// rewriteMap writes the map back with current line numbers and rereads it.
func rewriteMap(m *UpMap, idx *GoIndex, w io.Writer) (*UpMap, error) {
	text, n := m.Rewrite(idx)
	if n == 0 {
		return m, nil
	}
	if err := os.WriteFile(m.Path, []byte(text), 0o644); err != nil {
		return nil, fmt.Errorf("review: -write: %w", err)
	}
	fmt.Fprintf(w, "review: updated %d line numbers in %s\n", n, m.Path)
	return ParseMap(m.Path)
}
