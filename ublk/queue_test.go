package ublk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/btrfsdio/btrfsdio/internal/uring"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

// fakeKernel plays ublk_drv for one queue: it records fetches and commits,
// completes tags with requests the test injects, and aborts them on "stop".
type fakeKernel struct {
	t         *testing.T
	mu        sync.Mutex
	cond      *sync.Cond
	descs     []IODesc
	active    []bool // a FETCH/COMMIT is outstanding for the tag
	addrs     []uint64
	ready     []uring.CQE
	armed     bool
	woken     bool
	closed    bool
	fetches   int
	protoErrs []string
	commits   chan commitRec
}

type commitRec struct {
	tag  uint16
	res  int32
	addr uint64
}

func newFakeKernel(t *testing.T, depth int) *fakeKernel {
	k := &fakeKernel{t: t, descs: make([]IODesc, depth), active: make([]bool, depth),
		addrs: make([]uint64, depth), commits: make(chan commitRec, 1<<16)}
	k.cond = sync.NewCond(&k.mu)
	return k
}

func (k *fakeKernel) protoErr(format string, args ...any) {
	k.protoErrs = append(k.protoErrs, fmt.Sprintf(format, args...))
}

func (k *fakeKernel) fetch(tag uint16, addr uint64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.active[tag] {
		k.protoErr("FETCH for active tag %d", tag)
	}
	k.active[tag], k.addrs[tag] = true, addr
	k.fetches++
	return nil
}

func (k *fakeKernel) commit(tag uint16, res int32, addr uint64) error {
	k.mu.Lock()
	if k.active[tag] {
		k.protoErr("COMMIT for active tag %d", tag)
	}
	if addr != k.addrs[tag] {
		k.protoErr("COMMIT tag %d addr %#x, fetched with %#x", tag, addr, k.addrs[tag])
	}
	k.active[tag] = true
	k.mu.Unlock()
	k.commits <- commitRec{tag, res, addr}
	return nil
}

func (k *fakeKernel) armWake() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.armed {
		k.protoErr("wake-up read armed twice")
	}
	k.armed = true
	return nil
}

func (k *fakeKernel) notify() {
	k.mu.Lock()
	k.woken = true
	k.cond.Broadcast()
	k.mu.Unlock()
}

func (k *fakeKernel) submit() error { return nil }

func (k *fakeKernel) wait() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for len(k.ready) == 0 && !(k.armed && k.woken) {
		k.cond.Wait()
	}
	if k.armed && k.woken {
		k.armed, k.woken = false, false
		k.ready = append(k.ready, uring.CQE{UserData: wakeUserData, Res: 8})
	}
	return nil
}

func (k *fakeKernel) reap(dst []uring.CQE) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := copy(dst, k.ready)
	k.ready = k.ready[n:]
	return n
}

func (k *fakeKernel) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	return nil
}

func (k *fakeKernel) desc(tag uint16) IODesc {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.descs[tag]
}

// complete finishes tag's outstanding command with res (a request when 0).
func (k *fakeKernel) complete(tag uint16, d IODesc, res int32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.active[tag] {
		k.t.Errorf("test bug: tag %d has no command outstanding", tag)
		return
	}
	k.descs[tag] = d
	k.active[tag] = false
	k.ready = append(k.ready, uring.CQE{UserData: uint64(tag), Res: res})
	k.cond.Broadcast()
}

func (k *fakeKernel) request(tag uint16, d IODesc) { k.complete(tag, d, IOResOK) }

// abort answers every outstanding command with -ENODEV, as STOP_DEV does.
func (k *fakeKernel) abort() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for tag, a := range k.active {
		if a {
			k.active[tag] = false
			k.ready = append(k.ready, uring.CQE{UserData: uint64(tag), Res: IOResAbort})
		}
	}
	k.cond.Broadcast()
}

func (k *fakeKernel) nextCommit(t *testing.T) commitRec {
	t.Helper()
	select {
	case c := <-k.commits:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no COMMIT_AND_FETCH_REQ within 5s")
		return commitRec{}
	}
}

func (k *fakeKernel) check(t *testing.T) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range k.protoErrs {
		t.Error("protocol error:", e)
	}
}

type funcTarget func(r *Request) int32

func (f funcTarget) Handle(r *Request) int32 { return f(r) }

type fakeQueue struct {
	q    *queue
	k    *fakeKernel
	mem  []byte
	per  int
	errc chan error
	log  *logtest.Hook
}

// fakeDeviceSize is the device the fake queues serve: 1 GiB.
const fakeDeviceSize = 1 << 30

// startFakeQueue primes a queue on a fake kernel and runs its loop.
func startFakeQueue(t *testing.T, depth, per int, target Target) *fakeQueue {
	t.Helper()
	logger, hook := logtest.NewNullLogger()
	k := newFakeKernel(t, depth)
	mem := make([]byte, depth*per)
	q := newQueue(2, depth, fakeDeviceSize, k, k.desc, newBufferSourceOn(mem, depth, per), target, logger)
	if err := q.prime(); err != nil {
		t.Fatal(err)
	}
	fq := &fakeQueue{q: q, k: k, mem: mem, per: per, errc: make(chan error, 1), log: hook}
	go func() {
		err := q.serve()
		q.release()
		fq.errc <- err
	}()
	t.Cleanup(func() { k.check(t) })
	return fq
}

func (f *fakeQueue) buf(tag uint16) []byte {
	return f.mem[int(tag)*f.per : int(tag+1)*f.per]
}

// stop aborts every tag and expects serve to return err.
func (f *fakeQueue) stop(t *testing.T, want error) {
	t.Helper()
	f.k.abort()
	select {
	case err := <-f.errc:
		if !errors.Is(err, want) && err != want {
			t.Fatalf("serve returned %v, want %v", err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return after every tag was aborted")
	}
	if !f.k.closed {
		t.Error("ring not closed after the queue exited")
	}
}

func rw(op Op, sector uint64, sectors uint32, flags ReqFlags) IODesc {
	return IODesc{OpFlags: uint32(op) | uint32(flags), StartSector: sector, NrSectors: sectors}
}

// ramTarget is a RAM disk: the simplest correct target.
type ramTarget struct {
	mu   sync.Mutex
	disk []byte
	seen []Request
}

func (r *ramTarget) Handle(req *Request) int32 {
	// Overlapping requests may run concurrently; a disk gives no ordering
	// between them, but the test's byte slice must not race.
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, Request{Op: req.Op, Flags: req.Flags, Sector: req.Sector, Sectors: req.Sectors, Queue: req.Queue, Tag: req.Tag})
	span := r.disk[req.Offset() : req.Offset()+req.Bytes()]
	switch req.Op {
	case OpRead:
		if n, err := req.Data.WriteAt(span, 0); err != nil || n != len(span) {
			return -int32(unix.EIO)
		}
	case OpWrite:
		if n, err := req.Data.ReadAt(span, 0); err != nil || n != len(span) {
			return -int32(unix.EIO)
		}
	case OpFlush:
		return 0
	}
	return int32(req.Bytes())
}

func TestQueuePrimeFetchesEveryTag(t *testing.T) {
	fq := startFakeQueue(t, 8, 4096, &ramTarget{disk: make([]byte, 1<<20)})
	fq.k.mu.Lock()
	if fq.k.fetches != 8 || !fq.k.armed {
		t.Errorf("fetches %d armed %v", fq.k.fetches, fq.k.armed)
	}
	for tag := uint16(0); tag < 8; tag++ {
		want := uint64(uintptr(unsafe.Pointer(&fq.mem[int(tag)*4096])))
		if fq.k.addrs[tag] != want {
			t.Errorf("tag %d fetched with addr %#x, want its buffer %#x", tag, fq.k.addrs[tag], want)
		}
	}
	fq.k.mu.Unlock()
	fq.stop(t, nil)
}

func TestQueueReadWrite(t *testing.T) {
	ram := &ramTarget{disk: make([]byte, 1<<20)}
	fq := startFakeQueue(t, 4, 8192, ram)
	pattern := bytes.Repeat([]byte("0123456789abcdef"), 256) // 4 KiB
	copy(fq.buf(1), pattern)                                 // the "kernel" copied the client's write in

	fq.k.request(1, rw(OpWrite, 16, 8, ReqFUA))
	if c := fq.k.nextCommit(t); c.tag != 1 || c.res != 4096 {
		t.Fatalf("write commit = %+v", c)
	}
	if !bytes.Equal(ram.disk[16*512:16*512+4096], pattern) {
		t.Fatal("write did not reach the target's disk at sector 16")
	}
	fq.k.request(3, rw(OpRead, 16, 8, 0))
	if c := fq.k.nextCommit(t); c.tag != 3 || c.res != 4096 {
		t.Fatalf("read commit = %+v", c)
	}
	if !bytes.Equal(fq.buf(3)[:4096], pattern) {
		t.Fatal("read did not fill the tag's buffer")
	}
	fq.k.request(0, rw(OpFlush, 0, 0, 0))
	if c := fq.k.nextCommit(t); c.tag != 0 || c.res != 0 {
		t.Fatalf("flush commit = %+v", c)
	}
	ram.mu.Lock()
	first := ram.seen[0]
	ram.mu.Unlock()
	if first.Op != OpWrite || first.Flags != ReqFUA || first.Sector != 16 || first.Sectors != 8 || first.Queue != 2 || first.Tag != 1 {
		t.Errorf("target saw %+v", first)
	}
	fq.stop(t, nil)
}

func TestQueueUnknownOpIsRefused(t *testing.T) {
	var calls atomic.Int32
	fq := startFakeQueue(t, 2, 4096, funcTarget(func(*Request) int32 { calls.Add(1); return 0 }))
	for _, op := range []uint32{4 /* WRITE_SAME */, 13 /* ZONE_APPEND */, 0xff} {
		fq.k.request(1, IODesc{OpFlags: op, NrSectors: 8})
		if c := fq.k.nextCommit(t); c.res != -int32(unix.EOPNOTSUPP) {
			t.Errorf("op %d answered %d, want -EOPNOTSUPP", op, c.res)
		}
	}
	if calls.Load() != 0 {
		t.Errorf("target called %d times for unknown ops", calls.Load())
	}
	fq.stop(t, nil)
}

func TestQueuePanicBecomesEIO(t *testing.T) {
	fq := startFakeQueue(t, 2, 4096, funcTarget(func(r *Request) int32 {
		if r.Sector == 666 {
			panic("boom")
		}
		return int32(r.Bytes())
	}))
	fq.k.request(0, rw(OpRead, 666, 1, 0))
	if c := fq.k.nextCommit(t); c.res != -int32(unix.EIO) {
		t.Fatalf("panicking request answered %d", c.res)
	}
	fq.k.request(0, rw(OpRead, 1, 1, 0))
	if c := fq.k.nextCommit(t); c.res != 512 {
		t.Fatalf("request after the panic answered %d", c.res)
	}
	fq.stop(t, nil)
	found := false
	for _, e := range fq.log.AllEntries() {
		if e.Level == logrus.ErrorLevel && bytes.Contains([]byte(e.Message), []byte("boom")) {
			found = true
		}
	}
	if !found {
		t.Error("panic was not logged")
	}
}

func TestQueueSanitizesResults(t *testing.T) {
	results := map[uint64]int32{1: 0, 2: 1 << 20, 3: 7, 4: -int32(unix.ENOSPC)}
	fq := startFakeQueue(t, 2, 4096, funcTarget(func(r *Request) int32 { return results[r.Sector] }))
	cases := []struct {
		d    IODesc
		want int32
	}{
		{rw(OpWrite, 1, 8, 0), -int32(unix.EIO)},          // 0 bytes: would be requeued forever
		{rw(OpRead, 2, 8, 0), 4096},                       // more than asked: clamped
		{rw(OpDiscard, 3, 8, 0), 0},                       // positive for a non-data op: 0
		{rw(OpWriteZeroes, 4, 8, 0), -int32(unix.ENOSPC)}, // errors pass through
	}
	for _, c := range cases {
		fq.k.request(1, c.d)
		if got := fq.k.nextCommit(t); got.res != c.want {
			t.Errorf("%s sector %d: committed %d, want %d", Op(c.d.Op()), c.d.StartSector, got.res, c.want)
		}
	}
	fq.stop(t, nil)
}

func TestQueueOversizedRequestFails(t *testing.T) {
	var calls atomic.Int32
	fq := startFakeQueue(t, 2, 4096, funcTarget(func(*Request) int32 { calls.Add(1); return 0 }))
	fq.k.request(1, rw(OpRead, 0, 9, 0)) // 4608 bytes > 4096-byte buffer
	if c := fq.k.nextCommit(t); c.res != -int32(unix.EIO) {
		t.Fatalf("oversized request answered %d", c.res)
	}
	if calls.Load() != 0 {
		t.Error("target called for a request that does not fit its buffer")
	}
	fq.stop(t, nil)
}

// TestQueueRefusesRequestsBeyondTheDevice: a request whose sectors run
// past the device, or whose sector plus length wraps (sector 2^55 made
// Offset 0), is answered -EIO without reaching the target; the last
// sectors of the device and a FLUSH still do.
func TestQueueRefusesRequestsBeyondTheDevice(t *testing.T) {
	var calls atomic.Int32
	fq := startFakeQueue(t, 2, 4096, funcTarget(func(r *Request) int32 { calls.Add(1); return int32(r.Bytes()) }))
	last := uint64(fakeDeviceSize>>9) - 8
	for _, op := range []Op{OpRead, OpWrite, OpDiscard, OpWriteZeroes} {
		for _, sector := range []uint64{1<<55 - 1, 1 << 55, 1 << 54, ^uint64(0), last + 1} {
			fq.k.request(1, rw(op, sector, 8, 0))
			if c := fq.k.nextCommit(t); c.res != -int32(unix.EIO) {
				t.Errorf("%s at sector %d answered %d, want -EIO", op, sector, c.res)
			}
		}
	}
	if calls.Load() != 0 {
		t.Errorf("target called %d times for requests beyond the device", calls.Load())
	}
	fq.k.request(1, rw(OpWrite, last, 8, 0))
	if c := fq.k.nextCommit(t); c.res != 4096 {
		t.Errorf("write of the last sectors answered %d", c.res)
	}
	fq.k.request(1, rw(OpFlush, ^uint64(0), 0, 0))
	if c := fq.k.nextCommit(t); c.res != 0 {
		t.Errorf("flush answered %d", c.res)
	}
	fq.stop(t, nil)
}

// The loop gives its time slice back to the Go scheduler every schedSlice
// while it serves, rather than waiting for sysmon to preempt it, and never
// more often than that.
func TestQueueYieldsEverySlice(t *testing.T) {
	fq := startFakeQueue(t, 2, 4096, funcTarget(func(r *Request) int32 { return int32(r.Bytes()) }))
	start := time.Now()
	for time.Since(start) < 8*schedSlice {
		fq.k.request(0, rw(OpRead, 0, 1, 0))
		if c := fq.k.nextCommit(t); c.tag != 0 || c.res != 512 {
			t.Fatalf("commit = %+v", c)
		}
		time.Sleep(schedSlice / 10)
	}
	elapsed := time.Since(start)
	fq.stop(t, nil)
	st := fq.q.snapshot()
	// Each yield is at least schedSlice after the last; the loop runs
	// often enough (a request every tenth of a slice) to reach most.
	if max := uint64(elapsed / schedSlice); st.Yields < 4 || st.Yields > max {
		t.Fatalf("%d yields in %v of serving (%d requests), want 4..%d", st.Yields, elapsed, st.Requests, max)
	}
}

func TestQueueSlowTargetDoesNotBlockLoop(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	fq := startFakeQueue(t, 4, 4096, funcTarget(func(r *Request) int32 {
		if r.Tag == 0 {
			close(started)
			<-release
		}
		return int32(r.Bytes())
	}))
	fq.k.request(0, rw(OpRead, 0, 1, 0))
	<-started
	for i := 0; i < 10; i++ {
		fq.k.request(1, rw(OpRead, 8, 1, 0))
		if c := fq.k.nextCommit(t); c.tag != 1 || c.res != 512 {
			t.Fatalf("commit while tag 0 blocks = %+v", c)
		}
	}
	// STOP_DEV aborts only tags the kernel holds; tag 0 is still at a worker,
	// so the queue must keep running until it is committed and aborted too.
	fq.k.abort()
	select {
	case err := <-fq.errc:
		t.Fatalf("serve returned (%v) while a request was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if c := fq.k.nextCommit(t); c.tag != 0 || c.res != 512 {
		t.Fatalf("late commit = %+v", c)
	}
	fq.stop(t, nil)
}

func TestQueueFailedTagIsRetired(t *testing.T) {
	fq := startFakeQueue(t, 4, 4096, funcTarget(func(r *Request) int32 { return int32(r.Bytes()) }))
	fq.k.complete(2, IODesc{}, -int32(unix.EINVAL))
	fq.k.request(1, rw(OpWrite, 0, 1, 0))
	if c := fq.k.nextCommit(t); c.tag != 1 {
		t.Fatalf("commit = %+v", c)
	}
	fq.k.mu.Lock()
	if fq.k.active[2] {
		t.Error("failed tag was resubmitted")
	}
	fq.k.mu.Unlock()
	if fq.q.live != 3 {
		t.Errorf("live tags = %d, want 3", fq.q.live)
	}
	fq.stop(t, nil)
}

func TestQueueForceQuit(t *testing.T) {
	fq := startFakeQueue(t, 2, 4096, funcTarget(func(r *Request) int32 { return 0 }))
	fq.q.forceQuit()
	select {
	case err := <-fq.errc:
		if !errors.Is(err, errQueueQuit) {
			t.Fatalf("serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("forceQuit did not stop the loop")
	}
}

// TestQueueStress runs many concurrent requests with random latencies; run
// with -race it checks the loop/worker hand-off.
func TestQueueStress(t *testing.T) {
	const depth, total = 32, 3000
	ram := &ramTarget{disk: make([]byte, 4<<20)}
	var inflight, peak atomic.Int32
	target := funcTarget(func(r *Request) int32 {
		n := inflight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if r.Tag%3 == 0 {
			time.Sleep(time.Duration(r.Sector%200) * time.Microsecond)
		}
		inflight.Add(-1)
		return ram.Handle(r)
	})
	fq := startFakeQueue(t, depth, 8192, target)
	rng := rand.New(rand.NewSource(1))
	free := make(chan uint16, depth)
	for tag := uint16(0); tag < depth; tag++ {
		free <- tag
	}
	expect := make([]int32, depth)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // collect commits and hand tags back
		defer wg.Done()
		for i := 0; i < total; i++ {
			c := fq.k.nextCommit(t)
			if c.res != expect[c.tag] {
				t.Errorf("tag %d committed %d, want %d", c.tag, c.res, expect[c.tag])
			}
			free <- c.tag
		}
	}()
	for i := 0; i < total; i++ {
		tag := <-free
		sectors := uint32(1 + rng.Intn(16))
		op := OpRead
		if rng.Intn(2) == 0 {
			op = OpWrite
		}
		expect[tag] = int32(sectors) << 9
		fq.k.request(tag, rw(op, uint64(rng.Intn(4000)), sectors, 0))
	}
	wg.Wait()
	fq.stop(t, nil)
	if peak.Load() < 2 {
		t.Errorf("requests never overlapped (peak %d): workers are not concurrent", peak.Load())
	}
}

func TestBufDataBounds(t *testing.T) {
	d := &bufData{b: []byte("hello world")}
	p := make([]byte, 5)
	if n, err := d.ReadAt(p, 6); n != 5 || err != nil || string(p) != "world" {
		t.Errorf("ReadAt = %d %v %q", n, err, p)
	}
	if n, err := d.ReadAt(p, 8); n != 3 || err != io.EOF {
		t.Errorf("short ReadAt = %d %v", n, err)
	}
	if n, err := d.ReadAt(p, 20); n != 0 || err != io.EOF {
		t.Errorf("ReadAt past end = %d %v", n, err)
	}
	if _, err := d.ReadAt(p, -1); err == nil {
		t.Error("negative offset accepted")
	}
	if n, err := d.WriteAt([]byte("HELLO"), 0); n != 5 || err != nil || string(d.b) != "HELLO world" {
		t.Errorf("WriteAt = %d %v %q", n, err, d.b)
	}
	if n, err := d.WriteAt([]byte("XXXXX"), 9); n != 2 || !errors.Is(err, errOutOfRange) {
		t.Errorf("WriteAt past end = %d %v", n, err)
	}
	if n, err := d.WriteAt([]byte("X"), 50); n != 0 || !errors.Is(err, errOutOfRange) {
		t.Errorf("WriteAt far past end = %d %v", n, err)
	}
}
