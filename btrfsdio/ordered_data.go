package btrfsdio

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
)

// Ordered extent flags (enum in ordered-data.h).
const (
	OrderedRegular  uint32 = 1 << iota // BTRFS_ORDERED_REGULAR
	OrderedNocow                       // BTRFS_ORDERED_NOCOW
	OrderedPrealloc                    // BTRFS_ORDERED_PREALLOC
	OrderedDirect                      // BTRFS_ORDERED_DIRECT
	OrderedIODone                      // BTRFS_ORDERED_IO_DONE
	OrderedComplete                    // BTRFS_ORDERED_COMPLETE
	OrderedIOErr                       // BTRFS_ORDERED_IOERR
)

// OrderedExtent is struct btrfs_ordered_extent: a file range whose data is in
// flight to a reserved disk extent. When every byte has been accounted
// (bytes_left reaches zero) the file extent item is inserted, or, on error,
// the reserved extent is dropped.
type OrderedExtent struct {
	FileOffset   uint64
	NumBytes     uint64
	DiskBytenr   uint64
	DiskNumBytes uint64

	inode *Inode
	// mu is ordered->lock (the kernel uses the tree lock here), a leaf:
	// taken under transaction.mu at completion, nothing taken under it.
	mu sync.Mutex
	// bytesLeft and flags are guarded by inode.orderedMu, as the kernel
	// guards them with ordered_tree_lock.
	bytesLeft uint64
	flags     uint32
	// sums are the data checksums computed at submission, inserted into
	// the csum tree at completion (ordered->list of btrfs_ordered_sum).
	sums []orderedSum
	refs atomic.Int32
	done chan struct{}
}

type orderedSum struct {
	logical uint64
	sums    []uint32
}

// Flags is test_bit on ordered->flags: the ordered extent's flags.
func (oe *OrderedExtent) Flags() uint32 {
	oe.inode.orderedMu.Lock()
	defer oe.inode.orderedMu.Unlock()
	return oe.flags
}

// AllocOrderedExtent is btrfs_alloc_ordered_extent: create and insert an
// ordered extent for [fileOffset, fileOffset+numBytes) at diskBytenr. It
// carries one reference for the tree and one for the caller.
func (inode *Inode) AllocOrderedExtent(fileOffset, numBytes, diskBytenr uint64, flags uint32) (*OrderedExtent, error) {
	if err := inode.fs.Faults.take(&inode.fs.Faults.OrderedAlloc); err != nil {
		return nil, fmt.Errorf("btrfs_alloc_ordered_extent: %w", err)
	}
	oe := &OrderedExtent{
		FileOffset: fileOffset, NumBytes: numBytes,
		DiskBytenr: diskBytenr, DiskNumBytes: numBytes,
		inode: inode, bytesLeft: numBytes, flags: flags,
		done: make(chan struct{}),
	}
	oe.refs.Store(2)
	inode.orderedMu.Lock()
	inode.insertOrderedLocked(oe)
	inode.orderedMu.Unlock()
	atomic.AddInt64(&inode.fs.stats.OrderedCreated, 1)
	return oe, nil
}

func (inode *Inode) insertOrderedLocked(oe *OrderedExtent) {
	i := sort.Search(len(inode.ordered), func(i int) bool { return inode.ordered[i].FileOffset >= oe.FileOffset })
	inode.ordered = append(inode.ordered, nil)
	copy(inode.ordered[i+1:], inode.ordered[i:])
	inode.ordered[i] = oe
}

// removeOrderedLocked is btrfs_remove_ordered_extent's rb_erase. It reports
// whether oe was in the tree: the kernel would rb_erase a node already
// erased and corrupt the tree, we only tell the caller.
func (inode *Inode) removeOrderedLocked(oe *OrderedExtent) bool {
	for i, o := range inode.ordered {
		if o == oe {
			inode.ordered = append(inode.ordered[:i], inode.ordered[i+1:]...)
			return true
		}
	}
	return false
}

// LookupOrderedRange is btrfs_lookup_ordered_range: the first ordered extent
// overlapping [start, start+length), with a reference, or nil.
func (inode *Inode) LookupOrderedRange(start, length uint64) *OrderedExtent {
	inode.orderedMu.Lock()
	defer inode.orderedMu.Unlock()
	for _, oe := range inode.ordered {
		if oe.FileOffset < start+length && start < oe.FileOffset+oe.NumBytes {
			oe.refs.Add(1)
			return oe
		}
	}
	return nil
}

// OrderedCount is how many ordered extents are still in the inode's
// ordered_tree (no kernel counterpart; for tests).
func (inode *Inode) OrderedCount() int {
	inode.orderedMu.Lock()
	defer inode.orderedMu.Unlock()
	return len(inode.ordered)
}

// PutOrderedExtent is btrfs_put_ordered_extent. A put below zero is
// refcount_t's "underflow; use-after-free" in the kernel (the extent was
// freed at zero); here it is counted and warned about.
func (oe *OrderedExtent) PutOrderedExtent() {
	if oe.refs.Add(-1) < 0 {
		oe.inode.fs.warnf("refcount_t: underflow; use-after-free: ordered extent %d+%d put too many times", oe.FileOffset, oe.NumBytes)
		atomic.AddInt64(&oe.inode.fs.stats.OrderedRefUnderflows, 1)
		atomic.AddInt64(&oe.inode.fs.stats.AccountingBugs, 1)
	}
}

// StartOrderedExtent is btrfs_start_ordered_extent: wait for it to finish.
// Direct IO ordered extents start their own IO, so there is nothing to kick.
func (oe *OrderedExtent) StartOrderedExtent() { <-oe.done }

// SplitOrderedExtent is btrfs_split_ordered_extent: carve the first length
// bytes off oe into a new ordered extent, which is returned with a reference
// for the caller. Only untouched extents can be split.
func (oe *OrderedExtent) SplitOrderedExtent(length uint64) (*OrderedExtent, error) {
	inode := oe.inode
	if err := inode.fs.Faults.take(&inode.fs.Faults.OrderedSplit); err != nil {
		return nil, fmt.Errorf("btrfs_split_ordered_extent: %w", err)
	}
	inode.orderedMu.Lock()
	defer inode.orderedMu.Unlock()
	// The kernel checks len >= num_bytes only; a zero-length split would make
	// an empty ordered extent that can never account a byte, so we refuse it
	// too (see the empty bounce bbio flaw).
	if length == 0 || length >= oe.NumBytes {
		return nil, fmt.Errorf("btrfs_split_ordered_extent: split %d of %d bytes: %w", length, oe.NumBytes, syscall.EINVAL)
	}
	if oe.bytesLeft != oe.DiskNumBytes {
		return nil, fmt.Errorf("btrfs_split_ordered_extent: partially completed extent: %w", syscall.EINVAL)
	}
	nw := &OrderedExtent{
		FileOffset: oe.FileOffset, NumBytes: length,
		DiskBytenr: oe.DiskBytenr, DiskNumBytes: length,
		inode: inode, bytesLeft: length, flags: oe.flags &^ (OrderedIODone | OrderedComplete | OrderedIOErr),
		done: make(chan struct{}),
	}
	nw.refs.Store(2)
	oe.FileOffset += length
	oe.DiskBytenr += length
	oe.NumBytes -= length
	oe.DiskNumBytes -= length
	oe.bytesLeft -= length
	inode.insertOrderedLocked(nw)
	atomic.AddInt64(&inode.fs.stats.OrderedCreated, 1)
	return nw, nil
}

// canFinishLocked is can_finish_ordered_extent: account length bytes of oe
// as done; true when this was the last of them.
//
// Finishing more than bytes_left is "bad ordered extent accounting": the
// kernel (6.12) warns, clamps bytes_left to 0 and goes on, so an extent
// finished twice returns true twice and btrfs_finish_one_ordered runs twice.
// With Options.Faithful we do the same, and finishOrderedIO detects what the
// second run does; otherwise an extent already IO_DONE is refused here.
func (oe *OrderedExtent) canFinishLocked(length uint64, uptodate bool) bool {
	fs := oe.inode.fs
	again := oe.flags&OrderedIODone != 0
	if length > oe.bytesLeft || (again && !fs.Opts.Faithful) {
		fs.warnf("bad ordered extent accounting, file_offset %d num_bytes %d bytes_left %d finishing %d",
			oe.FileOffset, oe.NumBytes, oe.bytesLeft, length)
		atomic.AddInt64(&fs.stats.AccountingBugs, 1)
		if again && !fs.Opts.Faithful {
			return false
		}
		oe.bytesLeft = 0
	} else {
		oe.bytesLeft -= length
	}
	if !uptodate {
		oe.flags |= OrderedIOErr
	}
	if oe.bytesLeft != 0 {
		return false
	}
	oe.flags |= OrderedIODone
	return true
}

// FinishOrderedExtent is btrfs_finish_ordered_extent: length bytes at
// fileOffset of oe have been written (or failed); the last byte runs
// btrfs_finish_ordered_io.
func (oe *OrderedExtent) FinishOrderedExtent(fileOffset, length uint64, uptodate bool) {
	inode := oe.inode
	inode.orderedMu.Lock()
	last := oe.canFinishLocked(length, uptodate)
	inode.orderedMu.Unlock()
	atomic.AddInt64(&inode.fs.stats.OrderedBytesFinished, int64(length))
	if last {
		inode.finishOrderedIO(oe)
	}
}

// MarkOrderedIOFinished is btrfs_mark_ordered_io_finished: account every
// ordered extent overlapping [fileOffset, fileOffset+numBytes).
func (inode *Inode) MarkOrderedIOFinished(fileOffset, numBytes uint64, uptodate bool) {
	end := fileOffset + numBytes
	var toFinish []*OrderedExtent
	inode.orderedMu.Lock()
	for _, oe := range inode.ordered {
		oeEnd := oe.FileOffset + oe.NumBytes
		if oeEnd <= fileOffset || oe.FileOffset >= end {
			continue
		}
		part := min(oeEnd, end) - max(oe.FileOffset, fileOffset)
		atomic.AddInt64(&inode.fs.stats.OrderedBytesFinished, int64(part))
		if oe.canFinishLocked(part, uptodate) {
			toFinish = append(toFinish, oe)
		}
	}
	inode.orderedMu.Unlock()
	for _, oe := range toFinish {
		inode.finishOrderedIO(oe)
	}
}

// finishOrderedIO is btrfs_finish_one_ordered: make the new data visible
// (file extent item + csums, old extent freed) or, on error, drop the
// reserved extent; then remove oe from the tree and wake its waiters.
func (inode *Inode) finishOrderedIO(oe *OrderedExtent) {
	fs := inode.fs
	inode.orderedMu.Lock()
	ioerr := oe.flags&OrderedIOErr != 0
	nocow := oe.flags&OrderedNocow != 0
	again := oe.flags&OrderedComplete != 0
	inode.orderedMu.Unlock()
	if again {
		inode.finishOrderedIOAgain(oe)
		return
	}
	// The metadata changes below belong to the running transaction.
	fs.trans.mu.RLock()
	switch {
	case ioerr && !nocow:
		// Never mapped: btrfs_free_reserved_extent, no pinning.
		fs.space.release(oe.DiskBytenr, oe.DiskNumBytes)
		atomic.AddInt64(&fs.stats.OrderedFailed, 1)
	case ioerr:
		atomic.AddInt64(&fs.stats.OrderedFailed, 1)
	case nocow:
		// In place: the mapping already points here; only csums change.
		inode.insertSums(oe)
	default:
		oe.mu.Lock()
		fs.ilog.record(oe.FileOffset, oe.NumBytes, oe.DiskBytenr, oe.sums)
		oe.mu.Unlock()
		for _, s := range inode.extents.replace(oe.FileOffset, oe.NumBytes, oe.DiskBytenr) {
			fs.freeData(s.start, s.len)
		}
		inode.insertSums(oe)
	}
	fs.trans.mu.RUnlock()
	inode.orderedMu.Lock()
	oe.flags |= OrderedComplete
	inode.removeOrderedLocked(oe)
	inode.orderedMu.Unlock()
	close(oe.done)
	atomic.AddInt64(&fs.stats.OrderedCompleted, 1)
	oe.PutOrderedExtent() // the tree's reference
}

// finishOrderedIOAgain is btrfs_finish_one_ordered run a second time on an
// ordered extent, which only Options.Faithful lets can_finish_ordered_extent
// allow (the seed's ENOMEM tail). It records what the kernel would suffer
// and does none of it to our own state: the kernel would redo the metadata
// step (btrfs_free_reserved_extent of an extent already freed, for a failed
// COW extent, or a second file extent item), btrfs_remove_ordered_extent
// would rb_erase a node no longer in the inode's ordered tree, and the tree's
// reference would be dropped again, taking the refcount to zero while its
// holder (btrfs_dio_data) still uses it: that holder's put underflows.
func (inode *Inode) finishOrderedIOAgain(oe *OrderedExtent) {
	fs := inode.fs
	fs.warnf("ordered extent %d+%d finished twice (btrfs_finish_one_ordered runs again)", oe.FileOffset, oe.NumBytes)
	atomic.AddInt64(&fs.stats.DoubleFinishes, 1)
	inode.orderedMu.Lock()
	removed := inode.removeOrderedLocked(oe)
	inode.orderedMu.Unlock()
	if !removed {
		fs.warnf("btrfs_remove_ordered_extent: ordered extent %d+%d is not in the ordered tree (rb_erase of an erased node)", oe.FileOffset, oe.NumBytes)
		atomic.AddInt64(&fs.stats.DoubleRemovals, 1)
	}
	oe.PutOrderedExtent() // the tree's reference, a second time
}

func (inode *Inode) insertSums(oe *OrderedExtent) {
	if inode.NoDataSum {
		// A nodatasum write must not leave stale csums behind for the
		// sectors it overwrote in place.
		inode.fs.csums.delete(oe.DiskBytenr, oe.DiskNumBytes)
		return
	}
	oe.mu.Lock()
	sums := oe.sums
	oe.mu.Unlock()
	for _, s := range sums {
		inode.fs.csums.insert(s.logical, s.sums)
	}
}

func (inode *Inode) warnf(format string, args ...any) { inode.fs.warnf(format, args...) }
