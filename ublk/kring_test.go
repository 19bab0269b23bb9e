package ublk

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/btrfsdio/btrfsdio/internal/uring"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

// lockQueueThread holds the test's goroutine on its OS thread for the rest of
// the test, as runQueue does: a queue's ring is single-issuer and registered
// in its thread's table of rings, so it is set up, entered and closed there.
func lockQueueThread(t *testing.T) {
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
}

// kernelRingOnFile builds the real queue ring with a plain file standing in
// for /dev/ublkcN: the kernel then answers every URING_CMD with -EOPNOTSUPP.
// The calling test's goroutine is locked to its thread.
func kernelRingOnFile(t *testing.T, depth int) *kernelRing {
	t.Helper()
	lockQueueThread(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "not-ublkc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	k, err := newKernelRing(int(f.Fd()), 0, depth)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		t.Skipf("io_uring unavailable: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKernelRingWake(t *testing.T) {
	k := kernelRingOnFile(t, 4)
	defer k.close()
	if err := k.armWake(); err != nil {
		t.Fatal(err)
	}
	if err := k.submit(); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(30 * time.Millisecond)
		k.notify()
		k.notify() // coalesces into one wake-up
	}()
	if err := k.wait(); err != nil {
		t.Fatal(err)
	}
	cqes := make([]uring.CQE, 4)
	n := k.reap(cqes)
	if n != 1 || cqes[0].UserData != wakeUserData || cqes[0].Res != 8 {
		t.Fatalf("reaped %d: %+v", n, cqes[:n])
	}
}

// TestQueueOnRealRing runs prime and serve on a real io_uring: every FETCH
// completes with an error, each tag is retired and logged, and the loop ends
// instead of spinning or hanging. This exercises the tag <-> user_data path.
func TestQueueOnRealRing(t *testing.T) {
	const depth = 8
	k := kernelRingOnFile(t, depth)
	logger, hook := logtest.NewNullLogger()
	mem := make([]byte, depth*4096)
	q := newQueue(0, depth, fakeDeviceSize, k, func(uint16) IODesc { return IODesc{} }, newBufferSourceOn(mem, depth, 4096),
		funcTarget(func(*Request) int32 { t.Error("target called"); return 0 }), logger)
	if err := q.prime(); err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(5*time.Second, q.forceQuit)
	defer watchdog.Stop()
	if err := q.serve(); errors.Is(err, errQueueQuit) {
		t.Fatal("serve did not end after every tag failed")
	} else if err != nil {
		t.Fatal(err)
	}
	if err := q.release(); err != nil {
		t.Fatal(err)
	}
	failed := map[any]bool{}
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, "io command failed") {
			failed[e.Data["tag"]] = true
		}
	}
	if len(failed) != depth {
		t.Errorf("%d distinct tags reported failed, want %d", len(failed), depth)
	}
}
