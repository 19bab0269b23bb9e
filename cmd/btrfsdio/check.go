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
	asJSON := fs.Bool("json", false, "print the result as one JSON object (docs/json.md) instead of text")
	quiet := fs.BoolP("quiet", "q", false, "no progress line (there is none when stderr is not a terminal)")
	if code, done := parseArgs(e, fs, args); done {
		return code
	}
	vol, _, code := ov.open(e, true)
	if code != exitOK {
		return code
	}
	defer vol.Close()
	prog := newProgress(e, *quiet, "check", 0)
	rep, err := btrfsdio.CheckWithProgress(vol, func(done, total uint64) {
		prog.total = total
		prog.update(done)
	})
	prog.done()
	code = exitOK
	switch {
	case err != nil && rep != nil && len(rep.MetaCopies) > 0: // no valid copy
		code = exitDamaged
	case err != nil:
		code = exitFail
	case !rep.Clean():
		code = exitDamaged
	}
	switch {
	case rep != nil && *asJSON:
		if jerr := writeJSON(e.stdout, checkToJSON(vol, ov.files, rep, err, code)); jerr != nil {
			return e.failf(exitFail, "check: %v", jerr)
		}
	case rep != nil:
		printCheck(e.stdout, vol, rep, *verbose)
	}
	if err != nil {
		return e.failf(code, "check: %v", err)
	}
	return code
}

// checkJSON is check --json (docs/json.md).
type checkJSON struct {
	jsonHeader
	Profile          string        `json:"profile"`
	Images           []string      `json:"images"`
	Generation       uint64        `json:"generation"`
	Clean            bool          `json:"clean"`
	SuperblockCopies int           `json:"superblock_copies"`
	MetadataCopies   int           `json:"metadata_copies"`
	MetadataError    string        `json:"metadata_error,omitempty"`
	Extents          int           `json:"extents"`
	MappedBytes      uint64        `json:"mapped_bytes"`
	CsumSectors      uint64        `json:"csum_sectors"`
	SectorsChecked   uint64        `json:"sectors_checked"`
	Differing        int           `json:"differing"`
	ParityMismatches int           `json:"parity_mismatches"`
	CsumErrors       int           `json:"csum_errors"`
	ReadErrors       int           `json:"read_errors"`
	MissingDevids    []uint64      `json:"missing_devids"`
	StaleDevices     []staleJSON   `json:"stale_devices"`
	Findings         []findingJSON `json:"findings"`
}

func checkToJSON(vol *raid.Volume, images []string, rep *btrfsdio.CheckReport, err error, code int) *checkJSON {
	s := &rep.Scrub
	out := &checkJSON{jsonHeader: newJSONHeader("check", code), Profile: vol.Profile().String(), Images: images,
		Generation: rep.Generation, Clean: err == nil && rep.Clean(), SuperblockCopies: len(rep.Supers),
		MetadataCopies: len(rep.MetaCopies), MetadataError: errString(err), Extents: rep.Extents,
		MappedBytes: rep.MappedBytes, CsumSectors: rep.CsumSectors, SectorsChecked: s.SectorsChecked,
		Differing: len(s.Differences), ParityMismatches: len(s.ParityMismatches), CsumErrors: len(s.CsumErrors),
		ReadErrors: len(s.ReadErrors), MissingDevids: append([]uint64{}, vol.MissingDevices()...),
		StaleDevices: staleDevices(rep.Stale),
	}
	out.Findings = append(copyFindings(rep.Supers, rep.MetaCopies), dataFindings(vol, s)...)
	if out.Findings == nil {
		out.Findings = []findingJSON{}
	}
	return out
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
