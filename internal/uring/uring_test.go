package uring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// newRing creates a ring or skips when the host forbids io_uring entirely
// (ENOSYS, or EPERM from kernel.io_uring_disabled); any other error fails.
func newRing(t *testing.T, entries, flags uint32) *Ring {
	t.Helper()
	r, err := New(entries, flags)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		t.Skipf("io_uring unavailable here: %v", err)
	}
	if err != nil {
		t.Fatalf("New(%d, %#x): %v", entries, flags, err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

func TestLayout(t *testing.T) {
	var s SQE
	checks := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(sqe)", unsafe.Sizeof(s), 64},
		{"sqe.opcode", unsafe.Offsetof(s.Opcode), 0},
		{"sqe.flags", unsafe.Offsetof(s.Flags), 1},
		{"sqe.ioprio", unsafe.Offsetof(s.IOPrio), 2},
		{"sqe.fd", unsafe.Offsetof(s.Fd), 4},
		{"sqe.off/cmd_op", unsafe.Offsetof(s.Off), uringCmdOpOff},
		{"sqe.addr", unsafe.Offsetof(s.Addr), 16},
		{"sqe.len", unsafe.Offsetof(s.Len), 24},
		{"sqe.rw_flags", unsafe.Offsetof(s.OpFlags), 28},
		{"sqe.user_data", unsafe.Offsetof(s.UserData), 32},
		{"sqe.buf_index", unsafe.Offsetof(s.BufIndex), 40},
		{"sqe.personality", unsafe.Offsetof(s.Personality), 42},
		{"sqe.splice_fd_in", unsafe.Offsetof(s.SpliceFdIn), 44},
		{"sqe.cmd", unsafe.Offsetof(s.Addr3), cmdOffset},
		{"sizeof(cqe)", unsafe.Sizeof(CQE{}), 16},
		{"cqe.res", unsafe.Offsetof(CQE{}.Res), 8},
		{"cqe.flags", unsafe.Offsetof(CQE{}.Flags), 12},
		{"sizeof(params)", unsafe.Sizeof(Params{}), 120},
		{"params.sq_off", unsafe.Offsetof(Params{}.SQOff), 40},
		{"params.cq_off", unsafe.Offsetof(Params{}.CQOff), 80},
		{"sizeof(sq_off)", unsafe.Sizeof(SQRingOffsets{}), 40},
		{"sizeof(cq_off)", unsafe.Sizeof(CQRingOffsets{}), 40},
		{"sizeof(iovec)", unsafe.Sizeof(Iovec{}), 16},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if OpUringCmd != 46 || OpRead != 22 || OpWrite != 23 || OpFsync != 3 {
		t.Errorf("opcodes: URING_CMD %d READ %d WRITE %d FSYNC %d", OpUringCmd, OpRead, OpWrite, OpFsync)
	}
	if SetupSQE128 != 0x400 || SetupCoopTaskrun != 0x100 || SetupSingleIssuer != 0x1000 || SetupDeferTaskrun != 0x2000 {
		t.Errorf("setup flags wrong")
	}
}

func TestPrepUringCmdEncoding(t *testing.T) {
	var s SQE
	s.PrepUringCmd(7, 0xC0107520, 0xdeadbeef)
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&s)), 64)
	if raw[0] != OpUringCmd {
		t.Errorf("opcode byte = %d", raw[0])
	}
	if fd := binary.LittleEndian.Uint32(raw[4:]); fd != 7 {
		t.Errorf("fd = %d", fd)
	}
	if op := binary.LittleEndian.Uint32(raw[8:]); op != 0xC0107520 {
		t.Errorf("cmd_op = %#x", op)
	}
	if pad := binary.LittleEndian.Uint32(raw[12:]); pad != 0 {
		t.Errorf("pad = %#x", pad)
	}
	if ud := binary.LittleEndian.Uint64(raw[32:]); ud != 0xdeadbeef {
		t.Errorf("user_data = %#x", ud)
	}
	if s.CmdOp() != 0xC0107520 {
		t.Errorf("CmdOp() = %#x", s.CmdOp())
	}
}

func TestNopRoundTrip(t *testing.T) {
	r := newRing(t, 8, 0)
	for i := uint64(1); i <= 3; i++ {
		sqe := r.NextSQE()
		if sqe == nil {
			t.Fatal("NextSQE returned nil on an empty ring")
		}
		sqe.PrepNop(i * 100)
	}
	n, err := r.SubmitAndWait(3)
	if err != nil || n != 3 {
		t.Fatalf("SubmitAndWait = %d, %v; want 3", n, err)
	}
	if got := r.CQReady(); got != 3 {
		t.Fatalf("CQReady = %d, want 3", got)
	}
	cqes := make([]CQE, 8)
	if got := r.Reap(cqes); got != 3 {
		t.Fatalf("Reap = %d, want 3", got)
	}
	for i, c := range cqes[:3] {
		if c.UserData != uint64(i+1)*100 || c.Res != 0 {
			t.Errorf("cqe %d = %+v", i, c)
		}
	}
	if _, ok := r.PeekCQE(); ok {
		t.Error("PeekCQE found a CQE after Reap drained the ring")
	}
}

func TestWriteThenRead(t *testing.T) {
	r := newRing(t, 4, 0)
	path := filepath.Join(t.TempDir(), "data")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())

	want := bytes.Repeat([]byte("io_uring!"), 1000)
	r.NextSQE().PrepWrite(fd, want, 4096, 1)
	wait1(t, r, 1, int32(len(want)))

	r.NextSQE().PrepFsync(fd, FsyncDatasync, 2)
	wait1(t, r, 2, 0)

	got := make([]byte, len(want))
	r.NextSQE().PrepRead(fd, got, 4096, 3)
	wait1(t, r, 3, int32(len(want)))
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs from what was written")
	}

	// Vectored read of the same bytes into two pieces.
	a, b := make([]byte, 100), make([]byte, len(want)-100)
	iov := []Iovec{IovecOf(a), IovecOf(b)}
	r.NextSQE().PrepReadv(fd, iov, 4096, 4)
	wait1(t, r, 4, int32(len(want)))
	if !bytes.Equal(append(a, b...), want) {
		t.Fatal("readv differs")
	}

	// The file really holds the data (the write was not a no-op).
	st, _ := f.Stat()
	if st.Size() != 4096+int64(len(want)) {
		t.Fatalf("file size %d", st.Size())
	}
}

// wait1 submits, waits for one CQE and checks its user data and result.
func wait1(t *testing.T, r *Ring, ud uint64, res int32) {
	t.Helper()
	if _, err := r.SubmitAndWait(1); err != nil {
		t.Fatalf("SubmitAndWait: %v", err)
	}
	c, err := r.WaitCQE()
	if err != nil {
		t.Fatal(err)
	}
	r.SeenCQE()
	if c.UserData != ud || c.Res != res {
		t.Fatalf("cqe = %+v, want user_data %d res %d", c, ud, res)
	}
}

func TestEventfdWakeup(t *testing.T) {
	r := newRing(t, 4, SetupCoopTaskrun)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	buf := make([]byte, 8)
	r.NextSQE().PrepRead(efd, buf, 0, 42)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.PeekCQE(); ok {
		t.Fatal("eventfd read completed before anyone wrote")
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		var v [8]byte
		binary.LittleEndian.PutUint64(v[:], 5)
		unix.Write(efd, v[:])
	}()
	start := time.Now()
	c, err := r.WaitCQE()
	if err != nil {
		t.Fatal(err)
	}
	r.SeenCQE()
	if c.UserData != 42 || c.Res != 8 {
		t.Fatalf("cqe = %+v", c)
	}
	if v := binary.LittleEndian.Uint64(buf); v != 5 {
		t.Fatalf("eventfd value = %d, want 5", v)
	}
	if time.Since(start) < 40*time.Millisecond {
		t.Fatal("WaitCQE returned before the writer ran")
	}
}

func TestSQE128(t *testing.T) {
	r := newRing(t, 4, SetupSQE128)
	if r.CmdLen() != CmdLenSQE128 {
		t.Fatalf("CmdLen = %d, want 80", r.CmdLen())
	}
	payload := bytes.Repeat([]byte{0xAB}, 80)
	// A URING_CMD on a regular file is refused by the kernel with EOPNOTSUPP;
	// that proves the 128-byte entry was parsed and completed.
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sqe, err := r.PrepUringCmd(int(f.Fd()), 0x1234, payload, 9)
	if err != nil {
		t.Fatal(err)
	}
	cmd := r.Cmd(sqe)
	if len(cmd) != 80 || cmd[79] != 0xAB {
		t.Fatalf("cmd area len %d", len(cmd))
	}
	// The second half of the 128-byte slot is the cmd tail: at SQE+64..127.
	full := unsafe.Slice((*byte)(unsafe.Pointer(sqe)), 128)
	if full[127] != 0xAB || full[48] != 0xAB || full[47] != 0 {
		t.Fatal("payload not at sqe offset 48..127")
	}
	if _, err := r.PrepUringCmd(int(f.Fd()), 1, make([]byte, 81), 0); err == nil {
		t.Fatal("81-byte payload accepted")
	}
	r.NextSQE().PrepNop(10)
	if _, err := r.SubmitAndWait(2); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]int32{}
	cqes := make([]CQE, 4)
	for _, c := range cqes[:r.Reap(cqes)] {
		got[c.UserData] = c.Res
	}
	if got[10] != 0 {
		t.Errorf("NOP on SQE128 ring: res %d", got[10])
	}
	if res, ok := got[9]; !ok || res >= 0 {
		t.Errorf("URING_CMD on a plain file: res %d (present %v), want an error", res, ok)
	}
	small := newRing(t, 4, 0)
	if small.CmdLen() != CmdLenSQE64 {
		t.Errorf("CmdLen on SQE64 ring = %d", small.CmdLen())
	}
}

func TestRingFull(t *testing.T) {
	r := newRing(t, 4, 0)
	if r.SQEntries() != 4 || r.CQEntries() != 8 {
		t.Fatalf("sizes sq %d cq %d", r.SQEntries(), r.CQEntries())
	}
	for i := 0; i < 4; i++ {
		sqe := r.NextSQE()
		if sqe == nil {
			t.Fatalf("NextSQE nil at %d", i)
		}
		sqe.PrepNop(uint64(i))
	}
	if r.NextSQE() != nil {
		t.Fatal("NextSQE handed out a fifth entry on a 4-entry ring")
	}
	if _, err := r.PrepUringCmd(0, 0, nil, 0); !errors.Is(err, ErrRingFull) {
		t.Fatalf("PrepUringCmd on full ring: %v", err)
	}
	if r.Pending() != 4 {
		t.Fatalf("Pending = %d", r.Pending())
	}
	n, err := r.Submit()
	if err != nil || n != 4 {
		t.Fatalf("Submit = %d, %v", n, err)
	}
	if r.Pending() != 0 {
		t.Fatal("entries still pending after submit")
	}
	// Completions outlive SQ slots: 4 more NOPs fill the 8-entry CQ.
	for i := 4; i < 8; i++ {
		sqe := r.NextSQE()
		if sqe == nil {
			t.Fatalf("slot %d not freed after submit", i)
		}
		sqe.PrepNop(uint64(i))
	}
	if _, err := r.SubmitAndWait(8); err != nil {
		t.Fatal(err)
	}
	if r.CQReady() != 8 {
		t.Fatalf("CQReady = %d, want 8", r.CQReady())
	}
	cqes := make([]CQE, 3)
	if r.Reap(cqes) != 3 || r.CQReady() != 5 {
		t.Fatalf("partial reap left %d", r.CQReady())
	}
	seen := 0
	for {
		if _, ok := r.PeekCQE(); !ok {
			break
		}
		r.SeenCQE()
		seen++
	}
	if seen != 5 {
		t.Fatalf("drained %d more, want 5", seen)
	}
}

func TestOpSupported(t *testing.T) {
	r := newRing(t, 2, 0)
	ok, err := r.OpSupported(OpNop)
	if err != nil || !ok {
		t.Fatalf("NOP supported = %v, %v", ok, err)
	}
	ok, err = r.OpSupported(255)
	if err != nil || ok {
		t.Fatalf("op 255 supported = %v, %v", ok, err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	r, err := New(2, 0)
	if err != nil {
		t.Skip(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRegisteredFilesAndRing enters the ring by its registered index and
// reads a file by its registered slot, on a single-issuer DEFER_TASKRUN
// ring as the ublk queues set theirs up. The fd in the SQE is a slot
// number that is no open file of ours, so only the fixed table can resolve it.
func TestRegisteredFilesAndRing(t *testing.T) {
	runtime.LockOSThread() // single issuer, and the ring registration is per thread
	defer runtime.UnlockOSThread()
	r := newRing(t, 4, SetupCoopTaskrun|SetupSingleIssuer|SetupDeferTaskrun)
	path := filepath.Join(t.TempDir(), "data")
	want := bytes.Repeat([]byte("fixed"), 100)
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := r.RegisterFiles([]int32{-1, int32(f.Fd())}); err != nil {
		t.Fatal(err)
	}
	if err := r.RegisterRingFd(); err != nil {
		t.Fatal(err)
	}
	if r.ringIndex < 0 || r.enterFd() != r.ringIndex {
		t.Fatalf("enter fd %d (ring index %d): not entering by the registered index", r.enterFd(), r.ringIndex)
	}
	got := make([]byte, len(want))
	s := r.NextSQE()
	s.PrepRead(1, got, 0, 7)
	s.Flags |= SQEFixedFile
	wait1(t, r, 7, int32(len(want)))
	if !bytes.Equal(got, want) {
		t.Fatal("read through the fixed slot differs from the file")
	}
	// The empty slot is refused, not confused with fd 0.
	s = r.NextSQE()
	s.PrepRead(0, got, 0, 8)
	s.Flags |= SQEFixedFile
	wait1(t, r, 8, -int32(unix.EBADF))
}

// TestCloseUnregistersRing: the thread's registration holds a reference to
// the ring, so Close must drop it, or the ring and what is in flight on it
// outlive Close. A read armed on an empty pipe must be cancelled by Close,
// not left to consume the next write.
func TestCloseUnregistersRing(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r, err := New(4, 0)
	if err != nil {
		t.Skipf("io_uring unavailable here: %v", err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if err := r.RegisterRingFd(); err != nil {
		r.Close()
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	r.NextSQE().PrepRead(p[0], buf, 0, 1)
	if _, err := r.Submit(); err != nil {
		r.Close()
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // the ring's teardown is asynchronous
	if _, err := unix.Write(p[1], []byte{'x'}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	got := make([]byte, 1)
	if n, err := unix.Read(p[0], got); n != 1 || err != nil {
		t.Fatalf("pipe read after Close = %d, %v: a read on the closed ring took the byte", n, err)
	}
}
