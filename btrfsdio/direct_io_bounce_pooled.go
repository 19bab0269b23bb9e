package btrfsdio

// The pooled bounce allocation (D26 in docs/upstream-map.md): the seed's
// bounce path with one mempool folio per bounce bbio instead of one
// alloc_page per page. The default in bounce mode unless Faithful or
// NoBouncePool.

import (
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/iomap"
)

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
