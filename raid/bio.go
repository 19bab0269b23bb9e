package raid

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/btrfsdio/btrfsdio/blk"
)

// MirrorRecorder may be implemented by a bio's Container (the struct that
// embeds it, like struct btrfs_bio). SubmitBio then reports which copy each
// piece of a read was mapped to, as btrfs_submit_chunk stores
// bbio->mirror_num; it is called on the submitting goroutine, before the
// bio can complete.
type MirrorRecorder interface {
	SetMirrorNum(logical uint64, length uint32, mirror int)
}

// origBio is the original btrfs_bio's completion state: pending_ios and
// the first error status of its split pieces.
type origBio struct {
	v       *Volume
	bio     *blk.Bio
	fua     bool
	pending atomic.Int32
	mu      sync.Mutex
	status  blk.Status
}

// SubmitBio is btrfs_submit_bbio's device half (btrfs_submit_chunk in a
// loop): bio.Iter.Sector is the LOGICAL address in 512-byte units. The bio
// is split at map_length boundaries into clones with their own iterators
// (the caller's IoVec and Iter are left as they are); each piece goes to its
// devices on goroutines, and the original bio is completed exactly once,
// with bio.Status = the first error, by bio.Endio() on one of those
// goroutines, never on the caller's. mirror as for MapBlock (reads only).
// Bad bios (unaligned, outside the chunk, bvecs not covering the size) end
// with StsIOErr; ops other than read, write and flush with StsNotSupp.
// REQ_PREFLUSH flushes every device before a write, REQ_FUA after it.
func (v *Volume) SubmitBio(bio *blk.Bio, mirror int) {
	if bio == nil {
		v.log.Error("raid: submit_bio with a nil bio")
		return
	}
	if !v.enter() {
		v.log.Errorf("raid: bio at sector %d submitted to a closed volume", bio.Iter.Sector)
		endAsync(bio, blk.StsIOErr, nil)
		return
	}
	o := &origBio{v: v, bio: bio, fua: bio.Opf&blk.ReqFUA != 0}
	switch op := bio.Opf.Op(); op {
	case blk.OpFlush:
		go o.finishFlush()
	case blk.OpRead, blk.OpWrite:
		if err := v.checkBio(bio, mirror); err != nil {
			v.log.Errorf("raid: rejecting %s bio: %v", op, err)
			o.endAsync(blk.StsIOErr)
			return
		}
		if op == blk.OpWrite && bio.Opf&blk.ReqPreflush != 0 {
			go func() {
				if err := v.Flush(); err != nil {
					v.log.Errorf("raid: preflush before write at sector %d: %v", bio.Iter.Sector, err)
					o.end(blk.StsIOErr)
					return
				}
				v.submitChunks(o, mirror)
			}()
			return
		}
		v.submitChunks(o, mirror)
	default:
		v.log.Errorf("raid: %s bios are not supported", op)
		o.endAsync(blk.StsNotSupp)
	}
}

// enter counts a bio in flight unless the volume is closed.
func (v *Volume) enter() bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return false
	}
	v.inflight.Add(1)
	return true
}

// endAsync completes a bio that never reached a device, on its own
// goroutine, so completion never runs on the submitter.
func endAsync(bio *blk.Bio, st blk.Status, done func()) {
	go func() {
		bio.Status = st
		bio.Endio()
		if done != nil {
			done()
		}
	}()
}

func (o *origBio) endAsync(st blk.Status) { endAsync(o.bio, st, o.v.inflight.Done) }

// end completes the original bio (bio_endio) on the calling goroutine.
func (o *origBio) end(st blk.Status) {
	o.bio.Status = st
	o.bio.Endio()
	o.v.inflight.Done()
}

func (o *origBio) finishFlush() {
	st := blk.StsOK
	if err := o.v.Flush(); err != nil {
		o.v.log.Errorf("raid: flush: %v", err)
		st = blk.StsIOErr
	}
	o.end(st)
}

// pieceDone is btrfs_orig_bbio_end_io for a split piece: keep the first
// error, and end the original bio when the last piece is done.
func (o *origBio) pieceDone(piece *blk.Bio, st blk.Status) {
	piece.Put()
	if st != blk.StsOK {
		o.mu.Lock()
		if o.status == blk.StsOK {
			o.status = st
		}
		o.mu.Unlock()
	}
	if o.pending.Add(-1) != 0 {
		return
	}
	o.mu.Lock()
	final := o.status
	o.mu.Unlock()
	if final == blk.StsOK && o.fua {
		if err := o.v.Flush(); err != nil {
			o.v.log.Errorf("raid: FUA flush after write at sector %d: %v", o.bio.Iter.Sector, err)
			final = blk.StsIOErr
		}
	}
	o.end(final)
}

// checkBio is the sanity checking btrfs_submit_chunk relies on callers
// for: sector-aligned, inside the chunk, and with bvecs that cover the size
// (walking them must not run off the IoVec or a page).
func (v *Volume) checkBio(bio *blk.Bio, mirror int) error {
	logical := bio.Iter.Sector << blk.SectorShift
	size := uint64(bio.Iter.Size)
	switch {
	case size == 0:
		return fmt.Errorf("empty bio at logical %d", logical)
	case logical%SectorSize != 0 || size%SectorSize != 0:
		return fmt.Errorf("logical %d size %d not aligned to the %d-byte sector", logical, size, SectorSize)
	case logical >= v.chunk.length || size > v.chunk.length-logical:
		return fmt.Errorf("[%d,%d) outside the chunk [0,%d)", logical, logical+size, v.chunk.length)
	case mirror < 0 || mirror > v.numCopies():
		return fmt.Errorf("mirror %d out of range 0..%d", mirror, v.numCopies())
	case bio.Opf.Op() == blk.OpWrite && mirror != 0:
		return fmt.Errorf("write with mirror %d: writes go to every copy", mirror)
	}
	return checkBvecs(bio)
}

// checkBvecs walks the bvecs under bio.Iter without the blk helpers, which
// trust them.
func checkBvecs(bio *blk.Bio) error {
	it := bio.Iter
	remaining := it.Size
	idx, done := int(it.Idx), it.BvecDone
	for remaining > 0 {
		if idx >= len(bio.IoVec) {
			return fmt.Errorf("bvecs end %d bytes before the bio size %d", remaining, it.Size)
		}
		bv := bio.IoVec[idx]
		switch {
		case bv.Page == nil:
			return fmt.Errorf("bvec %d has no page", idx)
		case bv.Len == 0:
			return fmt.Errorf("bvec %d is empty", idx)
		case uint64(bv.Offset)+uint64(bv.Len) > uint64(bv.Page.Size()):
			return fmt.Errorf("bvec %d [%d,+%d) runs past its %d-byte page", idx, bv.Offset, bv.Len, bv.Page.Size())
		case done >= bv.Len:
			return fmt.Errorf("bvec %d: bi_bvec_done %d past its length %d", idx, done, bv.Len)
		}
		remaining -= min(bv.Len-done, remaining)
		idx, done = idx+1, 0
	}
	return nil
}

// piece is one split of the original bio and its mapping.
type piece struct {
	bio *blk.Bio
	ioc *IOContext
}

// submitChunks is btrfs_submit_chunk's loop: map, split at map_length,
// submit. All pieces are mapped first, so pending_ios is final before any
// piece can complete and the original cannot end on this goroutine.
func (v *Volume) submitChunks(o *origBio, mirror int) {
	bio := o.bio
	op := bio.Opf.Op()
	iter := bio.Iter
	rec, _ := bio.Container.(MirrorRecorder)
	var pieces []piece
	for iter.Size > 0 {
		logical := iter.Sector << blk.SectorShift
		ioc, mapLen, err := v.MapBlock(op, logical, uint64(iter.Size), mirror)
		if err != nil { // checkBio makes this unreachable; never panic anyway
			for _, p := range pieces {
				p.bio.Put()
			}
			v.log.Errorf("raid: mapping %s at %d: %v", op, logical, err)
			o.endAsync(blk.StsIOErr)
			return
		}
		// btrfs_split_bio: a clone with its own iterator over the same bvecs.
		c := bio.Clone(&v.clones)
		c.Iter = iter
		c.Iter.Size = uint32(mapLen)
		c.Private = o
		bio.AdvanceIter(&iter, uint32(mapLen))
		pieces = append(pieces, piece{c, ioc})
		if rec != nil && op == blk.OpRead {
			rec.SetMirrorNum(logical, uint32(mapLen), ioc.MirrorNum)
		}
	}
	o.pending.Store(int32(len(pieces)))
	for _, p := range pieces {
		v.submitPiece(o, p)
	}
}

// submitPiece is the tail of btrfs_submit_chunk: RAID5/6 writes and
// recovery reads go to raid56, one-stripe I/O to btrfs_submit_dev_bio,
// mirrored writes to btrfs_submit_mirrored_bio. A write first takes its
// regions in the write-intent bitmap (md_bitmap_startwrite); when a bit
// had to be set, the piece waits on its own goroutine until the bitmap
// is durable, so no device sees the write before its bit.
func (v *Volume) submitPiece(o *origBio, p piece) {
	if p.bio.Opf.Op() != blk.OpWrite {
		v.issuePiece(o, p, nil)
		return
	}
	w, need := v.bitmap.startWrite(p.ioc.Logical, uint64(p.bio.Iter.Size), p.bio.Opf&blk.ReqOverwrite != 0)
	if need == 0 {
		v.issuePiece(o, p, w)
		return
	}
	go func() {
		if err := v.bitmap.waitDurable(need); err != nil {
			v.log.Errorf("raid: write at %d: %v", p.ioc.Logical, err)
			v.bitmap.endWrite(w, false)
			o.pieceDone(p.bio, blk.StsIOErr)
			return
		}
		v.issuePiece(o, p, w)
	}()
}

// issuePiece sends a mapped piece to its devices; w is its bitmap hold,
// released (md_bitmap_endwrite) before the piece completes.
func (v *Volume) issuePiece(o *origBio, p piece, w *bitmapWrite) {
	done := func(st blk.Status) {
		v.bitmap.endWrite(w, st == blk.StsOK)
		o.pieceDone(p.bio, st)
	}
	op := p.bio.Opf.Op()
	switch {
	case v.profile.IsRaid56() && op == blk.OpWrite:
		go func() { done(v.raid56Write(p.bio, p.ioc)) }()
	case v.profile.IsRaid56() && p.ioc.MirrorNum > 1:
		go func() { done(v.raid56Recover(p.bio, p.ioc)) }()
	case len(p.ioc.Stripes) == 1:
		go func() { done(v.submitDevBio(p.bio, p.bio.Iter, p.ioc.Stripes[0])) }()
	default:
		v.submitMirrored(o, p, w)
	}
}

// bioSegs lists the bio memory under iter (bio_for_each_bvec).
func bioSegs(bio *blk.Bio, iter blk.BvecIter) []seg {
	// At most one segment per bvec left: sized once, not grown by append.
	segs := make([]seg, 0, max(len(bio.IoVec)-int(iter.Idx), 0))
	_ = bio.ForEachBvec(iter, func(bv blk.BioVec) error {
		segs = append(segs, seg{page: bv.Page, off: int(bv.Offset), n: int(bv.Len)})
		return nil
	})
	return segs
}

// subIter is the iterator over [off, off+n) of iter (bio_advance_iter +
// bi_size trim), used to address part of a piece.
func subIter(bio *blk.Bio, iter blk.BvecIter, off, n uint32) blk.BvecIter {
	bio.AdvanceIter(&iter, off)
	iter.Size = n
	return iter
}

// submitDevBio is btrfs_submit_dev_bio + btrfs_simple_end_io: one device
// I/O for the bio memory under iter, its error logged as
// btrfs_log_dev_io_error does (not for a missing device, whose every I/O
// fails: noteDegraded says it once).
func (v *Volume) submitDevBio(bio *blk.Bio, iter blk.BvecIter, s IOStripe) blk.Status {
	if err := s.Dev.rwSegs(bio.Opf.Op(), s.Physical, bioSegs(bio, iter)); err != nil {
		if !s.Dev.unreadable() {
			v.log.Warnf("raid: %v", err)
		}
		return blk.StsIOErr
	}
	return blk.StsOK
}

// submitMirrored is btrfs_submit_mirrored_bio for every stripe: one device
// write per copy, each on its own goroutine reading the SAME source pages
// when it gets to them (no shared copy: that is the kernel's behaviour and
// why a buffer modified in flight leaves mirrors that differ). The write
// fails only if more stripes fail than bioc->max_errors, as
// btrfs_orig_write_end_io and btrfs_clone_write_end_io count; a write that
// missed copies within max_errors is degraded (noteDegraded). While stale
// devices await Resync the write holds the regions' stripe locks.
func (v *Volume) submitMirrored(o *origBio, p piece, w *bitmapWrite) {
	unlock := func() {}
	if v.resync.running.Load() { // keep Resync from copying under this write
		unlock = v.lockRegions(p.ioc.Logical, uint64(p.bio.Iter.Size))
	}
	var failed, remaining atomic.Int32
	remaining.Store(int32(len(p.ioc.Stripes)))
	for _, s := range p.ioc.Stripes {
		go func() {
			if v.submitDevBio(p.bio, p.bio.Iter, s) != blk.StsOK {
				failed.Add(1)
			}
			if remaining.Add(-1) != 0 {
				return
			}
			st := blk.StsOK
			switch n := int(failed.Load()); {
			case n > p.ioc.MaxErrors:
				v.log.Errorf("raid: write at %d: %d of %d stripes failed, max_errors %d",
					p.ioc.Logical, n, len(p.ioc.Stripes), p.ioc.MaxErrors)
				st = blk.StsIOErr
			case n > 0:
				v.noteDegraded("write", p.ioc.Logical, n, len(p.ioc.Stripes), p.ioc.MaxErrors)
			}
			unlock()
			v.bitmap.endWrite(w, failed.Load() == 0) // a copy that failed keeps its bit
			o.pieceDone(p.bio, st)
		}()
	}
}
