package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/raid"
)

// Exit codes of scrub beyond exitOK, exitFail and exitUsage.
const (
	exitScrubDiffers      = 3 // without --repair: copies or parity differ, or reads failed
	exitScrubUnrepairable = 4 // with --repair: some bad sectors had no good copy, or their rewrite failed
)

func init() {
	registerCommand(&command{
		name:    "scrub",
		summary: "offline: compare every copy (and parity) of a volume's images; exit 3 when they differ, --repair rewrites bad copies",
		usage:   "[--profile P] [--repair] [--degraded] -f IMG [-f IMG...] [-v]",
		help: `Reads every copy of every sector (RAID5/6: every data and parity stripe)
straight from the images and compares them.

  --repair    rewrite every bad copy from a good one: the copy whose data
              checksum (committed with a --datasum volume) matches. Without
              checksums (nodatasum) mirrors that differ are made equal
              to the lowest mirror's copy, which is what a read of mirror 1
              returns, and the output names each such sector; unreadable
              copies are rewritten from a readable one; RAID5/6 parity that
              disagrees with the data is recomputed and rewritten (the
              data is trusted, as btrfs does without checksums; RAID6
              rebuilds a data sector when P and Q agree against it).
  --degraded  accept images that are missing (absent paths, or fewer -f
              than the volume has), as many as the profile tolerates; their
              copies are neither checked nor repaired.

exit status:
  0  clean (with --repair: everything found was repaired)
  1  the scrub could not run
  2  bad command line
  3  copies or parity differ, or reads failed (without --repair)
  4  with --repair: some sectors could not be repaired`,
		run: runScrub,
	})
}

func runScrub(e *env, args []string) int {
	fs := flag.NewFlagSet("scrub", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var files fileList
	profile := fs.String("profile", "", "data profile the images must hold (default: what their superblocks say)")
	verbose := fs.Bool("v", false, "list every differing sector and every repair")
	repair := fs.Bool("repair", false, "rewrite bad copies from good ones (opens the images read-write)")
	degraded := fs.Bool("degraded", false, "scrub with devices missing, as many as the profile tolerates")
	fs.Var(&files, "f", "image or block device (repeat, in device order)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		return e.failf(exitUsage, "scrub: unexpected argument %q", fs.Arg(0))
	}
	p := raid.AnyProfile
	if *profile != "" {
		var err error
		if p, err = raid.ParseProfile(*profile); err != nil {
			return e.failf(exitUsage, "scrub: --profile: %v", err)
		}
	}
	if len(files) == 0 {
		return e.failf(exitUsage, "scrub: at least one -f IMG is required")
	}
	log := logrus.New()
	log.SetOutput(e.stderr)
	vol, err := openVolume(files, raid.AnyProfile, 0, !*repair, *degraded, log)
	if err != nil {
		return e.failf(exitFail, "scrub: %v", err)
	}
	defer vol.Close()
	if p != raid.AnyProfile && vol.Profile() != p {
		return e.failf(exitFail, "scrub: the images hold a %s volume, not %s", vol.Profile(), p)
	}
	scrub := vol.Scrub
	if *repair {
		scrub = vol.ScrubRepair
	}
	// The data checksums committed with a datasum volume say which copy is
	// good; without them (nodatasum, or no valid metadata) the copies are
	// only compared.
	csum, err := btrfsdio.CommittedCsums(vol)
	if err != nil {
		log.Warnf("scrub: %v: data checksums not used", err)
	}
	rep, err := scrub(0, vol.Capacity(), csum)
	if err != nil {
		return e.failf(exitFail, "scrub: %v", err)
	}
	printScrub(e.stdout, vol, rep, *repair, *verbose)
	return scrubExitCode(rep, *repair)
}

// scrubExitCode is the exit status `btrfsdio help scrub` documents.
func scrubExitCode(rep *raid.ScrubReport, repair bool) int {
	switch {
	case repair && len(rep.Unrepairable) > 0:
		return exitScrubUnrepairable
	case !repair && !rep.Clean():
		return exitScrubDiffers
	}
	return exitOK
}

func printScrub(w io.Writer, vol *raid.Volume, rep *raid.ScrubReport, repair, verbose bool) {
	fmt.Fprintf(w, "scrub %s: %d sectors checked, %d differing, %d parity mismatches, %d read errors\n",
		vol.Profile(), rep.SectorsChecked, len(rep.Differences), len(rep.ParityMismatches), len(rep.ReadErrors))
	if missing := vol.MissingDevices(); len(missing) > 0 {
		fmt.Fprintf(w, "degraded: devid %v missing, its copies neither checked nor repaired\n", missing)
	}
	if repair {
		fmt.Fprintf(w, "repair: %d copies rewritten, %d sectors unrepairable\n", len(rep.Repaired), len(rep.Unrepairable))
	}
	for _, r := range rep.Repaired {
		if r.Guessed || verbose {
			fmt.Fprintf(w, "  repaired %s\n", describeRepair(r))
		}
	}
	for _, u := range rep.Unrepairable {
		fmt.Fprintf(w, "  unrepairable: logical %d: %s\n", u.Logical, u.Why)
	}
	if !verbose {
		return
	}
	for _, d := range rep.Differences {
		fmt.Fprintf(w, "  logical %d: mirrors %v\n", d.Logical, d.Groups)
	}
	for _, m := range rep.ParityMismatches {
		fmt.Fprintf(w, "  full stripe %d +%d: P %v Q %v\n", m.FullStripe, m.Offset, m.P, m.Q)
	}
	for _, r := range rep.ReadErrors {
		fmt.Fprintf(w, "  read error %s at logical %d\n", r.Device, r.Logical)
	}
}

// describeRepair names the rewritten copy and why it was rewritten.
func describeRepair(r raid.Repair) string {
	if r.Stripe != "" {
		return fmt.Sprintf("logical %d parity %s: %s", r.Logical, r.Stripe, r.Why)
	}
	return fmt.Sprintf("logical %d mirror %d: %s", r.Logical, r.Mirror, r.Why)
}
