package iomap

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
)

// Kiocb is the part of struct kiocb direct IO looks at.
type Kiocb struct {
	Pos   int64
	Flags uint
}

// Kiocb flags.
const (
	// IocbDsync is IOCB_DSYNC: the write must be durable when it completes,
	// which iomap turns into REQ_FUA on the data bios.
	IocbDsync uint = 1 << 4
)

// iomap_dio_rw flags (IOMAP_DIO_*).
const (
	// DioPartial is IOMAP_DIO_PARTIAL: a short result is fine, the caller
	// finishes the rest (btrfs falls back to buffered IO on -ENOTBLK).
	DioPartial uint = 1 << 2
	// DioBounce is IOMAP_DIO_BOUNCE ("iomap: add a flag to bounce buffer
	// direct I/O"): bios carry bounce folios (BioIovIterBounce) instead
	// of the caller's pages, for devices that need stable data.
	DioBounce uint = 1 << 4
)

// dio->flags.
const (
	dioWrite uint = 1 << 30
)

// DioOps is struct iomap_dio_ops.
type DioOps struct {
	// SubmitIO is ->submit_io: the filesystem submits the bio itself.
	SubmitIO func(it *Iter, bio *blk.Bio, fileOffset int64)
	// Pages is where DioBounce takes its bounce folios (no kernel
	// counterpart: folio_alloc draws from the one page allocator).
	Pages *blk.PageAllocator
	// AllocBio is ->bio_set: when set, bios are allocated from the
	// filesystem's bio_set so the structure around them (front_pad) exists;
	// nil means plain bio_alloc.
	AllocBio func(nrVecs int, opf blk.Opf) *blk.Bio
}

// Dio is struct iomap_dio: one direct IO call, alive until its last bio ends.
type Dio struct {
	iocb  *Kiocb
	flags uint
	size  int64        // bytes mapped into bios (or zeroed for holes)
	ref   atomic.Int32 // 1 for the submitter + 1 per bio in flight
	err   atomic.Int32 // first error, a negative errno
	iter  *IovIter     // submit.iter
	done  chan struct{}
	dops  *DioOps
	// Bios counts the bios this call submitted, for tests and statistics.
	Bios int
}

// SetError is iomap_dio_set_error: keep the first error only.
func (dio *Dio) SetError(errno int) {
	dio.err.CompareAndSwap(0, int32(errno))
}

// BioEndIO is iomap_dio_bio_end_io: record the bio's error and complete it
// (bioEndIO). It may run on any goroutine.
func BioEndIO(bio *blk.Bio) {
	dio, ok := bio.Private.(*Dio)
	if !ok {
		// A bio whose bi_private is not a dio was routed here by mistake;
		// dropping it would hang the caller, so make the bug visible.
		panic(fmt.Sprintf("iomap: iomap_dio_bio_end_io on a bio without a dio (%T)", bio.Private))
	}
	if bio.Status != blk.StsOK {
		dio.SetError(blk.StatusToErrno(bio.Status))
	}
	dio.bioEndIO(bio)
}

// bioEndIO is __iomap_dio_bio_end_io ("iomap: share code between
// iomap_dio_bio_end_io and iomap_finish_ioend_direct", then "iomap: free
// the bio before completing the dio"): unbounce a bounced bio (its read
// data goes back to the caller here, unless the dio failed), put the bio,
// and only then drop its reference, waking the submitter when it was the
// last. There is no ioend path, so no inline_completion argument.
func (dio *Dio) bioEndIO(bio *blk.Bio) {
	if dio.flags&DioBounce != 0 {
		if err := BioIovIterUnbounce(bio, dio.err.Load() != 0, true); err != nil {
			// The kernel WARNs (copy_to_iter into pinned pages cannot
			// fail); a remote page can, and the caller must hear of it.
			dio.SetError(blk.ErrnoOf(err))
		}
	}
	bio.Put()
	// Do not touch bio below, we just gave up our reference.
	if dio.ref.Add(-1) == 0 {
		close(dio.done)
	}
}

// submitBio is iomap_dio_submit_bio: take a reference for the bio and hand it
// to the filesystem.
func (dio *Dio) submitBio(it *Iter, bio *blk.Bio, pos int64) {
	dio.ref.Add(1)
	dio.Bios++
	dio.dops.SubmitIO(it, bio, pos)
}

// allocBio is iomap_dio_alloc_bio: from the filesystem's bio_set when it
// has one.
func (dio *Dio) allocBio(nrVecs int, opf blk.Opf) *blk.Bio {
	if dio.dops.AllocBio != nil {
		return dio.dops.AllocBio(nrVecs, opf)
	}
	return blk.BioAllocBioset(nil, nrVecs, opf)
}

func (dio *Dio) bioOpf() blk.Opf {
	if dio.flags&dioWrite == 0 {
		return blk.Opf(blk.OpRead)
	}
	opf := blk.Opf(blk.OpWrite) | blk.ReqSync
	if dio.iocb.Flags&IocbDsync != 0 {
		opf |= blk.ReqFUA
	}
	return opf
}

// bioIterOne is iomap_dio_bio_iter_one ("iomap: split out the per-bio
// logic from iomap_dio_bio_iter", with IOMAP_DIO_BOUNCE): build one bio at
// pos from the caller's pages, or from bounce folios, submit it, and return
// its size.
func (dio *Dio) bioIterOne(it *Iter, pos int64, opf blk.Opf) (int64, error) {
	var nrVecs int
	if dio.flags&DioBounce != 0 {
		nrVecs = BioIovBounceNrVecs(dio.iter, opf)
	} else {
		nrVecs = BioIovVecsToAlloc(dio.iter, blk.BioMaxVecs)
	}
	bio := dio.allocBio(nrVecs, opf)
	bio.Iter.Sector = it.Iomap.sector(pos)
	bio.Private = dio
	bio.EndIO = BioEndIO
	var err error
	if dio.flags&DioBounce != 0 {
		err = BioIovIterBounce(bio, dio.iter, blk.BioMaxSize, dio.dops.Pages)
	} else {
		err = BioIovIterGetPages(bio, dio.iter)
	}
	if err != nil {
		bio.Put()
		return 0, err
	}
	n := int64(bio.Size())
	dio.submitBio(it, bio, pos)
	return n, nil
}

// bioIter is iomap_dio_bio_iter as "iomap: simplify iomap_dio_bio_iter" and
// "iomap: split out the per-bio logic" leave it: cut the mapped range into
// bios (bioIterOne) until it is used up, and return the bytes put into
// bios. A completion that already failed stops further submission without
// reverting what was submitted ("iomap: fix submission side handling of
// completion side errors"; before it, the submitted bytes were reverted
// into the iterator although their bios were in flight).
func (dio *Dio) bioIter(it *Iter) (int64, error) {
	length := it.Length()
	pos := it.Pos
	lbs := uint64(max(it.Iomap.LogicalBlockSize, blk.SectorSize))
	if (uint64(pos)|length)&(lbs-1) != 0 || dio.iter.Alignment()&(lbs-1) != 0 {
		return 0, syscall.EINVAL
	}
	origCount := dio.iter.Count()
	dio.iter.Truncate(int(length))
	var copied int64
	var err error
	for dio.iter.Count() > 0 {
		if dio.err.Load() != 0 {
			break
		}
		var n int64
		if n, err = dio.bioIterOne(it, pos, dio.bioOpf()); err != nil {
			break
		}
		dio.size += n
		copied += n
		pos += n
	}
	dio.iter.Reexpand(origCount - int(copied))
	if copied > 0 {
		return copied, nil
	}
	return 0, err
}

// holeIter is iomap_dio_hole_iter: a read of a hole fills the user buffer
// with zeroes.
func (dio *Dio) holeIter(it *Iter) (int64, error) {
	n, err := dio.iter.Zero(int(it.Length()))
	dio.size += int64(n)
	return int64(n), err
}

// iter is iomap_dio_iter: dispatch one mapping by type.
func (dio *Dio) iterOne(it *Iter) (int64, error) {
	write := dio.flags&dioWrite != 0
	switch it.Iomap.Type {
	case TypeHole:
		if write {
			return 0, syscall.EIO
		}
		return dio.holeIter(it)
	case TypeUnwritten:
		if !write {
			return dio.holeIter(it)
		}
		return dio.bioIter(it)
	case TypeMapped:
		return dio.bioIter(it)
	}
	return 0, syscall.EIO
}

// DioRW is iomap_dio_rw for a synchronous kiocb: map iocb.Pos..+iter.Count()
// through ops, submit bios through dops, wait for the last one, and return
// the bytes done (plus doneBefore) or the first error. write says which way
// the data goes (iov_iter_rw).
func DioRW(iocb *Kiocb, iter *IovIter, write bool, inode Inode, ops Ops, dops *DioOps,
	dioFlags uint, private any, doneBefore int) (int, error) {
	if dops == nil || dops.SubmitIO == nil {
		return 0, errors.New("iomap: iomap_dio_rw without submit_io")
	}
	if dioFlags&DioBounce != 0 && dops.Pages == nil {
		return 0, errors.New("iomap: IOMAP_DIO_BOUNCE without a page allocator")
	}
	dio := &Dio{iocb: iocb, iter: iter, done: make(chan struct{}), dops: dops, flags: dioFlags & DioBounce}
	dio.ref.Store(1)
	it := &Iter{Inode: inode, Pos: iocb.Pos, Len: uint64(iter.Count()), Flags: FlagDirect, Private: private}
	if write {
		dio.flags |= dioWrite
		it.Flags |= FlagWrite
	} else if iocb.Pos >= inode.ISize() {
		return doneBefore, nil
	}
	if it.Len == 0 {
		return doneBefore, nil
	}

	var err error
	for {
		var more bool
		if more, err = it.Next(ops); !more {
			break
		}
		n, ierr := dio.iterOne(it)
		if ierr != nil {
			it.Processed = int64(blk.ErrnoOf(ierr))
		} else {
			it.Processed = n
		}
	}
	if err != nil {
		switch {
		case errors.Is(err, syscall.EFAULT) && dio.size > 0 && dioFlags&DioPartial != 0:
			err = nil
		case errors.Is(err, syscall.ENOTBLK):
			// The magic error for "fall back to buffered IO": what was
			// submitted completes, the rest is the caller's.
			err = nil
		}
	}
	if err != nil {
		dio.SetError(blk.ErrnoOf(err))
	}
	if dio.ref.Add(-1) != 0 {
		<-dio.done
	}
	return dio.complete(doneBefore)
}

// complete is iomap_dio_complete.
func (dio *Dio) complete(doneBefore int) (int, error) {
	if e := dio.err.Load(); e != 0 {
		return 0, syscall.Errno(-e)
	}
	dio.iocb.Pos += dio.size
	return int(dio.size) + doneBefore, nil
}
