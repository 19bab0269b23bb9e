package blk

import (
	"fmt"
	"io"
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"
)

// RemoteMemory is memory this process reaches only by copying: the pages of
// a ublk request under UBLK_F_USER_COPY. ReadAt copies out of those pages,
// WriteAt copies into them. Every access reads the pages as they are at that
// moment, just as a device DMA from a user page would.
type RemoteMemory interface {
	io.ReaderAt
	io.WriterAt
}

// Page is struct page, or a folio of several contiguous pages: the memory one
// bvec points at. Either mem holds the bytes, or they live in remote at
// remoteOff (see RemoteMemory).
type Page struct {
	mem       []byte
	remote    RemoteMemory
	remoteOff int64
	size      int
	owner     *PageAllocator
	// pool is the Mempool that handed the page out, until it is freed.
	pool *Mempool
}

// NewPage wraps process memory as a page (or folio) a bio can point at:
// what pin_user_pages hands iomap for a user buffer.
func NewPage(mem []byte) *Page { return &Page{mem: mem, size: len(mem)} }

// NewPages is pin_user_pages over a whole buffer, reduced: mem as
// consecutive folios of folioSize bytes (the last may be shorter), made in
// one allocation.
func NewPages(mem []byte, folioSize int) []Page {
	n := (len(mem) + folioSize - 1) / folioSize
	pages := make([]Page, n)
	for i := range pages {
		end := min((i+1)*folioSize, len(mem))
		pages[i] = Page{mem: mem[i*folioSize : end : end], size: end - i*folioSize}
	}
	return pages
}

// NewRemotePages is NewPages over size bytes of remote memory at off (no
// kernel counterpart: the kernel maps every page it pins).
func NewRemotePages(remote RemoteMemory, off int64, size, folioSize int) []Page {
	n := (size + folioSize - 1) / folioSize
	pages := make([]Page, n)
	for i := range pages {
		start := i * folioSize
		pages[i] = Page{remote: remote, remoteOff: off + int64(start), size: min(folioSize, size-start)}
	}
	return pages
}

// NewRemotePage is a page of size bytes at off in remote memory (no kernel
// counterpart: the kernel maps every page it pins).
func NewRemotePage(remote RemoteMemory, off int64, size int) *Page {
	return &Page{remote: remote, remoteOff: off, size: size}
}

// Size is folio_size: the page's length in bytes (PageSize, or a folio's).
func (p *Page) Size() int { return p.size }

// Bytes is page_address: the page's memory, or nil when it is remote.
func (p *Page) Bytes() []byte { return p.mem }

// Remote is where a remote page's bytes live: the memory and the offset of
// the page's first byte in it; nil for process memory (no kernel
// counterpart, see RemoteMemory).
func (p *Page) Remote() (RemoteMemory, int64) { return p.remote, p.remoteOff }

// ReadAt copies len(dst) bytes at off out of the page (kmap + memcpy from).
func (p *Page) ReadAt(dst []byte, off int) error {
	if off < 0 || off+len(dst) > p.size {
		return fmt.Errorf("blk: page read [%d,%d) outside %d bytes", off, off+len(dst), p.size)
	}
	if p.mem != nil {
		copy(dst, p.mem[off:])
		return nil
	}
	n, err := p.remote.ReadAt(dst, p.remoteOff+int64(off))
	if n == len(dst) {
		return nil
	}
	return fmt.Errorf("blk: remote page read %d of %d bytes: %w", n, len(dst), err)
}

// WriteAt copies src into the page at off (kmap + memcpy to).
func (p *Page) WriteAt(src []byte, off int) error {
	if off < 0 || off+len(src) > p.size {
		return fmt.Errorf("blk: page write [%d,%d) outside %d bytes", off, off+len(src), p.size)
	}
	if p.mem != nil {
		copy(p.mem[off:], src)
		return nil
	}
	n, err := p.remote.WriteAt(src, p.remoteOff+int64(off))
	if n == len(src) {
		return nil
	}
	return fmt.Errorf("blk: remote page write %d of %d bytes: %w", n, len(src), err)
}

// contiguous reports whether (q, off) continues (p, end) in memory, which is
// what lets bio_add_page merge into the last bvec.
func (p *Page) contiguous(end int, q *Page, off int) bool {
	return p == q && end == off
}

// AlignedBuffer returns size bytes aligned to PageSize, fit for O_DIRECT
// (userspace's posix_memalign; no kernel counterpart).
func AlignedBuffer(size int) []byte {
	buf := make([]byte, size+PageSize)
	skew := int(uintptr(unsafe.Pointer(unsafe.SliceData(buf))) & (PageSize - 1))
	start := 0
	if skew != 0 {
		start = PageSize - skew
	}
	return buf[start : start+size : start+size]
}

// PageAllocator is the page allocator behind alloc_page/folio_alloc and
// __free_page/folio_put, with the accounting tests need to prove no page
// leaks and a fault-injection point. Freed memory is kept on free lists, one
// per order, and handed out again: no allocation on the hot path.
type PageAllocator struct {
	// allocated and freed count pages (a folio of order n counts 1<<n).
	allocated atomic.Int64
	freed     atomic.Int64
	// calls counts allocation calls, for FailAt.
	calls atomic.Int64
	// failAt is the call count at which one allocation fails (0 = never).
	failAt atomic.Int64
	// failed counts allocations refused by injection.
	failed atomic.Int64
	// failFrom is the call count from which every allocation fails
	// (FailFrom; 0 = never).
	failFrom atomic.Int64

	mu   sync.Mutex
	free [MaxFolioOrder + 1][]*Page
}

// MaxFolioOrder is the largest folio the allocator hands out: 1 MiB, what
// one bio of BIO_MAX_VECS pages carries.
const MaxFolioOrder = 8

// slabBytes is how much memory one refill of an order's free list carves up.
const slabBytes = 1 << 20

// AllocPage is alloc_page(GFP_NOFS): one zero-order page, or nil when the
// allocation fails (injected with FailAt).
func (a *PageAllocator) AllocPage() *Page { return a.AllocFolio(0) }

// AllocFolio is folio_alloc(GFP_NOFS, order): 1<<order contiguous pages as
// one page object, or nil when the allocation fails. Orders above
// MaxFolioOrder are refused.
func (a *PageAllocator) AllocFolio(order int) *Page {
	n := a.calls.Add(1)
	if order < 0 || order > MaxFolioOrder {
		return nil
	}
	if f := a.failAt.Load(); f != 0 && n == f && a.failAt.CompareAndSwap(f, 0) {
		a.failed.Add(1)
		return nil
	}
	if f := a.failFrom.Load(); f != 0 && n >= f {
		a.failed.Add(1)
		return nil
	}
	a.mu.Lock()
	if len(a.free[order]) == 0 {
		a.refillLocked(order)
	}
	l := a.free[order]
	p := l[len(l)-1]
	a.free[order] = l[:len(l)-1]
	a.mu.Unlock()
	a.allocated.Add(1 << order)
	return p
}

func (a *PageAllocator) refillLocked(order int) {
	size := PageSize << order
	count := max(slabBytes/size, 1)
	slab := AlignedBuffer(count * size)
	// Pushed in reverse so that successive allocations come out in address
	// order.
	for i := count - 1; i >= 0; i-- {
		mem := slab[i*size : (i+1)*size : (i+1)*size]
		a.free[order] = append(a.free[order], &Page{mem: mem, size: size, owner: a})
	}
}

// FreePage is __free_page / folio_put. Freeing a page this allocator did
// not hand out is a bug in the caller, reported as an error rather than a
// crash.
func (a *PageAllocator) FreePage(p *Page) error {
	if p == nil || p.owner != a {
		return fmt.Errorf("blk: freeing a page not from this allocator")
	}
	order := bits.TrailingZeros(uint(p.size >> PageShift))
	a.freed.Add(1 << order)
	a.mu.Lock()
	a.free[order] = append(a.free[order], p)
	a.mu.Unlock()
	return nil
}

// FailAt makes the n-th allocation call from now (1-based) fail once, as a
// page allocator under memory pressure would (the kernel's fail_page_alloc
// fault injection); 0 turns it off.
func (a *PageAllocator) FailAt(n int64) {
	if n == 0 {
		a.failAt.Store(0)
		return
	}
	a.failAt.Store(a.calls.Load() + n)
}

// FailFrom makes every allocation call from the n-th from now (1-based)
// fail, until FailFrom(0): memory that stays short, which a caller that
// retries smaller (folio_alloc_greedy) cannot get around. Like FailAt, the
// kernel's fail_page_alloc fault injection, here with a count of for ever.
func (a *PageAllocator) FailFrom(n int64) {
	if n == 0 {
		a.failFrom.Store(0)
		return
	}
	a.failFrom.Store(a.calls.Load() + n)
}

// Stats returns pages handed out, pages freed and allocations refused (test
// accounting, no kernel counterpart).
func (a *PageAllocator) Stats() (allocated, freed, failed int64) {
	return a.allocated.Load(), a.freed.Load(), a.failed.Load()
}

// InUse is the number of pages allocated and not yet freed (test accounting,
// no kernel counterpart).
func (a *PageAllocator) InUse() int64 { return a.allocated.Load() - a.freed.Load() }
