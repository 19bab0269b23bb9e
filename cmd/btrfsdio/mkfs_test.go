package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/raid"
	"github.com/btrfsdio/btrfsdio/tgt/btrfs"
	"github.com/btrfsdio/btrfsdio/ublk"
	"github.com/sirupsen/logrus"
)

// blankImage is a new all-zero image of size bytes.
func blankImage(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// plant writes b at off in the file at path.
func plant(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// gptExt4Image is a 16 MiB image that looks like a GPT disk whose first
// partition, at 1 MiB, holds ext4: the header at LBA 1 with an entry array
// at LBA 2, and an ext4 superblock (extents) in the partition.
func gptExt4Image(t *testing.T, dir, name string) string {
	t.Helper()
	p := blankImage(t, dir, name, 16<<20)
	le := binary.LittleEndian
	hdr := make([]byte, 92)
	copy(hdr, "EFI PART")
	le.PutUint64(hdr[72:], 2)   // entry array LBA
	le.PutUint32(hdr[80:], 128) // entries
	le.PutUint32(hdr[84:], 128) // entry size
	entry := make([]byte, 128)
	copy(entry, "linux data guid!")
	le.PutUint64(entry[32:], 2048)      // first LBA
	le.PutUint64(entry[40:], 2048+8191) // last LBA
	plant(t, p, 512, hdr)
	plant(t, p, 1024, entry)
	plant(t, p, 1<<20+1024+0x38, []byte{0x53, 0xef})
	plant(t, p, 1<<20+1024+0x60, []byte{0x40, 0, 0, 0}) // INCOMPAT_EXTENTS
	return p
}

// ext4Image is an image with an ext4 superblock at 1 KiB.
func ext4Image(t *testing.T, dir, name string) string {
	t.Helper()
	p := blankImage(t, dir, name, 16<<20)
	plant(t, p, 1024+0x38, []byte{0x53, 0xef})
	plant(t, p, 1024+0x60, []byte{0x40, 0, 0, 0})
	return p
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMkfsUsage(t *testing.T) {
	dir := t.TempDir()
	img := blankImage(t, dir, "a.img", 16<<20)
	absent := filepath.Join(dir, "absent.img")
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{"mkfs", "-f", img}, "mkfs: --profile P is required (single dup raid0 raid1"},
		{[]string{"mkfs", "--profile", "raid9", "-f", img}, "mkfs: --profile: raid: unknown profile \"raid9\""},
		{[]string{"mkfs", "--profile", "single"}, "mkfs: at least one -f IMG is required"},
		{[]string{"mkfs", "--profile", "raid1", "-f", img}, "mkfs: profile raid1 needs at least 2 devices, got 1"},
		{[]string{"mkfs", "--profile", "single", "-f", absent}, "mkfs: " + absent + " does not exist (give --size to create it)"},
		{[]string{"mkfs", "--profile", "single", "--datasum", "--nocow", "-f", img}, "mkfs: --datasum and --nocow exclude each other"},
		{[]string{"mkfs", "--profile", "single", "--size", "12Q", "-f", absent}, "mkfs: --size: bad size"},
		{[]string{"mkfs", "--profile", "single", "-f", img, "extra"}, `mkfs: unexpected argument "extra"`},
		{[]string{"mkfs", "--profile", "single", "--bogus", "-f", img}, "mkfs: unknown flag: --bogus"},
		{[]string{"mkfs", "--profile", "single", "-f", dir}, "mkfs: " + dir + " is a directory"},
		{[]string{"mkfs", "--profile", "single", "-f", "/dev/null"}, "/dev/null is a character device, not a regular file or block device"},
	}
	for _, c := range cases {
		code, stdout, stderr := runCLI(t, ublk.ErrNoDriver, c.args...)
		if code != exitUsage || !strings.Contains(stderr, c.msg) || stdout != "" {
			t.Errorf("btrfsdio %q: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, stdout, stderr, c.msg)
		}
	}
	if _, err := os.Stat(absent); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused command line created %s", absent)
	}
	if !bytes.Equal(readFile(t, img), make([]byte, 16<<20)) {
		t.Error("a refused command line wrote the image")
	}
	code, stdout, _ := runCLI(t, nil, "mkfs", "-h")
	if code != exitOK || !strings.Contains(stdout, "usage: btrfsdio mkfs "+mkfsUsage) || !strings.Contains(stdout, "--force") {
		t.Errorf("mkfs -h: exit %d, %q", code, stdout)
	}
}

// mkfs needs no ublk driver; add then serves the volume with the flags
// mkfs recorded (not its own defaults) and check finds it clean.
func TestMkfsThenAddThenCheck(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	code, stdout, stderr := runCLI(t, ublk.ErrNoDriver, "mkfs", "--profile", "raid1", "--datasum", "--size", "16M", "-f", a, "-f", b)
	if code != exitOK || !strings.HasPrefix(stdout, "made a raid1 volume on 2 devices: ") || !strings.Contains(stdout, "datasum on, nocow off") {
		t.Fatalf("mkfs: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	tg, f, notes, err := buildNoting(t, "--profile", "raid1", "-f", a, "-f", b)
	if err != nil {
		t.Fatalf("add after mkfs: %v", err)
	}
	if inode := tg.FS.Inode(); inode.NoDataSum || inode.NoDataCow || f.Info()["datasum"] != true {
		t.Errorf("add did not take mkfs's flags: nodatasum %v nodatacow %v, info %v", inode.NoDataSum, inode.NoDataCow, f.Info())
	}
	if len(*notes) != 0 {
		t.Errorf("add of a made volume says %q", *notes)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, nil, "check", "-f", a, "-f", b)
	if code != exitOK || !strings.Contains(stdout, "no errors found") {
		t.Errorf("check after mkfs and add: exit %d, %q %q", code, stdout, stderr)
	}
}

// buildNoting runs Build as add does and collects what it tells the user.
func buildNoting(t *testing.T, args ...string) (*btrfs.Target, *btrfs.Factory, *[]string, error) {
	t.Helper()
	var notes []string
	env := testEnv()
	env.Notice = func(m string) { notes = append(notes, m) }
	tg, f, err := buildWith(t, env, args...)
	return tg, f, &notes, err
}

// mkfs refuses an image that holds a filesystem, naming it, writes nothing
// and removes the images it created for the volume; --force formats it.
func TestMkfsRefusesForeign(t *testing.T) {
	dir := t.TempDir()
	a := ext4Image(t, dir, "a.img")
	b := filepath.Join(dir, "b.img")
	before := readFile(t, a)
	code, stdout, stderr := runCLI(t, nil, "mkfs", "--profile", "raid1", "--size", "16M", "-f", a, "-f", b)
	want := "btrfsdio: mkfs: " + a + ": found ext4 filesystem at offset 0; refusing to format (use --force)\n"
	if code != exitFail || stderr != want || stdout != "" {
		t.Errorf("mkfs over ext4: exit %d, stdout %q, stderr %q; want exit 1 and %q", code, stdout, stderr, want)
	}
	if !bytes.Equal(readFile(t, a), before) {
		t.Error("the refused image was written")
	}
	if _, err := os.Stat(b); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the image mkfs created for the refused volume is left: %v", err)
	}
	code, stdout, stderr = runCLI(t, nil, "mkfs", "--profile", "raid1", "--size", "16M", "--force", "-f", a, "-f", b)
	if code != exitOK || !strings.HasPrefix(stdout, "made a raid1 volume") || !strings.Contains(stderr, "erased ext4 filesystem at offset 0") {
		t.Fatalf("mkfs --force: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if code, stdout, stderr = runCLI(t, nil, "check", "-f", a, "-f", b); code != exitOK {
		t.Errorf("check after mkfs --force: exit %d, %q %q", code, stdout, stderr)
	}
}

// A btrfsdio volume is ours, but mkfs over it needs --force too, as
// mkfs.btrfs over an existing btrfs does.
func TestMkfsOverVolumeNeedsForce(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.img")
	if code, _, stderr := runCLI(t, nil, "mkfs", "--profile", "single", "--nocow", "--size", "16M", "-f", a); code != exitOK {
		t.Fatalf("mkfs: %d %q", code, stderr)
	}
	before := readFile(t, a)
	code, _, stderr := runCLI(t, nil, "mkfs", "--profile", "dup", "-f", a)
	if code != exitFail || !strings.Contains(stderr, a+": found btrfsdio volume at offset 0; refusing to format (use --force)") {
		t.Errorf("mkfs over a volume: exit %d, %q", code, stderr)
	}
	if !bytes.Equal(readFile(t, a), before) {
		t.Error("the refused volume was written")
	}
	code, stdout, stderr := runCLI(t, nil, "mkfs", "--profile", "dup", "--force", "-f", a)
	if code != exitOK || !strings.Contains(stdout, "made a dup volume on 1 device:") || !strings.Contains(stdout, "nocow off") {
		t.Errorf("mkfs --force over a volume: exit %d, %q %q", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, nil, "check", "-f", a)
	if code != exitOK || !strings.HasPrefix(stdout, "check dup:") {
		t.Errorf("check of the new volume: exit %d, %q", code, stdout)
	}
}

// add formats blank images and says so; an image that looks like a GPT
// disk with ext4 in its first partition is refused, named and left as it
// was, unless --force.
func TestAddFormatsOnlyBlankImages(t *testing.T) {
	dir := t.TempDir()
	a, b := blankImage(t, dir, "a.img", 16<<20), blankImage(t, dir, "b.img", 16<<20)
	tg, _, notes, err := buildNoting(t, "--profile", "raid1", "-f", a, "-f", b)
	if err != nil {
		t.Fatal(err)
	}
	tg.Close()
	if want := []string{"formatting 2 blank images as raid1"}; !slicesEqual(*notes, want) {
		t.Errorf("add on blank images says %q, want %q", *notes, want)
	}

	g, h := gptExt4Image(t, dir, "g.img"), blankImage(t, dir, "h.img", 16<<20)
	before := readFile(t, g)
	_, _, notes, err = buildNoting(t, "--profile", "raid1", "-f", g, "-f", h)
	want := g + ": found gpt partition table at offset 512, ext4 filesystem at offset 1048576 (partition 1); refusing to format (use --force)"
	if err == nil || err.Error() != want {
		t.Errorf("add on a GPT disk: %v\nwant %s", err, want)
	}
	if len(*notes) != 0 {
		t.Errorf("a refused add says %q", *notes)
	}
	if !bytes.Equal(readFile(t, g), before) {
		t.Error("the refused image was written")
	}
	tg, _, notes, err = buildNoting(t, "--profile", "raid1", "--force", "-f", g, "-f", h)
	if err != nil {
		t.Fatalf("add --force: %v", err)
	}
	tg.Close()
	if want := []string{"formatting 2 blank images as raid1"}; !slicesEqual(*notes, want) {
		t.Errorf("add --force says %q, want %q", *notes, want)
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

// The daemon's notes reach add's stderr before its answer.
func TestReadReadyPrintsNotes(t *testing.T) {
	var errb bytes.Buffer
	e := &env{stdout: &bytes.Buffer{}, stderr: &errb}
	r := bufio.NewReader(strings.NewReader("NOTE formatting 2 blank images as raid1\nREADY 3\n"))
	if got := readReady(e, r); got != "READY 3" || errb.String() != "btrfsdio: formatting 2 blank images as raid1\n" {
		t.Errorf("readReady = %q, stderr %q", got, errb.String())
	}
	if got := readReady(e, bufio.NewReader(strings.NewReader("NOTE x\n"))); got != "" {
		t.Errorf("readReady at EOF = %q", got)
	}
}

// Through the real daemon: add on blank images says on stderr that it
// formats them (here the device cannot be added: no ublk_drv).
func TestAddSaysItFormats(t *testing.T) {
	if _, err := os.Stat(ublk.ControlPath); err == nil {
		t.Skip("ublk_drv is loaded here: the daemon would really add a device")
	}
	t.Setenv(envLogDir, t.TempDir())
	dir := t.TempDir()
	a, b := blankImage(t, dir, "a.img", 16<<20), blankImage(t, dir, "b.img", 16<<20)
	code, _, stderr := runCLI(t, nil, "add", "-t", "btrfsdio", "--profile", "raid1", "-f", a, "-f", b)
	if code != exitFail || !strings.HasPrefix(stderr, "btrfsdio: formatting 2 blank images as raid1\nbtrfsdio: add: ") {
		t.Errorf("add: exit %d, stderr %q", code, stderr)
	}
	// (The daemon formatted a and b before it failed.)
	g, h := gptExt4Image(t, dir, "g.img"), blankImage(t, dir, "h.img", 16<<20)
	code, _, stderr = runCLI(t, nil, "add", "-t", "btrfsdio", "--profile", "raid1", "-f", g, "-f", h)
	want := "btrfsdio: add: " + g + ": found gpt partition table at offset 512, ext4 filesystem at offset 1048576 (partition 1); refusing to format (use --force)\n"
	if code != exitFail || stderr != want {
		t.Errorf("add on a GPT disk: exit %d, stderr %q\nwant %q", code, stderr, want)
	}
}

// goName matches what looks like a Go identifier in a message: a word with
// an inner capital (NoBouncePool, OpenFsInfo; not MiB) or a package-qualified name.
var goName = regexp.MustCompile(`\b[A-Za-z][a-z]+[A-Z][a-z]+[A-Za-z]*\b|\b[a-z]+\.[A-Z][A-Za-z]+\b`)

// Messages say what to do, in the user's terms, never with Go names.
func TestMessagesNameNoGoIdentifiers(t *testing.T) {
	dir := t.TempDir()
	a := blankImage(t, dir, "a.img", 16<<20)
	b := blankImage(t, dir, "b.img", 16<<20)
	absent := filepath.Join(dir, "absent.img")
	check := func(what, msg, want string) {
		t.Helper()
		msg = strings.ReplaceAll(msg, dir, "DIR")
		if !strings.Contains(msg, want) || goName.MatchString(msg) {
			t.Errorf("%s: %q; want %q and no Go names (found %q)", what, msg, want, goName.FindString(msg))
		}
	}
	_, stderr := runCLIErr(t, "add", "-t", "btrfsdio", "--bounce-pool", "100K", "-f", a, "-f", b)
	check("--bounce-pool 100K", stderr, "want a size such as 32M, at least 1M, or off")
	_, _, _, err := buildNoting(t, "--profile", "raid1", "-f", a, "-f", absent)
	check("an absent image without --size", err.Error(), "DIR/absent.img does not exist (give --size to create it)")
	_, stderr = runCLIErr(t, "check", "--profile", "raid1", "-f", a, "-f", b)
	check("check of blank images", stderr, "no volume to open: DIR/a.img, DIR/b.img are blank")
	_, stderr = runCLIErr(t, "scrub", "--profile", "raid1", "-f", a)
	check("scrub of a blank image", stderr, "no volume to open: DIR/a.img is blank")
}

// runCLIErr is runCLI for the exit code and stderr.
func runCLIErr(t *testing.T, args ...string) (int, string) {
	t.Helper()
	code, _, stderr := runCLI(t, nil, args...)
	return code, stderr
}

// TestMkfsProgress: on a terminal mkfs's line names each step and is
// cleared before the result; into a pipe, or with -q, there is none.
func TestMkfsProgress(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	var line, out bytes.Buffer
	log := logrus.New()
	log.SetOutput(io.Discard)
	prog := &progress{w: &line, what: "mkfs"}
	if err := mkfsSteps(&env{stdout: &out, stderr: io.Discard}, []string{a, b}, 256<<20, raid.Raid1, btrfsdio.Options{}, false, log, prog); err != nil {
		t.Fatal(err)
	}
	s := line.String()
	for _, step := range []string{"mkfs: creating the missing images of 256.0 MiB", "mkfs: probing and formatting 2 devices as raid1", "mkfs: writing the first commit"} {
		if !strings.Contains(s, "\r"+step+"\x1b[K") {
			t.Errorf("progress %q: no step %q", s, step)
		}
	}
	if !strings.HasSuffix(s, "\r\x1b[K") {
		t.Errorf("progress %q not cleared at the end", s)
	}
	for _, args := range [][]string{
		{"mkfs", "--profile", "raid1", "--size", "256M", "-f", filepath.Join(dir, "c.img"), "-f", filepath.Join(dir, "d.img")},
		{"mkfs", "-q", "--profile", "single", "--size", "256M", "-f", filepath.Join(dir, "e.img")},
	} {
		code, stdout, stderr := runCLI(t, nil, args...)
		if code != exitOK || stderr != "" || !strings.HasPrefix(stdout, "made a ") {
			t.Errorf("%q: exit %d stdout %q stderr %q (no progress wanted off a terminal)", args, code, stdout, stderr)
		}
	}
}
