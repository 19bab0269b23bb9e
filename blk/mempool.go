package blk

import (
	"fmt"
	"sync"
	"time"
)

// MinMempoolBytes is the smallest folio mempool: one folio of MaxFolioOrder,
// so that any single allocation can eventually be satisfied.
const MinMempoolBytes = PageSize << MaxFolioOrder

// Mempool is mempool_t over folios of a PageAllocator: it bounds the bytes
// of folios handed out at once, and an allocation that would pass the bound
// waits until enough is given back, as mempool_alloc sleeps on the pool's
// wait queue until mempool_free wakes it. It never waits while the bound
// holds, so a caller that keeps at most the folios of its own in-flight bios
// cannot deadlock: their completion frees them without allocating.
//
// Unlike the kernel's mempool (which reserves min_nr elements and falls
// back to them when the allocator fails), a failure of the page allocator
// itself is returned to the caller: it stands for memory pressure and is
// what fault injection (PageAllocator.FailAt) uses to reach the caller's
// ENOMEM path.
type Mempool struct {
	pages *PageAllocator
	limit int64

	mu    sync.Mutex
	freed *sync.Cond // signalled when bytes go back to the pool
	inUse int64
	peak  int64
	waits int64
	// waitLimit bounds one wait for room (SetWaitLimit; 0: wait for
	// ever, as mempool_alloc does); timeouts counts the waits it ended.
	waitLimit time.Duration
	timeouts  int64
}

// NewMempool is mempool_create for folios: a pool of at most limit bytes
// drawn from pages. limit must be a whole number of pages and at least
// MinMempoolBytes.
func NewMempool(pages *PageAllocator, limit int64) (*Mempool, error) {
	if pages == nil {
		return nil, fmt.Errorf("blk: mempool without a page allocator")
	}
	if limit < MinMempoolBytes || limit%PageSize != 0 {
		return nil, fmt.Errorf("blk: mempool of %d bytes: want a multiple of %d, at least %d (one order-%d folio)",
			limit, PageSize, MinMempoolBytes, MaxFolioOrder)
	}
	mp := &Mempool{pages: pages, limit: limit}
	mp.freed = sync.NewCond(&mp.mu)
	return mp, nil
}

// FolioOrder is get_order: the smallest order whose folio holds size bytes
// (sizes above the largest folio get MaxFolioOrder+1, which allocation
// refuses).
func FolioOrder(size uint32) int {
	order := 0
	for uint64(PageSize)<<order < uint64(size) {
		order++
		if order > MaxFolioOrder {
			break
		}
	}
	return order
}

// Alloc is mempool_alloc(pool, GFP_NOFS) for a folio of 1<<order pages:
// wait until the pool has room, then take the folio from the page
// allocator. It returns nil when the allocator refuses (an order above
// MaxFolioOrder, or an injected failure); the pool's room is given back then.
// It also returns nil when a wait outlasts SetWaitLimit's limit.
func (mp *Mempool) Alloc(order int) *Page {
	if order < 0 || order > MaxFolioOrder {
		return nil
	}
	size := int64(PageSize) << order
	mp.mu.Lock()
	if mp.inUse+size > mp.limit {
		mp.waits++
		if !mp.waitLocked(size) {
			mp.timeouts++
			mp.mu.Unlock()
			return nil
		}
	}
	mp.inUse += size
	mp.peak = max(mp.peak, mp.inUse)
	mp.mu.Unlock()
	p := mp.pages.AllocFolio(order)
	if p == nil {
		mp.release(size)
		return nil
	}
	p.pool = mp
	return p
}

// waitLocked sleeps until size bytes fit under the bound, or until
// waitLimit has passed (then false).
func (mp *Mempool) waitLocked(size int64) bool {
	if mp.waitLimit <= 0 {
		for mp.inUse+size > mp.limit {
			mp.freed.Wait()
		}
		return true
	}
	deadline := time.Now().Add(mp.waitLimit)
	// A sync.Cond has no timed wait: the timer wakes every waiter once the
	// limit is up, and each looks at its own deadline.
	t := time.AfterFunc(mp.waitLimit, func() {
		mp.mu.Lock()
		mp.freed.Broadcast()
		mp.mu.Unlock()
	})
	defer t.Stop()
	for mp.inUse+size > mp.limit {
		if !time.Now().Before(deadline) {
			return false
		}
		mp.freed.Wait()
	}
	return true
}

// SetWaitLimit bounds how long Alloc waits for room; past it Alloc gives up
// and returns nil, and Stats counts a timeout. Tests set it so that a pool
// whose folios leak fails them instead of hanging them (no kernel
// counterpart: mempool_alloc waits for ever).
func (mp *Mempool) SetWaitLimit(d time.Duration) {
	mp.mu.Lock()
	mp.waitLimit = d
	mp.mu.Unlock()
}

// Free is mempool_free: give the folio back to the page allocator and wake
// the waiters.
func (mp *Mempool) Free(p *Page) error {
	if p == nil || p.pool != mp {
		return fmt.Errorf("blk: mempool_free of a page not from this pool")
	}
	p.pool = nil
	size := int64(p.size)
	err := mp.pages.FreePage(p)
	mp.release(size)
	return err
}

func (mp *Mempool) release(size int64) {
	mp.mu.Lock()
	mp.inUse -= size
	mp.mu.Unlock()
	mp.freed.Broadcast()
}

// Limit is the pool's bound in bytes (no kernel counterpart: mempool_t
// counts elements, and nothing outside it reads min_nr).
func (mp *Mempool) Limit() int64 { return mp.limit }

// MempoolStats is what a Mempool counts, for tests and the benchmark (no
// kernel counterpart: mempool_t keeps no statistics).
type MempoolStats struct {
	InUse int64 // bytes handed out now
	Peak  int64 // most bytes handed out at once
	Waits int64 // allocations that had to wait for room
	// WaitTimeouts counts waits that SetWaitLimit's limit ended.
	WaitTimeouts int64
}

// Stats returns the pool's counters (no kernel counterpart: mempool_t keeps
// no statistics; tests and the benchmark read them).
func (mp *Mempool) Stats() MempoolStats {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	return MempoolStats{InUse: mp.inUse, Peak: mp.peak, Waits: mp.waits, WaitTimeouts: mp.timeouts}
}
