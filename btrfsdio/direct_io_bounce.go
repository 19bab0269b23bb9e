package btrfsdio

// The seed's bounce path: btrfs_dio_submit_io after "btrfs: allocate bounce
// pages for direct IO", page by page, with its bounce_ctl and end_io
// functions. Where the seed has a flaw, Options.Faithful keeps it (the leaked
// page, the empty bbio, the double finish of the tail); otherwise it is
// fixed. The pooled allocation (D26) shares everything here but
// submitIOBounce (direct_io_bounce_pooled.go).

import (
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/iomap"
)

// BounceCtl is struct bounce_ctl: the bounce bbios that carry one iomap bio.
type BounceCtl struct {
	// Src is the original bio from iomap dio.
	Src *blk.Bio
	// lock protects ret when the first error is recorded the seed's way
	// (spinlock_t; see setErrorLocked).
	lock sync.Mutex
	// pending counts bounce bbios in flight, plus one held by the submitter
	// until every bbio is submitted.
	pending atomic.Int32
	// ret is the first error hit, a negative errno. It is an atomic so
	// that the reviewer's cmpxchg can set it; under lock it is used as the
	// seed's plain int.
	ret atomic.Int32
	// cmpxchg records the first error with setErrorCmpxchg instead of
	// setErrorLocked (Options.FirstError).
	cmpxchg bool
}

// setError records ret as the first error unless one is recorded already,
// and reports whether ret became it.
func (ctl *BounceCtl) setError(ret int) bool {
	if ctl.cmpxchg {
		return ctl.setErrorCmpxchg(ret)
	}
	return ctl.setErrorLocked(ret)
}

// setErrorLocked is put_bounce_bio_ctl's first half as the seed has it:
// spin_lock_irqsave, "if (!bounce_ctl->ret) bounce_ctl->ret = ret",
// spin_unlock_irqrestore. The lock is taken even when ret is 0, the common
// case. A sync.Mutex stands for the spinlock: no completion runs in
// interrupt context here, so there is nothing to save and restore.
func (ctl *BounceCtl) setErrorLocked(ret int) bool {
	ctl.lock.Lock()
	defer ctl.lock.Unlock()
	if ctl.ret.Load() != 0 || ret == 0 {
		return false
	}
	ctl.ret.Store(int32(ret))
	return true
}

// setErrorCmpxchg is put_bounce_bio_ctl's first half as the review asked
// for it, without the spinlock: "if (ret) cmpxchg(&bounce_ctl->ret, 0,
// ret)", the way iomap_dio_set_error records a dio's first error. A success
// costs nothing.
func (ctl *BounceCtl) setErrorCmpxchg(ret int) bool {
	return ret != 0 && ctl.ret.CompareAndSwap(0, int32(ret))
}

// put is put_bounce_bio_ctl up to atomic_dec_and_test: record ret and drop
// one reference. It returns the references left; 0 means the caller must
// complete Src.
func (ctl *BounceCtl) put(ret int) int32 {
	ctl.setError(ret)
	return ctl.pending.Add(-1)
}

// putBounceBioCtl is put_bounce_bio_ctl: record the first error and, with
// the last reference, complete the iomap bio.
func (fs *FsInfo) putBounceBioCtl(ctl *BounceCtl, ret int) {
	switch n := ctl.put(ret); {
	case n == 0:
		ctl.Src.Status = blk.ErrnoToStatus(int(ctl.ret.Load()))
		atomic.AddInt64(&fs.stats.BounceCtlsDone, 1)
		iomap.BioEndIO(ctl.Src)
	case n < 0:
		fs.warnf("bounce_ctl released %d times too often", -n)
		atomic.AddInt64(&fs.stats.AccountingBugs, 1)
	}
}

// dioEndWriteCopiedBio is dio_end_write_copied_bio.
func (fs *FsInfo) dioEndWriteCopiedBio(bbio *Bio) {
	ctl := bbio.Private.(*BounceCtl)
	dip := dioPrivate(bbio)
	bio := bbio.Bio
	ret := blk.StatusToErrno(bio.Status)
	if ret != 0 {
		fs.warnDio(bbio, dip)
	}
	bbio.Ordered.FinishOrderedExtent(dip.FileOffset, uint64(dip.Bytes), bio.Status == blk.StsOK)
	fs.freeBouncePages(bio)
	bio.Put()
	fs.putBounceBioCtl(ctl, ret)
}

// dioEndReadCopiedBio is dio_end_read_copied_bio: copy the bounce pages back
// to where this part of the iomap bio was when it was submitted.
func (fs *FsInfo) dioEndReadCopiedBio(bbio *Bio) {
	ctl := bbio.Private.(*BounceCtl)
	dip := dioPrivate(bbio)
	bio := bbio.Bio
	iter := blk.BvecIter{Size: dip.Bytes}
	ret := blk.StatusToErrno(bio.Status)
	if ret != 0 {
		fs.warnDio(bbio, dip)
	}
	if err := blk.CopyDataIter(ctl.Src, &dip.SavedSrcIter, bio, &iter); err != nil && ret == 0 {
		// Only remote pages can fail here (the ublk request went away).
		ret = -int(syscall.EIO)
	}
	bbio.Inode.IOTree.UnlockDioExtent(dip.FileOffset, dip.FileOffset+uint64(dip.Bytes)-1)
	fs.freeBouncePages(bio)
	bio.Put()
	fs.putBounceBioCtl(ctl, ret)
}

// freeBouncePages is bio_free_pages on a bounce bio; a page the allocator
// does not know is logged (the kernel cannot tell).
func (fs *FsInfo) freeBouncePages(bio *blk.Bio) {
	if err := blk.BioFreePages(bio); err != nil {
		fs.warnf("bio_free_pages: %v", err)
	}
}

// allocBounceBbio is alloc_bounce_bbio: a bbio from btrfs_dio_bioset for the
// part of src starting at logical/fileOffset, counted in ctl.pending.
func (fs *FsInfo) allocBounceBbio(src *blk.Bio, ctl *BounceCtl, endIO func(*Bio), logical, fileOffset uint64) *Bio {
	vcnt := min((int(src.Size())+blk.PageSize-1)>>blk.PageShift, blk.BioMaxVecs)
	return fs.newBounceBbio(vcnt, src, ctl, endIO, logical, fileOffset)
}

// newBounceBbio is alloc_bounce_bbio's body with room for vcnt bvecs; the
// pooled path needs one.
func (fs *FsInfo) newBounceBbio(vcnt int, src *blk.Bio, ctl *BounceCtl, endIO func(*Bio), logical, fileOffset uint64) *Bio {
	bio := fs.newDioPrivateBio(vcnt, src.Opf)
	bio.Iter.Sector = logical >> blk.SectorShift
	dip := bio.Container.(*DioPrivate)
	bbio := &dip.Bbio
	bbio.BioInit(fs, endIO, ctl)
	bbio.Inode = fs.inode
	bbio.FileOffset = fileOffset
	dip.FileOffset = fileOffset
	ctl.pending.Add(1)
	atomic.AddInt64(&fs.stats.BounceBbios, 1)
	return bbio
}

// submitBounceBbio is submit_bounce_bbio: writes copy the next part of src
// into the bounce pages and take their share of the ordered extent; reads
// remember where in src their data goes back to.
func (fs *FsInfo) submitBounceBbio(dioData *DioData, bbio *Bio, src *blk.Bio) {
	bio := bbio.Bio
	isWrite := bio.Opf.Op() == blk.OpWrite
	size := bio.Size()
	ctl := bbio.Private.(*BounceCtl)
	dip := dioPrivate(bbio)
	if size == 0 {
		atomic.AddInt64(&fs.stats.EmptyBbios, 1)
	}
	dioData.Submitted += int64(size)
	dip.Bytes = size
	if isWrite {
		iter := blk.BvecIter{Size: size}
		left := src.Size()
		err := blk.CopyDataIter(bio, &iter, src, &src.Iter)
		if err != nil {
			// Keep src's iterator where the kernel's would be.
			src.Advance(size - (left - src.Size()))
		} else {
			err = fs.ExtractOrderedExtent(bbio, dioData.Ordered)
		}
		if err != nil {
			dioData.Ordered.FinishOrderedExtent(bbio.FileOffset, uint64(size), false)
			fs.freeBouncePages(bio)
			bio.Put()
			fs.putBounceBioCtl(ctl, blk.ErrnoOf(err))
			return
		}
	} else {
		dip.SavedSrcIter = src.Iter
		src.Advance(size)
	}
	fs.SubmitBbio(bbio, 0)
}

// newBounceCtl is btrfs_dio_submit_io's kzalloc of the bounce_ctl after the
// patch, and its setup. On failure (injected with Faults.BounceCtlAlloc) src
// is completed with the error and nil returned.
func (fs *FsInfo) newBounceCtl(src *blk.Bio) *BounceCtl {
	if err := fs.Faults.take(&fs.Faults.BounceCtlAlloc); err != nil {
		src.Status = blk.ErrnoToStatus(blk.ErrnoOf(err))
		iomap.BioEndIO(src)
		return nil
	}
	ctl := &BounceCtl{Src: src, cmpxchg: fs.Opts.cmpxchgFirstError()}
	atomic.AddInt64(&fs.stats.BounceCtls, 1)
	// Start at one so the iomap bio cannot finish before every bounce bbio
	// has been submitted.
	ctl.pending.Store(1)
	return ctl
}

// bounceEndIO is btrfs_dio_submit_io after the patch, its choice of end_io:
// dio_end_write_copied_bio or dio_end_read_copied_bio.
func (fs *FsInfo) bounceEndIO(isWrite bool) func(*Bio) {
	if isWrite {
		return fs.dioEndWriteCopiedBio
	}
	return fs.dioEndReadCopiedBio
}

// submitIOBounce is btrfs_dio_submit_io after the patch: carry src in bounce
// bbios of private pages, as many as bio_add_page's limit requires. This is
// the seed's allocation, one alloc_page per page, used with Faithful and
// NoBouncePool; submitIOBouncePooled is the default.
func (fs *FsInfo) submitIOBounce(it *iomap.Iter, src *blk.Bio, fileOffset int64) {
	dioData := it.Private.(*DioData)
	isWrite := src.Opf.Op() == blk.OpWrite
	srcSize := src.Size()
	logical := src.Iter.Sector << blk.SectorShift
	endIO := fs.bounceEndIO(isWrite)
	ctl := fs.newBounceCtl(src)
	if ctl == nil {
		return
	}

	var bbio *Bio
	cur := uint32(0)
	ret := 0
	for cur < srcSize {
		size := min(srcSize-cur, blk.PageSize)
		if bbio == nil {
			bbio = fs.allocBounceBbio(src, ctl, endIO, logical+uint64(cur), uint64(fileOffset)+uint64(cur))
		}
		page := fs.Pages.AllocPage()
		if page == nil {
			ret = -int(syscall.ENOMEM)
			fs.submitOrDropBounceBbio(dioData, bbio, src, ctl)
			fs.bounceError(dioData, ctl, isWrite, uint64(fileOffset), cur, srcSize, ret)
			return
		}
		if bbio.Bio.AddPage(page, size, 0) != size {
			fs.dropUnaddedPage(page)
			fs.submitBounceBbio(dioData, bbio, src)
			bbio = nil
			continue
		}
		cur += size
	}
	if bbio != nil {
		fs.submitBounceBbio(dioData, bbio, src)
	}
	fs.putBounceBioCtl(ctl, 0)
}

// submitOrDropBounceBbio is btrfs_dio_submit_io's alloc_page failure after
// the patch: the bbio in hand is submitted. The seed submits it even when it
// is still empty (alloc_page failed right after alloc_bounce_bbio); unless
// Faithful, we drop an empty one instead.
func (fs *FsInfo) submitOrDropBounceBbio(dioData *DioData, bbio *Bio, src *blk.Bio, ctl *BounceCtl) {
	if fs.Opts.Faithful || bbio.Bio.Size() > 0 {
		fs.submitBounceBbio(dioData, bbio, src)
		return
	}
	ctl.pending.Add(-1)
	bbio.Bio.Put()
}

// dropUnaddedPage is btrfs_dio_submit_io's bio_add_page failure after the
// patch, for the page that did not fit. The seed neither adds nor frees it
// (a leak); unless Faithful, we give it back.
func (fs *FsInfo) dropUnaddedPage(page *blk.Page) {
	if fs.Opts.Faithful {
		atomic.AddInt64(&fs.stats.LeakedPages, 1)
		return
	}
	if err := fs.Pages.FreePage(page); err != nil {
		fs.warnf("%v", err)
	}
}

// bounceError is btrfs_dio_submit_io's error label after the patch: account
// the part of src no bbio covers, then drop the submitter's reference. The
// seed finishes (or unlocks) that tail here and btrfs_dio_iomap_end does it
// again, because dio_data->submitted never counted it; unless Faithful, we
// count it so it happens once.
func (fs *FsInfo) bounceError(dioData *DioData, ctl *BounceCtl, isWrite bool, fileOffset uint64, cur, srcSize uint32, ret int) {
	tail := uint64(srcSize - cur)
	if isWrite {
		fs.inode.MarkOrderedIOFinished(fileOffset+uint64(cur), tail, false)
	} else {
		fs.inode.IOTree.UnlockDioExtent(fileOffset+uint64(cur), fileOffset+uint64(srcSize)-1)
	}
	if !fs.Opts.Faithful {
		dioData.Submitted += int64(tail)
	}
	fs.putBounceBioCtl(ctl, ret)
}
