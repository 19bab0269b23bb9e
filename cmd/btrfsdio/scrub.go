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
	ov := newOfflineVolume("scrub", fs)
	verbose := fs.Bool("v", false, "list every differing sector and every repair")
	repair := fs.Bool("repair", false, "rewrite bad copies from good ones (opens the images read-write)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	vol, log, code := ov.open(e, fs, !*repair)
	if code != exitOK {
		return code
	}
	defer vol.Close()
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

// offlineVolume is the command line scrub and check share: the images, the
// profile they must hold and whether some may be missing.
type offlineVolume struct {
	name     string
	files    fileList
	profile  *string
	degraded *bool
}

func newOfflineVolume(name string, fs *flag.FlagSet) *offlineVolume {
	o := &offlineVolume{name: name}
	o.profile = fs.String("profile", "", "data profile the images must hold (default: what their superblocks say)")
	o.degraded = fs.Bool("degraded", false, "accept missing images, as many as the profile tolerates")
	fs.Var(&o.files, "f", "image or block device (repeat, in device order)")
	return o
}

// open checks what fs parsed and opens the volume (never formatting it),
// with a logger on stderr; a non-zero code has been reported.
func (o *offlineVolume) open(e *env, fs *flag.FlagSet, readOnly bool) (*raid.Volume, *logrus.Logger, int) {
	if fs.NArg() > 0 {
		return nil, nil, e.failf(exitUsage, "%s: unexpected argument %q", o.name, fs.Arg(0))
	}
	p := raid.AnyProfile
	if *o.profile != "" {
		var err error
		if p, err = raid.ParseProfile(*o.profile); err != nil {
			return nil, nil, e.failf(exitUsage, "%s: --profile: %v", o.name, err)
		}
	}
	if len(o.files) == 0 {
		return nil, nil, e.failf(exitUsage, "%s: at least one -f IMG is required", o.name)
	}
	log := logrus.New()
	log.SetOutput(e.stderr)
	vol, err := openVolume(o.files, raid.AnyProfile, 0, readOnly, *o.degraded, formatOptions{}, log)
	if err != nil {
		return nil, nil, e.failf(exitFail, "%s: %v", o.name, err)
	}
	if p != raid.AnyProfile && vol.Profile() != p {
		vol.Close()
		return nil, nil, e.failf(exitFail, "%s: the images hold a %s volume, not %s", o.name, vol.Profile(), p)
	}
	return vol, log, exitOK
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
