package main

import (
	"errors"
	"fmt"
	"github.com/btrfsdio/btrfsdio/tgt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"

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
		summary: "offline: check every superblock, metadata and data copy (and parity) of a volume's images; exit 3 when one is bad, --repair rewrites bad copies",
		usage:   "[--profile P] [--repair] [--degraded] [--ignore-lock] -f IMG [-f IMG...] [-v]",
		help: `Reads every copy of every sector (RAID5/6: every data and parity stripe)
straight from the images and compares them; checks the three superblock
copies of every image and every copy of the committed metadata. The images are locked while
scrub runs (exclusively with --repair), so it never runs beside a server
or another repair of them.

  --repair    rewrite every bad copy from a good one: the copy whose data
              checksum (committed with a --datasum volume) matches. Without
              checksums (nodatasum) mirrors that differ are made equal
              to the lowest mirror's copy, which is what a read of mirror 1
              returns, and the output names each such sector; unreadable
              copies are rewritten from a readable one; RAID5/6 parity that
              disagrees with the data is recomputed and rewritten (the
              data is trusted, as btrfs does without checksums; RAID6
              rebuilds a data sector when P and Q agree against it).
              Bad superblock and metadata copies are rewritten from a
              valid one. The images are flushed before scrub reports
              success.
  --degraded  accept images that are missing (absent paths, or fewer -f
              than the volume has), as many as the profile tolerates; their
              copies are neither checked nor repaired.
` + offlineHelp,
		exits: `  0  clean (with --repair: everything found was repaired)
  1  the scrub could not run (an image in use by a server, among others)
  2  bad command line
  3  copies or parity differ, reads failed, or a superblock or metadata
     copy is bad (without --repair)
  4  with --repair: some sectors could not be repaired, nor some
     superblock or metadata copies, or the images did not flush
  130  with --repair: SIGINT or SIGTERM stopped it; the full stripes
     in progress were finished and what was repaired is flushed`,
		run: runScrub,
	})
}

func runScrub(e *env, args []string) int {
	fs := newFlags("scrub")
	ov := newOfflineVolume("scrub", fs)
	verbose := fs.BoolP("verbose", "v", false, "list every differing sector and every repair")
	repair := fs.Bool("repair", false, "rewrite bad copies from good ones (opens the images read-write)")
	asJSON := fs.Bool("json", false, "print the result as one JSON object (docs/json.md) instead of text")
	quiet := fs.BoolP("quiet", "q", false, "no progress line (there is none when stderr is not a terminal)")
	if code, done := parseArgs(e, fs, args); done {
		return code
	}
	if *repair && *ov.ignoreLock {
		return e.failf(exitUsage, "scrub: --ignore-lock is for reading only: --repair writes and must have the images to itself")
	}
	vol, log, code := ov.open(e, !*repair)
	if code != exitOK {
		return code
	}
	defer vol.Close()
	var stop chan os.Signal
	if *repair {
		// A repair stops between two pieces of the scrub, at a full
		// stripe's end, then flushes what it rewrote and reports.
		stop = make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(stop)
	}
	prog := newProgress(e, *quiet, "scrub", vol.Capacity())
	res, code := scrubAll(vol, log, *repair, prog, stop)
	prog.done()
	if code != exitOK {
		return e.failf(code, "scrub: %v", res.err)
	}
	code = res.exitCode(*repair)
	if res.flushErr != nil {
		code = exitScrubUnrepairable
	}
	if res.interrupted != nil {
		code = exitInterrupted
	}
	if *asJSON {
		if err := writeJSON(e.stdout, scrubToJSON(vol, ov.files, res, *repair, code)); err != nil {
			return e.failf(exitFail, "scrub: %v", err)
		}
	} else {
		printScrub(e.stdout, vol, res.data, *repair, *verbose)
		printStale(e.stdout, vol, vol.StaleDevices())
		printScrubCopies(e.stdout, res, *repair)
	}
	if res.flushErr != nil {
		return e.failf(exitScrubUnrepairable, "scrub: the repairs may not be on disk: %v", res.flushErr)
	}
	if res.interrupted != nil {
		return e.failf(exitInterrupted, "scrub: stopped by %v after %d of %d bytes; what was repaired is flushed; the superblock copies were not scrubbed",
			res.interrupted, res.data.Length, vol.Capacity())
	}
	return code
}

// scrubJSON is scrub --json (docs/json.md).
type scrubJSON struct {
	jsonHeader
	Profile          string        `json:"profile"`
	Images           []string      `json:"images"`
	Repair           bool          `json:"repair"`
	SectorsChecked   uint64        `json:"sectors_checked"`
	Differing        int           `json:"differing"`
	ParityMismatches int           `json:"parity_mismatches"`
	CsumErrors       int           `json:"csum_errors"`
	ReadErrors       int           `json:"read_errors"`
	Repaired         int           `json:"repaired"`
	Unrepairable     int           `json:"unrepairable"`
	SuperblockCopies int           `json:"superblock_copies"`
	MetadataCopies   int           `json:"metadata_copies"`
	MetadataError    string        `json:"metadata_error,omitempty"`
	FlushError       string        `json:"flush_error,omitempty"`
	BytesScrubbed    uint64        `json:"bytes_scrubbed"`
	Interrupted      string        `json:"interrupted,omitempty"`
	MissingDevids    []uint64      `json:"missing_devids"`
	StaleDevices     []staleJSON   `json:"stale_devices"`
	Findings         []findingJSON `json:"findings"`
}

func scrubToJSON(vol *raid.Volume, images []string, res *scrubResult, repair bool, code int) *scrubJSON {
	d := res.data
	out := &scrubJSON{jsonHeader: newJSONHeader("scrub", code), Profile: vol.Profile().String(), Images: images,
		Repair: repair, SectorsChecked: d.SectorsChecked, Differing: len(d.Differences),
		ParityMismatches: len(d.ParityMismatches), CsumErrors: len(d.CsumErrors), ReadErrors: len(d.ReadErrors),
		Repaired: len(d.Repaired) + countRepaired(res.supers) + countMetaRepaired(res.meta), Unrepairable: len(d.Unrepairable),
		SuperblockCopies: len(res.supers), MetadataCopies: len(res.meta), MetadataError: errString(res.metaErr),
		FlushError: errString(res.flushErr), MissingDevids: append([]uint64{}, vol.MissingDevices()...),
		StaleDevices: staleDevices(vol.StaleDevices()), BytesScrubbed: d.Length,
	}
	if res.interrupted != nil {
		out.Interrupted = res.interrupted.String()
	}
	out.Findings = append(copyFindings(res.supers, res.meta), dataFindings(vol, d)...)
	if out.Findings == nil {
		out.Findings = []findingJSON{}
	}
	return out
}

// scrubResult is what scrubAll found: the data, superblock and metadata
// copies, and with --repair whether the devices flushed.
type scrubResult struct {
	data   *raid.ScrubReport
	supers []raid.SuperCopy
	meta   []btrfsdio.MetaCopyStatus
	// metaErr is set when no metadata copy is valid.
	metaErr  error
	flushErr error
	err      error // the scrub could not run
	// interrupted is the signal that stopped a repair before the end.
	interrupted os.Signal
}

// scrubAll scrubs the metadata copies (repairing them first, so the data
// scrub reads the committed checksums from a valid copy), the data, then
// the superblock copies (after the metadata they name, as a commit writes
// them), and with repair flushes every device before reporting success.
// A non-zero code means the scrub could not run (res.err says why).
func scrubAll(vol *raid.Volume, log *logrus.Logger, repair bool, prog *progress, stop <-chan os.Signal) (*scrubResult, int) {
	res := &scrubResult{}
	res.meta, res.err = btrfsdio.ScrubMeta(vol, repair)
	if res.err != nil {
		if len(res.meta) == 0 {
			return res, exitFail
		}
		res.metaErr, res.err = res.err, nil
	}
	scrub := vol.Scrub
	if repair {
		scrub = vol.ScrubRepair
	}
	// The data checksums committed with a datasum volume say which copy is
	// good; without them (nodatasum, or no valid metadata) the copies are
	// only compared.
	csum, err := btrfsdio.CommittedCsums(vol)
	if err != nil {
		log.Warnf("scrub: %v: data checksums not used", err)
	}
	if res.data, res.interrupted, res.err = scrubPieces(vol, scrub, csum, prog, stop); res.err != nil {
		return res, exitFail
	}
	if res.interrupted != nil {
		res.flushErr = vol.FlushDevices()
		return res, exitOK
	}
	if res.supers, res.err = vol.ScrubSupers(repair); res.err != nil {
		return res, exitFail
	}
	if repair {
		res.flushErr = vol.FlushDevices()
	}
	return res, exitOK
}

// scrubPiece is the data scrub's unit between two progress updates and
// two looks at stop: whole full stripes (RAID5/6 scrubs full stripes),
// about 4 MiB.
const scrubPiece = 4 << 20

// scrubPieces scrubs the whole volume a piece at a time and merges the
// reports; a signal on stop ends it after the piece in progress, and is
// returned with the report of what was scrubbed (Length says how far).
func scrubPieces(vol *raid.Volume, scrub func(start, length uint64, csum raid.CsumLookup) (*raid.ScrubReport, error),
	csum raid.CsumLookup, prog *progress, stop <-chan os.Signal) (*raid.ScrubReport, os.Signal, error) {
	full := vol.FullStripeLen()
	piece := (scrubPiece + full - 1) / full * full
	total := vol.Capacity()
	all := &raid.ScrubReport{}
	for off := uint64(0); off < total; off += piece {
		select {
		case s := <-stop:
			return all, s, nil
		default:
		}
		rep, err := scrub(off, min(piece, total-off), csum)
		if err != nil {
			return nil, nil, err
		}
		all.Length += rep.Length
		all.SectorsChecked += rep.SectorsChecked
		all.Differences = append(all.Differences, rep.Differences...)
		all.ParityMismatches = append(all.ParityMismatches, rep.ParityMismatches...)
		all.CsumErrors = append(all.CsumErrors, rep.CsumErrors...)
		all.ReadErrors = append(all.ReadErrors, rep.ReadErrors...)
		all.Repaired = append(all.Repaired, rep.Repaired...)
		all.Unrepairable = append(all.Unrepairable, rep.Unrepairable...)
		prog.update(all.Length)
	}
	return all, nil, nil
}

// exitCode is the exit status `btrfsdio help scrub` documents.
func (r *scrubResult) exitCode(repair bool) int {
	bad, unrepaired := r.metaErr != nil, r.metaErr != nil
	for _, c := range r.supers {
		bad = bad || c.Err != nil
		unrepaired = unrepaired || (c.Err != nil && !c.Repaired)
	}
	for _, c := range r.meta {
		bad = bad || c.Err != nil
		unrepaired = unrepaired || (c.Err != nil && !c.Repaired)
	}
	switch {
	case repair && unrepaired:
		return exitScrubUnrepairable
	case !repair && bad:
		return exitScrubDiffers
	}
	return scrubExitCode(r.data, repair)
}

// printScrubCopies prints the superblock and metadata copies scrubbed and
// every bad one.
func printScrubCopies(w io.Writer, r *scrubResult, repair bool) {
	badSupers := printSuperCopies(w, r.supers)
	fmt.Fprintf(w, "superblocks: %d copies checked, %d bad\n", len(r.supers), badSupers)
	badMeta := printMetaCopies(w, r.meta)
	switch {
	case r.metaErr != nil:
		fmt.Fprintf(w, "metadata: %d copies checked, none valid: %v\n", len(r.meta), r.metaErr)
	case len(r.meta) == 0:
		fmt.Fprintln(w, "metadata: nothing committed yet")
	default:
		fmt.Fprintf(w, "metadata: %d copies checked, %d bad\n", len(r.meta), badMeta)
	}
	if repair {
		fmt.Fprintf(w, "repair: %d superblock and %d metadata copies rewritten\n", countRepaired(r.supers), countMetaRepaired(r.meta))
	}
}

func countRepaired(copies []raid.SuperCopy) int {
	n := 0
	for _, c := range copies {
		if c.Repaired {
			n++
		}
	}
	return n
}

func countMetaRepaired(copies []btrfsdio.MetaCopyStatus) int {
	n := 0
	for _, c := range copies {
		if c.Repaired {
			n++
		}
	}
	return n
}

// offlineVolume is the command line scrub and check share: the images, the
// profile they must hold, whether some may be missing and whether they may
// be read while someone else holds them.
type offlineVolume struct {
	name       string
	files      tgt.FileList
	profile    *string
	degraded   *bool
	ignoreLock *bool
}

func newOfflineVolume(name string, fs *pflag.FlagSet) *offlineVolume {
	o := &offlineVolume{name: name}
	o.profile = fs.String("profile", "", "data profile `P` the images must hold (default: what their superblocks say)")
	o.degraded = fs.Bool("degraded", false, "accept missing images, as many as the profile tolerates")
	o.ignoreLock = fs.Bool("ignore-lock", false, ignoreLockUsage)
	fs.VarP(&o.files, "file", "f", "image or block device (repeat, in device order)")
	return o
}

const ignoreLockUsage = "read the images even while a server (or a scrub --repair) holds them: " +
	"the results may be stale or show differences that are only writes in flight"

// offlineHelp is what `help scrub` and `help check` say about the images.
const offlineHelp = `  --ignore-lock
              read the images even while a running server or a scrub
              --repair holds them. Without it the images are locked for
              reading (a shared flock on files, an O_EXCL open of block
              devices) and a command meets a server's images with an
              error naming its pid. The holder may be writing: what is
              read may be stale, and copies caught mid-write look
              damaged. Read-only use only; --repair never ignores locks.`

// open checks what was parsed and opens the volume (never formatting it),
// with a logger on stderr; a non-zero code has been reported.
func (o *offlineVolume) open(e *env, readOnly bool) (*raid.Volume, *logrus.Logger, int) {
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
	if err := raid.CheckDistinct(o.files); err != nil {
		return nil, nil, e.failf(exitUsage, "%s: %v", o.name, err)
	}
	log := logrus.New()
	log.SetOutput(e.stderr)
	vol, _, err := raid.Assemble(o.files, raid.AssembleOptions{Profile: raid.AnyProfile, Degraded: *o.degraded,
		ReadOnly: readOnly, Unclaimed: *o.ignoreLock, Holder: imageHolder, Logger: log})
	var claimed *raid.ClaimError
	if errors.As(err, &claimed) && readOnly {
		err = fmt.Errorf("%w (--ignore-lock reads it anyway; the results may then be stale)", err)
	}
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
