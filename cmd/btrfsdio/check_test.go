package main

import (
	"bytes"
	"github.com/btrfsdio/btrfsdio/tgt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/raid"
	"github.com/btrfsdio/btrfsdio/tgt/btrfs"
)

// testEnv is the tgt.Env serve hands a target's Build.
func testEnv() tgt.Env { return tgt.Env{RunDir: runDir(), Holder: imageHolder} }

// buildBtrfs runs the btrfsdio target's Build as `add` does.
func buildBtrfs(t *testing.T, args ...string) (*btrfs.Target, error) {
	t.Helper()
	tg, _, err := buildFactory(t, args...)
	return tg, err
}

// buildFactory is buildBtrfs that also returns the factory (for Info).
func buildFactory(t *testing.T, args ...string) (*btrfs.Target, *btrfs.Factory, error) {
	t.Helper()
	return buildWith(t, testEnv(), args...)
}

// buildWith parses args and builds the btrfsdio target with env.
func buildWith(t *testing.T, env tgt.Env, args ...string) (*btrfs.Target, *btrfs.Factory, error) {
	t.Helper()
	f := &btrfs.Factory{}
	fs := newFlags("add")
	f.Flags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	tg, _, err := f.Build(env)
	if err != nil {
		return nil, f, err
	}
	return tg.(*btrfs.Target), f, nil
}

// datasumRaid1With64K builds a datasum RAID1 target on two images a and b
// (args is its add command line) and writes 64 KiB of pattern mul at 1 MiB.
func datasumRaid1With64K(t *testing.T, mul int) (a, b string, args []string, tg *btrfs.Target, data []byte) {
	t.Helper()
	dir := t.TempDir()
	a, b = filepath.Join(dir, "a"), filepath.Join(dir, "b")
	args = []string{"--profile", "raid1", "--datasum", "--size", "8M", "-f", a, "-f", b}
	tg, err := buildBtrfs(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	data = blk.AlignedBuffer(64 << 10)
	for i := range data {
		data[i] = byte(i * mul)
	}
	if _, err := tg.FS.Inode().DirectWrite(&iomap.Kiocb{Pos: 1 << 20}, iomap.NewIovIter(data, 0)); err != nil {
		t.Fatal(err)
	}
	return a, b, args, tg, data
}

// TestAddReopensAndCheck: a second add on the same images finds the data
// the first wrote; check is clean, then finds a damaged copy (exit 3), then
// no valid metadata (exit 3, and add refuses).
func TestAddReopensAndCheck(t *testing.T) {
	a, b, args, tg, data := datasumRaid1With64K(t, 7)
	err := tg.Close() // what del and SIGTERM do
	if err != nil {
		t.Fatal(err)
	}
	if tg, err = buildBtrfs(t, args...); err != nil {
		t.Fatal(err)
	}
	got := blk.AlignedBuffer(len(data))
	if _, err := tg.FS.Inode().DirectRead(&iomap.Kiocb{Pos: 1 << 20}, iomap.NewIovIter(got, 0)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data not found on the second add: %v", err)
	}
	extent := tg.FS.AllocatedExtents()[0]
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}

	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb}
	if code := run(e, []string{"check", "-f", a, "-f", b}); code != exitOK || !strings.Contains(out.String(), "no errors found") {
		t.Fatalf("clean check: %d %q %q", code, out.String(), errb.String())
	}
	if code := run(e, []string{"check", "--profile", "raid9", "-f", a}); code != exitUsage {
		t.Fatalf("bad profile: %d", code)
	}
	if code := run(e, []string{"check"}); code != exitUsage {
		t.Fatalf("no images: %d", code)
	}
	// One copy of a data sector damaged: a differing mirror and a csum error.
	scribble(t, b, int64(raid.ReservedBytes+extent[0])+100)
	out.Reset()
	if code := run(e, []string{"check", "-f", a, "-f", b}); code != exitDamaged || !strings.Contains(out.String(), "1 csum errors") {
		t.Fatalf("damaged check: %d %q %q", code, out.String(), errb.String())
	}
	// Every metadata copy damaged: check and add refuse, nothing changes.
	for _, img := range []string{a, b} {
		d, err := raid.OpenDevice(img, raid.DeviceOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		sb, err := d.ReadSuper()
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		scribble(t, img, int64(sb.ChunkDevBytes+uint64(sb.RootSlot)*sb.MetaSlotBytes)+64)
	}
	out.Reset()
	errb.Reset()
	if code := run(e, []string{"check", "-f", a, "-f", b}); code != exitDamaged || !strings.Contains(errb.String(), "no valid copy") {
		t.Fatalf("check without valid metadata: %d %q %q", code, out.String(), errb.String())
	}
	if _, err := buildBtrfs(t, args...); err == nil || !strings.Contains(err.Error(), "refusing to open") {
		t.Fatalf("add without valid metadata: %v", err)
	}
}

func scribble(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("scribbled over"), off); err != nil {
		t.Fatal(err)
	}
}

// The inode flags stored with the volume win over a later add's flags, and
// the target info list shows is what is in force.
func TestStoredFlagsWin(t *testing.T) {
	dir := t.TempDir()
	files := []string{"-f", filepath.Join(dir, "a"), "-f", filepath.Join(dir, "b")}
	tg, err := buildBtrfs(t, append([]string{"--profile", "raid1", "--size", "8M"}, files...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	tg, f, err := buildFactory(t, append([]string{"--profile", "raid1", "--datasum"}, files...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if !tg.FS.Inode().NoDataSum || f.Info()["datasum"] != false {
		t.Errorf("--datasum on a nodatasum volume: inode NoDataSum %v, info %v", tg.FS.Inode().NoDataSum, f.Info()["datasum"])
	}
}

// scrub --repair on a datasum volume takes the good copy by the committed
// checksums: the damaged copy is the lowest mirror's, which a guess without
// checksums would have kept.
func TestScrubRepairUsesCommittedCsums(t *testing.T) {
	a, b, args, tg, data := datasumRaid1With64K(t, 5)
	extent := tg.FS.AllocatedExtents()[0]
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	scribble(t, a, int64(raid.ReservedBytes+extent[0])+100) // devid 1: mirror 1
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb}
	if code := run(e, []string{"scrub", "--repair", "-f", a, "-f", b}); code != exitOK || strings.Contains(out.String(), "lowest") {
		t.Fatalf("scrub --repair: %d %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run(e, []string{"check", "-f", a, "-f", b}); code != exitOK {
		t.Fatalf("check after repair: %d %q %q", code, out.String(), errb.String())
	}
	tg, err := buildBtrfs(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	got := blk.AlignedBuffer(len(data))
	if _, err := tg.FS.Inode().DirectRead(&iomap.Kiocb{Pos: 1 << 20}, iomap.NewIovIter(got, 0)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data after repair: %v", err)
	}
}
