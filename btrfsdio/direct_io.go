package btrfsdio

import (
	"errors"
	"fmt"
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
	Bbio Bio
}

// dioPrivate is container_of(bbio, struct btrfs_dio_private, bbio).
func dioPrivate(bbio *Bio) *DioPrivate { return bbio.outer.(*DioPrivate) }

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

var _ iomap.Ops = dioIomapOps{}

// IomapBegin is btrfs_dio_iomap_begin.
func (ops dioIomapOps) IomapBegin(it *iomap.Iter, start int64, length uint64, flags uint, m *iomap.Iomap) error {
	inode := ops.inode
	dioData := it.Private.(*DioData)
	write := flags&iomap.FlagWrite != 0
	pos := uint64(start)
	l := length
	if !write {
		// Cap reads as buffered IO does: the csum array is per mapping.
		l = min(l, SectorSize*MaxBioSectors)
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
func (fs *FsInfo) dioEndIO(bbio *Bio) {
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
func (fs *FsInfo) warnDio(bbio *Bio, dip *DioPrivate) {
	bio := bbio.Bio
	fs.warnf("direct IO failed ino 257 op %#x offset %#x len %d err no %d",
		uint32(bio.Opf), dip.FileOffset, dip.Bytes, bio.Status)
}

// ExtractOrderedExtent is btrfs_extract_ordered_extent: give bbio the
// ordered extent for exactly its range, splitting it off the front of
// ordered when the bio covers less.
func (fs *FsInfo) ExtractOrderedExtent(bbio *Bio, ordered *OrderedExtent) error {
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

// newDioOps is btrfs_dio_ops for the selected mode, built once by NewFsInfo
// (the kernel's is a static const table). Before the patch bios come
// from btrfs_dio_bioset; the patch drops .bio_set, since the iomap bio is
// never submitted itself. The fallback and the generic bounce keep the
// pre-patch btrfs_dio_ops: iomap's bio, bounced or not, goes to the
// devices; iomap-bounce hands iomap the page allocator its bounce folios
// come from.
func (fs *FsInfo) newDioOps() *iomap.DioOps {
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
	return iomap.DioRW(iocb, from, true, inode, dioIomapOps{inode}, inode.fs.dioOps, dioFlags, &DioData{}, doneBefore)
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

// DirectReadVerifiesInPlace reports whether a direct read verifies data
// checksums on the caller's own pages: zero-copy reads of a datasum inode,
// where btrfs_check_read_bio reads back what the devices wrote there. No
// kernel counterpart (the kernel's user pages are always readable); a
// caller whose pages can only be written reads into its own memory when
// this holds.
func (inode *Inode) DirectReadVerifiesInPlace() bool {
	return inode.fs.Opts.Mode.ZeroCopyReads() && !inode.NoDataSum
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
	read, err := iomap.DioRW(iocb, to, false, inode, dioIomapOps{inode}, inode.fs.dioOps, iomap.DioPartial, &DioData{}, 0)
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
