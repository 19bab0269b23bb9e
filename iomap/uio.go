package iomap

import (
	"fmt"

	"github.com/btrfsdio/btrfsdio/blk"
)

// IovIter is struct iov_iter of type ITER_UBUF: one user buffer, either
// memory of this process or remote memory (a ublk request's pages, reached
// with pread/pwrite on the ublk char device).
//
// FolioSize says how the user memory is backed: pages inside one folio are
// physically contiguous, so bio_iov_iter_get_pages merges them into one
// multi-page bvec and a single bio of BIO_MAX_VECS bvecs can carry more than
// 1 MiB. PageSize (the default) models plain 4 KiB pages.
type IovIter struct {
	mem       []byte
	remote    blk.RemoteMemory
	base      int64 // offset of the buffer's first byte in remote
	off       int   // bytes consumed (iov_offset)
	count     int   // bytes left (iov_iter_count)
	folioSize int
	// folios holds one blk.Page per folio of the buffer, made on first use
	// in one allocation, so that adjacent pages of a folio are recognised
	// as contiguous by bio_add_page.
	folios []blk.Page
	total  int
}

// NewIovIter is import_ubuf over process memory.
func NewIovIter(buf []byte, folioSize int) *IovIter {
	return &IovIter{mem: buf, count: len(buf), total: len(buf), folioSize: normFolio(folioSize)}
}

// NewRemoteIovIter is import_ubuf over size bytes of remote memory at base.
func NewRemoteIovIter(m blk.RemoteMemory, base int64, size int, folioSize int) *IovIter {
	return &IovIter{remote: m, base: base, count: size, total: size, folioSize: normFolio(folioSize)}
}

func normFolio(n int) int {
	if n < blk.PageSize {
		return blk.PageSize
	}
	return n &^ (blk.PageSize - 1)
}

// Count is iov_iter_count.
func (it *IovIter) Count() int { return it.count }

// Advance is iov_iter_advance.
func (it *IovIter) Advance(n int) {
	n = min(n, it.count)
	it.off += n
	it.count -= n
}

// Revert is iov_iter_revert.
func (it *IovIter) Revert(n int) {
	n = min(n, it.off)
	it.off -= n
	it.count += n
}

// Truncate is iov_iter_truncate: limit what is left to n bytes.
func (it *IovIter) Truncate(n int) {
	if n < it.count {
		it.count = n
	}
}

// Reexpand is iov_iter_reexpand: undo a Truncate, count becomes n.
func (it *IovIter) Reexpand(n int) { it.count = n }

// Alignment is iov_iter_alignment: the low bits that are set in either the
// buffer's start or its length. For remote memory only the offset counts.
func (it *IovIter) Alignment() uint64 {
	return uint64(it.off) | uint64(it.count)
}

// Zero is iov_iter_zero: write n zero bytes into the buffer and advance.
func (it *IovIter) Zero(n int) (int, error) {
	n = min(n, it.count)
	if it.mem != nil {
		clear(it.mem[it.off : it.off+n])
	} else {
		zeros := make([]byte, min(n, 1<<20))
		for done := 0; done < n; {
			c := min(len(zeros), n-done)
			if _, err := it.remote.WriteAt(zeros[:c], it.base+int64(it.off+done)); err != nil {
				return done, fmt.Errorf("iomap: zeroing user buffer: %w", err)
			}
			done += c
		}
	}
	it.Advance(n)
	return n, nil
}

// folio returns the page object covering the folio that holds byte off of
// the buffer, and off's position inside it.
func (it *IovIter) folio(off int) (*blk.Page, int) {
	if it.folios == nil {
		if it.mem != nil {
			it.folios = blk.NewPages(it.mem[:it.total], it.folioSize)
		} else {
			it.folios = blk.NewRemotePages(it.remote, it.base, it.total, it.folioSize)
		}
	}
	idx := off / it.folioSize
	return &it.folios[idx], off - idx*it.folioSize
}

// BioIovIterGetPages is bio_iov_iter_get_pages: pin the user pages under the
// iterator and add them to bio until the bio is full or the iterator empty,
// advancing the iterator by what was added. Pages of one folio merge into
// one multi-page bvec.
func BioIovIterGetPages(bio *blk.Bio, it *IovIter) error {
	if it.count == 0 {
		return fmt.Errorf("iomap: bio_iov_iter_get_pages on an empty iterator")
	}
	for it.count > 0 {
		page, inPage := it.folio(it.off)
		n := min(blk.PageSize-inPage%blk.PageSize, it.count)
		if bio.AddPage(page, uint32(n), uint32(inPage)) != uint32(n) {
			break
		}
		it.Advance(n)
	}
	return nil
}

// BioIovVecsToAlloc is bio_iov_vecs_to_alloc: how many bvecs the next bio
// needs for what is left, capped at max.
func BioIovVecsToAlloc(it *IovIter, max int) int {
	pages := (it.off%blk.PageSize + it.count + blk.PageSize - 1) / blk.PageSize
	return min(pages, max)
}

// CopyFromIter is copy_from_iter: copy the next len(dst) bytes of the user
// buffer into dst and advance.
func (it *IovIter) CopyFromIter(dst []byte) (int, error) {
	n := min(len(dst), it.count)
	if it.mem != nil {
		copy(dst[:n], it.mem[it.off:])
	} else if _, err := it.remote.ReadAt(dst[:n], it.base+int64(it.off)); err != nil {
		return 0, fmt.Errorf("iomap: copy_from_iter: %w", err)
	}
	it.Advance(n)
	return n, nil
}

// CopyToIter is copy_to_iter: copy src into the user buffer and advance.
func (it *IovIter) CopyToIter(src []byte) (int, error) {
	n := min(len(src), it.count)
	if it.mem != nil {
		copy(it.mem[it.off:], src[:n])
	} else if _, err := it.remote.WriteAt(src[:n], it.base+int64(it.off)); err != nil {
		return 0, fmt.Errorf("iomap: copy_to_iter: %w", err)
	}
	it.Advance(n)
	return n, nil
}
