package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/raid"
)

func init() {
	registerCommand(&command{
		name:    "scrub",
		summary: "offline: compare every copy (and parity) of a volume's images; exit 3 when they differ",
		usage:   "[--profile P] -f IMG [-f IMG...] [-v]",
		run:     runScrub,
	})
}

func runScrub(e *env, args []string) int {
	fs := flag.NewFlagSet("scrub", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var files fileList
	profile := fs.String("profile", "", "data profile the images must hold (default: what their superblocks say)")
	verbose := fs.Bool("v", false, "list every differing sector")
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
	vol, err := openVolume(files, raid.AnyProfile, 0, true, log)
	if err != nil {
		return e.failf(exitFail, "scrub: %v", err)
	}
	defer vol.Close()
	if p != raid.AnyProfile && vol.Profile() != p {
		return e.failf(exitFail, "scrub: the images hold a %s volume, not %s", vol.Profile(), p)
	}
	rep, err := vol.Scrub(0, vol.Capacity(), nil)
	if err != nil {
		return e.failf(exitFail, "scrub: %v", err)
	}
	printScrub(e.stdout, vol.Profile(), rep, *verbose)
	if !rep.Clean() {
		return 3
	}
	return exitOK
}

func printScrub(w io.Writer, p raid.Profile, rep *raid.ScrubReport, verbose bool) {
	fmt.Fprintf(w, "scrub %s: %d sectors checked, %d differing, %d parity mismatches, %d read errors\n",
		p, rep.SectorsChecked, len(rep.Differences), len(rep.ParityMismatches), len(rep.ReadErrors))
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
