package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/raid"
)

// formatImages makes a volume of profile p on n new 8 MiB images and
// returns their paths.
func formatImages(t *testing.T, p raid.Profile, n int) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i := 0; i < n; i++ {
		paths = append(paths, filepath.Join(dir, string(rune('a'+i))+".img"))
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	vol, err := openVolume(paths, p, 8<<20, false, false, formatOptions{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := vol.Close(); err != nil {
		t.Fatal(err)
	}
	return paths
}

// TestDegradedRefusals: a volume with an image absent, or fewer images
// than it has devices, is refused with the missing devid unless
// --degraded; more missing than the profile tolerates is refused anyway.
func TestDegradedRefusals(t *testing.T) {
	r1 := formatImages(t, raid.Raid1, 2)
	r5 := formatImages(t, raid.Raid5, 3)
	for _, p := range []string{r1[1], r5[1], r5[2]} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	add := []string{"add", "-t", "btrfsdio", "--foreground"}
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"scrub", "-f", r1[0], "-f", r1[1]},
			[]string{"devid 2 missing", "--degraded", "not found: " + r1[1]}},
		{[]string{"scrub", "-f", r1[0]}, []string{"the volume has 2 devices, 1 given: devid 2 missing", "--degraded"}},
		{append(add, "--profile", "raid1", "-f", r1[1], "-f", r1[0]),
			[]string{"devid 2 missing", "--degraded", "not found: " + r1[1]}},
		{[]string{"scrub", "--degraded", "-f", r5[0], "-f", r5[1], "-f", r5[2]},
			[]string{"devid 2, 3 missing", "raid5 tolerates 1 missing device(s), even degraded"}},
		{append(add, "--profile", "raid5", "--degraded", "-f", r5[0], "-f", r5[1], "-f", r5[2]),
			[]string{"devid 2, 3 missing", "raid5 tolerates 1 missing device(s), even degraded"}},
	}
	for _, c := range cases {
		code, stdout, stderr := runCLI(t, nil, c.args...)
		for _, w := range c.want {
			if code != exitFail || !strings.Contains(stderr, w) {
				t.Errorf("btrfsdio %q: exit %d stdout %q stderr %q; want exit %d and %q", c.args, code, stdout, stderr, exitFail, w)
			}
		}
	}
	// What add --degraded builds its target on.
	log := logrus.New()
	log.SetOutput(io.Discard)
	vol, err := openVolume(r1, raid.Raid1, 0, false, true, formatOptions{}, log)
	if err != nil {
		t.Fatalf("raid1 with one image absent, degraded: %v", err)
	}
	if m := vol.MissingDevices(); len(m) != 1 || m[0] != 2 {
		t.Errorf("missing devices %v, want [2]", m)
	}
	vol.Close()
	code, stdout, stderr := runCLI(t, nil, "scrub", "--degraded", "-f", r1[0], "-f", r1[1])
	if code != exitOK || !strings.Contains(stdout, "degraded: devid [2] missing") || !strings.Contains(stdout, "0 read errors") {
		t.Errorf("degraded scrub: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
}

// TestScrubRepairImages: mirrors that differ are made equal to mirror 1 by
// scrub --repair, which says so; the next scrub is clean.
func TestScrubRepairImages(t *testing.T) {
	paths := formatImages(t, raid.Raid1C3, 3)
	f, err := os.OpenFile(paths[2], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("differs"), 3<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	args := []string{"-f", paths[0], "-f", paths[1], "-f", paths[2]}
	code, stdout, _ := runCLI(t, nil, append([]string{"scrub"}, args...)...)
	if code != exitScrubDiffers || !strings.Contains(stdout, "1 differing") {
		t.Fatalf("scrub: exit %d %q", code, stdout)
	}
	code, stdout, stderr := runCLI(t, nil, append([]string{"scrub", "--repair"}, args...)...)
	if code != exitOK || !strings.Contains(stdout, "repair: 1 copies rewritten, 0 sectors unrepairable") ||
		!strings.Contains(stdout, "mirror 3: differs from the other mirrors; no csum: kept mirror 1, the lowest") {
		t.Fatalf("scrub --repair: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, nil, append([]string{"scrub"}, args...)...)
	if code != exitOK || !strings.Contains(stdout, "0 differing") {
		t.Fatalf("scrub after repair: exit %d %q", code, stdout)
	}
}

func TestScrubExitCodes(t *testing.T) {
	clean := &raid.ScrubReport{}
	differs := &raid.ScrubReport{Differences: []raid.SectorDiff{{Logical: 0}}}
	repaired := &raid.ScrubReport{Differences: differs.Differences, Repaired: []raid.Repair{{Mirror: 2}}}
	stuck := &raid.ScrubReport{Differences: differs.Differences, Unrepairable: []raid.Unrepairable{{Why: "no readable copy"}}}
	for _, c := range []struct {
		rep    *raid.ScrubReport
		repair bool
		want   int
	}{
		{clean, false, exitOK}, {differs, false, exitScrubDiffers},
		{repaired, true, exitOK}, {stuck, true, exitScrubUnrepairable},
	} {
		if got := scrubExitCode(c.rep, c.repair); got != c.want {
			t.Errorf("%+v repair %v: exit %d, want %d", c.rep, c.repair, got, c.want)
		}
	}
	code, out, _ := runCLI(t, nil, "help", "scrub")
	for _, w := range []string{"--repair", "--degraded", "exit status", "3  copies or parity differ", "4  with --repair: some sectors could not be repaired"} {
		if code != exitOK || !strings.Contains(out, w) {
			t.Errorf("help scrub lacks %q: %q", w, out)
		}
	}
}
