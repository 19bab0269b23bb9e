package raid

import (
	"fmt"
	"sync"

	"github.com/btrfsdio/btrfsdio/blk"
)

// stripeLockTable is raid56.c's stripe hash table reduced to what it
// guarantees: one rbio at a time per full stripe, so a read-modify-write
// never interleaves with another write or a recovery of the same stripe.
type stripeLockTable struct {
	mu sync.Mutex
	m  map[uint64]*stripeLock
}

type stripeLock struct {
	mu   sync.Mutex
	refs int
}

// lock is lock_stripe_add for the full stripe at logical full; the returned
// func is unlock_stripe.
func (t *stripeLockTable) lock(full uint64) func() {
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[uint64]*stripeLock)
	}
	l := t.m[full]
	if l == nil {
		l = &stripeLock{}
		t.m[full] = l
	}
	l.refs++
	t.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		t.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(t.m, full)
		}
		t.mu.Unlock()
	}
}

// byteRange is [lo, hi) inside a stripe.
type byteRange struct{ lo, hi uint64 }

// stripePool holds StripeLen aligned buffers (the rbio's stripe_pages).
var stripePool = sync.Pool{New: func() any {
	b := blk.AlignedBuffer(StripeLen)
	return &b
}}

// rbio is struct btrfs_raid_bio: one full stripe being written or
// recovered, with a StripeLen buffer per stripe (data..., P, Q).
type rbio struct {
	v       *Volume
	ioc     *IOContext
	ndata   int
	nparity int
	bufs    [][]byte
	pooled  []*[]byte
}

func (v *Volume) newRbio(ioc *IOContext) *rbio {
	r := &rbio{v: v, ioc: ioc, ndata: v.DataStripes(), nparity: v.attr.nparity}
	for range ioc.Stripes {
		b := stripePool.Get().(*[]byte)
		r.pooled = append(r.pooled, b)
		r.bufs = append(r.bufs, *b)
	}
	return r
}

func (r *rbio) free() {
	for _, b := range r.pooled {
		stripePool.Put(b)
	}
}

// slice returns every stripe's buffer cut to rg (a vertical slice).
func (r *rbio) slice(rg byteRange) [][]byte {
	out := make([][]byte, len(r.bufs))
	for i, b := range r.bufs {
		out[i] = b[rg.lo:rg.hi]
	}
	return out
}

// genParity is finish_rmw's parity step over one column range: P (and Q)
// from the data buffers.
func (r *rbio) genParity(rg byteRange) {
	s := r.slice(rg)
	var q []byte
	if r.nparity == 2 {
		q = s[r.ndata+1]
	}
	genSyndrome(s[:r.ndata], s[r.ndata], q)
}

// readStripes reads the ranges of every stripe not already failed, one
// goroutine per device, marks the stripes whose reads fail and returns
// their errors (nil for the others).
func (r *rbio) readStripes(ranges []byteRange, failed []bool) []error {
	errs := make([]error, len(r.ioc.Stripes))
	var wg sync.WaitGroup
	for i, s := range r.ioc.Stripes {
		if failed[i] {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, rg := range ranges {
				if err := s.Dev.readBuf(r.bufs[i][rg.lo:rg.hi], s.Physical+rg.lo); err != nil {
					if !s.Dev.unreadable() {
						r.v.log.Warnf("raid: raid56 read of stripe %d of full stripe %d: %v", i, r.ioc.FullStripeLogical, err)
					}
					errs[i] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			failed[i] = true
		}
	}
	return errs
}

// recover rebuilds the failed data stripes over ranges (recover_sectors),
// or fails when more stripes are lost than there is parity.
func (r *rbio) recover(ranges []byteRange, failed []bool) error {
	lost := 0
	for _, f := range failed {
		if f {
			lost++
		}
	}
	if lost > r.nparity {
		return fmt.Errorf("raid: full stripe %d: %d stripes unreadable, %s rebuilds at most %d",
			r.ioc.FullStripeLogical, lost, r.v.profile, r.nparity)
	}
	for _, rg := range ranges {
		if err := recoverStripes(r.slice(rg), r.nparity, failed); err != nil {
			return fmt.Errorf("full stripe %d: %w", r.ioc.FullStripeLogical, err)
		}
	}
	return nil
}

// verifyRMWData is verify_bio_data_sectors + recover_sectors of
// rmw_read_wait_recover (kernel 6.2): before the new parity is computed,
// every data sector the read-modify-write read and keeps is checked against
// its csum; a column with bad sectors is rebuilt from the old parity,
// together with the stripes that could not be read, so that silent
// corruption is not built into the new parity where nothing could rebuild
// it any more. A rebuild that does not verify either (more damage than
// parity covers) is dropped and the data kept as read, as before. The
// repaired sectors are only used for parity; the bad copy on disk is left
// for the read repair, which now rebuilds it from the good parity.
func (r *rbio) verifyRMWData(verify VerifyDataFunc, pl writePlan, failed []bool) {
	keeps := func(i int, lo uint64) bool {
		c := pl.covers[i]
		return lo < c.lo || lo >= c.hi
	}
	saved := make([][]byte, r.ndata)
	for _, rg := range pl.runs {
		for lo := rg.lo; lo < rg.hi; lo += SectorSize {
			lost := append([]bool(nil), failed...)
			var bad []int
			for i := 0; i < r.ndata; i++ {
				if failed[i] || !keeps(i, lo) {
					continue
				}
				if ok, known := verify(r.ioc.RaidMap[i]+lo, r.bufs[i][lo:lo+SectorSize]); known && !ok {
					lost[i] = true
					bad = append(bad, i)
				}
			}
			if len(bad) == 0 {
				continue
			}
			for _, i := range bad {
				saved[i] = append(saved[i][:0], r.bufs[i][lo:lo+SectorSize]...)
			}
			col := r.slice(byteRange{lo, lo + SectorSize})
			good := recoverStripes(col, r.nparity, lost) == nil
			for _, i := range bad {
				if ok, _ := verify(r.ioc.RaidMap[i]+lo, col[i]); !ok {
					good = false
				}
			}
			if !good {
				for _, i := range bad {
					copy(col[i], saved[i])
				}
				r.v.log.Warnf("raid: raid56 read-modify-write of full stripe %d: %d data sectors at column offset %d fail their csum and cannot be rebuilt",
					r.ioc.FullStripeLogical, len(bad), lo)
				continue
			}
			r.v.log.Warnf("raid: raid56 read-modify-write of full stripe %d: rebuilt %d data sectors at column offset %d that failed their csum",
				r.ioc.FullStripeLogical, len(bad), lo)
		}
	}
}

// dataCover is the part of one data stripe a write covers.
type dataCover struct {
	byteRange
	bioOff uint64 // offset of lo within the bio piece
}

func (c dataCover) empty() bool { return c.hi <= c.lo }

// writePlan is what raid56_parity_write works out before any I/O: which
// data sectors the bio covers (bio_list), which columns change (dbitmap)
// and whether unchanged data must be read first (RMW vs full stripe write).
type writePlan struct {
	covers   []dataCover
	runs     []byteRange // dirty columns, as runs of sectors
	needRead bool
}

func (r *rbio) planWrite(logical, size uint64) writePlan {
	var pl writePlan
	const sectors = StripeLen / SectorSize
	var dirty [sectors]bool
	for i := 0; i < r.ndata; i++ {
		start := r.ioc.RaidMap[i]
		a, b := max(logical, start), min(logical+size, start+StripeLen)
		var c dataCover
		if a < b {
			c = dataCover{byteRange{a - start, b - start}, a - logical}
			for s := c.lo / SectorSize; s < c.hi/SectorSize; s++ {
				dirty[s] = true
			}
		}
		pl.covers = append(pl.covers, c)
	}
	for s := uint64(0); s < sectors; s++ {
		if !dirty[s] {
			continue
		}
		lo := s * SectorSize
		for _, c := range pl.covers {
			if lo < c.lo || lo >= c.hi {
				pl.needRead = true
			}
		}
		if n := len(pl.runs); n > 0 && pl.runs[n-1].hi == lo {
			pl.runs[n-1].hi += SectorSize
		} else {
			pl.runs = append(pl.runs, byteRange{lo, lo + SectorSize})
		}
	}
	return pl
}

// raid56Write is raid56_parity_write for one piece inside a full stripe:
// a full stripe write computes P/Q straight from the bio pages; a partial
// one reads the rest of the changed columns first (rmw_rbio), rebuilding
// unreadable stripes from parity. Parity is computed from the pages now and
// the data device writes read the pages again when they run, as the kernel's
// do from the same bio pages.
func (v *Volume) raid56Write(bio *blk.Bio, ioc *IOContext) blk.Status {
	r := v.newRbio(ioc)
	defer r.free()
	logical := bio.Iter.Sector << blk.SectorShift
	pl := r.planWrite(logical, uint64(bio.Iter.Size))

	unlock := v.stripeLocks.lock(ioc.FullStripeLogical)
	defer unlock()
	if pl.needRead {
		failed := make([]bool, len(ioc.Stripes))
		r.readStripes(pl.runs, failed)
		if err := r.recover(pl.runs, failed); err != nil {
			v.log.Errorf("raid: raid56 write at %d: read-modify-write: %v", logical, err)
			return blk.StsIOErr
		}
		if f := v.verifyData.Load(); f != nil {
			r.verifyRMWData(*f, pl, failed)
		}
	}
	for i, c := range pl.covers {
		if c.empty() {
			continue
		}
		cur := segCursor{segs: bioSegs(bio, subIter(bio, bio.Iter, uint32(c.bioOff), uint32(c.hi-c.lo)))}
		if err := cur.copyOut(r.bufs[i][c.lo:c.hi]); err != nil {
			v.log.Errorf("raid: raid56 write at %d: reading the source pages: %v", logical, err)
			return blk.StsIOErr
		}
	}
	for _, rg := range pl.runs {
		r.genParity(rg)
	}
	if pl.needRead || bio.Opf&blk.ReqOverwrite != 0 {
		// The full stripe may hold committed data whose parity this write
		// changes in place: journal the new data and parity first.
		switch {
		case v.journal != nil && !v.noJournal:
			seq, err := v.journal.log(r, pl)
			if err != nil {
				v.log.Errorf("raid: raid56 write at %d: %v", logical, err)
				return blk.StsIOErr
			}
			defer v.journal.done(seq)
		default:
			v.unjournaledOnce.Do(func() {
				v.log.Warnf("raid: %s volume without a journal: a power cut during a partial-stripe write can leave parity that rebuilds garbage (the write hole)", v.profile)
			})
		}
	}
	return r.writeStripes(bio, pl)
}

// writeStripes is finish_rmw's submission: the covered data from the bio
// pages, P/Q for the changed columns from the rbio buffers, one goroutine
// per stripe; more failed stripes than max_errors fail the write, fewer
// make it degraded. Stripes the write does not touch are not counted.
func (r *rbio) writeStripes(bio *blk.Bio, pl writePlan) blk.Status {
	failed := make([]bool, len(r.ioc.Stripes))
	var wg sync.WaitGroup
	for i, s := range r.ioc.Stripes {
		var write func() error
		switch {
		case i < r.ndata && !pl.covers[i].empty():
			c := pl.covers[i]
			it := subIter(bio, bio.Iter, uint32(c.bioOff), uint32(c.hi-c.lo))
			write = func() error { return s.Dev.rwSegs(blk.OpWrite, s.Physical+c.lo, bioSegs(bio, it)) }
		case i >= r.ndata:
			write = func() error {
				for _, rg := range pl.runs {
					if err := s.Dev.writeBuf(r.bufs[i][rg.lo:rg.hi], s.Physical+rg.lo); err != nil {
						return err
					}
				}
				return nil
			}
		default:
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := write(); err != nil {
				if !s.Dev.Missing() {
					r.v.log.Warnf("raid: %v", err)
				}
				failed[i] = true
			}
		}()
	}
	wg.Wait()
	n := 0
	for _, f := range failed {
		if f {
			n++
		}
	}
	if n > r.ioc.MaxErrors {
		r.v.log.Errorf("raid: raid56 write to full stripe %d: %d stripes failed, max_errors %d",
			r.ioc.FullStripeLogical, n, r.ioc.MaxErrors)
		return blk.StsIOErr
	}
	if n > 0 {
		r.v.noteDegraded("raid56 write", r.ioc.FullStripeLogical, n, len(failed), r.ioc.MaxErrors)
	}
	return blk.StsOK
}

// raid6ExtraError is set_rbio_raid6_extra_error: the stripe a RAID6 read of
// mirror >= 3 treats as lost besides the target data stripe. Mirror 3 drops
// P (rebuild from Q); each higher mirror drops one more data stripe, from
// the last one down, skipping the target, so that the mirrors up to
// num_copies (= the number of stripes) try every other stripe once and two
// bad data sectors in one column are rebuilt from P and Q.
func raid6ExtraError(realStripes, target, mirror int) int {
	failb := realStripes - (mirror - 1)
	if failb <= target {
		failb--
	}
	return failb
}

// raid56Recover is raid56_parity_recover for a read with mirror > 1: the
// sectors are rebuilt, never read from their own stripe. Mirror 2 treats
// the data stripe as lost and rebuilds it from the other data and P (or,
// on RAID6, P and Q when another stripe is unreadable too); mirrors >= 3
// (RAID6) also drop one more stripe (raid6ExtraError) and rebuild with Q.
func (v *Volume) raid56Recover(bio *blk.Bio, ioc *IOContext) blk.Status {
	r := v.newRbio(ioc)
	defer r.free()
	logical := bio.Iter.Sector << blk.SectorShift
	off := logical - ioc.FullStripeLogical
	target := int(off / StripeLen)
	rg := byteRange{off % StripeLen, off%StripeLen + uint64(bio.Iter.Size)}
	failed := make([]bool, len(ioc.Stripes))
	failed[target] = true
	if ioc.MirrorNum >= 3 {
		if b := raid6ExtraError(len(ioc.Stripes), target, ioc.MirrorNum); b >= 0 {
			failed[b] = true
		}
	}

	unlock := v.stripeLocks.lock(ioc.FullStripeLogical)
	r.readStripes([]byteRange{rg}, failed)
	err := r.recover([]byteRange{rg}, failed)
	unlock()
	if err != nil {
		v.log.Errorf("raid: raid56 recovery read at %d mirror %d: %v", logical, ioc.MirrorNum, err)
		return blk.StsIOErr
	}
	cur := segCursor{segs: bioSegs(bio, bio.Iter)}
	if err := cur.copyIn(r.bufs[target][rg.lo:rg.hi]); err != nil {
		v.log.Errorf("raid: raid56 recovery read at %d: filling the bio pages: %v", logical, err)
		return blk.StsIOErr
	}
	return blk.StsOK
}
