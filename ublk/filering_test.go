package ublk

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/btrfsdio/btrfsdio/internal/uring"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

// fileKernel is the fake kernel plus a ring that does file IO chains the way
// io_uring does linked SQEs with CQE_SKIP_SUCCESS on all but the last: in
// order, one CQE for the last or for the first that falls short.
type fileKernel struct {
	*fakeKernel
	chains int
}

func (k *fileKernel) rw(tag uint16, ops []rwOp) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.chains++
	for i, op := range ops {
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
		if res != int32(len(op.buf)) || i == len(ops)-1 {
			k.ready = append(k.ready, uring.CQE{UserData: fileUserData | uint64(i)<<fileOpShift | uint64(tag), Res: res})
			break
		}
	}
	k.cond.Broadcast()
	return nil
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
	logger, hook := logtest.NewNullLogger()
	const depth, per = 4, 8192
	k := &fileKernel{fakeKernel: newFakeKernel(t, depth)}
	mem := make([]byte, depth*per)
	bufs := newBufferSourceOn(mem, depth, per)
	q := newQueue(0, depth, fakeDeviceSize, k, k.desc, bufs, target, logger)
	if q.file, err = newFileIO(target, k, bufs, -1, depth, per); err != nil || q.file == nil {
		t.Fatalf("newFileIO = %v, %v", q.file, err)
	}
	if err := q.prime(); err != nil {
		t.Fatal(err)
	}
	var io IOStats
	q.stats = &io
	fq := &fakeQueue{q: q, k: k.fakeKernel, mem: mem, per: per, errc: make(chan error, 1), log: hook}
	go func() {
		err := q.serve()
		q.release()
		fq.errc <- err
	}()
	t.Cleanup(func() { k.check(t) })

	// A write and a read go through the ring: no Handle call.
	pattern := bytes.Repeat([]byte("ring-io!"), 512) // 4 KiB
	copy(fq.buf(1), pattern)
	fq.k.request(1, rw(OpWrite, 8, 8, 0))
	if c := fq.k.nextCommit(t); c.tag != 1 || c.res != 4096 {
		t.Fatalf("write commit = %+v", c)
	}
	got := make([]byte, 4096)
	unix.Pread(fd, got, 8*512)
	if !bytes.Equal(got, pattern) {
		t.Fatal("ring write did not reach the file at sector 8")
	}
	fq.k.request(2, rw(OpRead, 8, 8, 0))
	if c := fq.k.nextCommit(t); c.tag != 2 || c.res != 4096 {
		t.Fatalf("read commit = %+v", c)
	}
	if !bytes.Equal(fq.buf(2)[:4096], pattern) {
		t.Fatal("ring read did not fill the tag's buffer")
	}
	if n := target.handled.Load(); n != 0 {
		t.Fatalf("Handle called %d times for ring IO", n)
	}

	// Past the end of the (shrunken) file the read comes up short: Handle
	// redoes it, with zeros.
	copy(fq.buf(3), pattern)
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
	if st.Requests != 4 || st.RingIO != 3 || st.Fallbacks != 1 || st.Handoffs != 2 || k.chains != 3 {
		t.Fatalf("stats %+v, chains %d", st, k.chains)
	}
	// The device's IOStats count the ring's requests as well as Handle's.
	if snap := io.Snapshot(); snap["read"].IOs != 2 || snap["write"].IOs != 2 || snap["read"].Bytes != 8192 || snap["write"].Bytes != 8192 {
		t.Fatalf("IOStats read %+v, write %+v: want 2 of each, 8192 bytes", snap["read"], snap["write"])
	}
}

// TestKernelRingFileChain runs rw on a real io_uring: a read linked to a
// write copies file to file with one CQE (the write's), and a short read
// posts its own CQE and cancels its linked write without one, which is what
// onFileCQE relies on.
func TestKernelRingFileChain(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	data := bytes.Repeat([]byte("chain"), 1000)[:4096]
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sfd, err := unix.Open(src, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sfd)
	dfd, err := unix.Open(dst, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	k, err := newKernelRing(-1, 0, 2)
	if err != nil {
		t.Skipf("no io_uring here: %v", err)
	}
	defer k.close()
	buf := make([]byte, 4096)
	if err := k.rw(1, []rwOp{{fd: sfd, buf: buf, off: 0}, {write: true, fd: dfd, buf: buf, off: 0}}); err != nil {
		t.Fatal(err)
	}
	// The second chain starts past the end of src: its read is short.
	buf2 := make([]byte, 4096)
	if err := k.rw(2, []rwOp{{fd: sfd, buf: buf2, off: 4096}, {write: true, fd: dfd, buf: buf2, off: 8192}}); err != nil {
		t.Fatal(err)
	}
	cqes := make([]uring.CQE, 8)
	n := 0
	for n < 2 {
		if err := k.wait(); err != nil {
			t.Fatal(err)
		}
		n += k.reap(cqes[n:])
	}
	// A NOP's CQE behind them: any CQE the chains still owed would come first.
	s := k.ring.NextSQE()
	s.PrepNop(7)
	for n < 3 || cqes[n-1].UserData != 7 {
		if err := k.wait(); err != nil {
			t.Fatal(err)
		}
		n += k.reap(cqes[n:])
	}
	res := map[uint64][]int32{}
	for _, c := range cqes[:n-1] {
		res[c.UserData] = append(res[c.UserData], c.Res)
	}
	if r := res[fileUserData|1<<fileOpShift|1]; len(r) != 1 || r[0] != 4096 || len(res[fileUserData|1]) != 0 {
		t.Errorf("chain 1: CQEs %v, want one of 4096 from the write only", res)
	}
	if r := res[fileUserData|2]; len(r) != 1 || r[0] != 0 || len(res[fileUserData|1<<fileOpShift|2]) != 0 {
		t.Errorf("chain 2: CQEs %v, want one of 0 from the read only", res)
	}
	if n != 3 {
		t.Errorf("%d CQEs, want 2 and the NOP's", n)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, data) {
		t.Errorf("dst holds %d bytes, not the copy of src", len(got))
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
