package ublk

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/btrfsdio/btrfsdio/internal/uring"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

// fileKernel is the fake kernel plus a ring that does file IO the way
// io_uring does: one CQE with the bytes transferred or -errno.
type fileKernel struct {
	*fakeKernel
	ios int
}

func (k *fileKernel) rw(tag uint16, op rwOp) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ios++
	var n int
	var err error
	if op.write {
		n, err = unix.Pwrite(op.fd, op.buf, int64(op.off))
	} else {
		n, err = unix.Pread(op.fd, op.buf, int64(op.off))
	}
	res := int32(n)
	if err != nil {
		res = -int32(err.(unix.Errno))
	}
	k.ready = append(k.ready, uring.CQE{UserData: fileUserData | uint64(tag), Res: res})
	k.cond.Broadcast()
	return nil
}

// startFileQueue primes a depth-4 queue of target on a fileKernel, with the
// ring path on bufs (cdev: the user-copy fd, -1 for none), counting into io
// (nil: not counted), and runs its loop.
func startFileQueue(t *testing.T, target *fileTarget, bufs dataSource, cdev int, io *IOStats) (*fileKernel, *fakeQueue) {
	t.Helper()
	const depth, maxIO = 4, 8192
	logger, hook := logtest.NewNullLogger()
	k := &fileKernel{fakeKernel: newFakeKernel(t, depth)}
	q := newQueue(0, depth, fakeDeviceSize, k, k.desc, bufs, target, logger)
	var err error
	if q.file, err = newFileIO(target, k, bufs, cdev, depth, maxIO); err != nil || q.file == nil {
		t.Fatalf("newFileIO = %v, %v", q.file, err)
	}
	if err := q.prime(); err != nil {
		t.Fatal(err)
	}
	q.stats = io
	fq := &fakeQueue{q: q, k: k.fakeKernel, errc: make(chan error, 1), log: hook}
	go func() {
		err := q.serve()
		q.release()
		fq.errc <- err
	}()
	t.Cleanup(func() { k.check(t) })
	return k, fq
}

// writeThenRead sends tag 1's WRITE of 4 KiB at sector 8 and tag 2's READ of
// it back through the ring. put leaves the WRITE's data where the kernel
// would (the tag's buffer or /dev/ublkcN, named by where); got returns what
// the READ left there. Neither request may reach the target's Handle.
func writeThenRead(t *testing.T, fq *fakeQueue, target *fileTarget, where string,
	put func(tag uint16, p []byte), got func(tag uint16) []byte) {
	t.Helper()
	pattern := bytes.Repeat([]byte("ring-io!"), 512)
	put(1, pattern)
	fq.k.request(1, rw(OpWrite, 8, 8, 0))
	if c := fq.k.nextCommit(t); c.tag != 1 || c.res != 4096 {
		t.Fatalf("write commit = %+v", c)
	}
	file := make([]byte, 4096)
	unix.Pread(target.fd, file, 8*512)
	if !bytes.Equal(file, pattern) {
		t.Fatalf("the WRITE's data did not go from %s to the file at sector 8", where)
	}
	fq.k.request(2, rw(OpRead, 8, 8, 0))
	if c := fq.k.nextCommit(t); c.tag != 2 || c.res != 4096 {
		t.Fatalf("read commit = %+v", c)
	}
	if !bytes.Equal(got(2), pattern) {
		t.Fatalf("the READ's data did not go from the file to %s", where)
	}
	if n := target.handled.Load(); n != 0 {
		t.Fatalf("Handle called %d times for ring IO", n)
	}
}

// fileTarget is a FileTarget on a temporary file whose Handle counts calls.
type fileTarget struct {
	fd      int
	handled atomic.Int32
}

func (f *fileTarget) RingFile() (int, bool) { return f.fd, true }

func (f *fileTarget) Handle(r *Request) int32 {
	f.handled.Add(1)
	buf := make([]byte, r.Bytes())
	switch r.Op {
	case OpRead:
		n, _ := unix.Pread(f.fd, buf, r.Offset())
		clear(buf[max(n, 0):]) // past EOF: zeros
		r.Data.WriteAt(buf, 0)
	case OpWrite:
		r.Data.ReadAt(buf, 0)
		if _, err := unix.Pwrite(f.fd, buf, r.Offset()); err != nil {
			return -int32(unix.EIO)
		}
	}
	return int32(r.Bytes())
}

func TestQueueFileTargetRingIO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(path, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	target := &fileTarget{fd: fd}
	const depth, per = 4, 8192
	mem := make([]byte, depth*per)
	var io IOStats
	k, fq := startFileQueue(t, target, newBufferSourceOn(mem, depth, per), -1, &io)
	fq.mem, fq.per = mem, per
	q := fq.q

	// A write and a read go through the ring: no Handle call.
	writeThenRead(t, fq, target, "the tag's buffer",
		func(tag uint16, p []byte) { copy(fq.buf(tag), p) },
		func(tag uint16) []byte { return fq.buf(tag)[:4096] })

	// Past the end of the (shrunken) file the read comes up short: Handle
	// redoes it, with zeros.
	copy(fq.buf(3), bytes.Repeat([]byte("stale!!!"), 512))
	fq.k.request(3, rw(OpRead, 128, 8, 0))
	if c := fq.k.nextCommit(t); c.tag != 3 || c.res != 4096 {
		t.Fatalf("short read commit = %+v", c)
	}
	if !bytes.Equal(fq.buf(3)[:4096], make([]byte, 4096)) {
		t.Fatal("short ring read not redone by Handle with zeros")
	}
	// FUA writes are Handle's (it makes them durable).
	fq.k.request(0, rw(OpWrite, 0, 8, ReqFUA))
	if c := fq.k.nextCommit(t); c.res != 4096 {
		t.Fatalf("FUA write commit = %+v", c)
	}
	if n := target.handled.Load(); n != 2 {
		t.Fatalf("Handle called %d times, want 2 (short read, FUA write)", n)
	}
	fq.stop(t, nil)
	st := q.snapshot()
	if st.Requests != 4 || st.RingIO != 3 || st.Fallbacks != 1 || st.Handoffs != 2 || k.ios != 3 {
		t.Fatalf("stats %+v, file IOs %d", st, k.ios)
	}
	// The device's IOStats count the ring's requests as well as Handle's.
	if snap := io.Snapshot(); snap["read"].IOs != 2 || snap["write"].IOs != 2 || snap["read"].Bytes != 8192 || snap["write"].Bytes != 8192 {
		t.Fatalf("IOStats read %+v, write %+v: want 2 of each, 8192 bytes", snap["read"], snap["write"])
	}
}

// TestKernelRingFileIO runs rw on a real io_uring: a read and a write each
// post one CQE with the bytes they moved, a read past the end of the file
// one with 0. The file is registered, as a FileTarget's is, so the SQEs name
// it by its slot in the ring's file table.
func TestKernelRingFileIO(t *testing.T) {
	lockQueueThread(t)
	path := filepath.Join(t.TempDir(), "file")
	data := bytes.Repeat([]byte("ring!"), 1000)[:4096]
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	k, err := newKernelRing(-1, 0, 4, fd)
	if err != nil {
		t.Skipf("no io_uring here: %v", err)
	}
	defer k.close()
	if len(k.fixed) != 3 || k.fixed[2] != fd {
		t.Fatalf("registered files %v, want [-1 eventfd %d]", k.fixed, fd)
	}
	buf, past := make([]byte, 4096), make([]byte, 4096)
	ops := map[uint16]rwOp{
		1: {fd: fd, buf: buf},
		2: {write: true, fd: fd, buf: data, off: 8192},
		3: {fd: fd, buf: past, off: 1 << 20},
	}
	for tag, op := range ops {
		if err := k.rw(tag, op); err != nil {
			t.Fatal(err)
		}
	}
	// An op sent to the wrong slot may block (on the eventfd): the
	// watchdog's wake-ups then complete each with the wrong result.
	watchdog := time.AfterFunc(5*time.Second, func() {
		for range ops {
			k.notify()
			time.Sleep(50 * time.Millisecond)
		}
	})
	defer watchdog.Stop()
	cqes := make([]uring.CQE, 8)
	n := 0
	for n < len(ops) {
		if err := k.wait(); err != nil {
			t.Fatal(err)
		}
		n += k.reap(cqes[n:])
	}
	res := map[uint64]int32{}
	for _, c := range cqes[:n] {
		res[c.UserData] = c.Res
	}
	want := map[uint64]int32{fileUserData | 1: 4096, fileUserData | 2: 4096, fileUserData | 3: 0}
	if n != len(want) || res[fileUserData|1] != 4096 || res[fileUserData|2] != 4096 || res[fileUserData|3] != 0 {
		t.Errorf("CQEs %v, want %v", res, want)
	}
	if !bytes.Equal(buf, data) {
		t.Error("the read did not fill its buffer")
	}
	got, _ := os.ReadFile(path)
	if len(got) != 8192+4096 || !bytes.Equal(got[8192:], data) {
		t.Errorf("file holds %d bytes, want the write at 8192", len(got))
	}
	if k.enters() == 0 {
		t.Error("enters not counted")
	}
}

// TestFileIOBufferStack: under USER_COPY a tag takes the buffer freed last,
// so requests one at a time (QD1) all use the first buffer.
func TestFileIOBufferStack(t *testing.T) {
	target := &fileTarget{fd: -1}
	k := &fileKernel{fakeKernel: newFakeKernel(t, 4)}
	f, err := newFileIO(target, k, newUserCopySource(-1, 0, 4), 99, 4, 4096)
	if err != nil || f == nil {
		t.Fatalf("newFileIO = %v, %v", f, err)
	}
	defer f.close()
	first := &f.mem[0]
	for _, tag := range []uint16{3, 1, 2} {
		if b := f.buf(tag, 512); &b[0] != first {
			t.Fatalf("tag %d got buffer at offset %d, want the first", tag, uintptr(unsafe.Pointer(&b[0]))-uintptr(unsafe.Pointer(first)))
		}
		f.put(tag)
	}
	a, b := f.buf(0, 4096), f.buf(1, 4096)
	if &a[0] == &b[0] {
		t.Fatal("two tags in flight share a buffer")
	}
}

// TestRingIOEnvOff: the ring path is the default for a FileTarget, and
// BTRFSDIO_UBLK_RING_IO=0 turns it off (every request to a worker).
func TestRingIOEnvOff(t *testing.T) {
	target := &fileTarget{fd: -1}
	k := &fileKernel{fakeKernel: newFakeKernel(t, 4)}
	bufs := newBufferSourceOn(make([]byte, 4*4096), 4, 4096)
	if f, err := newFileIO(target, k, bufs, -1, 4, 4096); err != nil || f == nil {
		t.Fatalf("default: newFileIO = %v, %v; want the ring path", f, err)
	}
	t.Setenv(RingIOEnv, "0")
	if f, err := newFileIO(target, k, bufs, -1, 4, 4096); err != nil || f != nil {
		t.Fatalf("%s=0: newFileIO = %v, %v; want nil", RingIOEnv, f, err)
	}
}

// TestQueueFileTargetRingUserCopy: under USER_COPY the ring path copies a
// WRITE's data from /dev/ublkcN (here a sparse file standing in for it, at
// the same offsets) before the file write and a READ's data to it after the
// file read; a copy that comes up short leaves the request to Handle.
func TestQueueFileTargetRingUserCopy(t *testing.T) {
	dir := t.TempDir()
	open := func(name string, size int64) int {
		fd, err := unix.Open(filepath.Join(dir, name), unix.O_RDWR|unix.O_CREAT, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Ftruncate(fd, size); err != nil {
			t.Fatal(err)
		}
		return fd
	}
	const depth, per = 4, 8192
	fd := open("backing", 64<<10)
	// The stand-in ends 100 bytes into tag 3's window.
	cdev := open("ublkc", UserCopyOffset(0, 3)+100)
	target := &fileTarget{fd: fd}
	k, fq := startFileQueue(t, target, newUserCopySource(cdev, 0, depth), cdev, nil)
	q := fq.q

	writeThenRead(t, fq, target, "/dev/ublkcN",
		func(tag uint16, p []byte) { unix.Pwrite(cdev, p, UserCopyOffset(0, tag)) },
		func(tag uint16) []byte {
			got := make([]byte, 4096)
			unix.Pread(cdev, got, UserCopyOffset(0, tag))
			return got
		})
	fq.k.request(3, rw(OpWrite, 16, 8, 0))
	fq.k.nextCommit(t)
	if n := target.handled.Load(); n != 1 {
		t.Fatalf("Handle called %d times, want 1 (the short copy)", n)
	}
	fq.stop(t, nil)
	if st := q.snapshot(); st.Requests != 3 || st.RingIO != 2 || st.Handoffs != 1 || k.ios != 2 {
		t.Fatalf("stats %+v, file IOs %d", st, k.ios)
	}
}
