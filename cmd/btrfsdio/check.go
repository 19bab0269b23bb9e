package main

import (
	"fmt"
	"io"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/raid"
)

// exitDamaged is check's (and scrub's) answer when it found damage.
const exitDamaged = 3

func init() {
	registerCommand(&command{
		name: "check",
		// Exit 3 covers a bad superblock or metadata copy, a differing
		// mirror, a csum error, and no valid metadata copy at all.
		summary: "offline: validate every superblock and metadata copy, every csum and every mirror; exit 0 clean, 3 damage found, 1 cannot open, 2 usage",
		usage:   "[--profile P] [--degraded] [--ignore-lock] -f IMG [-f IMG...] [-v]",
		help: `Reads all three superblock copies of every image, every copy of the
committed metadata, every data checksum and every copy of every sector
straight from the images. It never writes; the images are
locked for reading while it runs, so it never reads them beside a server
that writes them.

` + offlineHelp,
		exits: `  0  no errors found
  1  the check could not run (an image in use by a server, among others)
  2  bad command line
  3  damage found (a bad superblock or metadata copy included)`,
		run: runCheck,
	})
}

func runCheck(e *env, args []string) int {
	fs := newFlags("check")
	ov := newOfflineVolume("check", fs)
	verbose := fs.BoolP("verbose", "v", false, "list every damaged sector")
	if code, done := parseArgs(e, fs, args); done {
		return code
	}
	vol, _, code := ov.open(e, true)
	if code != exitOK {
		return code
	}
	defer vol.Close()
	rep, err := btrfsdio.Check(vol)
	if rep != nil {
		printCheck(e.stdout, vol, rep, *verbose)
	}
	switch {
	case err != nil && rep != nil && len(rep.MetaCopies) > 0: // no valid copy
		return e.failf(exitDamaged, "check: %v", err)
	case err != nil:
		return e.failf(exitFail, "check: %v", err)
	case !rep.Clean():
		return exitDamaged
	}
	return exitOK
}

func printCheck(w io.Writer, vol *raid.Volume, rep *btrfsdio.CheckReport, verbose bool) {
	p := vol.Profile()
	badSupers := printSuperCopies(w, rep.Supers)
	bad := printMetaCopies(w, rep.MetaCopies)
	stale := 0
	for _, c := range rep.MetaCopies {
		if c.Stale {
			stale++
		}
	}
	fmt.Fprintf(w, "check %s: generation %d, %d of %d superblock copies valid, %d of %d metadata copies valid, %d extents, %d bytes mapped, %d csums\n",
		p, rep.Generation, len(rep.Supers)-badSupers, len(rep.Supers), len(rep.MetaCopies)-bad-stale, len(rep.MetaCopies)-stale,
		rep.Extents, rep.MappedBytes, rep.CsumSectors)
	printStale(w, vol, rep.Stale)
	s := &rep.Scrub
	fmt.Fprintf(w, "data: %d sectors scrubbed, %d differing, %d parity mismatches, %d csum errors, %d read errors\n",
		s.SectorsChecked, len(s.Differences), len(s.ParityMismatches), len(s.CsumErrors), len(s.ReadErrors))
	if verbose {
		printScrub(w, vol, s, false, true)
		for _, c := range s.CsumErrors {
			fmt.Fprintf(w, "  csum error at logical %d mirror %d: %#08x, want %#08x\n", c.Logical, c.Mirror, c.Got, c.Want)
		}
	}
	if rep.Clean() {
		fmt.Fprintln(w, "no errors found")
	}
}

// printSuperCopies prints every bad superblock copy, named by device, copy
// index and byte offset, and what a repair did; it returns how many are bad.
func printSuperCopies(w io.Writer, copies []raid.SuperCopy) int {
	bad := 0
	for _, c := range copies {
		if c.Err != nil {
			bad++
			fmt.Fprintf(w, "superblock copy %d of %s at byte %d: %v%s\n", c.Index, c.Device, c.Bytenr, c.Err, repairOutcome(c.Repaired, c.RepairErr))
		}
	}
	return bad
}

// printMetaCopies is printSuperCopies for the committed metadata's copies.
func printMetaCopies(w io.Writer, copies []btrfsdio.MetaCopyStatus) int {
	bad := 0
	for _, c := range copies {
		if c.Err != nil {
			bad++
			fmt.Fprintf(w, "metadata copy %d of %s at byte %d: %v%s\n", c.Index, c.Path, c.Offset, c.Err, repairOutcome(c.Repaired, c.RepairErr))
		}
	}
	return bad
}

// repairOutcome is what scrub --repair did to a bad copy ("" when it did
// not try).
func repairOutcome(repaired bool, err error) string {
	switch {
	case repaired:
		return ": rewritten"
	case err != nil:
		return fmt.Sprintf(": not repaired: %v", err)
	}
	return ""
}

// printStale names the devices behind the volume, which check and scrub
// neither read nor repair: the next add resyncs them.
func printStale(w io.Writer, vol *raid.Volume, stale []raid.StaleDevice) {
	for _, d := range stale {
		fmt.Fprintf(w, "device %s is behind the volume: generation %d, the volume is at %d; it missed writes, so its copies were not checked; "+
			"not resynced yet: the next add copies the current data onto it\n", d.Path, d.Generation, vol.Generation())
	}
}
