// Package target serves a ublk device with the btrfs direct IO port: each
// block request becomes one btrfs_direct_read/btrfs_direct_write on the
// filesystem's single inode, with the request's pages as the user buffer.
package target

import (
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/ublk"
)

// Btrfs is the ublk target "btrfsdio".
type Btrfs struct {
	FS *btrfsdio.FsInfo
}

// Params are the device parameters this target offers: 4 KiB logical
// blocks (the btrfs sector size, so direct IO never falls back), a volatile
// cache with FUA, and discard / write-zeroes as hole punching. The cache is
// volatile because a completed write is durable only after the next
// transaction commit: FLUSH commits (Flush), and a FUA write commits before
// it completes.
func (t *Btrfs) Params() ublk.TargetParams {
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
func (t *Btrfs) Handle(r *ublk.Request) int32 {
	inode := t.FS.Inode()
	switch r.Op {
	case ublk.OpRead, ublk.OpWrite:
		if r.Bytes() == 0 {
			return -int32(syscall.EINVAL)
		}
		// The request's pages are only reachable by copying; in zero-copy
		// mode every copy of the data is read from them separately, as
		// the kernel's devices read a client's O_DIRECT pages.
		it := iomap.NewRemoteIovIter(r.Data, 0, int(r.Bytes()), blk.PageSize)
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

// Stats are the filesystem's counters, for `btrfsdio list -v` (no kernel
// counterpart).
func (t *Btrfs) Stats() btrfsdio.Stats { return t.FS.Stats() }

// Close commits the transaction and closes the volume (close_ctree), on
// `del` and on SIGTERM alike.
func (t *Btrfs) Close() error { return t.FS.Close() }
