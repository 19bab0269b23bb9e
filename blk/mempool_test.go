package blk

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMempoolRejectsBadSizes(t *testing.T) {
	a := &PageAllocator{}
	for _, n := range []int64{0, -1, PageSize, MinMempoolBytes - PageSize, MinMempoolBytes + 1} {
		if _, err := NewMempool(a, n); err == nil {
			t.Fatalf("NewMempool(%d) accepted", n)
		}
	}
	if _, err := NewMempool(nil, MinMempoolBytes); err == nil {
		t.Fatal("NewMempool without an allocator accepted")
	}
	mp, err := NewMempool(a, MinMempoolBytes)
	if err != nil {
		t.Fatal(err)
	}
	if p := mp.Alloc(MaxFolioOrder + 1); p != nil {
		t.Fatal("order above MaxFolioOrder allocated")
	}
	if err := mp.Free(&Page{}); err == nil {
		t.Fatal("freeing a foreign page accepted")
	}
}

func TestFolioOrder(t *testing.T) {
	for _, c := range []struct {
		size  uint32
		order int
	}{{1, 0}, {PageSize, 0}, {PageSize + 1, 1}, {8192, 1}, {3 * PageSize, 2}, {1 << 20, 8}, {1<<20 + 1, 9}} {
		if got := FolioOrder(c.size); got != c.order {
			t.Errorf("FolioOrder(%d) = %d, want %d", c.size, got, c.order)
		}
	}
}

// TestMempoolBoundUnderLoad: many goroutines allocate folios of mixed orders
// and hand them to other goroutines that free them (as bio completions do);
// the bytes out never pass the bound, waiters are woken, and everything
// comes back.
func TestMempoolBoundUnderLoad(t *testing.T) {
	a := &PageAllocator{}
	const limit = 2 * MinMempoolBytes
	mp, err := NewMempool(a, limit)
	if err != nil {
		t.Fatal(err)
	}
	var out, peak atomic.Int64
	done := make(chan *Page, 64)
	var completers sync.WaitGroup
	for c := 0; c < 4; c++ {
		completers.Add(1)
		go func() {
			defer completers.Done()
			for p := range done {
				out.Add(-int64(p.Size()))
				if err := mp.Free(p); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	var submitters sync.WaitGroup
	for g := 0; g < 16; g++ {
		submitters.Add(1)
		go func(g int) {
			defer submitters.Done()
			for i := 0; i < 50; i++ {
				order := []int{MaxFolioOrder, 0, 3, MaxFolioOrder}[(g+i)%4]
				p := mp.Alloc(order)
				if p == nil {
					t.Error("allocation failed without injection")
					return
				}
				n := out.Add(int64(p.Size()))
				for {
					old := peak.Load()
					if n <= old || peak.CompareAndSwap(old, n) {
						break
					}
				}
				p.Bytes()[0] = byte(g)
				done <- p
			}
		}(g)
	}
	submitters.Wait()
	close(done)
	completers.Wait()
	st := mp.Stats()
	if peak.Load() > limit || st.Peak > limit {
		t.Fatalf("%d bytes out at once (pool says %d), bound %d", peak.Load(), st.Peak, limit)
	}
	if st.Waits == 0 {
		t.Fatal("16 submitters of 1 MiB folios on a 2 MiB pool never waited")
	}
	if st.InUse != 0 || a.InUse() != 0 {
		t.Fatalf("left allocated: pool %d bytes, allocator %d pages", st.InUse, a.InUse())
	}
}

// TestMempoolInjectedFailure: an allocator failure is returned, not waited
// out, and gives the pool's room back; BioFreePages returns pooled folios
// to the pool.
func TestMempoolInjectedFailure(t *testing.T) {
	a := &PageAllocator{}
	mp, err := NewMempool(a, MinMempoolBytes)
	if err != nil {
		t.Fatal(err)
	}
	a.FailAt(1)
	if p := mp.Alloc(MaxFolioOrder); p != nil {
		t.Fatal("injected failure not returned")
	}
	if st := mp.Stats(); st.InUse != 0 {
		t.Fatalf("failed allocation kept %d bytes of the pool", st.InUse)
	}
	p := mp.Alloc(MaxFolioOrder)
	if p == nil {
		t.Fatal("allocation after the injected failure failed")
	}
	b := BioAllocBioset(nil, 1, Opf(OpWrite))
	if b.AddPage(p, uint32(p.Size()), 0) != uint32(p.Size()) {
		t.Fatal("bio_add_page refused a whole folio")
	}
	if err := BioFreePages(b); err != nil {
		t.Fatal(err)
	}
	if st := mp.Stats(); st.InUse != 0 || a.InUse() != 0 {
		t.Fatalf("after bio_free_pages: pool %d bytes, allocator %d pages", st.InUse, a.InUse())
	}
}

// TestMempoolWakesWaiter: with the pool exhausted an allocation waits, and
// the free that makes room wakes it.
func TestMempoolWakesWaiter(t *testing.T) {
	a := &PageAllocator{}
	mp, err := NewMempool(a, MinMempoolBytes)
	if err != nil {
		t.Fatal(err)
	}
	held := mp.Alloc(MaxFolioOrder)
	got := make(chan *Page)
	go func() { got <- mp.Alloc(0) }()
	for mp.Stats().Waits == 0 {
		runtime.Gosched()
	}
	if err := mp.Free(held); err != nil {
		t.Fatal(err)
	}
	p := <-got
	if p == nil {
		t.Fatal("woken waiter got no page")
	}
	if err := mp.Free(p); err != nil {
		t.Fatal(err)
	}
	if st := mp.Stats(); st.InUse != 0 || st.Waits != 1 || st.Peak != MinMempoolBytes {
		t.Fatalf("stats %+v", st)
	}
}

// TestMempoolWaitLimit: with a wait limit, an allocation that never gets
// room (the pool's only folio leaked) gives up with nil and is counted,
// instead of sleeping for ever; one that gets room in time still succeeds.
func TestMempoolWaitLimit(t *testing.T) {
	a := &PageAllocator{}
	mp, err := NewMempool(a, MinMempoolBytes)
	if err != nil {
		t.Fatal(err)
	}
	mp.SetWaitLimit(20 * time.Millisecond)
	leaked := mp.Alloc(MaxFolioOrder)
	if leaked == nil {
		t.Fatal("first folio refused")
	}
	if p := mp.Alloc(0); p != nil {
		t.Fatal("allocation past the bound succeeded while the pool's folio is out")
	}
	if st := mp.Stats(); st.WaitTimeouts != 1 || st.InUse != MinMempoolBytes {
		t.Fatalf("%d timeouts, %d bytes out; want 1 and %d", st.WaitTimeouts, st.InUse, MinMempoolBytes)
	}
	mp.SetWaitLimit(time.Minute)
	go func() {
		time.Sleep(5 * time.Millisecond)
		mp.Free(leaked)
	}()
	p := mp.Alloc(0)
	if p == nil {
		t.Fatal("allocation refused although the folio came back within the limit")
	}
	if err := mp.Free(p); err != nil {
		t.Fatal(err)
	}
	if st := mp.Stats(); st.WaitTimeouts != 1 || st.InUse != 0 {
		t.Fatalf("%d timeouts, %d bytes out; want 1 and 0", st.WaitTimeouts, st.InUse)
	}
}
