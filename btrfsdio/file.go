package btrfsdio

import (
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/iomap"
)

// maxBufferedExtent caps one writeback extent at what one bio carries.
const maxBufferedExtent = blk.BioMaxVecs * blk.PageSize

// lockAndFlushOrderedRange is btrfs_lock_and_flush_ordered_range: lock
// [start, end] once no ordered extent overlaps it.
func (inode *Inode) lockAndFlushOrderedRange(start, end uint64) {
	for {
		inode.IOTree.LockExtent(start, end)
		oe := inode.LookupOrderedRange(start, end-start+1)
		if oe == nil {
			return
		}
		inode.IOTree.UnlockExtent(start, end)
		oe.StartOrderedExtent()
		oe.PutOrderedExtent()
	}
}

// bufferedWrite is btrfs_buffered_write followed by btrfs_fdatawrite_range
// and filemap_fdatawait_range: the data is copied into pages the filesystem
// owns, and they stay untouched while under writeback ("btrfs: force stable
// writes for all inodes"), so the checksums computed at submission match
// what every copy receives.
func (inode *Inode) bufferedWrite(pos uint64, from *iomap.IovIter) (int, error) {
	fs := inode.fs
	n := from.Count()
	if n == 0 {
		return 0, nil
	}
	atomic.AddInt64(&fs.stats.BufferedWrites, 1)
	cache, err := fs.allocPages(n)
	if err != nil {
		return 0, err
	}
	defer fs.freePages(cache)
	for _, p := range cache {
		if _, err := from.CopyFromIter(p.Bytes()); err != nil {
			from.Revert(n - from.Count())
			return 0, err
		}
	}
	end := pos + uint64(n) - 1
	inode.lockAndFlushOrderedRange(pos, end)
	ordered, err := inode.writebackRange(pos, uint64(n), cache)
	inode.IOTree.UnlockExtent(pos, end)
	for _, oe := range ordered {
		oe.StartOrderedExtent()
		if oe.Flags()&OrderedIOErr != 0 && err == nil {
			err = fmt.Errorf("btrfsdio: writeback at file offset %d: %w", oe.FileOffset, syscall.EIO)
		}
		oe.PutOrderedExtent()
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// writebackRange is run_delalloc_cow / run_delalloc_nocow plus
// submit_one_bio: one ordered extent and one bbio per extent.
func (inode *Inode) writebackRange(pos, length uint64, cache []*blk.Page) ([]*OrderedExtent, error) {
	fs := inode.fs
	var ordered []*OrderedExtent
	for done := uint64(0); done < length; {
		cur := pos + done
		l := min(length-done, maxBufferedExtent)
		fe, hole := inode.extents.lookup(cur, l)
		var disk uint64
		typ := OrderedRegular
		if inode.NoDataCow && !hole {
			l = min(l, fe.len-(cur-fe.start))
			disk = fe.diskBytenr + (cur - fe.start)
			typ = OrderedNocow
		} else {
			d, got, err := fs.reserveData(l, fs.allocHint.Load())
			if err != nil {
				return ordered, fmt.Errorf("btrfsdio: writeback: btrfs_reserve_extent: %w", err)
			}
			fs.allocHint.Store(d + got)
			disk, l = d, got
		}
		oe, err := inode.AllocOrderedExtent(cur, l, disk, typ)
		if err != nil {
			if typ == OrderedRegular {
				fs.space.release(disk, l)
			}
			return ordered, err
		}
		ordered = append(ordered, oe)
		first := done / blk.PageSize
		size := l
		bbio := fs.BioAlloc(int(l/blk.PageSize), blk.Opf(blk.OpWrite), inode, cur,
			func(b *Bio) {
				// bi_iter is consumed below us, so use the size we sent.
				b.Ordered.FinishOrderedExtent(b.FileOffset, size, b.Bio.Status == blk.StsOK)
				b.Bio.Put()
			}, nil)
		bbio.Bio.Iter.Sector = disk >> blk.SectorShift
		for i := uint64(0); i < l/blk.PageSize; i++ {
			bbio.Bio.AddPage(cache[first+i], blk.PageSize, 0)
		}
		oe.refs.Add(1)
		bbio.Ordered = oe
		fs.SubmitBbio(bbio, 0)
		done += l
	}
	return ordered, nil
}

// bufferedRead is the filemap_read fallback: wait out ordered extents, lock
// the range, read it through private pages with checksum verification, and
// copy it to the user.
func (inode *Inode) bufferedRead(pos uint64, to *iomap.IovIter) (int, error) {
	n := to.Count()
	if n == 0 {
		return 0, nil
	}
	end := pos + uint64(n) - 1
	inode.lockAndFlushOrderedRange(pos, end)
	buf := blk.AlignedBuffer(n)
	err := inode.readRange(pos, buf)
	inode.IOTree.UnlockExtent(pos, end)
	if err != nil {
		return 0, err
	}
	return to.CopyToIter(buf)
}

// readRange reads file bytes [pos, pos+len(buf)) into buf, extent by
// extent; holes read as zeroes.
func (inode *Inode) readRange(pos uint64, buf []byte) error {
	fs := inode.fs
	for done := 0; done < len(buf); {
		cur := pos + uint64(done)
		want := min(uint64(len(buf)-done), maxBufferedExtent)
		fe, hole := inode.extents.lookup(cur, want)
		l := min(want, fe.len-(cur-fe.start))
		chunk := buf[done : done+int(l)]
		if hole {
			clear(chunk)
			done += int(l)
			continue
		}
		finished := make(chan struct{})
		bbio := fs.BioAlloc(1, blk.Opf(blk.OpRead), inode, cur, func(*Bio) { close(finished) }, nil)
		bbio.Bio.Iter.Sector = (fe.diskBytenr + (cur - fe.start)) >> blk.SectorShift
		bbio.Bio.AddPage(blk.NewPage(chunk), uint32(l), 0)
		fs.SubmitBbio(bbio, 0)
		<-finished
		err := bbio.Bio.Status.Err()
		bbio.Bio.Put()
		if err != nil {
			return fmt.Errorf("btrfsdio: read at file offset %d: %w", cur, err)
		}
		done += int(l)
	}
	return nil
}

func (fs *FsInfo) allocPages(n int) ([]*blk.Page, error) {
	pages := make([]*blk.Page, 0, (n+blk.PageSize-1)/blk.PageSize)
	for len(pages)*blk.PageSize < n {
		p := fs.Pages.AllocPage()
		if p == nil {
			fs.freePages(pages)
			return nil, fmt.Errorf("btrfsdio: page cache: %w", syscall.ENOMEM)
		}
		pages = append(pages, p)
	}
	return pages, nil
}

func (fs *FsInfo) freePages(pages []*blk.Page) {
	for _, p := range pages {
		if err := fs.Pages.FreePage(p); err != nil {
			fs.warnf("%v", err)
		}
	}
}

// PunchHole is btrfs_punch_hole: the range reads as zeroes afterwards and
// its disk space is freed. It serves DISCARD and WRITE_ZEROES, and fails
// with EIO after an aborted transaction (FsError).
func (inode *Inode) PunchHole(pos, length uint64) error {
	if length == 0 {
		return nil
	}
	if pos%SectorSize != 0 || length%SectorSize != 0 {
		return ErrUnaligned
	}
	if pos+length > inode.size || pos+length < pos {
		return fmt.Errorf("%w: punch [%d, %d)", ErrOutOfRange, pos, pos+length)
	}
	if err := inode.fs.FsError(); err != nil {
		return err
	}
	inode.ilock.Lock()
	defer inode.ilock.Unlock()
	end := pos + length - 1
	inode.lockAndFlushOrderedRange(pos, end)
	inode.fs.trans.mu.RLock()
	inode.fs.ilog.record(pos, length, holeAddr, nil)
	for _, s := range inode.extents.replace(pos, length, holeAddr) {
		inode.fs.freeData(s.start, s.len)
	}
	inode.fs.trans.mu.RUnlock()
	inode.IOTree.UnlockExtent(pos, end)
	return inode.fs.commitUnlogged()
}

// Flush is btrfs_sync_file: every write completed before it, and every
// hole punched, is durable when it returns, data and the metadata that maps
// it (a transaction commit, which flushes every device first).
func (fs *FsInfo) Flush() error { return fs.CommitTransaction() }
