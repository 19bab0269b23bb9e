package btrfsdio

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/raid"
)

// firstErrorMethods are the two ways bounce_ctl can record its first
// error: the seed's spinlock and the reviewer's cmpxchg.
var firstErrorMethods = []struct {
	name    string
	cmpxchg bool
}{{"spinlock", false}, {"cmpxchg", true}}

// TestBounceCtlKeepsFirstError is the fourth review point on the seed: the
// reviewer asked for cmpxchg instead of the spinlock around bounce_ctl->ret.
// Both must keep the FIRST error whatever the completions race to set:
//   - an error recorded before the race survives every later put;
//   - when many completions race (half of them with an error, each its
//     own errno, on their own goroutines), exactly one error is recorded,
//     it is the one the completion that saw the reference count reach zero
//     reads, and no put of 0 erases it.
//
// Run with -race: ret is an atomic in both methods, so the detector also
// proves the seed's lock-protected plain read and write are ordered.
func TestBounceCtlKeepsFirstError(t *testing.T) {
	const goroutines, rounds = 64, 200
	for _, m := range firstErrorMethods {
		t.Run(m.name, func(t *testing.T) {
			for r := 0; r < rounds; r++ {
				raceFirstError(t, m.cmpxchg, goroutines, r%2 == 0)
			}
		})
	}
}

// raceFirstError puts goroutines references of one bounce_ctl at once, from
// goroutines completions; with early, an error is recorded before.
func raceFirstError(t *testing.T, cmpxchg bool, goroutines int, early bool) {
	ctl := &BounceCtl{cmpxchg: cmpxchg}
	ctl.pending.Store(int32(goroutines) + 1)
	want := int32(0)
	if early {
		want = -int32(syscall.EIO)
		if !ctl.setError(int(want)) {
			t.Fatal("the first error was not recorded")
		}
		ctl.put(0)
	} else {
		ctl.pending.Add(-1)
	}
	var winners, lasts atomic.Int32
	var won, atZero atomic.Int32
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			ret := 0
			if g%2 == 1 {
				ret = -(1000 + g)
			}
			<-start
			if ctl.setError(ret) {
				winners.Add(1)
				won.Store(int32(ret))
			}
			if ctl.put(0) == 0 {
				lasts.Add(1)
				atZero.Store(ctl.ret.Load())
			}
		}(g)
	}
	close(start)
	wg.Wait()
	switch {
	case lasts.Load() != 1:
		t.Fatalf("%d completions saw the count reach zero, want 1", lasts.Load())
	case early && (winners.Load() != 0 || atZero.Load() != want):
		t.Fatalf("early error %d: %d later errors recorded, final %d", want, winners.Load(), atZero.Load())
	case !early && (winners.Load() != 1 || atZero.Load() != won.Load()):
		t.Fatalf("%d errors recorded (want 1); the winner set %d, the last put read %d",
			winners.Load(), won.Load(), atZero.Load())
	}
}

// TestFirstErrorMethodChoice: Faithful keeps the seed's spinlock, the fixed
// port uses cmpxchg, and Options.FirstError overrides both; a bounce write
// whose every mirror fails reports the device's error through either.
func TestFirstErrorMethodChoice(t *testing.T) {
	for _, c := range []struct {
		opts    Options
		cmpxchg bool
	}{
		{Options{Faithful: true}, false},
		{Options{}, true},
		{Options{Faithful: true, FirstError: FirstErrorCmpxchg}, true},
		{Options{FirstError: FirstErrorSpinlock}, false},
	} {
		if got := c.opts.cmpxchgFirstError(); got != c.cmpxchg {
			t.Fatalf("%+v: cmpxchg %v, want %v", c.opts, got, c.cmpxchg)
		}
		c.opts.Mode = Bounce
		fs := newTestFS(t, raid.Raid1, 64*mib, c.opts)
		for _, d := range fs.Vol.Devices() {
			d.InjectFault(blk.OpWrite, -1)
		}
		_, err := fs.write(0, blk.AlignedBuffer(3*mib), 0)
		if err == nil {
			t.Fatalf("%+v: a write failing on every mirror succeeded", c.opts)
		}
		for _, d := range fs.Vol.Devices() {
			d.InjectFault(blk.OpWrite, 0)
		}
		fs.checkQuiescent(t)
	}
}

// BenchmarkBounceCtlFirstError compares the two methods on one bounce_ctl
// shared by all CPUs (the worst case: a bounce_ctl has a handful of bbios,
// each put once). "ok" is the common put(0); "err" keeps trying to record
// errors after the first.
func BenchmarkBounceCtlFirstError(b *testing.B) {
	for _, m := range firstErrorMethods {
		for _, ret := range []int{0, -int(syscall.EIO)} {
			name := "ok"
			if ret != 0 {
				name = "err"
			}
			b.Run(fmt.Sprintf("%s/%s", m.name, name), func(b *testing.B) {
				ctl := &BounceCtl{cmpxchg: m.cmpxchg}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						ctl.setError(ret)
					}
				})
			})
		}
	}
}
