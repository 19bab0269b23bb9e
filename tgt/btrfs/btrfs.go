// Package btrfs is the ublk target "btrfsdio": it serves a ublk device with
// the btrfs direct IO port. Each block request becomes one
// btrfs_direct_read/btrfs_direct_write on the filesystem's single inode,
// with the request's pages as the user buffer.
package btrfs

import (
	"io"
	"sync"
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/ublk"
)

// Target is the ublk target "btrfsdio".
type Target struct {
	FS *btrfsdio.FsInfo
}

// Target is a ublk target that ublk closes when the device is deleted.
var (
	_ ublk.Target = (*Target)(nil)
	_ io.Closer   = (*Target)(nil)
)

// Params are the device parameters this target offers: 4 KiB logical
// blocks (the btrfs sector size, so direct IO never falls back), a volatile
// cache with FUA, and discard / write-zeroes as hole punching. The cache is
// volatile because a completed write is durable only after the next
// transaction commit: FLUSH commits (Flush), and a FUA write commits before
// it completes.
func (t *Target) Params() ublk.TargetParams {
	return ublk.TargetParams{
		Size:             uint64(t.FS.Inode().ISize()),
		LogicalBlockSize: btrfsdio.SectorSize,
		MaxIOBytes:       ublk.DefaultMaxIOBytes,
		VolatileCache:    true,
		FUA:              true,
		Discard:          true,
		WriteZeroes:      true,
	}
}

// Handle serves one request.
func (t *Target) Handle(r *ublk.Request) int32 {
	inode := t.FS.Inode()
	if r.Op != ublk.OpFlush && !r.InRange(uint64(inode.ISize())) {
		return -int32(syscall.EIO) // what bio_check_eod answers; Offset would wrap
	}
	switch r.Op {
	case ublk.OpRead, ublk.OpWrite:
		if r.Bytes() == 0 {
			return -int32(syscall.EINVAL)
		}
		if r.Op == ublk.OpRead && inode.DirectReadVerifiesInPlace() {
			return t.readVerified(r)
		}
		// The request's pages are only reachable by copying; in zero-copy
		// mode every copy of the data is read from them separately, as
		// the kernel's devices read a client's O_DIRECT pages. They are
		// one remote folio: each contiguous stretch is copied at once.
		it := iomap.NewRemoteIovIter(r.Data, 0, int(r.Bytes()), requestFolio(r))
		iocb := &iomap.Kiocb{Pos: r.Offset()}
		var n int
		var err error
		if r.Op == ublk.OpRead {
			n, err = inode.DirectRead(iocb, it)
		} else {
			n, err = inode.DirectWrite(iocb, it)
			if err == nil && r.Flags&ublk.ReqFUA != 0 {
				err = t.FS.Flush()
			}
		}
		if err != nil {
			return int32(blk.ErrnoOf(err))
		}
		return int32(n)
	case ublk.OpFlush:
		return int32(blk.ErrnoOf(t.FS.Flush()))
	case ublk.OpDiscard, ublk.OpWriteZeroes:
		return int32(blk.ErrnoOf(inode.PunchHole(uint64(r.Offset()), uint64(r.Bytes()))))
	}
	return -int32(syscall.EOPNOTSUPP)
}

// requestFolio is the request's size rounded up to whole pages.
func requestFolio(r *ublk.Request) int {
	return (int(r.Bytes()) + blk.PageSize - 1) &^ (blk.PageSize - 1)
}

// readVerified serves a read the filesystem would verify on the request's
// own pages (Inode.DirectReadVerifiesInPlace), which a ublk READ request
// cannot offer: they can only be written (the driver refuses pread on them,
// UBLK_F_USER_COPY checks the direction). It reads into process memory,
// where btrfs_check_read_bio can verify (and repair) it, then copies it to
// the request: one copy more than zero-copy, the price of checksums on
// memory that can only be written.
func (t *Target) readVerified(r *ublk.Request) int32 {
	bp := readBuffers.Get().(*[]byte)
	defer readBuffers.Put(bp)
	size := requestFolio(r)
	if cap(*bp) < size {
		*bp = blk.AlignedBuffer(size)
	}
	buf := (*bp)[:r.Bytes()]
	n, err := t.FS.Inode().DirectRead(&iomap.Kiocb{Pos: r.Offset()}, iomap.NewIovIter(buf, 0))
	if err != nil {
		return int32(blk.ErrnoOf(err))
	}
	if _, err := r.Data.WriteAt(buf[:n], 0); err != nil {
		return -int32(syscall.EIO)
	}
	return int32(n)
}

// readBuffers hold readVerified's data.
var readBuffers = sync.Pool{New: func() any { return new([]byte) }}

// Close commits the transaction and closes the volume (close_ctree), on
// `del` and on SIGTERM alike.
func (t *Target) Close() error { return t.FS.Close() }
