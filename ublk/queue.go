package ublk

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/btrfsdio/btrfsdio/internal/uring"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// queueRing is the kernel side of one queue as the dispatch loop sees it: the
// real one is kernelRing (io_uring on /dev/ublkcN); tests plug in a fake
// kernel. Every method except notify is called from the queue goroutine only.
type queueRing interface {
	fetch(tag uint16, addr uint64) error                // queue UBLK_U_IO_FETCH_REQ
	commit(tag uint16, result int32, addr uint64) error // queue UBLK_U_IO_COMMIT_AND_FETCH_REQ
	armWake() error                                     // queue the read that notify completes
	notify()                                            // wake the loop; any goroutine
	submit() error                                      // hand queued commands to the kernel
	wait() error                                        // submit, then block for at least one CQE
	reap(dst []uring.CQE) int                           // take ready CQEs
	close() error                                       // cancel whatever is left and free the ring
}

// fileRing is what the queue needs of a ring to do a FileTarget's IO itself;
// kernelRing has it, the tests' fake kernel need not.
type fileRing interface {
	// rw queues op for tag, submitted with the next wait; its CQE's user
	// data is fileUserData | tag.
	rw(tag uint16, op rwOp) error
}

// rwOp is the file read or write of a request done in the ring.
type rwOp struct {
	write bool
	fd    int
	buf   []byte
	off   uint64
}

// enterCounter is a ring that counts its io_uring_enter calls.
type enterCounter interface{ enters() uint64 }

// wakeUserData marks the CQE of the wake-up read, fileUserData those of a
// tag's file IO; command CQEs carry their tag alone.
const (
	wakeUserData = 1 << 63
	fileUserData = 1 << 62
)

// errQueueQuit is returned by serve when the device forced the queue out.
var errQueueQuit = errors.New("ublk: queue stopped without the kernel aborting it")

// completion is a worker's answer for one tag.
type completion struct {
	tag uint16
	res int32
}

// tagState tracks who owns a tag's command.
type tagState uint8

const (
	tagInKernel tagState = iota // FETCH or COMMIT_AND_FETCH outstanding
	tagInWorker                 // request handed to a worker goroutine
	tagInRing                   // FileTarget IO in the queue's own ring
	tagDead                     // aborted (-ENODEV) or failed: never resubmitted
)

// queue is one ublk hardware queue (ublksrv's struct ublksrv_queue): a
// dispatch loop that owns the ring, plus worker goroutines running the target.
// Keeping slow target work off the loop matters because the loop's thread is
// the queue's ubq_daemon: only it may submit commands for this queue.
type queue struct {
	id     uint16
	depth  int
	size   uint64 // device bytes: requests beyond are refused
	ring   queueRing
	desc   func(tag uint16) IODesc
	bufs   dataSource
	target Target
	log    logrus.FieldLogger

	done     chan completion // workers -> loop; never blocks (one per tag at most)
	workers  sync.WaitGroup
	quit     atomic.Bool
	reqs     []Request
	state    []tagState
	live     int // tags not dead
	cqes     []uring.CQE
	wakeErrs int
	file     *fileIO // nil: every request goes to a worker

	// wakePending is set by the worker that writes the eventfd and cleared
	// by the loop when the wake-up arrives: completions finishing in the
	// meantime ride on that one wake-up instead of writing it again.
	wakePending atomic.Bool
	sliceStart  time.Time  // when the loop last yielded to the Go scheduler
	counters    QueueStats // this queue's own counters (queue goroutine only)
	notifies    atomic.Uint64

	stats       *IOStats       // the device's counters (nil: not counted)
	closers     []func() error // extra resources freed by release
	releaseOnce sync.Once
	releaseErr  error
}

func newQueue(id uint16, depth int, size uint64, ring queueRing, desc func(uint16) IODesc, bufs dataSource, target Target, log logrus.FieldLogger) *queue {
	return &queue{
		id: id, depth: depth, size: size, ring: ring, desc: desc, bufs: bufs, target: target,
		log:   log.WithField("queue", id),
		done:  make(chan completion, depth),
		reqs:  make([]Request, depth),
		state: make([]tagState, depth),
		cqes:  make([]uring.CQE, 2*depth+1),
	}
}

// QueueStats count what a queue did, for a per-request profile (no kernel
// counterpart; ublksrv has no such counters).
type QueueStats struct {
	Requests  uint64 // requests fetched from the kernel
	Enters    uint64 // io_uring_enter calls of the queue's ring
	Handoffs  uint64 // requests handed to a worker goroutine
	RingIO    uint64 // requests done in the queue's own ring (FileTarget)
	Fallbacks uint64 // of those, redone by Handle after a failed or short transfer
	Wakeups   uint64 // eventfd wake-ups the loop consumed
	Notifies  uint64 // eventfd writes by workers
	Yields    uint64 // time slices the loop gave back to the Go scheduler
}

// Add sums two QueueStats (no kernel counterpart).
func (s *QueueStats) Add(o QueueStats) {
	s.Requests += o.Requests
	s.Enters += o.Enters
	s.Handoffs += o.Handoffs
	s.RingIO += o.RingIO
	s.Fallbacks += o.Fallbacks
	s.Wakeups += o.Wakeups
	s.Notifies += o.Notifies
	s.Yields += o.Yields
}

// snapshot returns the queue's stats; from the queue goroutine or after it ended.
func (q *queue) snapshot() QueueStats {
	st := q.counters
	st.Notifies = q.notifies.Load()
	if e, ok := q.ring.(enterCounter); ok {
		st.Enters = e.enters()
	}
	return st
}

// fileIO is the state of a FileTarget's requests done in the queue's ring.
type fileIO struct {
	fd       int
	writable bool
	cdev     int    // /dev/ublkcN under USER_COPY, else -1
	mem      []byte // depth buffers of per bytes each
	per      int
	unmap    bool
	// Under USER_COPY any buffer will do, so a tag takes the one freed
	// last (a stack): at low queue depth the same few stay in the cache
	// and mapped, instead of first-touch faults on one per tag.
	free []int   // buffer slots, the most recently freed last
	slot []int   // the slot each tag holds, -1 if none
	want []int32 // bytes of the request
	// start is when the file IO was queued, for the device's IOStats.
	start []time.Time
}

// newFileIO sets up the ring path for t, or returns nil when it cannot be
// used (a ring without it, a target that is not a FileTarget). Under
// USER_COPY it maps a buffer of maxIO bytes per tag; otherwise the request
// buffers the kernel copies to and from are used directly, as ublksrv does.
func newFileIO(t Target, ring queueRing, bufs dataSource, cdev, depth, maxIO int) (*fileIO, error) {
	ft, ok := t.(FileTarget)
	if _, rok := ring.(fileRing); !ok || !rok || os.Getenv(RingIOEnv) == "0" {
		return nil, nil
	}
	fd, writable := ft.RingFile()
	f := &fileIO{fd: fd, writable: writable, cdev: -1,
		want: make([]int32, depth), start: make([]time.Time, depth)}
	switch b := bufs.(type) {
	case *bufferSource:
		f.mem, f.per = b.mem, b.per
	case *userCopySource:
		mem, err := unix.Mmap(-1, 0, depth*maxIO, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			return nil, fmt.Errorf("ublk: mmap %d ring buffers of %d bytes: %w", depth, maxIO, err)
		}
		f.mem, f.per, f.unmap, f.cdev = mem, maxIO, true, cdev
		f.free, f.slot = make([]int, depth), make([]int, depth)
		for i := range f.free {
			f.free[i] = depth - 1 - i // slot 0 on top
			f.slot[i] = -1
		}
	default:
		return nil, nil
	}
	return f, nil
}

// RingIOEnv set to "0" in the environment turns the FileTarget ring path
// off: every request then goes to a worker, as the btrfsdio target's do.
// For side-by-side measurements (bench-loop's noring rows) and bisecting.
const RingIOEnv = "BTRFSDIO_UBLK_RING_IO"

// buf returns n bytes of buffer for tag: its own slot with the kernel's
// buffers, else the slot freed last.
func (f *fileIO) buf(tag uint16, n int) []byte {
	if f.free != nil {
		f.slot[tag] = f.free[len(f.free)-1]
		f.free = f.free[:len(f.free)-1]
	}
	return f.held(tag, n)
}

// held returns the first n bytes of the buffer tag holds.
func (f *fileIO) held(tag uint16, n int) []byte {
	i := int(tag)
	if f.slot != nil {
		i = f.slot[tag]
	}
	return f.mem[i*f.per : i*f.per+n]
}

// put gives tag's slot back once its file IO has completed.
func (f *fileIO) put(tag uint16) {
	if f.slot == nil || f.slot[tag] < 0 {
		return
	}
	f.free = append(f.free, f.slot[tag])
	f.slot[tag] = -1
}

func (f *fileIO) close() error {
	if !f.unmap || f.mem == nil {
		return nil
	}
	err := unix.Munmap(f.mem)
	f.mem = nil
	return err
}

// prime queues a FETCH_REQ for every tag and the wake-up read, and submits
// them in one io_uring_enter (ublksrv_queue_init + ublksrv_submit_fetch_commands).
func (q *queue) prime() error {
	for tag := 0; tag < q.depth; tag++ {
		if err := q.ring.fetch(uint16(tag), q.bufs.addr(uint16(tag))); err != nil {
			return fmt.Errorf("ublk: queue %d: FETCH_REQ tag %d: %w", q.id, tag, err)
		}
	}
	q.live = q.depth
	if err := q.ring.armWake(); err != nil {
		return fmt.Errorf("ublk: queue %d: arm wake-up: %w", q.id, err)
	}
	if err := q.ring.submit(); err != nil {
		return fmt.Errorf("ublk: queue %d: submit fetches: %w", q.id, err)
	}
	return nil
}

// serve runs the loop (ublksrv_process_io) until every tag has been aborted,
// which is how the kernel says STOP_DEV is done with this queue.
func (q *queue) serve() error {
	q.sliceStart = time.Now()
	for q.live > 0 {
		q.yieldIfSliceEnded()
		if err := q.ring.wait(); err != nil {
			return fmt.Errorf("ublk: queue %d: %w", q.id, err)
		}
		if q.quit.Load() {
			return errQueueQuit
		}
		n := q.ring.reap(q.cqes)
		for _, c := range q.cqes[:n] {
			if err := q.handleCQE(c); err != nil {
				return err
			}
		}
		if err := q.commitDone(); err != nil {
			return err
		}
	}
	return nil
}

// schedSlice is how long the loop runs between its own yields to the Go
// scheduler. The loop never blocks in Go: it waits in io_uring_enter on a
// locked thread, so to the scheduler its time slice never ends. Once a slice
// is 10 ms old (the runtime's forcePreemptNS) sysmon preempts the goroutine
// with a signal and, until that preemption lands in Go code, takes its P
// away each time it finds it in io_uring_enter, so every return from the
// syscall has to find a P again and wake sysmon. Yielding before that, at a
// point of the loop's choosing, costs one hand-off of the locked thread
// (a futex wake each way) per slice. In the VM (scripts/bench-vm-loop.sh,
// loop target, 4 KiB random reads at QD32) the server's CPU per request
// went from 124 to 85 us and its IOPS up 1.3x; 1 ms slices cost more
// than 5 ms ones.
const schedSlice = 5 * time.Millisecond

// yieldIfSliceEnded starts a new time slice once the current one is
// schedSlice old. No kernel counterpart: ublksrv's loop is a C thread.
func (q *queue) yieldIfSliceEnded() {
	if time.Since(q.sliceStart) < schedSlice {
		return
	}
	runtime.Gosched()
	q.sliceStart = time.Now()
	q.counters.Yields++
}

// handleCQE processes one completion: a new request, an abort, or a wake-up.
func (q *queue) handleCQE(c uring.CQE) error {
	if c.UserData == wakeUserData {
		return q.onWake(c.Res)
	}
	if c.UserData&fileUserData != 0 {
		return q.onFileCQE(c)
	}
	tag := uint16(c.UserData)
	if c.UserData >= uint64(q.depth) || q.state[tag] != tagInKernel {
		q.log.Errorf("ublk: completion for tag %d that has no command outstanding (res %d)", c.UserData, c.Res)
		return nil
	}
	switch c.Res {
	case IOResOK:
		return q.dispatch(tag)
	case IOResAbort:
		q.retire(tag)
	default:
		// -EINVAL/-EBUSY here mean a protocol error on our side: the tag
		// is lost, but the queue keeps serving the others.
		q.log.WithField("tag", tag).Errorf("ublk: io command failed: %s", resString(c.Res))
		q.retire(tag)
	}
	return nil
}

func (q *queue) retire(tag uint16) {
	q.state[tag] = tagDead
	q.live--
}

// onWake re-arms the wake-up read; completions are collected by commitDone.
func (q *queue) onWake(res int32) error {
	q.counters.Wakeups++
	q.wakePending.Store(false)
	if res < 0 && res != -int32(unix.EINTR) && res != -int32(unix.EAGAIN) {
		q.wakeErrs++
		q.log.Errorf("ublk: wake-up read failed: %s", resString(res))
		if q.wakeErrs > 64 {
			return fmt.Errorf("ublk: queue %d: wake-up read keeps failing: %s", q.id, resString(res))
		}
	}
	if err := q.ring.armWake(); err != nil {
		return fmt.Errorf("ublk: queue %d: re-arm wake-up: %w", q.id, err)
	}
	return nil
}

// dispatch decodes the tag's descriptor and hands the request to a worker.
// The descriptor is copied out first: the kernel rewrites it once the tag is
// committed.
func (q *queue) dispatch(tag uint16) error {
	q.counters.Requests++
	d := q.desc(tag)
	req := &q.reqs[tag]
	*req = Request{
		Op: Op(d.Op()), Flags: ReqFlags(d.Flags()), Sector: d.StartSector,
		Sectors: d.NrSectors, Queue: q.id, Tag: tag,
	}
	switch req.Op {
	case OpRead, OpWrite, OpDiscard, OpWriteZeroes:
		if !req.InRange(q.size) {
			// The block layer never sends these (bio_check_eod): a
			// sector near 2^55 would wrap Offset to the device start.
			q.log.WithField("tag", tag).Errorf("ublk: %s of %d sectors at sector %d is beyond the %d-byte device", req.Op, req.Sectors, req.Sector, q.size)
			return q.commit(tag, -int32(unix.EIO))
		}
	}
	switch req.Op {
	case OpRead, OpWrite:
		data, err := q.bufs.data(tag, req.Bytes())
		if err != nil {
			q.log.WithField("tag", tag).Errorf("ublk: %s: %v", req.Op, err)
			return q.commit(tag, -int32(unix.EIO))
		}
		req.Data = data
		if q.file != nil {
			if ok, err := q.ringIO(tag, req); ok || err != nil {
				return err
			}
		}
	case OpFlush, OpDiscard, OpWriteZeroes:
	default:
		return q.commit(tag, -int32(unix.EOPNOTSUPP))
	}
	q.handOff(req)
	return nil
}

// handOff runs the target for req on a worker goroutine.
func (q *queue) handOff(req *Request) {
	q.counters.Handoffs++
	q.state[req.Tag] = tagInWorker
	q.workers.Add(1)
	go q.work(req)
}

// ringIO queues a FileTarget's READ or WRITE in the queue's ring. Under
// USER_COPY the copy between the request and the buffer (pread of a WRITE's
// data before the file write, pwrite of a READ's after the file read) is a
// syscall on this thread, not a linked SQE: /dev/ublkcN has no
// FMODE_NOWAIT, so io_uring would punt it to an io-wq thread, a wake-up and
// a thread switch per request. It reports false for what it leaves to
// Handle: FUA writes, writes to a read-only file, and a WRITE whose copy
// from the request failed.
func (q *queue) ringIO(tag uint16, req *Request) (bool, error) {
	f := q.file
	n := req.Bytes()
	if req.Op == OpWrite && (!f.writable || req.Flags&ReqFUA != 0) || n > int64(f.per) {
		return false, nil
	}
	buf := f.buf(tag, int(n))
	if req.Op == OpWrite && f.cdev >= 0 {
		if m, err := unix.Pread(f.cdev, buf, UserCopyOffset(q.id, tag)); err != nil || int64(m) != n {
			f.put(tag)
			return false, nil
		}
	}
	f.want[tag], f.start[tag] = int32(n), time.Now()
	q.state[tag] = tagInRing
	q.counters.RingIO++
	op := rwOp{write: req.Op == OpWrite, fd: f.fd, buf: buf, off: uint64(req.Offset())}
	if err := q.ring.(fileRing).rw(tag, op); err != nil {
		return true, fmt.Errorf("ublk: queue %d: file IO tag %d: %w", q.id, tag, err)
	}
	return true, nil
}

// onFileCQE ends a tag's file IO. A full transfer (and, for a READ under
// USER_COPY, its copy to the request) commits the request; anything else
// hands it to Handle, which redoes it whole with the target's own error and
// EOF handling.
func (q *queue) onFileCQE(c uring.CQE) error {
	tag := uint16(c.UserData)
	if int(tag) >= q.depth || q.state[tag] != tagInRing {
		q.log.Errorf("ublk: file IO completion for tag %d that has none outstanding (res %d)", tag, c.Res)
		return nil
	}
	f := q.file
	req := &q.reqs[tag]
	ok := c.Res == f.want[tag]
	if ok && req.Op == OpRead && f.cdev >= 0 {
		m, err := unix.Pwrite(f.cdev, f.held(tag, int(c.Res)), UserCopyOffset(q.id, tag))
		ok = err == nil && m == int(c.Res)
	}
	f.put(tag)
	if !ok {
		q.counters.Fallbacks++
		q.handOff(req)
		return nil
	}
	q.stats.record(req, f.want[tag], time.Since(f.start[tag]))
	return q.commit(tag, f.want[tag])
}

// work runs the target for one request on a worker goroutine.
func (q *queue) work(req *Request) {
	defer q.workers.Done()
	start := time.Now()
	res := q.handle(req)
	q.stats.record(req, res, time.Since(start))
	q.done <- completion{tag: req.Tag, res: res}
	if q.wakePending.CompareAndSwap(false, true) {
		q.notifies.Add(1)
		q.ring.notify()
	}
}

// handle calls the target, turning a panic into -EIO.
func (q *queue) handle(req *Request) (res int32) {
	defer func() {
		if p := recover(); p != nil {
			q.log.WithFields(logrus.Fields{"tag": req.Tag, "op": req.Op, "sector": req.Sector}).
				Errorf("ublk: target panicked: %v\n%s", p, debug.Stack())
			res = -int32(unix.EIO)
		}
	}()
	return q.check(req, q.target.Handle(req))
}

// check guards the kernel against results it mishandles: a READ/WRITE that
// reports 0 bytes is requeued forever by blk_update_request, and more bytes
// than asked trip a WARN.
func (q *queue) check(req *Request, res int32) int32 {
	if res < 0 {
		return res
	}
	switch req.Op {
	case OpRead, OpWrite:
		n := int32(req.Bytes())
		if res == 0 && n > 0 {
			q.log.WithFields(logrus.Fields{"tag": req.Tag, "op": req.Op}).Error("ublk: target returned 0 bytes; answering -EIO")
			return -int32(unix.EIO)
		}
		return min(res, n)
	}
	return 0
}

// commitDone queues COMMIT_AND_FETCH_REQ for every finished request.
func (q *queue) commitDone() error {
	for {
		select {
		case c := <-q.done:
			if err := q.commit(c.tag, c.res); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

func (q *queue) commit(tag uint16, res int32) error {
	q.state[tag] = tagInKernel
	if err := q.ring.commit(tag, res, q.bufs.addr(tag)); err != nil {
		return fmt.Errorf("ublk: queue %d: COMMIT_AND_FETCH_REQ tag %d: %w", q.id, tag, err)
	}
	return nil
}

// forceQuit makes serve return at its next wake-up, for a kernel that never
// aborts the tags. Safe from any goroutine.
func (q *queue) forceQuit() {
	q.quit.Store(true)
	q.ring.notify()
}

// release waits for workers still running (so nothing touches the eventfd or
// the request windows afterwards), then closes the ring, which cancels any
// command still outstanding, and frees the buffers and mappings.
func (q *queue) release() error {
	q.releaseOnce.Do(func() {
		q.workers.Wait()
		errs := []error{q.ring.close(), q.bufs.close()}
		if q.file != nil {
			errs = append(errs, q.file.close())
		}
		for _, c := range q.closers {
			errs = append(errs, c())
		}
		q.releaseErr = errors.Join(errs...)
	})
	return q.releaseErr
}

// resString renders a CQE result: an errno name for negative values.
func resString(res int32) string {
	if res < 0 {
		return fmt.Sprintf("%d (%v)", res, unix.Errno(-res))
	}
	return fmt.Sprint(res)
}

// kernelRing is queueRing on a real io_uring and /dev/ublkcN. 64-byte SQEs
// suffice: struct ublksrv_io_cmd is 16 bytes. It must be created, entered
// and closed on the queue's own locked OS thread: the ring is single-issuer
// and registered in that thread's table of rings.
type kernelRing struct {
	ring   *uring.Ring
	cdev   int
	qid    uint16
	efd    int
	efdBuf []byte // target of the wake-up read; heap memory that outlives it
	// fixed holds the fds of the ring's registered files, by index: the
	// char device, the eventfd, then the target's backing files. Empty
	// when the kernel refused to register them.
	fixed []int
}

// Ring setups, best first, as ublksrv's targets set up their queues:
// completions (task work, how ublk delivers requests) run only when the
// queue thread waits in io_uring_enter, batched, rather than interrupting
// it (DEFER_TASKRUN, which needs SINGLE_ISSUER); COOP_TASKRUN alone on
// kernels before 6.1.
var ringSetups = []uint32{
	uring.SetupCoopTaskrun | uring.SetupSingleIssuer | uring.SetupDeferTaskrun,
	uring.SetupCoopTaskrun,
	0,
}

// newKernelRing sets up queue qid's ring (ublksrv_queue_init): the ring,
// its wake-up eventfd, the registered files (cdev, the eventfd and files,
// as ublksrv registers its target's fds) and the ring's own registration
// in the calling thread.
func newKernelRing(cdev int, qid uint16, depth int, files ...int) (*kernelRing, error) {
	// Room for an SQE per tag (its command or its file IO) and the
	// wake-up read, so a loop iteration never has to submit early.
	entries := uint32(depth + 1)
	var ring *uring.Ring
	var err error
	for _, flags := range ringSetups {
		if ring, err = uring.New(entries, flags); !errors.Is(err, unix.EINVAL) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ublk: queue %d ring: %w", qid, err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		ring.Close()
		return nil, fmt.Errorf("ublk: queue %d eventfd: %w", qid, err)
	}
	k := &kernelRing{ring: ring, cdev: cdev, qid: qid, efd: efd, efdBuf: make([]byte, 8)}
	// Both registrations only save the kernel a lookup per SQE and per
	// io_uring_enter; without them the ring works on plain fds.
	k.registerFiles(append([]int{cdev, efd}, files...))
	ring.RegisterRingFd()
	return k, nil
}

func (k *kernelRing) registerFiles(fds []int) {
	table := make([]int32, len(fds))
	for i, fd := range fds {
		table[i] = int32(fd) // -1 (no char device, in tests) leaves the slot empty
	}
	if k.ring.RegisterFiles(table) == nil {
		k.fixed = fds
	}
}

// setFile points s at fd: its registered index when it has one.
func (k *kernelRing) setFile(s *uring.SQE, fd int) {
	for i, f := range k.fixed {
		if f == fd && fd >= 0 {
			s.Fd, s.Flags = int32(i), s.Flags|uring.SQEFixedFile
			return
		}
	}
}

// sqe returns a free SQE, submitting queued ones first if the ring is full.
func (k *kernelRing) sqe() (*uring.SQE, error) {
	if s := k.ring.NextSQE(); s != nil {
		return s, nil
	}
	if _, err := k.ring.Submit(); err != nil {
		return nil, err
	}
	if s := k.ring.NextSQE(); s != nil {
		return s, nil
	}
	return nil, uring.ErrRingFull
}

func (k *kernelRing) ioCmd(op uint32, tag uint16, res int32, addr uint64) error {
	s, err := k.sqe()
	if err != nil {
		return err
	}
	s.PrepUringCmd(k.cdev, op, uint64(tag))
	k.setFile(s, k.cdev)
	c := IOCmd{QID: k.qid, Tag: tag, Result: res, Addr: addr}
	c.Marshal(k.ring.Cmd(s))
	return nil
}

func (k *kernelRing) rw(tag uint16, op rwOp) error {
	s, err := k.sqe()
	if err != nil {
		return err
	}
	if op.write {
		s.PrepWrite(op.fd, op.buf, op.off, fileUserData|uint64(tag))
	} else {
		s.PrepRead(op.fd, op.buf, op.off, fileUserData|uint64(tag))
	}
	k.setFile(s, op.fd)
	return nil
}

func (k *kernelRing) enters() uint64 { return k.ring.Enters() }

func (k *kernelRing) fetch(tag uint16, addr uint64) error {
	return k.ioCmd(IOFetchReq, tag, 0, addr)
}

func (k *kernelRing) commit(tag uint16, res int32, addr uint64) error {
	return k.ioCmd(IOCommitAndFetchReq, tag, res, addr)
}

func (k *kernelRing) armWake() error {
	s, err := k.sqe()
	if err != nil {
		return err
	}
	s.PrepRead(k.efd, k.efdBuf, 0, wakeUserData)
	k.setFile(s, k.efd)
	return nil
}

func (k *kernelRing) notify() {
	one := [8]byte{1}
	// EAGAIN means the counter is saturated: a wake-up is pending anyway.
	unix.Write(k.efd, one[:])
}

func (k *kernelRing) submit() error {
	_, err := k.ring.Submit()
	return err
}

func (k *kernelRing) wait() error {
	_, err := k.ring.SubmitAndWait(1)
	return err
}

func (k *kernelRing) reap(dst []uring.CQE) int { return k.ring.Reap(dst) }

func (k *kernelRing) close() error {
	return errors.Join(k.ring.Close(), unix.Close(k.efd))
}
