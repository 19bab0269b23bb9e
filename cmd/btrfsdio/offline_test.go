package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/raid"
)

// committedMetaCopy is where img's copy of the committed metadata lies.
func committedMetaCopy(t *testing.T, img string) int64 {
	t.Helper()
	d, err := raid.OpenDevice(img, raid.DeviceOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sb, err := d.ReadSuper()
	if err != nil {
		t.Fatal(err)
	}
	return int64(sb.ChunkDevBytes + uint64(sb.RootSlot)*sb.MetaSlotBytes)
}

// TestCheckAndScrubCoverEveryCopy: a scribbled primary superblock on one
// image and a scribbled metadata copy on the other are damage to check
// (exit 3, each named by image, copy index and byte offset) and to scrub;
// scrub --repair rewrites both, after which scrub and check are clean and
// add finds the data.
func TestCheckAndScrubCoverEveryCopy(t *testing.T) {
	a, b, args, tg, data := datasumRaid1With64K(t, 3)
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	metaOff := committedMetaCopy(t, b)
	scribble(t, a, 64<<10+100)
	scribble(t, b, metaOff+200)
	files := []string{"-f", a, "-f", b}
	superLine := fmt.Sprintf("superblock copy 0 of %s at byte %d: corrupt superblock", a, 64<<10)
	metaLine := fmt.Sprintf("metadata copy 0 of %s at byte %d: corrupt metadata", b, metaOff)

	code, stdout, stderr := runCLI(t, nil, append([]string{"check"}, files...)...)
	if code != exitDamaged || strings.Contains(stdout, "no errors found") || !strings.Contains(stdout, superLine) ||
		!strings.Contains(stdout, metaLine) || !strings.Contains(stdout, "5 of 6 superblock copies valid, 1 of 2 metadata copies valid") {
		t.Fatalf("check: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, nil, append([]string{"scrub"}, files...)...)
	if code != exitScrubDiffers || !strings.Contains(stdout, superLine) || !strings.Contains(stdout, metaLine) ||
		!strings.Contains(stdout, "superblocks: 6 copies checked, 1 bad") || !strings.Contains(stdout, "metadata: 2 copies checked, 1 bad") {
		t.Fatalf("scrub: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, nil, append([]string{"scrub", "--repair"}, files...)...)
	if code != exitOK || !strings.Contains(stdout, superLine) || !strings.Contains(stdout, "repair: 1 superblock and 1 metadata copies rewritten") {
		t.Fatalf("scrub --repair: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, nil, append([]string{"scrub"}, files...)...)
	if code != exitOK || !strings.Contains(stdout, "superblocks: 6 copies checked, 0 bad") || !strings.Contains(stdout, "metadata: 2 copies checked, 0 bad") {
		t.Fatalf("scrub after repair: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, nil, append([]string{"check"}, files...)...)
	if code != exitOK || !strings.Contains(stdout, "no errors found") || stderr != "" {
		t.Fatalf("check after repair: exit %d stdout %q stderr %q", code, stdout, stderr)
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

// TestScrubRepairFlushes: scrub --repair flushes every image before it
// reports success, and a flush that fails is an error.
func TestScrubRepairFlushes(t *testing.T) {
	paths := formatImages(t, raid.Raid1, 2)
	log := logrus.New()
	log.SetOutput(io.Discard)
	vol, _, err := raid.Assemble(paths, raid.AssembleOptions{Profile: raid.AnyProfile, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Close()
	res, code := scrubAll(vol, log, true, &progress{}, nil)
	if code != exitOK || res.flushErr != nil || res.exitCode(true) != exitOK {
		t.Fatalf("clean repair: %d %v %v", code, res.err, res.flushErr)
	}
	for _, d := range vol.Devices() {
		if d.Stats().Flushes == 0 {
			t.Errorf("%s not flushed by scrub --repair", d.Path())
		}
	}
	vol.Devices()[1].InjectFault(blk.OpFlush, -1)
	if res, code = scrubAll(vol, log, true, &progress{}, nil); code != exitOK || res.flushErr == nil {
		t.Fatalf("failing flush not reported: %d %v", code, res.flushErr)
	}
}

// TestDegradedZeroedSuperblock: an image whose superblocks are all zeroed
// is a missing device for --degraded (not "cannot open"), and without it
// the volume is refused.
func TestDegradedZeroedSuperblock(t *testing.T) {
	paths := formatImages(t, raid.Raid1, 2)
	f, err := os.OpenFile(paths[1], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{64 << 10, 256 << 10, 512 << 10} {
		if _, err := f.WriteAt(make([]byte, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	files := []string{"-f", paths[0], "-f", paths[1]}
	if code, stdout, stderr := runCLI(t, nil, append([]string{"check"}, files...)...); code != exitFail {
		t.Fatalf("check without --degraded: exit %d %q %q", code, stdout, stderr)
	}
	for _, cmd := range []string{"check", "scrub"} {
		code, stdout, stderr := runCLI(t, nil, append([]string{cmd, "--degraded"}, files...)...)
		if code != exitOK || !strings.Contains(stderr, "treated as a missing device") {
			t.Errorf("%s --degraded: exit %d stdout %q stderr %q", cmd, code, stdout, stderr)
		}
	}
}

// TestPrivateDirsAndLogs: the log and run directories are made 0700, a
// default one that is looser is tightened, one someone else owns or can
// write is refused; logs are 0600 and never written through a symlink.
func TestPrivateDirsAndLogs(t *testing.T) {
	base := t.TempDir()
	logDir := filepath.Join(base, "log")
	t.Setenv(envLogDir, logDir)
	path, f, err := openDaemonLog(3)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	assertMode(t, logDir, 0o700)
	assertMode(t, path, 0o600)
	// An old log readable by all is made private.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, f, err = openDaemonLog(3); err != nil {
		t.Fatal(err)
	}
	f.Close()
	assertMode(t, path, 0o600)
	// A symlink where the log goes is not followed.
	target := filepath.Join(base, "elsewhere")
	if err := os.Symlink(target, filepath.Join(logDir, "ublk4.log")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := openDaemonLog(4); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("log through a symlink: %v", err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("the symlink's target was created: %v", err)
	}

	// A named directory others can write, or someone else owns, is refused.
	loose := filepath.Join(base, "loose")
	if err := os.Mkdir(loose, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envLogDir, loose)
	if _, _, err := openDaemonLog(3); err == nil || !strings.Contains(err.Error(), "written by group or others") {
		t.Fatalf("world-writable log directory: %v", err)
	}
	if err := os.Chmod(loose, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(loose, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, _, err := openDaemonLog(3); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("foreign log directory: %v", err)
	}
}

// TestPrivateDirTightensOurs: the run directory is created 0700, and one
// of our default directories found looser is tightened to 0700.
func TestPrivateDirTightensOurs(t *testing.T) {
	base := t.TempDir()
	runDirPath := filepath.Join(base, "run")
	t.Setenv(envRunDir, runDirPath)
	if err := privateDir(runDir(), false); err != nil {
		t.Fatal(err)
	}
	assertMode(t, runDirPath, 0o700)
	if err := os.Chmod(runDirPath, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := privateDir(runDirPath, true); err != nil {
		t.Fatal(err)
	}
	assertMode(t, runDirPath, 0o700)
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != want {
		t.Fatalf("%s: mode %v (%v), want %v", path, st.Mode().Perm(), err, want)
	}
}

// TestRecoverRefusesUntrustedRunFile: recover runs the add command line a
// run file records only when the file is ours and nobody else can write it.
func TestRecoverRefusesUntrustedRunFile(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(envRunDir, dir)
	b, _ := json.Marshal(runInfo{DevID: 7, PID: 1, Args: []string{"-t", "loop", "-f", "x"}})
	path := filepath.Join(dir, "ublk7.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// Trusted: recover gets as far as the (live) pid it records.
	if code, _, stderr := runCLI(t, nil, "recover", "-n", "7"); code != exitFail || !strings.Contains(stderr, "still served by pid 1") {
		t.Fatalf("trusted run file: exit %d %q", code, stderr)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, nil, "recover", "-n", "7"); code != exitFail || !strings.Contains(stderr, "can be written by group or others") {
		t.Errorf("world-writable run file: exit %d %q", code, stderr)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, nil, "recover", "-n", "7"); code != exitFail || !strings.Contains(stderr, "not owned by us") {
		t.Errorf("foreign run file: exit %d %q", code, stderr)
	}
	other := filepath.Join(t.TempDir(), "planted.json")
	if err := os.WriteFile(other, b, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	if err := os.Symlink(other, path); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, nil, "recover", "-n", "7"); code != exitFail || !strings.Contains(stderr, "symbolic link") {
		t.Errorf("symlinked run file: exit %d %q", code, stderr)
	}
}
