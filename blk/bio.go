package blk

import (
	"fmt"
	"sync/atomic"
)

// Op is enum req_op, the operation in the low bits of bi_opf.
type Op uint32

// Values of enum req_op.
const (
	OpRead        Op = 0
	OpWrite       Op = 1
	OpFlush       Op = 2
	OpDiscard     Op = 3
	OpWriteZeroes Op = 9
)

// Opf is blk_opf_t: an Op plus REQ_* flags.
type Opf uint32

// REQ_* flags used on the paths this project ports (values from blk_types.h).
const (
	ReqOpMask   Opf = 0xff
	ReqSync     Opf = 1 << 11
	ReqFUA      Opf = 1 << 17
	ReqPreflush Opf = 1 << 18
	// ReqOverwrite marks a write that overwrites data in place (a NOCOW
	// extent), so the RAID layer protects it from a crash between its
	// copies (write-intent bitmap) or between data and parity. No kernel
	// counterpart: btrfs has no bitmap, and md cannot tell COW from
	// in-place. The bit is above every REQ_* flag of blk_types.h.
	ReqOverwrite Opf = 1 << 30
)

// Op is bio_op: the operation part of bi_opf.
func (o Opf) Op() Op { return Op(o & ReqOpMask) }

// IsWrite is op_is_write: odd ops carry data towards the device.
func (o Opf) IsWrite() bool { return o.Op()&1 == 1 }

func (o Op) String() string {
	switch o {
	case OpRead:
		return "READ"
	case OpWrite:
		return "WRITE"
	case OpFlush:
		return "FLUSH"
	case OpDiscard:
		return "DISCARD"
	case OpWriteZeroes:
		return "WRITE_ZEROES"
	}
	return fmt.Sprintf("OP(%d)", uint32(o))
}

// BioVec is struct bio_vec. Len may span several pages of a folio (a
// multi-page bvec); Offset is from the start of Page.
type BioVec struct {
	Page   *Page
	Len    uint32
	Offset uint32
}

// BvecIter is struct bvec_iter.
type BvecIter struct {
	Sector   uint64 // bi_sector: device address in 512-byte sectors
	Size     uint32 // bi_size: residual I/O count
	Idx      uint32 // bi_idx: current index into bi_io_vec
	BvecDone uint32 // bi_bvec_done: bytes completed in the current bvec
}

// Bio is struct bio, reduced to the fields the btrfs direct IO path uses.
type Bio struct {
	Opf    Opf
	Status Status   // bi_status, written by whoever completes the bio
	Iter   BvecIter // bi_iter
	// IoVec is bi_io_vec[0:bi_vcnt]; cap(IoVec) is bi_max_vecs.
	IoVec []BioVec
	EndIO func(*Bio) // bi_end_io
	// Private is bi_private.
	Private any
	// Container is the structure that embeds this bio (struct btrfs_bio):
	// what container_of reaches in C.
	Container any

	// BounceVecs are the caller's pages of a read bounced by
	// bio_iov_iter_bounce: bi_io_vec[1..bi_vcnt] in C, where bi_io_vec[0]
	// is the bounce folio and the block layer sees only that (bi_vcnt is
	// private to the submitter). A Go slice cannot hide entries behind
	// bi_vcnt, so they live here; nil for every other bio.
	BounceVecs []BioVec

	cloned bool // BIO_CLONED: IoVec is shared and must not change
	refs   atomic.Int32
	set    *BioSet
}

// BioSet is struct bio_set: where bios come from. It counts bios handed out
// and put back so tests can prove none leaks.
type BioSet struct {
	allocated atomic.Int64
	freed     atomic.Int64
}

// InUse is the number of bios allocated from bs and not yet freed (test
// accounting, no kernel counterpart).
func (bs *BioSet) InUse() int64 { return bs.allocated.Load() - bs.freed.Load() }

// BioAllocBioset is bio_alloc_bioset: a bio with room for nrVecs bvecs.
// nrVecs above BIO_MAX_VECS is a caller bug and is clamped, as the kernel
// refuses such an allocation.
func BioAllocBioset(bs *BioSet, nrVecs int, opf Opf) *Bio {
	if nrVecs > BioMaxVecs {
		nrVecs = BioMaxVecs
	}
	b := &Bio{Opf: opf, IoVec: make([]BioVec, 0, nrVecs), set: bs}
	b.refs.Store(1)
	if bs != nil {
		bs.allocated.Add(1)
	}
	return b
}

// Cloned is bio_flagged(bio, BIO_CLONED).
func (b *Bio) Cloned() bool { return b.cloned }

// MaxVecs is bio->bi_max_vecs.
func (b *Bio) MaxVecs() int { return cap(b.IoVec) }

// Get is bio_get: take another reference.
func (b *Bio) Get() { b.refs.Add(1) }

// Put is bio_put: drop a reference; the last one frees the bio.
func (b *Bio) Put() {
	switch n := b.refs.Add(-1); {
	case n == 0 && b.set != nil:
		b.set.freed.Add(1)
	case n < 0:
		// A double put is a use-after-free in C; here it would corrupt the
		// leak accounting, so refuse loudly in tests.
		panic("blk: bio_put on a freed bio")
	}
}

// Endio is bio_endio: complete the bio by calling bi_end_io.
func (b *Bio) Endio() {
	if b.EndIO != nil {
		b.EndIO(b)
	}
}

// Size is bio->bi_iter.bi_size.
func (b *Bio) Size() uint32 { return b.Iter.Size }

// Vcnt is bio->bi_vcnt.
func (b *Bio) Vcnt() int { return len(b.IoVec) }

// AddPage is bio_add_page: add len bytes of page at off, merging with the last
// bvec when the memory continues it. It returns len, or 0 when the bio is full
// (bi_vcnt == bi_max_vecs) or a clone.
func (b *Bio) AddPage(page *Page, length, off uint32) uint32 {
	if b.cloned || uint64(b.Iter.Size)+uint64(length) > BioMaxSize {
		return 0
	}
	if n := len(b.IoVec); n > 0 {
		last := &b.IoVec[n-1]
		if last.Page.contiguous(int(last.Offset+last.Len), page, int(off)) {
			last.Len += length
			b.Iter.Size += length
			return length
		}
	}
	if len(b.IoVec) >= cap(b.IoVec) {
		return 0
	}
	b.IoVec = append(b.IoVec, BioVec{Page: page, Len: length, Offset: off})
	b.Iter.Size += length
	return length
}

// BioFreePages is bio_free_pages: give every page of the bio back to the
// allocator it came from, or to its Mempool (mempool_free) when one handed
// it out.
func BioFreePages(b *Bio) error {
	var firstErr error
	for i := range b.IoVec {
		p := b.IoVec[i].Page
		if p.pool != nil {
			if err := p.pool.Free(p); err != nil && firstErr == nil {
				firstErr = err
			}
			continue
		}
		if p.owner == nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("blk: bio_free_pages on a page with no allocator")
			}
			continue
		}
		if err := p.owner.FreePage(p); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// Clone is bio_alloc_clone: a new bio sharing b's bvecs, with its own iter.
func (b *Bio) Clone(bs *BioSet) *Bio {
	c := BioAllocBioset(bs, 0, b.Opf)
	c.IoVec = b.IoVec
	c.Iter = b.Iter
	c.cloned = true
	return c
}

// Split is bio_split: a clone covering the first sectors of b; b is advanced
// past them. The caller must keep sectors within b's size.
func (b *Bio) Split(sectors uint32, bs *BioSet) (*Bio, error) {
	bytes := sectors << SectorShift
	if sectors == 0 || bytes >= b.Iter.Size {
		return nil, fmt.Errorf("blk: bio_split at %d sectors of a %d-byte bio", sectors, b.Iter.Size)
	}
	c := b.Clone(bs)
	c.Iter.Size = bytes
	b.Advance(bytes)
	return c, nil
}

// Advance is bio_advance: move the bio's own iterator forward by n bytes.
func (b *Bio) Advance(n uint32) { b.AdvanceIter(&b.Iter, n) }

// AdvanceIter is bio_advance_iter: advance iter (over b's bvecs) by n bytes,
// sector included.
func (b *Bio) AdvanceIter(iter *BvecIter, n uint32) {
	iter.Sector += uint64(n >> SectorShift)
	BvecIterAdvance(b.IoVec, iter, n)
}

// BvecIterAdvance is bvec_iter_advance. Advancing past the end is a caller bug
// (WARN_ONCE in the kernel): the iterator is emptied and false returned.
func BvecIterAdvance(bv []BioVec, iter *BvecIter, n uint32) bool {
	if n > iter.Size {
		iter.Size = 0
		return false
	}
	iter.Size -= n
	n += iter.BvecDone
	for n > 0 && int(iter.Idx) < len(bv) && n >= bv[iter.Idx].Len {
		n -= bv[iter.Idx].Len
		iter.Idx++
	}
	iter.BvecDone = n
	return true
}

// Segment is the single-page view of the bvec under an iterator: what
// bio_iter_iovec (bvec_iter_bvec) returns.
func (b *Bio) Segment(iter BvecIter) BioVec {
	bv := b.IoVec[iter.Idx]
	off := bv.Offset + iter.BvecDone
	l := min(bv.Len-iter.BvecDone, iter.Size, PageSize-off%PageSize)
	return BioVec{Page: bv.Page, Len: l, Offset: off}
}

// MultiPageSegment is mp_bvec_iter_bvec: the rest of the current bvec, across
// page boundaries, as bio_for_each_bvec walks it.
func (b *Bio) MultiPageSegment(iter BvecIter) BioVec {
	bv := b.IoVec[iter.Idx]
	l := min(bv.Len-iter.BvecDone, iter.Size)
	return BioVec{Page: bv.Page, Len: l, Offset: bv.Offset + iter.BvecDone}
}

// ForEachBvec is bio_for_each_bvec over a copy of iter: fn sees each
// multi-page segment in order and may stop the walk with an error.
func (b *Bio) ForEachBvec(iter BvecIter, fn func(bv BioVec) error) error {
	for iter.Size > 0 {
		bv := b.MultiPageSegment(iter)
		if err := fn(bv); err != nil {
			return err
		}
		BvecIterAdvance(b.IoVec, &iter, bv.Len)
	}
	return nil
}

// CopyDataIter is bio_copy_data_iter: copy from src at srcIter to dst at
// dstIter until either runs out, consuming both iterators as the kernel does
// (the caller sees them advanced). It fails only when a remote page cannot be
// reached; the kernel's memcpy cannot fail. The kernel copies one page at a
// time because each page must be kmapped; process memory needs no mapping,
// so we copy whole multi-page segments: one copy (or one pread/pwrite of
// remote memory) per stretch that is contiguous on both sides.
func CopyDataIter(dst *Bio, dstIter *BvecIter, src *Bio, srcIter *BvecIter) error {
	// scratch is only needed from remote to remote memory; it would escape
	// (remote memory is an interface), so it is made only then.
	var scratch []byte
	for srcIter.Size > 0 && dstIter.Size > 0 {
		sbv := src.MultiPageSegment(*srcIter)
		dbv := dst.MultiPageSegment(*dstIter)
		n := min(sbv.Len, dbv.Len)
		if sbv.Page.mem == nil && dbv.Page.mem == nil {
			// Remote to remote goes through the scratch page.
			n = min(n, PageSize)
			if scratch == nil {
				scratch = make([]byte, PageSize)
			}
		}
		if err := copySegment(dbv.Page, int(dbv.Offset), sbv.Page, int(sbv.Offset), int(n), scratch); err != nil {
			return err
		}
		src.AdvanceIter(srcIter, n)
		dst.AdvanceIter(dstIter, n)
	}
	return nil
}

// copySegment is the memcpy between two kmapped pages.
func copySegment(dst *Page, doff int, src *Page, soff int, n int, scratch []byte) error {
	switch {
	case src.mem != nil:
		return dst.WriteAt(src.mem[soff:soff+n], doff)
	case dst.mem != nil:
		return src.ReadAt(dst.mem[doff:doff+n], soff)
	default:
		if err := src.ReadAt(scratch[:n], soff); err != nil {
			return err
		}
		return dst.WriteAt(scratch[:n], doff)
	}
}
