package review

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpstreamTextsAgainstTree holds each of upstream's later diffs the
// port follows (issue 18) against the tree and the map, as the seed is.
func TestUpstreamTextsAgainstTree(t *testing.T) {
	root, err := ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range UpstreamTexts {
		files, _ := filepath.Glob(filepath.Join(DefaultUpstream(root), n+"-*.patch.txt"))
		if len(files) != 1 {
			t.Fatalf("upstream text %s-*: %d files where CI puts shared/ beside the repository", n, len(files))
		}
		var out bytes.Buffer
		f, err := Run(Options{Root: root, Seed: files[0], Map: filepath.Join(root, MapPath), Quiet: true}, &out)
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Problems) > 0 {
			t.Errorf("%s: the map or the tree drifted (run scripts/review-upstream):\n%s", filepath.Base(files[0]), strings.Join(f.Problems, "\n"))
		}
	}
}

// TestSeedAgainstTree is the CI check: the real seed patch (CI puts shared/
// beside the repository), the real tree and docs/upstream-map.md must agree.
func TestSeedAgainstTree(t *testing.T) {
	root, err := ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	seed := DefaultSeed(root)
	if _, err := os.Stat(seed); err != nil {
		t.Fatalf("the seed patch is not where CI puts it (shared/ beside the repository): %v", err)
	}
	var out bytes.Buffer
	f, err := Run(Options{Root: root, Seed: seed, Map: filepath.Join(root, MapPath)}, &out)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range f.Notes {
		t.Log(n)
	}
	if len(f.Problems) > 0 {
		t.Fatalf("the map or the tree drifted from the seed (run scripts/review):\n%s", strings.Join(f.Problems, "\n"))
	}
	// Guard against a parser that finds nothing and so checks nothing:
	// the definitions issue #7 names must be seen, with their change.
	d := seedDiff(t, seed)
	for key, change := range map[string]string{
		"btrfs_dio_private": "changed", "btrfs_dio_private.saved_src_iter": "added",
		"btrfs_dio_private.file_offset": "changed", "bounce_ctl": "added", "bounce_ctl.src": "added",
		"bounce_ctl.lock": "added", "bounce_ctl.pending": "added", "bounce_ctl.ret": "added",
		"put_bounce_bio_ctl": "added", "dio_end_write_copied_bio": "added", "dio_end_read_copied_bio": "added",
		"alloc_bounce_bbio": "added", "submit_bounce_bbio": "added", "btrfs_dio_submit_io": "changed",
		"btrfs_dio_end_io": "removed", "btrfs_extract_ordered_extent": "context", "btrfs_dio_ops": "changed",
		"btrfs_dio_ops.bio_set": "removed",
	} {
		e := d.Entity(key)
		if e == nil || e.Change() != change {
			t.Errorf("seed: %s should be %s, found %v", key, change, e)
		}
	}
	for _, want := range []string{"+++ Go twin: btrfsdio.FsInfo.submitIOBounce", "+++ Go twin: btrfsdio.FsInfo.submitIOZeroCopy",
		"- static void btrfs_dio_end_io(struct btrfs_bio *bbio)", "func (fs *FsInfo) dioEndIO("} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the printout lacks %q", want)
		}
	}
}

func seedDiff(t *testing.T, path string) *Diff {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hunks, err := ParsePatch(f)
	if err != nil {
		t.Fatal(err)
	}
	return NewDiff(hunks)
}

// wellFormed is a proper unified diff: context lines start with a space.
const wellFormed = `From: someone
Subject: [PATCH] demo

---
diff --git a/f.c b/f.c
--- a/f.c
+++ b/f.c
@@ -1,11 +1,14 @@ struct demo_data {
 };
 
 struct demo_ctl {
-	int old_field;
+	int new_field;
 	struct bio *src;
 };
 
+static void added_fn(struct demo_ctl *ctl)
+{
+	helper_call(ctl);
+}
 static void changed_fn(int x)
 {
-	old_call(x);
+	new_call(x);
 }
-- 
2.51.0
`

// mangled is the same diff after a mail client: leading spaces and blank
// context lines gone, the header counts no longer matching.
func mangled() string {
	var b strings.Builder
	for _, l := range strings.Split(wellFormed, "\n") {
		switch {
		case l == " ":
			continue
		case strings.HasPrefix(l, " ") || strings.HasPrefix(l, "+\t") || strings.HasPrefix(l, "-\t"):
			l = l[:1] + strings.TrimLeft(l[1:], " \t")
			if l[0] == ' ' {
				l = l[1:]
			}
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

func TestParsePatchTolerant(t *testing.T) {
	want := map[string]string{
		"demo_ctl": "changed", "demo_ctl.old_field": "removed", "demo_ctl.new_field": "added",
		"demo_ctl.src": "context", "added_fn": "added", "changed_fn": "changed",
	}
	for name, text := range map[string]string{"well-formed": wellFormed, "mangled": mangled()} {
		hunks, err := ParsePatch(strings.NewReader(text))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(hunks) != 1 || hunks[0].File != "f.c" {
			t.Fatalf("%s: hunks %+v", name, hunks)
		}
		if name == "mangled" && hunks[0].LostLines == 0 {
			t.Errorf("mangled: lost lines not noticed")
		}
		d := NewDiff(hunks)
		for key, change := range want {
			if e := d.Entity(key); e == nil || e.Change() != change {
				t.Errorf("%s: %s should be %s, got %+v", name, key, change, e)
			}
		}
		calls := d.Calls()
		for _, c := range []string{"helper_call", "old_call", "new_call"} {
			if !strings.Contains(strings.Join(calls, " "), c) {
				t.Errorf("%s: calls %v lack %s", name, calls, c)
			}
		}
	}
}

// demoTree is a module with twins for part of wellFormed.
const demoGo = `package demo

// Ctl is struct demo_ctl.
type Ctl struct {
	// NewField is the renamed field.
	NewField int
	src      *int
	// OldField is ->old_field, kept for old readers.
	OldField int
}

// addedFn is added_fn.
func addedFn(c *Ctl) { helperCall(c) }

// helperCall is helper_call.
func helperCall(c *Ctl) {}

// changedOld is changed_fn before the patch.
func changedOld(x int) {}
`

const demoMap = "| upstream | Go twin | where | differences |\n|---|---|---|---|\n" +
	"| `struct demo_ctl` | `Ctl` | demo.go:4 | D1 |\n" +
	"| `demo_ctl.old_field` | `Ctl.OldField` | demo.go:9 | |\n" +
	"| `demo_ctl.new_field` | `Ctl.NewField` | demo.go:6 | |\n" +
	"| `added_fn` | `addedFn` | demo.go:99 | |\n" +
	"| `helper_call` | `helperCall` | demo.go:16 | |\n" +
	"| `changed_fn` (before) | `changedOld` | demo.go:19 | D9 |\n" +
	"| `changed_fn` (after) | `changedNew` | demo.go:22 | |\n" +
	"\n| upstream | why |\n|---|---|\n| `old_call` | gone |\n\n- **D1** A difference.\n"

// TestCheckFindsRot: a definition without a twin, a map twin that no longer
// exists, an undefined D-number, a call with neither twin nor reason, and a
// moved twin (a note that -write fixes).
func TestCheckFindsRot(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("go.mod", "module demo\n")
	write("demo.go", demoGo)
	seed := write("seed.patch", mangled())
	mapPath := write("map.md", demoMap)
	opts := Options{Root: dir, Seed: seed, Map: mapPath, Quiet: true}
	var out bytes.Buffer
	f, err := Run(opts, &out)
	if err != nil {
		t.Fatal(err)
	}
	problems := strings.Join(f.Problems, "\n")
	for _, want := range []string{
		"no Go twin for function changed_fn (changed, after the patch)",
		"twin changedNew of changed_fn (after) no longer exists in demo.go",
		"cites D9, which the list of deliberate differences does not define",
		"new_call is called by the diff but no doc comment names it",
	} {
		if !strings.Contains(problems, want) {
			t.Errorf("problems lack %q:\n%s", want, problems)
		}
	}
	if len(f.Problems) != 4 {
		t.Errorf("%d problems, want 4:\n%s", len(f.Problems), problems)
	}
	if notes := strings.Join(f.Notes, "\n"); !strings.Contains(notes, "addedFn moved from demo.go:99 to demo.go:13") {
		t.Errorf("notes lack the moved twin:\n%s", notes)
	}
	opts.Write = true
	if _, err := Run(opts, &out); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(mapPath)
	if !strings.Contains(string(b), "`addedFn` | demo.go:13 |") {
		t.Errorf("-write did not update the line:\n%s", b)
	}
}

func TestDocTwins(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		want      string
		variant   string
	}{
		{"submitIOBounce", "submitIOBounce is btrfs_dio_submit_io after the patch: carry src", "btrfs_dio_submit_io", "after"},
		{"Bio", "Bio is struct bio, reduced to the fields", "bio", ""},
		{"AllocBio", "AllocBio is ->bio_set: when set", "bio_set", ""},
		{"EndIO", "EndIO is bbio->end_io, called once", "end_io", ""},
		{"writebackRange", "writebackRange is run_delalloc_cow / run_delalloc_nocow plus", "run_delalloc_cow run_delalloc_nocow", ""},
		{"bounceError", "bounceError is the seed's error label", "", ""},
		{"stripes", "stripes is raid56.c's stripe table", "", ""},
		{"Other", "Something is btrfs_foo", "", ""},
	} {
		got, variant := docTwins(c.name, c.doc)
		if strings.Join(got, " ") != c.want || variant != c.variant {
			t.Errorf("%q: got %v %q, want %q %q", c.doc, got, variant, c.want, c.variant)
		}
	}
}
