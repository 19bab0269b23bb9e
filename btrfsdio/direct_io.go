package btrfsdio

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/raid"
)

// DioData is struct btrfs_dio_data: per-mapping state shared by
// iomap_begin, submit_io and iomap_end.
type DioData struct {
	Submitted int64
	Ordered   *OrderedExtent
	NocowDone bool
}

// DioPrivate is struct btrfs_dio_private: what btrfs_dio_bioset puts in
// front of every direct IO bio.
type DioPrivate struct {
	// SavedSrcIter is where a bounce read copies its data back to.
	SavedSrcIter blk.BvecIter
	Bytes        uint32
	FileOffset   uint64
	// srcCsum is the crc32c of a zero-copy write's source at submission,
	// when srcCsummed (no upstream field: the volatile write detector).
	srcCsum    uint32
	srcCsummed bool
	// Bbio must be last in C; in Go it is simply embedded.
	Bbio BtrfsBio
}

// dioPrivate is container_of(bbio, struct btrfs_dio_private, bbio).
func dioPrivate(bbio *BtrfsBio) *DioPrivate { return bbio.outer.(*DioPrivate) }

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

// newDioPrivateBio allocates a bio from btrfs_dio_bioset with its
// btrfs_dio_private around it.
func (fs *FsInfo) newDioPrivateBio(nrVecs int, opf blk.Opf) *blk.Bio {
	bio := blk.BioAllocBioset(&fs.DioBioset, nrVecs, opf)
	dip := &DioPrivate{}
	dip.Bbio.Bio = bio
	dip.Bbio.outer = dip
	bio.Container = dip
	return bio
}

// lockExtentDirect is lock_extent_direct: take the dio lock and the extent
// lock over [lockstart, lockend] with no ordered extent left in the range.
func (inode *Inode) lockExtentDirect(lockstart, lockend uint64, flags uint) error {
	writing := flags&iomap.FlagWrite != 0
	nowait := flags&iomap.FlagNowait != 0
	tree := inode.IOTree
	if nowait {
		if !tree.TryLockDioExtent(lockstart, lockend) {
			return syscall.EAGAIN
		}
	} else {
		tree.LockDioExtent(lockstart, lockend)
	}
	var err error
	for {
		if nowait {
			if !tree.TryLockExtent(lockstart, lockend) {
				err = syscall.EAGAIN
				break
			}
		} else {
			tree.LockExtent(lockstart, lockend)
		}
		// No page cache here, so only ordered extents can be in the way.
		ordered := inode.LookupOrderedRange(lockstart, lockend-lockstart+1)
		if ordered == nil {
			break
		}
		tree.UnlockExtent(lockstart, lockend)
		switch {
		case nowait:
			err = syscall.EAGAIN
		case writing || ordered.Flags()&OrderedDirect != 0:
			ordered.StartOrderedExtent()
		default:
			// A direct read must not wait for a buffered write's ordered
			// extent: fall back to a buffered read.
			err = syscall.ENOTBLK
		}
		ordered.PutOrderedExtent()
		if err != nil {
			break
		}
	}
	if err != nil {
		tree.UnlockDioExtent(lockstart, lockend)
	}
	return err
}

// createDioExtent is btrfs_create_dio_extent: the ordered extent for a
// direct write into [start, start+numBytes) at diskBytenr.
func (inode *Inode) createDioExtent(dioData *DioData, start, numBytes, diskBytenr uint64, typ uint32) error {
	oe, err := inode.AllocOrderedExtent(start, numBytes, diskBytenr, typ|OrderedDirect)
	if err != nil {
		return err
	}
	dioData.Ordered = oe
	return nil
}

// newExtentDirect is btrfs_new_extent_direct: reserve a new data extent for
// a COW write and create its ordered extent. The extent may be shorter than
// length when free space is fragmented.
func (inode *Inode) newExtentDirect(dioData *DioData, start, length uint64) (fileExtent, error) {
	fs := inode.fs
	disk, got, err := fs.reserveData(length, fs.allocHint.Load())
	if err != nil {
		return fileExtent{}, fmt.Errorf("btrfs_reserve_extent %d bytes: %w", length, err)
	}
	fs.allocHint.Store(disk + got)
	if err := inode.createDioExtent(dioData, start, got, disk, OrderedRegular); err != nil {
		fs.space.release(disk, got)
		return fileExtent{}, err
	}
	return fileExtent{start: start, len: got, diskBytenr: disk}, nil
}

// getBlocksDirectWrite is btrfs_get_blocks_direct_write: NOCOW into the
// existing extent when the inode allows it, else allocate a new extent.
func (inode *Inode) getBlocksDirectWrite(em *fileExtent, hole bool, dioData *DioData, start uint64, lenp *uint64, flags uint) error {
	length := *lenp
	if inode.NoDataCow && !hole {
		// We have no snapshots or reflinks, so can_nocow_extent always
		// holds for an existing extent.
		length = min(length, em.len-(start-em.start))
		blockStart := em.diskBytenr + (start - em.start)
		if err := inode.createDioExtent(dioData, start, length, blockStart, OrderedNocow); err != nil {
			return err
		}
		dioData.NocowDone = true
		*lenp = length
		return nil
	}
	if flags&iomap.FlagNowait != 0 {
		return syscall.EAGAIN
	}
	ne, err := inode.newExtentDirect(dioData, start, length)
	if err != nil {
		return err
	}
	*em = ne
	*lenp = min(length, ne.len)
	return nil
}

// dioIomapOps is btrfs_dio_iomap_ops.
type dioIomapOps struct{ inode *Inode }

// IomapBegin is btrfs_dio_iomap_begin.
func (ops dioIomapOps) IomapBegin(it *iomap.Iter, start int64, length uint64, flags uint, m *iomap.Iomap) error {
	inode := ops.inode
	dioData := it.Private.(*DioData)
	write := flags&iomap.FlagWrite != 0
	pos := uint64(start)
	l := length
	if !write {
		// Cap reads as buffered IO does: the csum array is per mapping.
		l = min(l, SectorSize*BtrfsMaxBioSectors)
	}
	lockstart, lockend := pos, pos+l-1
	*dioData = DioData{}

	if err := inode.lockExtentDirect(lockstart, lockend, flags); err != nil {
		return err
	}
	em, hole := inode.extents.lookup(pos, l)
	l = min(l, em.len-(pos-em.start))
	if write {
		if err := inode.getBlocksDirectWrite(&em, hole, dioData, pos, &l, flags); err != nil {
			inode.IOTree.ClearExtentBit(lockstart, lockend, ExtentLocked|ExtentDioLocked)
			return err
		}
		hole = false
		l = min(l, em.len-(pos-em.start))
	}
	if hole {
		m.Addr = iomap.NullAddr
		m.Type = iomap.TypeHole
	} else {
		m.Addr = em.diskBytenr + (pos - em.start)
		m.Type = iomap.TypeMapped
	}
	m.Offset = start
	m.Length = l
	m.LogicalBlockSize = blk.SectorSize

	// Reads keep the dio lock until their bios complete; writes only hold
	// it while mapping (their ordered extent protects the range).
	unlockBits := ExtentLocked
	if write {
		unlockBits |= ExtentDioLocked
	}
	inode.IOTree.ClearExtentBit(lockstart, lockend, unlockBits)
	if !write && pos+l < lockend {
		inode.IOTree.UnlockDioExtent(pos+l, lockend)
	}
	return nil
}

// IomapEnd is btrfs_dio_iomap_end: whatever of the mapping was not submitted
// is finished (writes) or unlocked (reads) here, and -ENOTBLK tells iomap to
// stop so the caller can fall back to buffered IO.
func (ops dioIomapOps) IomapEnd(it *iomap.Iter, pos int64, length uint64, written int64, flags uint, m *iomap.Iomap) error {
	inode := ops.inode
	dioData := it.Private.(*DioData)
	write := flags&iomap.FlagWrite != 0
	p := uint64(pos)
	if !write && m.Type == iomap.TypeHole {
		inode.IOTree.UnlockDioExtent(p, p+length-1)
		return nil
	}
	var err error
	if submitted := uint64(dioData.Submitted); submitted < length {
		p += submitted
		length -= submitted
		if write {
			dioData.Ordered.FinishOrderedExtent(p, length, false)
		} else {
			inode.IOTree.UnlockDioExtent(p, p+length-1)
		}
		err = syscall.ENOTBLK
	}
	if write {
		dioData.Ordered.PutOrderedExtent()
		dioData.Ordered = nil
	}
	return err
}

// dioEndIO is btrfs_dio_end_io, the pre-patch completion of a zero-copy
// bio. Before the caller can hear of a write, the volatile write detector
// checks its source again.
func (fs *FsInfo) dioEndIO(bbio *BtrfsBio) {
	dip := dioPrivate(bbio)
	bio := bbio.Bio
	if bio.Status != blk.StsOK {
		fs.warnDio(bbio, dip)
	}
	if bio.Opf.Op() == blk.OpWrite {
		fs.volatileAfter(bbio, dip)
		bbio.Ordered.FinishOrderedExtent(dip.FileOffset, uint64(dip.Bytes), bio.Status == blk.StsOK)
	} else {
		bbio.Inode.IOTree.UnlockDioExtent(dip.FileOffset, dip.FileOffset+uint64(dip.Bytes)-1)
	}
	bio.Private = bbio.Private
	iomap.BioEndIO(bio)
}

// warnDio is the btrfs_warn of a failed direct IO bio, as btrfs_dio_end_io
// and the seed's end_io functions print it. The inode is always 257, the
// one inode (btrfs_ino).
func (fs *FsInfo) warnDio(bbio *BtrfsBio, dip *DioPrivate) {
	bio := bbio.Bio
	fs.warnf("direct IO failed ino 257 op %#x offset %#x len %d err no %d",
		uint32(bio.Opf), dip.FileOffset, dip.Bytes, bio.Status)
}

// ExtractOrderedExtent is btrfs_extract_ordered_extent: give bbio the
// ordered extent for exactly its range, splitting it off the front of
// ordered when the bio covers less.
func (fs *FsInfo) ExtractOrderedExtent(bbio *BtrfsBio, ordered *OrderedExtent) error {
	start := bbio.Bio.Iter.Sector << blk.SectorShift
	length := uint64(bbio.Bio.Size())
	if start != ordered.DiskBytenr {
		fs.warnf("btrfs_extract_ordered_extent: bio at %d, ordered extent at %d", start, ordered.DiskBytenr)
		return syscall.EINVAL
	}
	if ordered.DiskNumBytes == length {
		ordered.refs.Add(1)
		bbio.Ordered = ordered
		return nil
	}
	// We keep no extent map cache (reads wait for ordered extents and the
	// file extent items change only at completion), so unlike the kernel
	// there is no btrfs_split_extent_map to do for COW extents.
	nw, err := ordered.SplitOrderedExtent(length)
	if err != nil {
		return err
	}
	bbio.Ordered = nw
	return nil
}

// submitIOZeroCopy is btrfs_dio_submit_io before the patch: the iomap bio,
// which points at the caller's pages, goes to the devices as it is.
func (fs *FsInfo) submitIOZeroCopy(it *iomap.Iter, bio *blk.Bio, fileOffset int64) {
	bbio := btrfsBio(bio)
	dip := dioPrivate(bbio)
	dioData := it.Private.(*DioData)
	bbio.BioInit(fs, fs.dioEndIO, bio.Private)
	bbio.Inode = fs.inode
	bbio.FileOffset = uint64(fileOffset)
	dip.FileOffset = uint64(fileOffset)
	dip.Bytes = bio.Size()
	dioData.Submitted += int64(bio.Size())

	// A partial write must split the ordered extent to match the bio; the
	// rest stays in dioData for iomap_end to cancel.
	if it.Flags&iomap.FlagWrite != 0 {
		if err := fs.ExtractOrderedExtent(bbio, dioData.Ordered); err != nil {
			dioData.Ordered.FinishOrderedExtent(uint64(fileOffset), uint64(dip.Bytes), false)
			bio.Status = blk.ErrnoToStatus(blk.ErrnoOf(err))
			iomap.BioEndIO(bio)
			return
		}
		if fs.detectVolatile() {
			fs.volatileBefore(bbio, dip)
		}
	}
	fs.SubmitBbio(bbio, 0)
}

// putBounceBioCtl is put_bounce_bio_ctl: record the first error and, with
// the last reference, complete the iomap bio.
func (fs *FsInfo) putBounceBioCtl(ctl *BounceCtl, ret int) {
	switch n := ctl.put(ret); {
	case n == 0:
		ctl.Src.Status = blk.ErrnoToStatus(int(ctl.ret.Load()))
		fs.stats.bounceCtlsDone.Add(1)
		iomap.BioEndIO(ctl.Src)
	case n < 0:
		fs.warnf("bounce_ctl released %d times too often", -n)
		fs.stats.accountingBugs.Add(1)
	}
}

// dioEndWriteCopiedBio is dio_end_write_copied_bio.
func (fs *FsInfo) dioEndWriteCopiedBio(bbio *BtrfsBio) {
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
func (fs *FsInfo) dioEndReadCopiedBio(bbio *BtrfsBio) {
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
func (fs *FsInfo) allocBounceBbio(src *blk.Bio, ctl *BounceCtl, endIO func(*BtrfsBio), logical, fileOffset uint64) *BtrfsBio {
	vcnt := min((int(src.Size())+blk.PageSize-1)>>blk.PageShift, blk.BioMaxVecs)
	return fs.newBounceBbio(vcnt, src, ctl, endIO, logical, fileOffset)
}

// newBounceBbio is alloc_bounce_bbio's body with room for vcnt bvecs; the
// pooled path needs one.
func (fs *FsInfo) newBounceBbio(vcnt int, src *blk.Bio, ctl *BounceCtl, endIO func(*BtrfsBio), logical, fileOffset uint64) *BtrfsBio {
	bio := fs.newDioPrivateBio(vcnt, src.Opf)
	bio.Iter.Sector = logical >> blk.SectorShift
	dip := bio.Container.(*DioPrivate)
	bbio := &dip.Bbio
	bbio.BioInit(fs, endIO, ctl)
	bbio.Inode = fs.inode
	bbio.FileOffset = fileOffset
	dip.FileOffset = fileOffset
	ctl.pending.Add(1)
	fs.stats.bounceBbios.Add(1)
	return bbio
}

// submitBounceBbio is submit_bounce_bbio: writes copy the next part of src
// into the bounce pages and take their share of the ordered extent; reads
// remember where in src their data goes back to.
func (fs *FsInfo) submitBounceBbio(dioData *DioData, bbio *BtrfsBio, src *blk.Bio) {
	bio := bbio.Bio
	isWrite := bio.Opf.Op() == blk.OpWrite
	size := bio.Size()
	ctl := bbio.Private.(*BounceCtl)
	dip := dioPrivate(bbio)
	if size == 0 {
		fs.stats.emptyBbios.Add(1)
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
	fs.stats.bounceCtls.Add(1)
	// Start at one so the iomap bio cannot finish before every bounce bbio
	// has been submitted.
	ctl.pending.Store(1)
	return ctl
}

// bounceEndIO is btrfs_dio_submit_io after the patch, its choice of end_io:
// dio_end_write_copied_bio or dio_end_read_copied_bio.
func (fs *FsInfo) bounceEndIO(isWrite bool) func(*BtrfsBio) {
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

	var bbio *BtrfsBio
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

// bounceChunk is the most one pooled bounce bbio carries: one folio of
// MaxFolioOrder, what a bbio of BIO_MAX_VECS single pages carries in the
// seed.
const bounceChunk = blk.PageSize << blk.MaxFolioOrder

// submitIOBouncePooled is btrfs_dio_submit_io after the patch with its
// allocation changed (D26): each bounce bbio carries one folio of up to
// 1 MiB from the filesystem's bounce mempool, added with bio_add_page as a
// single multi-page bvec, so a write is copied in one pass per contiguous
// source segment. The pool waits for room instead of failing; a failure of
// the page allocator under it takes the seed's ENOMEM path. Every bbio is
// submitted (SubmitBbio returns once the devices have it, without waiting)
// before the next chunk is copied, so copying overlaps the IO of the chunk
// before.
func (fs *FsInfo) submitIOBouncePooled(it *iomap.Iter, src *blk.Bio, fileOffset int64) {
	dioData := it.Private.(*DioData)
	isWrite := src.Opf.Op() == blk.OpWrite
	srcSize := src.Size()
	logical := src.Iter.Sector << blk.SectorShift
	endIO := fs.bounceEndIO(isWrite)
	ctl := fs.newBounceCtl(src)
	if ctl == nil {
		return
	}
	for cur := uint32(0); cur < srcSize; {
		size := min(srcSize-cur, bounceChunk)
		bbio := fs.newBounceBbio(1, src, ctl, endIO, logical+uint64(cur), uint64(fileOffset)+uint64(cur))
		folio := fs.BouncePool.Alloc(blk.FolioOrder(size))
		if folio == nil {
			fs.submitOrDropBounceBbio(dioData, bbio, src, ctl)
			fs.bounceError(dioData, ctl, isWrite, uint64(fileOffset), cur, srcSize, -int(syscall.ENOMEM))
			return
		}
		// A new bbio with one free bvec takes the folio whole.
		bbio.Bio.AddPage(folio, size, 0)
		fs.submitBounceBbio(dioData, bbio, src)
		cur += size
	}
	fs.putBounceBioCtl(ctl, 0)
}

// submitOrDropBounceBbio is btrfs_dio_submit_io's alloc_page failure after
// the patch: the bbio in hand is submitted. The seed submits it even when it
// is still empty (alloc_page failed right after alloc_bounce_bbio); unless
// Faithful, we drop an empty one instead.
func (fs *FsInfo) submitOrDropBounceBbio(dioData *DioData, bbio *BtrfsBio, src *blk.Bio, ctl *BounceCtl) {
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
		fs.stats.leakedPages.Add(1)
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

// dioOps is btrfs_dio_ops for the selected mode. Before the patch bios come
// from btrfs_dio_bioset; the patch drops .bio_set, since the iomap bio is
// never submitted itself. The fallback and the generic bounce keep the
// pre-patch btrfs_dio_ops: iomap's bio, bounced or not, goes to the
// devices; iomap-bounce hands iomap the page allocator its bounce folios
// come from.
func (fs *FsInfo) dioOps() *iomap.DioOps {
	switch {
	case fs.Opts.Mode == Bounce && fs.BouncePool != nil:
		return &iomap.DioOps{SubmitIO: fs.submitIOBouncePooled}
	case fs.Opts.Mode == Bounce:
		return &iomap.DioOps{SubmitIO: fs.submitIOBounce}
	case fs.Opts.Mode == IomapBounce:
		return &iomap.DioOps{SubmitIO: fs.submitIOZeroCopy, AllocBio: fs.newDioPrivateBio, Pages: fs.Pages}
	}
	return &iomap.DioOps{SubmitIO: fs.submitIOZeroCopy, AllocBio: fs.newDioPrivateBio}
}

// dataProfileDuplicated is btrfs_data_alloc_profile(fs_info) &
// BTRFS_BLOCK_GROUP_PROFILE_MASK tested as both later answers test it:
// anything but SINGLE (0) and RAID0 keeps more than one copy or parity.
func (fs *FsInfo) dataProfileDuplicated() bool {
	p := fs.Vol.Profile()
	return p != raid.Single && p != raid.Raid0
}

// needStableWrite is need_stable_write (file 18): data checksums, or a
// profile with mirrors or parity, need the data not to change in flight.
func (inode *Inode) needStableWrite() bool {
	return !inode.NoDataSum || inode.fs.dataProfileDuplicated()
}

// dioWrite is btrfs_dio_write: iomap_dio_rw for a write, with
// IOMAP_DIO_BOUNCE when the write needs stable pages and the mode is the
// generic bounce's. The kernel's -EAGAIN for IOCB_NOWAIT with bounce has
// nothing to refuse here: our kiocbs are never NOWAIT.
func (inode *Inode) dioWrite(iocb *iomap.Kiocb, from *iomap.IovIter, doneBefore int) (int, error) {
	dioFlags := iomap.DioPartial
	if inode.fs.Opts.Mode == IomapBounce && inode.needStableWrite() {
		dioFlags |= iomap.DioBounce
	}
	return iomap.DioRW(iocb, from, true, inode, dioIomapOps{inode}, inode.fs.dioOps(), dioFlags, &DioData{}, doneBefore)
}

// directWriteFallsBack is btrfs_direct_write's choice of its buffered label
// before trying direct IO: for inodes with data checksums
// (968f19c5b1b7, which iomap-bounce removes) and, in fallback mode, for a
// duplicated data profile (7c2830f00c3e).
func (inode *Inode) directWriteFallsBack() bool {
	switch inode.fs.Opts.Mode {
	case IomapBounce:
		return false
	case Fallback:
		if inode.fs.dataProfileDuplicated() {
			return true
		}
	}
	return !inode.NoDataSum
}

// ErrUnaligned is returned for direct IO that is not sector aligned.
var ErrUnaligned = fmt.Errorf("btrfsdio: IO not aligned to the %d-byte sector size: %w", SectorSize, syscall.EINVAL)

// checkDirectIO is check_direct_IO. Btrfs falls back to buffered IO for
// unaligned direct IO; a block device never sends any, so we refuse it.
func checkDirectIO(pos int64, it *iomap.IovIter) error {
	if uint64(pos)&(SectorSize-1) != 0 || it.Alignment()&(SectorSize-1) != 0 {
		return ErrUnaligned
	}
	return nil
}

// ErrOutOfRange is returned for IO beyond the end of the file.
var ErrOutOfRange = errors.New("btrfsdio: IO beyond the end of the device")

func (inode *Inode) checkRange(pos int64, n int) error {
	if pos < 0 || uint64(pos)+uint64(n) > inode.size {
		return fmt.Errorf("%w: [%d, %d) of %d bytes: %w", ErrOutOfRange, pos, pos+int64(n), inode.size, syscall.ENOSPC)
	}
	return nil
}

// DirectWrite is btrfs_direct_write: direct IO for nodatasum inodes, the
// buffered fallback (commit 968f19c5b1b7) for inodes with data checksums and
// for whatever direct IO left undone. In fallback mode a duplicated data
// profile goes buffered too (7c2830f00c3e); in iomap-bounce mode nothing
// does up front (file 18: both fallbacks replaced by IOMAP_DIO_BOUNCE, see
// dioWrite). After an aborted transaction it fails with EIO (FsError).
func (inode *Inode) DirectWrite(iocb *iomap.Kiocb, from *iomap.IovIter) (int, error) {
	if err := inode.checkRange(iocb.Pos, from.Count()); err != nil {
		return 0, err
	}
	if err := inode.fs.FsError(); err != nil {
		return 0, err
	}
	if err := checkDirectIO(iocb.Pos, from); err != nil {
		return 0, err
	}
	inode.ilock.RLock()
	defer inode.ilock.RUnlock()
	written := 0
	if !inode.directWriteFallsBack() {
		n, err := inode.dioWrite(iocb, from, 0)
		if err != nil {
			return 0, err
		}
		written = n
		if from.Count() == 0 {
			if err := inode.fs.commitUnlogged(); err != nil {
				return 0, err
			}
			return written, nil
		}
	}
	n, err := inode.bufferedWrite(uint64(iocb.Pos), from)
	written += n
	iocb.Pos += int64(n)
	if err == nil {
		err = inode.fs.commitUnlogged()
	}
	if err != nil {
		return 0, err
	}
	return written, nil
}

// DirectRead is btrfs_direct_read, with the buffered fallback for what direct
// IO could not do (-ENOTBLK on a range under buffered writeback).
func (inode *Inode) DirectRead(iocb *iomap.Kiocb, to *iomap.IovIter) (int, error) {
	if err := inode.checkRange(iocb.Pos, to.Count()); err != nil {
		return 0, err
	}
	if err := checkDirectIO(iocb.Pos, to); err != nil {
		return 0, err
	}
	inode.ilock.RLock()
	defer inode.ilock.RUnlock()
	read, err := iomap.DioRW(iocb, to, false, inode, dioIomapOps{inode}, inode.fs.dioOps(), iomap.DioPartial, &DioData{}, 0)
	if err != nil {
		return 0, err
	}
	if to.Count() == 0 {
		return read, nil
	}
	n, err := inode.bufferedRead(uint64(iocb.Pos), to)
	iocb.Pos += int64(n)
	if err != nil {
		return 0, err
	}
	return read + n, nil
}
