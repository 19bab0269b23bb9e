package btrfsdio

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/raid"
)

// TestBouncePoolBoundUnderLoad: eight goroutines write and read 1 MiB +
// 8 KiB requests (a 1 MiB and an order-1 folio each) through a pool of one
// 1 MiB folio, completions arriving on device goroutines. The pool's bound
// holds, submitters wait and are woken, every byte comes back and nothing
// is left allocated.
func TestBouncePoolBoundUnderLoad(t *testing.T) {
	const limit = blk.MinMempoolBytes
	fs := newTestFS(t, raid.Raid1, 64*mib, Options{Mode: Bounce, BouncePool: limit})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	const reqSize = mib + 8192
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			buf := blk.AlignedBuffer(reqSize)
			out := blk.AlignedBuffer(reqSize)
			for i := 0; i < 10; i++ {
				pos := int64(g) * 2 * mib
				fillPattern(buf, uint64(g*100+i))
				if _, err := fs.write(pos, buf, 2*mib); err != nil {
					errs <- err
					return
				}
				if _, err := fs.read(pos, out, 0); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(out, buf) {
					errs <- errors.New("read back differs")
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := fs.BouncePool.Stats()
	t.Logf("pool of %d bytes: peak %d, %d waits", limit, st.Peak, st.Waits)
	if st.Peak > limit {
		t.Fatalf("%d bytes of bounce memory out at once, bound %d", st.Peak, limit)
	}
	if st.Waits == 0 {
		t.Fatal("eight submitters on a one-folio pool never waited")
	}
	// Stats (what `btrfsdio stats` shows) carries the pool's counters.
	if s := fs.Stats(); s.BouncePoolLimit != limit || s.BouncePoolPeak != st.Peak || s.BouncePoolWaits != st.Waits || s.BouncePoolInUse != 0 {
		t.Fatalf("Stats: pool limit %d peak %d waits %d in use %d; the pool says %+v", s.BouncePoolLimit, s.BouncePoolPeak, s.BouncePoolWaits, s.BouncePoolInUse, st)
	}
	if st.InUse != 0 {
		t.Fatalf("%d bytes of the pool still out", st.InUse)
	}
	fs.checkQuiescent(t)
}

// TestBouncePoolOption: which allocation each option picks, and that bad
// pool sizes are refused.
func TestBouncePoolOption(t *testing.T) {
	for _, c := range []struct {
		opts   Options
		pooled bool
	}{
		{Options{Mode: Bounce}, true},
		{Options{Mode: Bounce, BouncePool: 8 * mib}, true},
		{Options{Mode: Bounce, BouncePool: NoBouncePool}, false},
		{Options{Mode: Bounce, Faithful: true}, false},
		{Options{Mode: ZeroCopy}, false},
	} {
		fs := newTestFS(t, raid.Raid1, 16*mib, c.opts)
		if (fs.BouncePool != nil) != c.pooled {
			t.Fatalf("%+v: pooled %v, want %v", c.opts, fs.BouncePool != nil, c.pooled)
		}
		if c.pooled && c.opts.BouncePool == 0 && fs.BouncePool.Limit() != DefaultBouncePool {
			t.Fatalf("default pool of %d bytes", fs.BouncePool.Limit())
		}
	}
	for _, n := range []int64{-2, 4096, mib - 4096, mib + 1} {
		if err := CheckBouncePool(n); err == nil {
			t.Fatalf("pool of %d bytes accepted", n)
		}
	}
}
