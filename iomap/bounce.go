package iomap

import (
	"errors"
	"fmt"
	"math/bits"
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
)

// The generic bounce buffering of "block: add helpers to bounce buffer an
// iov_iter into bios" (Christoph Hellwig, v3 06/15, block tree 8dd5e7c75d7b,
// with "block: pass a maxlen argument to bio_iov_iter_bounce"). The kernel
// has these in block/bio.c; they live here because our iov_iter (IovIter)
// is in this package and blk must not import it, the same reason
// BioIovIterGetPages is here.

// bounceChunk is SZ_1M: the most one bounce folio holds.
const bounceChunk = 1 << 20

// roundDownPowOfTwo is rounddown_pow_of_two.
func roundDownPowOfTwo(n int) int {
	if n <= 0 {
		return 0
	}
	return 1 << (bits.Len(uint(n)) - 1)
}

// FolioAllocGreedy is folio_alloc_greedy: try a folio of *size bytes
// without retrying (__GFP_NORETRY), halving the size after each failure,
// and at PAGE_SIZE (or a smaller remainder) make the one allocation that
// may wait. The size it got is written back to *size; nil means even that
// failed. Each try is one PageAllocator call, so an injected failure
// (PageAllocator.FailAt) of a large try only makes the folio smaller.
func FolioAllocGreedy(pages *blk.PageAllocator, size *int) *blk.Page {
	for *size > blk.PageSize {
		if folio := pages.AllocFolio(blk.FolioOrder(uint32(*size))); folio != nil {
			return folio
		}
		*size = roundDownPowOfTwo(*size - 1)
	}
	return pages.AllocFolio(blk.FolioOrder(uint32(*size)))
}

// bioFreeFolios is bio_free_folios: give every bounce folio of bio back.
// There is no zero folio here to skip.
func bioFreeFolios(bio *blk.Bio) error {
	return blk.BioFreePages(bio)
}

// bioIovIterBounceWrite is bio_iov_iter_bounce_write: copy up to maxlen
// bytes of the caller's buffer into folios of up to 1 MiB, one bvec each,
// until the iterator is used up or the bvecs are. An allocation failure
// ends the bio short; -ENOMEM only when it got nothing. A short copy (a
// remote page that went away) frees every folio, puts the iterator back
// where it was (the later fix "block: revert the iov_iter after a short
// copy in bio_iov_iter_bounce_write", b68d4979c88e; v3 left it advanced)
// and fails with -EFAULT.
func bioIovIterBounceWrite(bio *blk.Bio, iter *IovIter, maxlen int, pages *blk.PageAllocator) error {
	total := min(maxlen, iter.Count())
	if bio.Cloned() || bio.Size() != 0 || bio.Vcnt() >= bio.MaxVecs() {
		// WARN_ON_ONCE in the kernel: a caller bug.
		return fmt.Errorf("iomap: bio_iov_iter_bounce on a cloned, non-empty or full bio: %w", syscall.EINVAL)
	}
	for {
		thisLen := min(total, bounceChunk)
		if thisLen > 2*blk.PageSize {
			thisLen = roundDownPowOfTwo(thisLen)
		}
		if uint64(bio.Size()) > blk.BioMaxSize-uint64(thisLen) {
			break
		}
		folio := FolioAllocGreedy(pages, &thisLen)
		if folio == nil {
			break
		}
		// bio_add_folio_nofail: a new folio never merges, and the loop
		// stops before the bvecs run out.
		bio.AddPage(folio, uint32(thisLen), 0)
		n, err := iter.CopyFromIter(folio.Bytes()[:thisLen])
		if err != nil || n != thisLen {
			iter.Revert(int(bio.Size()) - thisLen + n)
			short := fmt.Errorf("iomap: bio_iov_iter_bounce: copied %d of %d bytes: %w", n, thisLen, syscall.EFAULT)
			return errors.Join(short, err, bioFreeFolios(bio))
		}
		total -= thisLen
		if total == 0 || bio.Vcnt() >= bio.MaxVecs() {
			break
		}
	}
	if bio.Size() == 0 {
		return fmt.Errorf("iomap: bio_iov_iter_bounce: no bounce folio: %w", syscall.ENOMEM)
	}
	return nil
}

// iovIterExtractBvecs is iov_iter_extract_bvecs: describe up to maxSize
// bytes of the caller's buffer as bvecs appended to *bv (pages of one folio
// merge into one bvec), at most maxVecs in all, and advance the iterator.
// It returns the bytes extracted. Nothing is pinned: Go memory stays while
// referenced, and a ublk request's pages while the request is in flight.
func iovIterExtractBvecs(iter *IovIter, bv *[]blk.BioVec, maxSize, maxVecs int) int {
	done := 0
	for iter.count > 0 && done < maxSize {
		page, inPage := iter.folio(iter.off)
		n := min(blk.PageSize-inPage%blk.PageSize, iter.count, maxSize-done)
		if k := len(*bv); k > 0 && (*bv)[k-1].Page == page && int((*bv)[k-1].Offset+(*bv)[k-1].Len) == inPage {
			(*bv)[k-1].Len += uint32(n)
		} else if k < maxVecs {
			*bv = append(*bv, blk.BioVec{Page: page, Len: uint32(n), Offset: uint32(inPage)})
		} else {
			break
		}
		iter.Advance(n)
		done += n
	}
	return done
}

// bioIovIterBounceRead is bio_iov_iter_bounce_read: one bounce folio of up
// to min(count, maxlen, 1 MiB) bytes (greedy, so maybe less) carries the
// read; the caller's pages it will be copied to at completion are recorded
// in bio.BounceVecs (bi_io_vec[1..] in C). When no page can be described
// the folio is given back (the later fix "block: fix folio leak in
// bio_iov_iter_bounce_read()", 5991bfa3f88e; v3 leaked it).
func bioIovIterBounceRead(bio *blk.Bio, iter *IovIter, maxlen int, pages *blk.PageAllocator) error {
	length := min(iter.Count(), maxlen, bounceChunk)
	folio := FolioAllocGreedy(pages, &length)
	if folio == nil {
		return fmt.Errorf("iomap: bio_iov_iter_bounce: no bounce folio: %w", syscall.ENOMEM)
	}
	maxVecs := max(bio.MaxVecs()-1, 1)
	user := make([]blk.BioVec, 0, maxVecs)
	n := iovIterExtractBvecs(iter, &user, length, maxVecs)
	if n == 0 {
		if err := pages.FreePage(folio); err != nil {
			return err
		}
		return fmt.Errorf("iomap: bio_iov_iter_bounce: nothing to read into: %w", syscall.EFAULT)
	}
	// bvec_set_folio(&bi_io_vec[0], folio, bi_size, 0): the block layer
	// sees only the bounce folio.
	bio.IoVec = append(bio.IoVec[:0], blk.BioVec{Page: folio, Len: uint32(n)})
	bio.Iter.Size = uint32(n)
	bio.BounceVecs = user
	return nil
}

// BioIovIterBounce is bio_iov_iter_bounce (with the follow-up's maxlen):
// back bio with bounce folios from pages instead of the caller's pages,
// copying the data in for a write. It must be paired with
// BioIovIterUnbounce at completion.
func BioIovIterBounce(bio *blk.Bio, iter *IovIter, maxlen int, pages *blk.PageAllocator) error {
	if pages == nil {
		return fmt.Errorf("iomap: bio_iov_iter_bounce without a page allocator: %w", syscall.EINVAL)
	}
	if bio.Opf.IsWrite() {
		return bioIovIterBounceWrite(bio, iter, maxlen, pages)
	}
	return bioIovIterBounceRead(bio, iter, maxlen, pages)
}

// bioIovIterUnbounceRead is bio_iov_iter_unbounce_read: unless the IO
// failed, copy the bounce folio to the caller's pages; then give the folio
// back. bvec_unpin has nothing to do (nothing is pinned, see
// iovIterExtractBvecs) and mark_dirty neither: there is no page cache
// behind the caller's pages. The kernel's copy_to_iter into pinned pages
// cannot fail (WARN_ON_ONCE); a remote page can, which is returned.
func bioIovIterUnbounceRead(bio *blk.Bio, isError bool) error {
	folio := bio.IoVec[0].Page
	var err error
	if !isError {
		src := folio.Bytes()[:bio.IoVec[0].Len]
		for _, bv := range bio.BounceVecs {
			if err = bv.Page.WriteAt(src[:bv.Len], int(bv.Offset)); err != nil {
				err = fmt.Errorf("iomap: bio_iov_iter_unbounce: %w", err)
				break
			}
			src = src[bv.Len:]
		}
	}
	bio.BounceVecs = nil
	return errors.Join(err, blk.BioFreePages(bio))
}

// BioIovIterUnbounce is bio_iov_iter_unbounce: finish a bio set up by
// BioIovIterBounce. A write's folios are freed; a read's data is copied
// back (unless isError) and its folio freed. markDirty is accepted for the
// kernel's signature and has no effect (no page cache).
func BioIovIterUnbounce(bio *blk.Bio, isError, markDirty bool) error {
	if bio.Opf.IsWrite() {
		return bioFreeFolios(bio)
	}
	return bioIovIterUnbounceRead(bio, isError)
}

// BioIovBounceNrVecs is bio_iov_bounce_nr_vecs: the bvecs the next bounce
// bio needs, one per page of what is left (BIO_MAX_VECS at most), plus one
// for the bounce folio of a read.
func BioIovBounceNrVecs(iter *IovIter, opf blk.Opf) int {
	if opf.IsWrite() {
		return BioIovVecsToAlloc(iter, blk.BioMaxVecs)
	}
	return BioIovVecsToAlloc(iter, blk.BioMaxVecs-1) + 1
}
