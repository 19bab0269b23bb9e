package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/raid"
)

// TestOneImageTwiceIsUsage: two paths to one image are a bad command line
// for add, scrub and check, with both paths named.
func TestOneImageTwiceIsUsage(t *testing.T) {
	paths := formatImages(t, raid.Raid1, 2)
	dir := filepath.Dir(paths[0])
	t.Chdir(dir)
	if err := os.Symlink("a.img", "link.img"); err != nil {
		t.Fatal(err)
	}
	cases := [][]string{
		{"add", "-t", "btrfsdio", "-f", "a.img", "-f", "./a.img"},
		{"add", "-t", "btrfsdio", "--size", "8M", "-f", "new.img", "-f", "./new.img"},
		{"scrub", "-f", "a.img", "-f", "link.img"},
		{"scrub", "--repair", "-f", "a.img", "-f", paths[0]},
		{"check", "-f", "a.img", "-f", "link.img"},
	}
	for _, args := range cases {
		first, second := args[len(args)-3], args[len(args)-1]
		want := first + " and " + second + " are the same file"
		code, _, stderr := runCLI(t, nil, args...)
		if code != exitUsage || !strings.Contains(stderr, want) {
			t.Errorf("btrfsdio %q: exit %d, %q; want exit %d and %q", args, code, stderr, exitUsage, want)
		}
	}
	if _, err := os.Stat("new.img"); err == nil {
		t.Error("new.img was created")
	}
}

// heldByServer opens paths as a server does and records a run file naming
// this process as the server of ublk device 5, with relative paths.
func heldByServer(t *testing.T, paths []string) *raid.Volume {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	vol, _, err := raid.Assemble(paths, raid.AssembleOptions{Profile: raid.AnyProfile, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vol.Close() })
	dir := filepath.Dir(paths[0])
	var rel []any
	for _, p := range paths {
		rel = append(rel, filepath.Base(p))
	}
	runDir := t.TempDir()
	t.Setenv(envRunDir, runDir)
	ri := runInfo{DevID: 5, PID: os.Getpid(), Type: "btrfsdio", Dir: dir, Args: []string{"-t", "btrfsdio"},
		Target: map[string]any{"files": rel}}
	b, _ := json.Marshal(ri)
	if err := os.WriteFile(filepath.Join(runDir, "ublk5.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return vol
}

// TestImagesOfARunningServer: scrub, check and another add's target meet
// images a server holds with an error naming its pid; --ignore-lock
// reads them anyway; once the server is gone they work again.
func TestImagesOfARunningServer(t *testing.T) {
	paths := formatImages(t, raid.Raid1, 2)
	vol := heldByServer(t, paths)
	held := fmt.Sprintf("device %s is in use by the server of /dev/ublkb5 (pid %d)", paths[0], os.Getpid())
	files := []string{"-f", paths[0], "-f", paths[1]}
	for _, cmd := range []string{"scrub", "check"} {
		code, _, stderr := runCLI(t, nil, append([]string{cmd}, files...)...)
		if code != exitFail || !strings.Contains(stderr, held) || !strings.Contains(stderr, "--ignore-lock") {
			t.Errorf("%s: exit %d, %q; want exit %d and %q", cmd, code, stderr, exitFail, held)
		}
		code, stdout, stderr := runCLI(t, nil, append([]string{cmd, "--ignore-lock"}, files...)...)
		if code != exitOK || !strings.Contains(stdout, "0 differing") {
			t.Errorf("%s --ignore-lock: exit %d, %q %q", cmd, code, stdout, stderr)
		}
	}
	code, _, stderr := runCLI(t, nil, append([]string{"scrub", "--repair"}, files...)...)
	if code != exitFail || !strings.Contains(stderr, held) {
		t.Errorf("scrub --repair: exit %d, %q", code, stderr)
	}
	code, _, stderr = runCLI(t, nil, append([]string{"scrub", "--repair", "--ignore-lock"}, files...)...)
	if code != exitUsage || !strings.Contains(stderr, "--repair writes") {
		t.Errorf("scrub --repair --ignore-lock: exit %d, %q", code, stderr)
	}
	spec, err := parseAdd(append([]string{"-t", "btrfsdio"}, files...))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := spec.factory.Build(testEnv()); err == nil || !strings.Contains(err.Error(), held) {
		t.Errorf("a second server's target: %v, want %q", err, held)
	}

	vol.Close()
	for _, cmd := range []string{"scrub", "check"} {
		if code, stdout, stderr := runCLI(t, nil, append([]string{cmd}, files...)...); code != exitOK {
			t.Errorf("%s after the server closed: exit %d, %q %q", cmd, code, stdout, stderr)
		}
	}
}

// TestHolderUnknown: images held by a process no run file names (or whose
// recorded server is dead) are "in use by another process".
func TestHolderUnknown(t *testing.T) {
	paths := formatImages(t, raid.Raid1, 2)
	heldByServer(t, paths)
	ri := runInfo{DevID: 5, PID: 1 << 30, Dir: "/", Target: map[string]any{"files": []any{paths[0], paths[1]}}}
	b, _ := json.Marshal(ri)
	if err := os.WriteFile(filepath.Join(os.Getenv(envRunDir), "ublk5.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, nil, "check", "-f", paths[0], "-f", paths[1])
	if code != exitFail || !strings.Contains(stderr, paths[0]+" is in use by another process") {
		t.Errorf("check: exit %d, %q", code, stderr)
	}
}

// TestHelpNamesTheLock: help scrub and help check document the lock and
// its override.
func TestHelpNamesTheLock(t *testing.T) {
	for _, cmd := range []string{"scrub", "check"} {
		_, stdout, _ := runCLI(t, nil, "help", cmd)
		for _, want := range []string{"--ignore-lock", "locked", "stale"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("help %s: no %q in %q", cmd, want, stdout)
			}
		}
	}
}
