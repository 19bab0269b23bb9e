package blk

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
)

func TestAddPageFillsToMaxVecsThenRefuses(t *testing.T) {
	var a PageAllocator
	b := BioAllocBioset(nil, BioMaxVecs, Opf(OpWrite))
	for i := 0; i < BioMaxVecs; i++ {
		if got := b.AddPage(a.AllocPage(), PageSize, 0); got != PageSize {
			t.Fatalf("page %d: bio_add_page returned %d", i, got)
		}
	}
	p := a.AllocPage()
	if got := b.AddPage(p, PageSize, 0); got != 0 {
		t.Fatalf("bio_add_page on a full bio returned %d, want 0", got)
	}
	if b.Size() != BioMaxVecs*PageSize || b.Vcnt() != BioMaxVecs {
		t.Fatalf("size %d vcnt %d", b.Size(), b.Vcnt())
	}
}

func TestAddPageMergesContiguousMemoryOfOnePage(t *testing.T) {
	folio := NewPage(AlignedBuffer(4 * PageSize))
	b := BioAllocBioset(nil, 1, Opf(OpRead))
	b.AddPage(folio, PageSize, 0)
	if got := b.AddPage(folio, 2*PageSize, PageSize); got != 2*PageSize {
		t.Fatalf("contiguous add returned %d", got)
	}
	if b.Vcnt() != 1 || b.IoVec[0].Len != 3*PageSize {
		t.Fatalf("not merged: vcnt %d len %d", b.Vcnt(), b.IoVec[0].Len)
	}
	if got := b.AddPage(folio, 512, 0); got != 0 {
		t.Fatalf("non-contiguous add into a full bio returned %d", got)
	}
}

func TestAdvanceAcrossMultiPageBvecs(t *testing.T) {
	b := BioAllocBioset(nil, 3, Opf(OpWrite))
	b.AddPage(NewPage(make([]byte, 3*PageSize)), 3*PageSize, 0)
	b.AddPage(NewPage(make([]byte, PageSize)), PageSize, 0)
	b.Iter.Sector = 100
	b.Advance(3*PageSize + 512)
	want := BvecIter{Sector: 100 + (3*PageSize+512)/512, Size: PageSize - 512, Idx: 1, BvecDone: 512}
	if b.Iter != want {
		t.Fatalf("iter %+v, want %+v", b.Iter, want)
	}
	seg := b.Segment(b.Iter)
	if seg.Len != PageSize-512 || seg.Offset != 512 {
		t.Fatalf("segment %+v", seg)
	}
}

func TestSegmentStopsAtPageBoundary(t *testing.T) {
	b := BioAllocBioset(nil, 1, Opf(OpWrite))
	b.AddPage(NewPage(make([]byte, 4*PageSize)), 3*PageSize, 512)
	if seg := b.Segment(b.Iter); seg.Len != PageSize-512 {
		t.Fatalf("single-page segment len %d", seg.Len)
	}
	if seg := b.MultiPageSegment(b.Iter); seg.Len != 3*PageSize {
		t.Fatalf("multi-page segment len %d", seg.Len)
	}
}

func fill(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7)
	}
	return p
}

func TestCopyDataIterConsumesBothIterators(t *testing.T) {
	srcMem := fill(5*PageSize, 3)
	src := BioAllocBioset(nil, 2, Opf(OpWrite))
	src.AddPage(NewPage(srcMem[:3*PageSize]), 3*PageSize, 0)
	src.AddPage(NewPage(srcMem[3*PageSize:]), 2*PageSize, 0)
	var a PageAllocator
	dst := BioAllocBioset(nil, 2, Opf(OpWrite))
	dst.AddPage(a.AllocPage(), PageSize, 0)
	dst.AddPage(a.AllocPage(), PageSize, 0)
	src.Advance(PageSize + 100)
	dstIter := BvecIter{Size: dst.Size()}
	if err := CopyDataIter(dst, &dstIter, src, &src.Iter); err != nil {
		t.Fatal(err)
	}
	if dstIter.Size != 0 || src.Iter.Size != 5*PageSize-(PageSize+100)-2*PageSize {
		t.Fatalf("iterators not consumed: dst %+v src %+v", dstIter, src.Iter)
	}
	got := append(append([]byte{}, dst.IoVec[0].Page.Bytes()...), dst.IoVec[1].Page.Bytes()...)
	if !bytes.Equal(got, srcMem[PageSize+100:3*PageSize+100]) {
		t.Fatal("copied bytes differ from the source window")
	}
}

type memRemote struct{ b []byte }

func (m *memRemote) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m.b[off:]), nil }
func (m *memRemote) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }

type brokenRemote struct{}

func (brokenRemote) ReadAt(p []byte, off int64) (int, error)  { return 0, syscall.ENODEV }
func (brokenRemote) WriteAt(p []byte, off int64) (int, error) { return 0, syscall.ENODEV }

func TestCopyDataIterRemotePages(t *testing.T) {
	r := &memRemote{b: fill(2*PageSize, 9)}
	src := BioAllocBioset(nil, 1, Opf(OpWrite))
	src.AddPage(NewRemotePage(r, 0, 2*PageSize), 2*PageSize, 0)
	out := &memRemote{b: make([]byte, 2*PageSize)}
	dst := BioAllocBioset(nil, 1, Opf(OpWrite))
	dst.AddPage(NewRemotePage(out, 0, 2*PageSize), 2*PageSize, 0)
	di := dst.Iter
	if err := CopyDataIter(dst, &di, src, &src.Iter); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.b, r.b) {
		t.Fatal("remote to remote copy differs")
	}
	bad := BioAllocBioset(nil, 1, Opf(OpWrite))
	bad.AddPage(NewRemotePage(brokenRemote{}, 0, PageSize), PageSize, 0)
	di = BvecIter{Size: PageSize}
	err := CopyDataIter(dst, &di, bad, &bad.Iter)
	if !errors.Is(err, syscall.ENODEV) {
		t.Fatalf("copy from an unreachable page: %v", err)
	}
}

func TestStatusErrnoTable(t *testing.T) {
	cases := []struct {
		s     Status
		errno int
	}{
		{StsOK, 0}, {StsIOErr, -int(syscall.EIO)}, {StsResource, -int(syscall.ENOMEM)},
		{StsNoSpc, -int(syscall.ENOSPC)}, {StsNotSupp, -int(syscall.EOPNOTSUPP)},
		{Status(200), -int(syscall.EIO)},
	}
	for _, c := range cases {
		if got := StatusToErrno(c.s); got != c.errno {
			t.Errorf("blk_status_to_errno(%d) = %d, want %d", c.s, got, c.errno)
		}
	}
	if ErrnoToStatus(-int(syscall.ENOMEM)) != StsResource || ErrnoToStatus(-int(syscall.E2BIG)) != StsIOErr || ErrnoToStatus(0) != StsOK {
		t.Fatal("errno_to_blk_status mismatch")
	}
	if !errors.Is(StsResource.Err(), syscall.ENOMEM) || ErrnoOf(StsNoSpc.Err()) != -int(syscall.ENOSPC) {
		t.Fatal("status errors do not unwrap to their errno")
	}
}

func TestAllocatorFailAtAndAccounting(t *testing.T) {
	var a PageAllocator
	a.FailAt(3)
	var pages []*Page
	for i := 1; i <= 4; i++ {
		p := a.AllocPage()
		if (p == nil) != (i == 3) {
			t.Fatalf("allocation %d: page %v", i, p)
		}
		if p != nil {
			pages = append(pages, p)
		}
	}
	if a.InUse() != 3 {
		t.Fatalf("in use %d", a.InUse())
	}
	b := BioAllocBioset(nil, 4, Opf(OpWrite))
	for _, p := range pages {
		b.AddPage(p, PageSize, 0)
	}
	if err := BioFreePages(b); err != nil || a.InUse() != 0 {
		t.Fatalf("free: %v, in use %d", err, a.InUse())
	}
	if err := a.FreePage(NewPage(make([]byte, PageSize))); err == nil {
		t.Fatal("freeing a foreign page succeeded")
	}
}

func TestBioSetCountsPuts(t *testing.T) {
	var bs BioSet
	b := BioAllocBioset(&bs, 1, Opf(OpRead))
	c := b.Clone(&bs)
	if bs.InUse() != 2 {
		t.Fatal("clone not counted")
	}
	b.Get()
	b.Put()
	b.Put()
	c.Put()
	if bs.InUse() != 0 {
		t.Fatalf("in use %d", bs.InUse())
	}
}

func TestSplit(t *testing.T) {
	b := BioAllocBioset(nil, 1, Opf(OpWrite))
	b.AddPage(NewPage(make([]byte, 4*PageSize)), 4*PageSize, 0)
	b.Iter.Sector = 8
	c, err := b.Split(8, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Iter.Sector != 8 || c.Size() != 4096 || b.Iter.Sector != 16 || b.Size() != 3*4096 {
		t.Fatalf("split: clone %+v rest %+v", c.Iter, b.Iter)
	}
	if c.AddPage(NewPage(make([]byte, 512)), 512, 0) != 0 {
		t.Fatal("bio_add_page on a clone succeeded")
	}
	if _, err := b.Split(b.Size()>>SectorShift, nil); err == nil {
		t.Fatal("split at the whole size succeeded")
	}
}

func TestAllocFolioIsOneContiguousBvec(t *testing.T) {
	var a PageAllocator
	f := a.AllocFolio(8)
	if f == nil || f.Size() != 1<<20 {
		t.Fatalf("folio %v", f)
	}
	b := BioAllocBioset(nil, BioMaxVecs, Opf(OpWrite))
	for off := uint32(0); off < 1<<20; off += PageSize {
		if b.AddPage(f, PageSize, off) != PageSize {
			t.Fatal("add failed")
		}
	}
	if b.Vcnt() != 1 || b.Size() != 1<<20 {
		t.Fatalf("vcnt %d size %d: pages of one folio did not merge", b.Vcnt(), b.Size())
	}
	p1, p2 := a.AllocPage(), a.AllocPage()
	if &p1.Bytes()[0] == &p2.Bytes()[0] {
		t.Fatal("same page twice")
	}
	if a.InUse() != 256+2 {
		t.Fatalf("in use %d", a.InUse())
	}
	if err := BioFreePages(b); err != nil {
		t.Fatal(err)
	}
	a.FreePage(p1)
	a.FreePage(p2)
	if a.InUse() != 0 {
		t.Fatalf("in use %d after free", a.InUse())
	}
	if g := a.AllocFolio(8); g != f {
		t.Fatal("freed folio not reused")
	}
	if a.AllocFolio(MaxFolioOrder+1) != nil {
		t.Fatal("order above the maximum accepted")
	}
}
