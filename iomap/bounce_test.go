package iomap

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

// TestFolioAllocGreedyHalvesOnFailure: a refused try halves the size (the
// NORETRY tries), and only the last, page-sized one can fail the call.
func TestFolioAllocGreedyHalvesOnFailure(t *testing.T) {
	var pages blk.PageAllocator
	size := 1 << 20
	pages.FailAt(1)
	f := FolioAllocGreedy(&pages, &size)
	if f == nil || size != 512<<10 || f.Size() != size {
		t.Fatalf("after one refusal: folio %v size %d, want 512 KiB", f != nil, size)
	}
	if err := pages.FreePage(f); err != nil {
		t.Fatal(err)
	}
	size = 1 << 20
	pages.FailFrom(1)
	f = FolioAllocGreedy(&pages, &size)
	pages.FailFrom(0)
	_, _, failed := pages.Stats()
	// 1 MiB, 512 KiB, ... 8 KiB, then the blocking 4 KiB: 9 tries.
	if f != nil || size != blk.PageSize || failed != 1+9 {
		t.Fatalf("under FailFrom: folio %v size %d failed %d, want nil, 4096, 10", f != nil, size, failed)
	}
	if pages.InUse() != 0 {
		t.Fatalf("%d pages in use", pages.InUse())
	}
}

// bounceOps is memFS's dio ops with IOMAP_DIO_BOUNCE's page allocator.
func bounceOps(f *memFS, pages *blk.PageAllocator) *DioOps {
	return &DioOps{SubmitIO: f.submit, Pages: pages}
}

// TestDioBounceRoundTrip: with IOMAP_DIO_BOUNCE no bio points at the
// caller's memory; writes land on disk as the buffer was at submission,
// reads come back through the bounce folio, every folio is freed.
func TestDioBounceRoundTrip(t *testing.T) {
	for _, size := range []int{blk.PageSize, 3 * blk.PageSize, 1 << 20, 5<<20 + 8192} {
		var pages blk.PageAllocator
		f := newMemFS(16 << 20)
		data := pattern(size, int64(size))
		buf := blk.AlignedBuffer(size)
		copy(buf, data)
		n, err := DioRW(&Kiocb{}, NewIovIter(buf, 0), true, f, f, bounceOps(f, &pages), DioBounce, nil, 0)
		if err != nil || n != size {
			t.Fatalf("%d: write %d %v", size, n, err)
		}
		for i, b := range f.bios {
			for _, bv := range b.IoVec {
				if bv.Page.Bytes() != nil && &bv.Page.Bytes()[0] == &buf[0] {
					t.Fatalf("%d: bio %d points at the caller's buffer", size, i)
				}
			}
		}
		if !bytes.Equal(f.disk[diskBase:diskBase+size], data) {
			t.Fatalf("%d: disk differs", size)
		}
		out := blk.AlignedBuffer(size)
		f.bios = nil
		n, err = DioRW(&Kiocb{}, NewIovIter(out, 0), false, f, f, bounceOps(f, &pages), DioBounce, nil, 0)
		if err != nil || n != size || !bytes.Equal(out, data) {
			t.Fatalf("%d: read %d %v equal %v", size, n, err, bytes.Equal(out, data))
		}
		for i, b := range f.bios {
			if b.Vcnt() != 1 || b.IoVec[0].Len > bounceChunk {
				t.Fatalf("%d: read bio %d has %d bvecs of %d bytes, want one bounce folio of at most 1 MiB", size, i, b.Vcnt(), b.IoVec[0].Len)
			}
		}
		if pages.InUse() != 0 {
			t.Fatalf("%d: %d bounce pages not freed", size, pages.InUse())
		}
	}
}

// TestDioBounceENOMEMAtEveryAllocation fails the allocations of a 2 MiB
// write and read, one at a time and then from each one on. A single
// refusal costs a smaller folio and nothing else; memory that stays short
// fails the request with ENOMEM. Either way every folio is freed, and a
// failed read copies nothing into the caller's buffer.
func TestDioBounceENOMEMAtEveryAllocation(t *testing.T) {
	const size = 2 << 20
	data := pattern(size, 9)
	for _, write := range []bool{true, false} {
		var pages blk.PageAllocator
		f := newMemFS(16 << 20)
		copy(f.disk[diskBase:], data)
		run := func() (int, []byte, error) {
			buf := blk.AlignedBuffer(size)
			if write {
				copy(buf, data)
			}
			n, err := DioRW(&Kiocb{}, NewIovIter(buf, 0), write, f, f, bounceOps(f, &pages), DioBounce, nil, 0)
			return n, buf, err
		}
		calls := func() int64 { a, _, fl := pages.Stats(); return a + fl }
		before := calls()
		if _, _, err := run(); err != nil {
			t.Fatal(err)
		}
		// A write bounces 2 MiB in two 1 MiB folios. A read's bio has one
		// bvec for the folio and 255 for the caller's 4 KiB pages, so it
		// takes three bios: 1020 KiB, 1020 KiB (in 1 MiB folios) and 8 KiB.
		want := int64(512)
		if !write {
			want = 514
		}
		if got := calls() - before; got != want {
			t.Fatalf("write=%v: clean run allocated %d pages, want %d", write, got, want)
		}
		for i := int64(1); i <= 12; i++ {
			pages.FailAt(i)
			n, out, err := run()
			pages.FailAt(0)
			if err != nil || n != size || !bytes.Equal(out, data) || !bytes.Equal(f.disk[diskBase:diskBase+size], data) {
				t.Fatalf("write=%v, allocation %d refused once: n=%d err=%v", write, i, n, err)
			}
			if pages.InUse() != 0 {
				t.Fatalf("write=%v, allocation %d refused once: %d pages in use", write, i, pages.InUse())
			}
			if i > 2 {
				continue // a clean run makes two allocation calls
			}
			pages.FailFrom(i)
			n, out, err = run()
			pages.FailFrom(0)
			if !errors.Is(err, syscall.ENOMEM) {
				t.Fatalf("write=%v, allocations from %d refused: n=%d err=%v, want ENOMEM", write, i, n, err)
			}
			if !write && i == 1 && !bytes.Equal(out, make([]byte, size)) {
				t.Fatalf("read failed at its first allocation but wrote the caller's buffer")
			}
			if pages.InUse() != 0 {
				t.Fatalf("write=%v, allocations from %d refused: %d pages in use", write, i, pages.InUse())
			}
		}
	}
}

// TestUnbounceReadErrorCopiesNothing: a failed read's bounce folio is not
// copied to the caller (bio_iov_iter_unbounce's is_error), and is freed.
func TestUnbounceReadErrorCopiesNothing(t *testing.T) {
	var pages blk.PageAllocator
	f := newMemFS(4 << 20)
	copy(f.disk[diskBase:], pattern(1<<20, 3))
	f.failBio = 1
	out := blk.AlignedBuffer(1 << 20)
	// One 2 MiB folio behind the buffer: one bio (with 4 KiB pages the
	// read takes two, and the one that succeeds copies its part back).
	_, err := DioRW(&Kiocb{}, NewIovIter(out, 2<<20), false, f, f, bounceOps(f, &pages), DioBounce, nil, 0)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("err %v, want EIO", err)
	}
	if !bytes.Equal(out, make([]byte, 1<<20)) {
		t.Fatal("a failed bounced read copied into the caller's buffer")
	}
	if pages.InUse() != 0 {
		t.Fatalf("%d pages in use", pages.InUse())
	}
}

// TestBounceWithoutAllocatorRefused: IOMAP_DIO_BOUNCE needs somewhere to
// take folios from.
func TestBounceWithoutAllocatorRefused(t *testing.T) {
	f := newMemFS(1 << 20)
	if _, err := DioRW(&Kiocb{}, NewIovIter(blk.AlignedBuffer(4096), 0), true, f, f, &DioOps{SubmitIO: f.submit}, DioBounce, nil, 0); err == nil {
		t.Fatal("bounce without a page allocator accepted")
	}
}

// failingMemory is remote memory whose bytes from failAt on cannot be read.
type failingMemory struct {
	data   []byte
	failAt int64
}

func (m *failingMemory) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > m.failAt {
		return 0, errors.New("request gone")
	}
	return copy(p, m.data[off:]), nil
}

func (m *failingMemory) WriteAt(p []byte, off int64) (int, error) { return copy(m.data[off:], p), nil }

// TestBounceWriteShortCopy: when the caller's memory cannot be read (a
// ublk request that went away), the bounce write fails with EFAULT, frees
// every folio, submits nothing, and leaves the iterator where it was
// (the later fix b68d4979c88e).
func TestBounceWriteShortCopy(t *testing.T) {
	var pages blk.PageAllocator
	f := newMemFS(4 << 20)
	mem := &failingMemory{data: make([]byte, 2<<20), failAt: 3 << 19}
	iter := NewRemoteIovIter(mem, 0, 2<<20, 0)
	_, err := DioRW(&Kiocb{}, iter, true, f, f, bounceOps(f, &pages), DioBounce, nil, 0)
	if !errors.Is(err, syscall.EFAULT) {
		t.Fatalf("err %v, want EFAULT", err)
	}
	if len(f.bios) != 0 || pages.InUse() != 0 || iter.Count() != 2<<20 || iter.off != 0 {
		t.Fatalf("%d bios submitted, %d pages in use, %d bytes left in the iterator at %d; want 0, 0, %d at 0", len(f.bios), pages.InUse(), iter.Count(), iter.off, 2<<20)
	}
}

// TestBounceReadNothingToDescribe: a read bounce that gets a folio but no
// page of the caller's gives the folio back (the later fix 5991bfa3f88e;
// v3 returned without freeing it).
func TestBounceReadNothingToDescribe(t *testing.T) {
	var pages blk.PageAllocator
	bio := blk.BioAllocBioset(nil, 2, blk.Opf(blk.OpRead))
	err := BioIovIterBounce(bio, NewIovIter(nil, 0), blk.BioMaxSize, &pages)
	if !errors.Is(err, syscall.EFAULT) || pages.InUse() != 0 {
		t.Fatalf("err %v, %d pages in use; want EFAULT, 0", err, pages.InUse())
	}
}
