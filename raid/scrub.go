package raid

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"sync"
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
)

// CsumLookup returns the crc32c (Castagnoli) of the 4 KiB data sector at
// logical, as btrfs_lookup_csums_bitmap finds it in the csum tree; ok is
// false for a sector without a csum (nodatasum, or never written).
type CsumLookup func(logical uint64) (sum uint32, ok bool)

// ScrubReport is what Scrub found over [Start, Start+Length).
type ScrubReport struct {
	Start, Length uint64
	// SectorsChecked counts logical data sectors examined.
	SectorsChecked uint64
	// Differences lists sectors whose copies do not all agree.
	Differences []SectorDiff
	// ParityMismatches lists RAID5/6 sectors whose P or Q on disk differs
	// from the one recomputed from the data.
	ParityMismatches []ParityMismatch
	// CsumErrors lists copies whose crc32c differs from the csum lookup
	// (for RAID5/6 the stored data, or its rebuild when unreadable).
	CsumErrors []CsumError
	// ReadErrors lists device reads that failed. Missing devices are not
	// read, and not listed.
	ReadErrors []ReadError
	// Repaired lists the copies ScrubRepair rewrote; Unrepairable the
	// sectors it found bad but could not fix. Scrub leaves both empty.
	Repaired     []Repair
	Unrepairable []Unrepairable
}

// Clean reports whether the scrub found nothing wrong: what btrfs scrub
// status shows as "no errors found".
func (r *ScrubReport) Clean() bool {
	return len(r.Differences) == 0 && len(r.ParityMismatches) == 0 && len(r.CsumErrors) == 0 && len(r.ReadErrors) == 0
}

// SectorDiff is one logical sector whose copies differ. Groups partitions
// the readable mirrors (1-based, as a read's mirror argument) by content:
// {{1},{2}} means mirrors 1 and 2 disagree. For RAID5/6, mirror 1 is the
// data on disk, 2 its rebuild from P, 3 (RAID6) its rebuild from Q, and a
// sector is listed only when its own stored data is what disagrees with the
// parity (see storedIsCulprit): on RAID5 without a csum that cannot be told
// apart from a bad neighbour, so every data sector of the column is listed.
type SectorDiff struct {
	Logical uint64
	Groups  [][]int
}

// ParityMismatch is one RAID5/6 sector column (Offset bytes into the
// stripes of the full stripe at FullStripe) whose parity is wrong.
type ParityMismatch struct {
	FullStripe uint64
	Offset     uint64
	P, Q       bool
}

// CsumError is a copy of a sector whose checksum is wrong.
type CsumError struct {
	Logical   uint64
	Mirror    int
	Want, Got uint32
}

// ReadError is a failed device read: Length bytes of Mirror (0 for a
// parity stripe, named by Stripe "P" or "Q") from Logical.
type ReadError struct {
	Logical  uint64
	Length   uint64
	Mirror   int
	Stripe   string
	Device   string
	Physical uint64
	Err      error
}

// scrubChunk is how much of each copy a mirrored scrub reads at a time.
const scrubChunk = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Scrub is scrub.c's scrub_stripe/scrub_raid56_parity_stripe for
// [start, start+length) in readonly mode (btrfs scrub start -r): it reads
// every copy of every sector straight from the devices (no read policy),
// compares them, verifies csums where the lookup has one, and for RAID5/6
// recomputes P/Q of every full stripe that the range touches. It reports;
// it repairs nothing (ScrubRepair does). Copies on missing devices are
// skipped. An error means the scrub itself could not run. Unlike the
// kernel's, it takes no extent locks: writes racing with it can show up as
// differences, so scrub a quiescent (or offline) volume.
func (v *Volume) Scrub(start, length uint64, csum CsumLookup) (*ScrubReport, error) {
	return v.scrub(start, length, csum, false)
}

// scrub runs Scrub, or ScrubRepair when repair is set.
func (v *Volume) scrub(start, length uint64, csum CsumLookup, repair bool) (*ScrubReport, error) {
	switch {
	case length == 0 || start%SectorSize != 0 || length%SectorSize != 0:
		return nil, fmt.Errorf("raid: scrub [%d,+%d): not a non-empty range of %d-byte sectors: %w", start, length, SectorSize, syscall.EINVAL)
	case start >= v.chunk.length || length > v.chunk.length-start:
		return nil, fmt.Errorf("raid: scrub [%d,+%d): outside the chunk [0,%d): %w", start, length, v.chunk.length, syscall.EINVAL)
	}
	if !v.enter() {
		return nil, fmt.Errorf("raid: scrub: volume closed: %w", syscall.EIO)
	}
	defer v.inflight.Done()
	sc := &scrubCtx{rep: &ScrubReport{Start: start, Length: length}, csum: csum, repair: repair}
	if v.profile.IsRaid56() {
		v.scrubRaid56(sc, start, start+length)
	} else {
		v.scrubMirrors(sc, start, start+length)
	}
	return sc.rep, nil
}

// mirrorView is one copy of a sector as a read of that mirror would see it.
type mirrorView struct {
	mirror int
	data   []byte
}

// checkSector compares the copies of one sector and checks their csums
// (scrub_verify_one_sector).
func checkSector(rep *ScrubReport, logical uint64, views []mirrorView, csum CsumLookup) {
	if groups := groupMirrors(views); len(groups) > 1 {
		rep.Differences = append(rep.Differences, SectorDiff{Logical: logical, Groups: groups})
	}
	checkCsums(rep, logical, views, csum)
}

// checkCsums verifies each view against the csum tree, if it has a csum.
func checkCsums(rep *ScrubReport, logical uint64, views []mirrorView, csum CsumLookup) {
	if csum == nil {
		return
	}
	want, ok := csum(logical)
	if !ok {
		return
	}
	for _, m := range views {
		if got := crc32.Checksum(m.data, castagnoli); got != want {
			rep.CsumErrors = append(rep.CsumErrors, CsumError{Logical: logical, Mirror: m.mirror, Want: want, Got: got})
		}
	}
}

// groupMirrors partitions the views by identical content, in mirror order.
func groupMirrors(views []mirrorView) [][]int {
	var groups [][]int
	var reps [][]byte
	for _, m := range views {
		found := false
		for g := range groups {
			if bytes.Equal(reps[g], m.data) {
				groups[g] = append(groups[g], m.mirror)
				found = true
				break
			}
		}
		if !found {
			groups = append(groups, []int{m.mirror})
			reps = append(reps, m.data)
		}
	}
	return groups
}

// scrubMirrors scrubs SINGLE, DUP, RAID0, RAID1* and RAID10: the write
// mapping names every copy, and copy k is what a read of mirror k+1 returns.
func (v *Volume) scrubMirrors(sc *scrubCtx, start, end uint64) {
	rep, csum := sc.rep, sc.csum
	var bufs [][]byte
	for cur := start; cur < end; {
		ioc, n, err := v.MapBlock(blk.OpWrite, cur, min(end-cur, scrubChunk), 0)
		if err != nil { // Scrub checked the range; stop rather than loop
			rep.ReadErrors = append(rep.ReadErrors, ReadError{Logical: cur, Length: end - cur, Err: err})
			return
		}
		for len(bufs) < len(ioc.Stripes) {
			bufs = append(bufs, blk.AlignedBuffer(scrubChunk))
		}
		errs := readCopies(ioc, bufs, n)
		var views []mirrorView
		for k, s := range ioc.Stripes {
			if errs[k] != nil && !s.Dev.unreadable() {
				rep.ReadErrors = append(rep.ReadErrors, ReadError{Logical: cur, Length: n, Mirror: k + 1,
					Device: s.Dev.Path(), Physical: s.Physical, Err: errs[k]})
			}
		}
		for off := uint64(0); off < n; off += SectorSize {
			views = views[:0]
			for k := range ioc.Stripes {
				if errs[k] == nil {
					views = append(views, mirrorView{k + 1, bufs[k][off : off+SectorSize]})
				}
			}
			rep.SectorsChecked++
			checkSector(rep, cur+off, views, csum)
			if sc.repair {
				sc.repairMirrors(ioc, cur+off, off, views, errs)
			}
		}
		cur += n
	}
}

// readCopies reads n bytes of every stripe of ioc in parallel.
func readCopies(ioc *IOContext, bufs [][]byte, n uint64) []error {
	errs := make([]error, len(ioc.Stripes))
	var wg sync.WaitGroup
	for k, s := range ioc.Stripes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = s.Dev.readBuf(bufs[k][:n], s.Physical)
		}()
	}
	wg.Wait()
	return errs
}

// scrubRaid56 is scrub_raid56_parity_stripe for every full stripe touching
// [start, end): read all stripes whole, check P/Q per column, and compare
// each data sector with its rebuilds. A repairing scrub keeps the stripe
// locked until its columns are repaired, so no write interleaves.
func (v *Volume) scrubRaid56(sc *scrubCtx, start, end uint64) {
	rep := sc.rep
	full := v.FullStripeLen()
	for fs := start / full * full; fs < end; fs += full {
		ioc, _, err := v.MapBlock(blk.OpWrite, fs, full, 0)
		if err != nil {
			rep.ReadErrors = append(rep.ReadErrors, ReadError{Logical: fs, Length: full, Err: err})
			return
		}
		r := v.newRbio(ioc)
		failed := make([]bool, len(ioc.Stripes))
		unlock := v.stripeLocks.lock(fs)
		errs := r.readStripes([]byteRange{{0, StripeLen}}, failed)
		if !sc.repair {
			unlock()
		}
		r.reportReadErrors(rep, errs)
		for col := uint64(0); col < StripeLen; col += SectorSize {
			r.scrubColumn(sc, byteRange{col, col + SectorSize}, failed, start, end)
		}
		if sc.repair {
			unlock()
		}
		r.free()
	}
}

func (r *rbio) reportReadErrors(rep *ScrubReport, errs []error) {
	for i, err := range errs {
		if err == nil || r.ioc.Stripes[i].Dev.unreadable() {
			continue
		}
		re := ReadError{Logical: r.ioc.FullStripeLogical, Length: StripeLen, Device: r.ioc.Stripes[i].Dev.Path(),
			Physical: r.ioc.Stripes[i].Physical, Err: err}
		switch {
		case i < r.ndata:
			re.Logical, re.Mirror = r.ioc.RaidMap[i], 1
		case i == r.ndata:
			re.Stripe = "P"
		default:
			re.Stripe = "Q"
		}
		rep.ReadErrors = append(rep.ReadErrors, re)
	}
}

// scrubColumn checks one sector column of a full stripe: parity against
// the data, then each in-range data sector against its rebuilds; then
// repairs the column if the scrub repairs.
func (r *rbio) scrubColumn(sc *scrubCtx, rg byteRange, failed []bool, start, end uint64) {
	rep, csum := sc.rep, sc.csum
	inRange := func(t int) bool {
		l := r.ioc.RaidMap[t] + rg.lo
		return l >= start && l < end
	}
	touched := false
	for t := 0; t < r.ndata; t++ {
		touched = touched || inRange(t)
	}
	if !touched {
		return
	}
	r.checkParity(rep, rg, failed)
	col := r.slice(rg)
	for t := 0; t < r.ndata; t++ {
		if !inRange(t) {
			continue
		}
		logical := r.ioc.RaidMap[t] + rg.lo
		var stored *mirrorView
		if !failed[t] {
			stored = &mirrorView{1, col[t]}
		}
		var rebuilds []mirrorView
		for m := 2; m <= r.v.profile.numCopies(); m++ {
			if d := r.rebuild(col, failed, t, m); d != nil {
				rebuilds = append(rebuilds, mirrorView{m, d})
			}
		}
		rep.SectorsChecked++
		if stored != nil && storedIsCulprit(*stored, rebuilds, logical, csum) {
			views := append([]mirrorView{*stored}, rebuilds...)
			rep.Differences = append(rep.Differences, SectorDiff{Logical: logical, Groups: groupMirrors(views)})
		}
		// Csums judge what is stored; a rebuild only stands in for
		// unreadable data.
		switch {
		case stored != nil:
			checkCsums(rep, logical, []mirrorView{*stored}, csum)
		case len(rebuilds) > 0:
			checkCsums(rep, logical, rebuilds[:1], csum)
		}
	}
	if sc.repair {
		sc.repairColumn(r, rg, failed, inRange)
	}
}

// storedIsCulprit decides whether a RAID5/6 data sector on disk is the one
// its column's parity disagrees with. Corrupting one data sector also
// spoils the rebuilds of its column neighbours, so disagreement alone does
// not localize: two rebuilds (RAID6: from P, from Q) that agree with each
// other but not with the disk do (raid6check's reasoning); a single rebuild
// (RAID5, or RAID6 with a stripe unreadable) cannot tell the sector from its
// neighbours, and only a csum proving the disk copy good clears it.
func storedIsCulprit(stored mirrorView, rebuilds []mirrorView, logical uint64, csum CsumLookup) bool {
	if len(rebuilds) == 0 {
		return false
	}
	for _, rb := range rebuilds[1:] {
		if !bytes.Equal(rb.data, rebuilds[0].data) {
			return false // the rebuilds disagree: the fault is elsewhere
		}
	}
	if bytes.Equal(stored.data, rebuilds[0].data) {
		return false
	}
	if len(rebuilds) > 1 || csum == nil {
		return true
	}
	want, ok := csum(logical)
	return !ok || crc32.Checksum(stored.data, castagnoli) != want
}

// checkParity recomputes P/Q of one column when all its data was read.
func (r *rbio) checkParity(rep *ScrubReport, rg byteRange, failed []bool) {
	for t := 0; t < r.ndata; t++ {
		if failed[t] {
			return
		}
	}
	col := r.slice(rg)
	n := rg.hi - rg.lo
	p := make([]byte, n)
	var q []byte
	if r.nparity == 2 {
		q = make([]byte, n)
	}
	genSyndrome(col[:r.ndata], p, q)
	pm := ParityMismatch{FullStripe: r.ioc.FullStripeLogical, Offset: rg.lo}
	pm.P = !failed[r.ndata] && !bytes.Equal(p, col[r.ndata])
	pm.Q = q != nil && !failed[r.ndata+1] && !bytes.Equal(q, col[r.ndata+1])
	if pm.P || pm.Q {
		rep.ParityMismatches = append(rep.ParityMismatches, pm)
	}
}

// rebuild is what a read of mirror m (2: from P, 3: from Q) returns for
// data stripe t of the column, as raid56Recover computes it; nil when too
// many stripes are unreadable.
func (r *rbio) rebuild(col [][]byte, failed []bool, t, m int) []byte {
	lost := append([]bool(nil), failed...)
	lost[t] = true
	if m >= 3 {
		lost[r.ndata] = true
	}
	tmp := make([][]byte, len(col))
	for i := range col {
		if lost[i] {
			tmp[i] = make([]byte, len(col[i]))
		} else {
			tmp[i] = col[i]
		}
	}
	n := 0
	for _, l := range lost {
		if l {
			n++
		}
	}
	if n > r.nparity || recoverStripes(tmp, r.nparity, lost) != nil {
		return nil
	}
	return tmp[t]
}
