package raid

import (
	"bytes"
	"fmt"
	"hash/crc32"

	"github.com/btrfsdio/btrfsdio/blk"
)

// Repair is one copy ScrubRepair rewrote.
type Repair struct {
	// Logical is the data sector; for a parity stripe ("P" or "Q" in
	// Stripe, Mirror 0) the logical address of the full stripe plus the
	// column's offset.
	Logical uint64
	Mirror  int
	Stripe  string
	// From is the mirror the good data came from; 0 when it was rebuilt
	// from parity (data) or recomputed from the data (parity).
	From int
	// Why says what was wrong with the copy and how the good one was
	// chosen.
	Why string
	// Guessed is set when the mirrors differed and no csum said which is
	// right: the lowest mirror's copy was kept.
	Guessed bool
}

// Unrepairable is a bad sector ScrubRepair could not fix.
type Unrepairable struct {
	Logical uint64
	Why     string
}

// scrubCtx is what a scrub carries through the stripes
// (struct scrub_ctx reduced): the report, the csum lookup, and whether to
// repair.
type scrubCtx struct {
	rep    *ScrubReport
	csum   CsumLookup
	repair bool
}

// ScrubRepair is btrfs_scrub_dev without the readonly flag: Scrub, and
// then every bad copy found is rewritten from a good one
// (scrub_stripe_report_errors + scrub_write_sectors, and for RAID5/6
// scrub_raid56_parity_stripe's rebuild and parity write). The good copy of
// a mirrored sector is the first mirror whose csum matches; without a csum
// the lowest readable mirror, which is what a read of mirror 1 returns,
// and a Repair says it was a guess when the copies differed. Unreadable
// copies are rewritten from a good one. On RAID5/6 a data sector is bad
// when it is unreadable, when its csum does not match, or (RAID6) when its
// rebuilds from P and from Q agree with each other and not with it; bad
// data is rebuilt from parity and rewritten, then P/Q are recomputed from
// the data and rewritten where they differ. Without csums a RAID5 column
// whose parity disagrees trusts the data, as the kernel does. Copies on
// missing devices are neither read nor written.
func (v *Volume) ScrubRepair(start, length uint64, csum CsumLookup) (*ScrubReport, error) {
	return v.scrub(start, length, csum, true)
}

// lookup returns the csum of logical, if the scrub has one.
func (sc *scrubCtx) lookup(logical uint64) (uint32, bool) {
	if sc.csum == nil {
		return 0, false
	}
	return sc.csum(logical)
}

func (sc *scrubCtx) unrepairable(logical uint64, format string, args ...any) {
	sc.rep.Unrepairable = append(sc.rep.Unrepairable, Unrepairable{Logical: logical, Why: fmt.Sprintf(format, args...)})
}

// repairMirrors is scrub_stripe_read_repair_worker + scrub_write_sectors
// for one sector of a mirrored profile: views are the
// readable copies, errs the read errors of ioc's stripes (mirror k+1 is
// stripe k), off the sector's offset into the piece read.
func (sc *scrubCtx) repairMirrors(ioc *IOContext, logical, off uint64, views []mirrorView, errs []error) {
	want, hasSum := sc.lookup(logical)
	var good *mirrorView
	for i := range views {
		if !hasSum || crc32.Checksum(views[i].data, castagnoli) == want {
			good = &views[i]
			break
		}
	}
	type badCopy struct {
		mirror int
		why    string
	}
	var bad []badCopy
	for k, s := range ioc.Stripes {
		if errs[k] != nil && !s.Dev.unreadable() {
			bad = append(bad, badCopy{k + 1, "unreadable"})
		}
	}
	guess := !hasSum && len(groupMirrors(views)) > 1
	for _, m := range views {
		switch {
		case hasSum && crc32.Checksum(m.data, castagnoli) != want:
			bad = append(bad, badCopy{m.mirror, "csum mismatch"})
		case !hasSum && good != nil && m.mirror != good.mirror && !bytes.Equal(m.data, good.data):
			bad = append(bad, badCopy{m.mirror, "differs from the other mirrors"})
		}
	}
	if len(bad) == 0 {
		return
	}
	if good == nil {
		why := "no readable copy"
		if hasSum {
			why = "no copy matches its csum"
		}
		sc.unrepairable(logical, "%s", why)
		return
	}
	for _, b := range bad {
		why := b.why
		switch {
		case hasSum:
			why += fmt.Sprintf("; mirror %d matches the csum", good.mirror)
		case guess:
			why += fmt.Sprintf("; no csum: kept mirror %d, the lowest, as a read of mirror %d returns", good.mirror, good.mirror)
		}
		s := ioc.Stripes[b.mirror-1]
		if err := s.Dev.writeBuf(good.data, s.Physical+off); err != nil {
			sc.unrepairable(logical, "rewriting mirror %d: %v", b.mirror, err)
			continue
		}
		sc.rep.Repaired = append(sc.rep.Repaired, Repair{Logical: logical, Mirror: b.mirror, From: good.mirror, Why: why, Guessed: guess})
	}
}

// repairColumn is scrub_raid56_parity_stripe's repair of one sector
// column of a RAID5/6 full stripe, whose
// stripes r read (failed: unreadable or missing). inRange tells the data
// sectors the scrub covers; the column's parity covers them all.
func (sc *scrubCtx) repairColumn(r *rbio, rg byteRange, failed []bool, inRange func(t int) bool) {
	col := r.slice(rg)
	lost := append([]bool(nil), failed...)
	why := make([]string, r.ndata)
	for t := 0; t < r.ndata; t++ {
		logical := r.ioc.RaidMap[t] + rg.lo
		want, hasSum := sc.lookup(logical)
		switch {
		case failed[t] && !r.ioc.Stripes[t].Dev.unreadable():
			why[t] = "unreadable"
		case failed[t]:
		case hasSum && crc32.Checksum(col[t], castagnoli) != want:
			why[t] = "csum mismatch"
		case !hasSum && r.nparity == 2 && r.parityCulprit(col, failed, t):
			why[t] = "its rebuilds from P and from Q agree with each other, not with it"
		}
		lost[t] = lost[t] || why[t] != ""
	}
	if err := r.recoverColumn(col, lost); err != nil {
		for t := 0; t < r.ndata; t++ {
			if why[t] != "" && inRange(t) {
				sc.unrepairable(r.ioc.RaidMap[t]+rg.lo, "%s, and no rebuild: %v", why[t], err)
			}
		}
		return
	}
	dataGood := true
	for t := 0; t < r.ndata; t++ {
		if why[t] == "" {
			continue
		}
		logical := r.ioc.RaidMap[t] + rg.lo
		if want, ok := sc.lookup(logical); ok && crc32.Checksum(col[t], castagnoli) != want {
			sc.unrepairable(logical, "%s, and its rebuild from parity does not match the csum either", why[t])
			dataGood = false // the column's data is not known good: leave its parity alone
			continue
		}
		s := r.ioc.Stripes[t]
		if err := s.Dev.writeBuf(col[t], s.Physical+rg.lo); err != nil {
			sc.unrepairable(logical, "%s; rewriting the rebuild: %v", why[t], err)
			continue
		}
		sc.rep.Repaired = append(sc.rep.Repaired, Repair{Logical: logical, Mirror: 1, Why: why[t] + "; rebuilt from parity"})
	}
	if dataGood {
		sc.repairParity(r, rg, col, failed)
	}
}

// parityCulprit is storedIsCulprit for RAID6 without a csum: data stripe
// t is bad when its rebuilds from P and from Q agree and differ from it.
func (r *rbio) parityCulprit(col [][]byte, failed []bool, t int) bool {
	var rebuilds []mirrorView
	for m := 2; m <= 3; m++ {
		if d := r.rebuild(col, failed, t, m); d != nil {
			rebuilds = append(rebuilds, mirrorView{m, d})
		}
	}
	return len(rebuilds) == 2 && storedIsCulprit(mirrorView{1, col[t]}, rebuilds, 0, nil)
}

// recoverColumn rebuilds the lost data sectors of the column in place.
func (r *rbio) recoverColumn(col [][]byte, lost []bool) error {
	n := 0
	for _, l := range lost {
		if l {
			n++
		}
	}
	if n > r.nparity {
		return fmt.Errorf("%d of the column's %d stripes bad or unreadable, %s rebuilds %d", n, len(lost), r.v.profile, r.nparity)
	}
	return recoverStripes(col, r.nparity, lost)
}

// repairParity recomputes P (and Q) of a column whose data is now whole
// and rewrites them where they differ from what was read or were
// unreadable (the parity write of scrub_raid56_parity_stripe).
func (sc *scrubCtx) repairParity(r *rbio, rg byteRange, col [][]byte, failed []bool) {
	n := rg.hi - rg.lo
	p := blk.AlignedBuffer(int(n)) // written with O_DIRECT
	var q []byte
	if r.nparity == 2 {
		q = blk.AlignedBuffer(int(n))
	}
	genSyndrome(col[:r.ndata], p, q)
	logical := r.ioc.FullStripeLogical + rg.lo
	for i, fresh := range [][]byte{p, q}[:r.nparity] {
		idx := r.ndata + i
		s := r.ioc.Stripes[idx]
		name := [...]string{"P", "Q"}[i]
		var why string
		switch {
		case s.Dev.unreadable():
			continue
		case failed[idx]:
			why = "unreadable"
		case !bytes.Equal(fresh, col[idx]):
			why = "differs from the parity of the data"
		default:
			continue
		}
		if err := s.Dev.writeBuf(fresh, s.Physical+rg.lo); err != nil {
			sc.unrepairable(logical, "%s %s; rewriting it: %v", name, why, err)
			continue
		}
		sc.rep.Repaired = append(sc.rep.Repaired, Repair{Logical: logical, Stripe: name, Why: why + "; recomputed from the data"})
	}
}
