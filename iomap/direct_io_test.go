package iomap

import (
	"bytes"
	"errors"
	"math/rand"
	"sync"
	"syscall"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

// memFS maps file offsets to a disk at diskBase+offset in extents of
// extentLen bytes, with optional holes, and serves bios from memory on
// other goroutines.
type memFS struct {
	mu        sync.Mutex
	disk      []byte
	size      int64
	extentLen uint64
	holes     map[int64]bool // extent index -> hole
	failBio   int            // fail the n-th submitted bio (1-based), 0 never
	bios      []*blk.Bio
	sizes     []uint32
	ends      int
	endErr    error // returned by IomapEnd
}

const diskBase = 1 << 20

func (f *memFS) ISize() int64 { return f.size }

func (f *memFS) IomapBegin(it *Iter, pos int64, length uint64, flags uint, m *Iomap) error {
	idx := uint64(pos) / f.extentLen
	start := idx * f.extentLen
	m.Offset = pos
	m.Length = min(length, start+f.extentLen-uint64(pos))
	m.LogicalBlockSize = blk.SectorSize
	if f.holes[int64(idx)] {
		m.Type, m.Addr = TypeHole, NullAddr
		return nil
	}
	m.Type, m.Addr = TypeMapped, diskBase+uint64(pos)
	return nil
}

func (f *memFS) IomapEnd(it *Iter, pos int64, length uint64, written int64, flags uint, m *Iomap) error {
	f.mu.Lock()
	f.ends++
	f.mu.Unlock()
	return f.endErr
}

func (f *memFS) submit(it *Iter, bio *blk.Bio, fileOffset int64) {
	f.mu.Lock()
	f.bios = append(f.bios, bio)
	f.sizes = append(f.sizes, bio.Size())
	n := len(f.bios)
	f.mu.Unlock()
	if want := bio.Iter.Sector<<blk.SectorShift - diskBase; want != uint64(fileOffset) {
		panic("bio sector does not match file offset")
	}
	go func() {
		if n == f.failBio {
			bio.Status = blk.StsIOErr
		} else {
			off := bio.Iter.Sector << blk.SectorShift
			err := bio.ForEachBvec(bio.Iter, func(bv blk.BioVec) error {
				var err error
				if bio.Opf.IsWrite() {
					err = bv.Page.ReadAt(f.disk[off:off+uint64(bv.Len)], int(bv.Offset))
				} else {
					err = bv.Page.WriteAt(f.disk[off:off+uint64(bv.Len)], int(bv.Offset))
				}
				off += uint64(bv.Len)
				return err
			})
			if err != nil {
				bio.Status = blk.StsIOErr
			}
		}
		bio.Endio()
	}()
}

func newMemFS(size int64) *memFS {
	return &memFS{disk: make([]byte, diskBase+size), size: size, extentLen: 3 << 20, holes: map[int64]bool{}}
}

func pattern(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func TestDioRWRoundTripAndBioCuts(t *testing.T) {
	for _, folio := range []int{blk.PageSize, 2 << 20} {
		f := newMemFS(16 << 20)
		data := pattern(8<<20, 1)
		buf := blk.AlignedBuffer(len(data))
		copy(buf, data)
		iocb := &Kiocb{Pos: 1 << 20}
		n, err := DioRW(iocb, NewIovIter(buf, folio), true, f, f, &DioOps{SubmitIO: f.submit}, 0, nil, 0)
		if err != nil || n != len(data) || iocb.Pos != 9<<20 {
			t.Fatalf("folio %d: write n=%d err=%v pos=%d", folio, n, err, iocb.Pos)
		}
		if !bytes.Equal(f.disk[diskBase+1<<20:diskBase+9<<20], data) {
			t.Fatalf("folio %d: disk content differs", folio)
		}
		var biggest uint32
		for i, b := range f.bios {
			if b.Vcnt() > blk.BioMaxVecs {
				t.Fatalf("bio %d has %d bvecs", i, b.Vcnt())
			}
			biggest = max(biggest, f.sizes[i])
		}
		// Plain pages: bios of at most 1 MiB. Large folios: multi-page
		// bvecs let one bio cover a whole 3 MiB extent.
		if folio == blk.PageSize && biggest != 1<<20 {
			t.Fatalf("largest bio %d with 4 KiB pages", biggest)
		}
		if folio > blk.PageSize && biggest <= 1<<20 {
			t.Fatalf("largest bio %d with 2 MiB folios, want > 1 MiB", biggest)
		}
		out := blk.AlignedBuffer(len(data))
		n, err = DioRW(&Kiocb{Pos: 1 << 20}, NewIovIter(out, folio), false, f, f, &DioOps{SubmitIO: f.submit}, 0, nil, 0)
		if err != nil || n != len(data) || !bytes.Equal(out, data) {
			t.Fatalf("folio %d: read n=%d err=%v equal=%v", folio, n, err, bytes.Equal(out, data))
		}
	}
}

func TestDioRWErrorFromOneBioWinsAndAllRefsDrop(t *testing.T) {
	f := newMemFS(16 << 20)
	f.failBio = 3
	buf := blk.AlignedBuffer(6 << 20)
	_, err := DioRW(&Kiocb{}, NewIovIter(buf, 0), true, f, f, &DioOps{SubmitIO: f.submit}, 0, nil, 0)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("err %v, want EIO", err)
	}
}

func TestDioRWHoleReadsZero(t *testing.T) {
	f := newMemFS(12 << 20)
	f.holes[1] = true
	for i := range f.disk {
		f.disk[i] = 0xAA
	}
	buf := blk.AlignedBuffer(9 << 20)
	n, err := DioRW(&Kiocb{}, NewIovIter(buf, 0), false, f, f, &DioOps{SubmitIO: f.submit}, 0, nil, 0)
	if err != nil || n != len(buf) {
		t.Fatal(n, err)
	}
	if buf[3<<20] != 0 || buf[6<<20-1] != 0 || buf[0] != 0xAA || buf[6<<20] != 0xAA {
		t.Fatal("hole not zeroed or data missing")
	}
}

func TestDioRWNotBlkStopsShort(t *testing.T) {
	f := newMemFS(12 << 20)
	f.endErr = syscall.ENOTBLK
	buf := blk.AlignedBuffer(6 << 20)
	it := NewIovIter(buf, 0)
	n, err := DioRW(&Kiocb{}, it, true, f, f, &DioOps{SubmitIO: f.submit}, DioPartial, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	// iomap_end's -ENOTBLK with processed > 0 is ignored: the walk goes on.
	if n != len(buf) || it.Count() != 0 {
		t.Fatalf("n=%d left=%d", n, it.Count())
	}
}

func TestDioRWRejectsUnaligned(t *testing.T) {
	f := newMemFS(4 << 20)
	buf := blk.AlignedBuffer(8192)
	_, err := DioRW(&Kiocb{Pos: 100}, NewIovIter(buf, 0), true, f, f, &DioOps{SubmitIO: f.submit}, 0, nil, 0)
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("unaligned pos: %v", err)
	}
	_, err = DioRW(&Kiocb{}, NewIovIter(buf[:1000], 0), true, f, f, &DioOps{SubmitIO: f.submit}, 0, nil, 0)
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("unaligned length: %v", err)
	}
}

func TestDioRWReadPastEOFIsZero(t *testing.T) {
	f := newMemFS(4 << 20)
	n, err := DioRW(&Kiocb{Pos: 4 << 20}, NewIovIter(blk.AlignedBuffer(4096), 0), false, f, f, &DioOps{SubmitIO: f.submit}, 0, nil, 7)
	if err != nil || n != 7 {
		t.Fatalf("n=%d err=%v", n, err)
	}
}

func TestIovIterCopyAndRevert(t *testing.T) {
	src := pattern(10000, 3)
	it := NewIovIter(src, 0)
	dst := make([]byte, 4000)
	if n, _ := it.CopyFromIter(dst); n != 4000 || !bytes.Equal(dst, src[:4000]) {
		t.Fatal("copy_from_iter")
	}
	it.Revert(1000)
	if it.Count() != 7000 {
		t.Fatalf("count after revert %d", it.Count())
	}
	it.Truncate(10)
	if it.Count() != 10 {
		t.Fatal("truncate")
	}
	it.Reexpand(7000)
	if n, _ := it.CopyToIter(make([]byte, 7000)); n != 7000 || src[3000] != 0 {
		t.Fatal("copy_to_iter")
	}
}
