package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/raid"
)

// TestScrubPiecesStopsAfterThePieceInProgress: a signal during a piece
// of scrub --repair lets that piece finish, then stops, with what was
// scrubbed in the report.
func TestScrubPiecesStopsAfterThePieceInProgress(t *testing.T) {
	dir := t.TempDir()
	log := logrus.New()
	log.SetOutput(io.Discard)
	vol, _, err := raid.Assemble([]string{filepath.Join(dir, "a"), filepath.Join(dir, "b")},
		raid.AssembleOptions{Profile: raid.Raid1, Create: 24 << 20, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Close()
	if vol.Capacity() <= scrubPiece {
		t.Fatalf("capacity %d: the test needs more than one piece", vol.Capacity())
	}
	stop := make(chan os.Signal, 1)
	var pieces []uint64
	scrub := func(start, length uint64, csum raid.CsumLookup) (*raid.ScrubReport, error) {
		pieces = append(pieces, start)
		if start == 0 {
			stop <- syscall.SIGTERM // arrives while the first piece runs
		}
		return vol.ScrubRepair(start, length, csum)
	}
	rep, sig, err := scrubPieces(vol, scrub, nil, &progress{}, stop)
	if err != nil || sig != syscall.SIGTERM || len(pieces) != 1 || rep.Length != scrubPiece || rep.SectorsChecked != scrubPiece/raid.SectorSize {
		t.Fatalf("stopped scrub: %v %v, pieces %v, length %d, %d sectors", err, sig, pieces, rep.Length, rep.SectorsChecked)
	}
	rep, sig, err = scrubPieces(vol, vol.Scrub, nil, &progress{}, nil)
	if err != nil || sig != nil || rep.Length != vol.Capacity() {
		t.Fatalf("whole scrub: %v %v, length %d of %d", err, sig, rep.Length, vol.Capacity())
	}
}

// TestProgressOnlyOnATerminal: no progress line into a pipe or a file,
// nor with --quiet.
func TestProgressOnlyOnATerminal(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&env{stderr: &buf}, false, "scrub", 100)
	p.update(50)
	p.done()
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	newProgress(&env{stderr: f}, false, "scrub", 100).update(100)
	if st, _ := f.Stat(); buf.Len() != 0 || st.Size() != 0 {
		t.Errorf("progress written to a buffer (%q) or a file (%d bytes)", buf.String(), st.Size())
	}
	// Drawn when there is a terminal: the line names bytes, rate and ETA.
	p = &progress{w: &buf, what: "scrub", total: 4 << 20}
	p.start = p.start.Add(-1e9)
	p.update(1 << 20)
	if s := buf.String(); !strings.Contains(s, "1.0 MiB of 4.0 MiB (25%)") || !strings.Contains(s, "ETA") {
		t.Errorf("progress line %q", s)
	}
}

// TestBenchSignalRemovesScratch: SIGTERM in the middle of a bench removes
// its images and exits 130 (it used to leave gigabytes in /dev/shm).
func TestBenchSignalRemovesScratch(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "bench", "--dir", dir, "--size", "32M", "--bs", "1M", "--rounds", "1000", "--qd", "0")
	cmd.Env = append(os.Environ(), envReadyFD+"=bench") // TestMain runs the command line
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		imgs, _ := filepath.Glob(filepath.Join(dir, "btrfsdio-bench-*", "*", "*"))
		if len(imgs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("bench made no images in 30s: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Errorf("bench after SIGTERM: %v, %s; want exit %d", err, stderr.String(), exitInterrupted)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("bench left %v in --dir after SIGTERM", left)
	}
}

// TestCheckProgress: check's progress reaches the total of the mapped
// ranges, never going back, and the report is the one Check makes.
func TestCheckProgress(t *testing.T) {
	a, b, _, tg, _ := datasumRaid1With64K(t, 3)
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	vol, _, err := raid.Assemble([]string{a, b}, raid.AssembleOptions{Profile: raid.AnyProfile, ReadOnly: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Close()
	var calls, last, total uint64
	rep, err := btrfsdio.CheckWithProgress(vol, func(done, tot uint64) {
		if done < last || done > tot {
			t.Errorf("progress %d of %d after %d", done, tot, last)
		}
		calls, last, total = calls+1, done, tot
	})
	if err != nil || !rep.Clean() || calls == 0 || last != total || total < 64<<10 || rep.Scrub.SectorsChecked != total/raid.SectorSize {
		t.Fatalf("check: %v, clean %v, %d calls, %d of %d, %d sectors", err, rep != nil && rep.Clean(), calls, last, total, rep.Scrub.SectorsChecked)
	}
}
