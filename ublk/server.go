package ublk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// AnyID in Options.ID lets the kernel choose the device id.
const AnyID = -1

// maxDevID is UBLK_MAX_UBLKS - 1 (one minor per device, MINORBITS = 20).
const maxDevID = 1<<20 - 1

// Options configure Add (ublksrv's struct ublksrv_dev_data).
type Options struct {
	ID           int          // device id, or AnyID; note that the zero value asks for id 0
	Queues       int          // hardware queues; default 1, clamped to the CPU count
	Depth        int          // tags per queue; default 128, at most 4096
	Params       TargetParams // what the device looks like
	UserRecovery bool         // request UBLK_F_USER_RECOVERY: a new server can take over with Recover
	Reissue      bool         // with UserRecovery: UBLK_F_USER_RECOVERY_REISSUE, requests the dead server held are reissued
	FailIO       bool         // with UserRecovery: UBLK_F_USER_RECOVERY_FAIL_IO, IO fails instead of waiting while no server runs
	NoUserCopy   bool         // do not request UBLK_F_USER_COPY: use per-tag buffers
	// Unprivileged requests UBLK_F_UNPRIVILEGED_DEV: a user without
	// CAP_SYS_ADMIN may add and serve the device (the kernel clears the flag
	// for a caller that has it). Such a device cannot use USER_COPY
	// (ublk_ctrl_add_dev refuses it with EINVAL), so it implies NoUserCopy.
	Unprivileged bool
	StopTimeout  time.Duration // how long Stop waits for the kernel to abort the queues; default 30s
	Logger       logrus.FieldLogger
}

// normalize applies defaults and checks ranges before anything reaches the kernel.
func (o Options) normalize() (Options, error) {
	if o.Logger == nil {
		o.Logger = logrus.StandardLogger()
	}
	if o.Queues == 0 {
		o.Queues = DefaultQueues
	}
	if o.Depth == 0 {
		o.Depth = DefaultQueueDepth
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 30 * time.Second
	}
	switch {
	case o.ID < AnyID || o.ID > maxDevID:
		return o, fmt.Errorf("ublk: device id %d out of range [0, %d]", o.ID, maxDevID)
	case o.Queues < 1 || o.Queues > MaxQueues:
		return o, fmt.Errorf("ublk: queue count %d out of range [1, %d]", o.Queues, MaxQueues)
	case o.Depth < 1 || o.Depth > MaxQueueDepth:
		return o, fmt.Errorf("ublk: queue depth %d out of range [1, %d]", o.Depth, MaxQueueDepth)
	}
	if n := runtime.NumCPU(); o.Queues > n {
		o.Logger.Infof("ublk: %d queues requested, clamped to %d CPUs", o.Queues, n)
		o.Queues = n
	}
	o.Params = o.Params.withDefaults()
	if err := o.Params.validate(os.Getpagesize()); err != nil {
		return o, err
	}
	return o, nil
}

// requestedFlags are the UBLK_F_* bits ADD_DEV asks for.
func (o Options) requestedFlags() uint64 {
	flags := uint64(FlagCmdIoctlEncode)
	if o.Unprivileged {
		flags |= FlagUnprivilegedDev
	} else if !o.NoUserCopy {
		flags |= FlagUserCopy
	}
	if o.UserRecovery || o.Reissue {
		flags |= FlagUserRecovery
	}
	if o.Reissue {
		flags |= FlagUserRecoveryReissue
	}
	if o.FailIO {
		flags |= FlagUserRecovery | FlagUserRecoveryFailIO
	}
	return flags
}

// checkFeatures refuses flags the driver does not know, which ADD_DEV
// would drop without a word (ublksrv checks UBLK_U_CMD_GET_FEATURES the
// same way). Only FailIO is checked: the others are in every driver this
// server runs on.
func checkFeatures(ctrl *Control, o Options) error {
	if !o.FailIO {
		return nil
	}
	features, err := ctrl.GetFeatures()
	if err != nil {
		return fmt.Errorf("ublk: asking the driver for its features: %w", err)
	}
	if features&FlagUserRecoveryFailIO == 0 {
		return fmt.Errorf("ublk: this kernel's ublk driver cannot fail IO while a device waits for a new server "+
			"(UBLK_F_USER_RECOVERY_FAIL_IO, Linux 6.13 and later; the driver offers %#x): %w", features, unix.EOPNOTSUPP)
	}
	return nil
}

// Device is a running ublk device served by this process (ublksrv's
// struct ublksrv_dev plus its control device).
type Device struct {
	opts   Options
	ctrl   *Control
	target Target
	log    logrus.FieldLogger

	// added is the info ADD_DEV negotiated; it never changes afterwards, so
	// queue goroutines read it without locking. info is the latest GET_DEV_INFO.
	added  DevInfo
	mu     sync.Mutex
	info   DevInfo
	params Params
	tids   []int
	ended  QueueStats // the counters of the queues that have ended
	queues []*queue
	stats  IOStats // what the queues served (IOStats)

	cdev     int
	exited   sync.WaitGroup
	done     chan struct{}
	errOnce  sync.Once
	err      error
	stopOnce sync.Once
	// ownsTarget is set once Add or Recover has returned the device: from
	// then on the target is closed when the queues exit, before the char
	// device is (see supervise). targetOnce makes that close happen once,
	// whoever gets to it first; targetErr is its result.
	ownsTarget atomic.Bool
	targetOnce sync.Once
	targetErr  error
	// started is set once START_DEV succeeded: from then on the kernel
	// records this process as the device's server.
	started atomic.Bool
	stopErr error
}

// prepare is what Add and Recover do first: check the options and the
// target, and open /dev/ublk-control.
func prepare(opts Options, target Target) (Options, *Control, error) {
	opts, err := opts.normalize()
	if err != nil {
		return opts, nil, err
	}
	if target == nil {
		return opts, nil, errors.New("ublk: nil target")
	}
	ctrl, err := OpenControl()
	return opts, ctrl, err
}

// Add creates, sets up and starts a device served by target (ublksrv's
// ublksrv_ctrl_add_dev + ublksrv_dev_init + queue setup + ublksrv_ctrl_start_dev).
// It returns once /dev/ublkbN is live. On failure the device is torn down and
// target is left open for the caller; on success it is closed (if it is an
// io.Closer) once the queues have stopped, whoever stopped them, before the
// char device is released.
func Add(opts Options, target Target) (*Device, error) {
	opts, ctrl, err := prepare(opts, target)
	if err != nil {
		return nil, err
	}
	if err := checkFeatures(ctrl, opts); err != nil {
		ctrl.Close()
		return nil, err
	}
	id := uint32(anyDevID)
	if opts.ID != AnyID {
		id = uint32(opts.ID)
	}
	info := DevInfo{
		NrHWQueues: uint16(opts.Queues), QueueDepth: uint16(opts.Depth),
		MaxIOBufBytes: opts.Params.MaxIOBytes, DevID: id, Flags: opts.requestedFlags(),
	}
	if err := ctrl.AddDev(&info); err != nil {
		ctrl.Close()
		return nil, err
	}
	d := &Device{
		opts: opts, ctrl: ctrl, target: target, added: info, info: info, cdev: -1,
		log:  opts.Logger.WithField("dev", info.DevID),
		done: make(chan struct{}),
	}
	d.logNegotiation(opts.requestedFlags())
	if err := d.setup(); err != nil {
		if serr := d.stop(3*time.Second, false); serr != nil {
			d.log.Warnf("ublk: cleanup after failed add: %v", serr)
		}
		return nil, err
	}
	d.ownsTarget.Store(true)
	return d, nil
}

// logNegotiation reports what ADD_DEV changed: flags the kernel dropped
// silently, clamped queues, rounded buffer size.
func (d *Device) logNegotiation(want uint64) {
	if lost := want &^ d.added.Flags; lost != 0 {
		d.log.Warnf("ublk: kernel dropped flags %v (kept %#x %v)", FlagNames(lost), d.added.Flags, FlagNames(d.added.Flags))
	}
	if !d.UserCopy() {
		d.log.Warn("ublk: USER_COPY not in use: falling back to per-tag buffers (one extra copy per request)")
	}
	if int(d.added.NrHWQueues) != d.opts.Queues {
		d.log.Infof("ublk: kernel set %d queues (asked %d)", d.added.NrHWQueues, d.opts.Queues)
	}
	if d.added.MaxIOBufBytes != d.opts.Params.MaxIOBytes {
		d.log.Infof("ublk: kernel set max_io_buf_bytes %d (asked %d)", d.added.MaxIOBufBytes, d.opts.Params.MaxIOBytes)
	}
}

// setup opens the char device, starts the queues and makes the disk live.
func (d *Device) setup() error {
	// Whatever happens below, the queues that started are watched from
	// here on, so Stop and the cleanup of a failed Add can rely on d.done.
	defer func() { go d.supervise() }()
	var err error
	if d.cdev, err = openCharDev(d.ID(), 5*time.Second, d.added.Flags&FlagUnprivilegedDev != 0); err != nil {
		return err
	}
	if err = d.startQueues(); err != nil {
		return err
	}
	d.params = d.opts.Params.toParams(d.added.MaxIOBufBytes)
	if err := d.ctrl.SetParams(d.ID(), d.params); err != nil {
		return err
	}
	// START_DEV returns after add_disk's partition scan, which our queues
	// serve: this goroutine is not one of them.
	if err := d.ctrl.StartDev(d.ID(), os.Getpid()); err != nil {
		return err
	}
	if err := d.markLive("START_DEV"); err != nil {
		return err
	}
	d.log.Infof("ublk: %s live: %d queues x %d tags, %d bytes", d.BlockDevice(), d.added.NrHWQueues, d.added.QueueDepth, d.opts.Params.Size)
	return nil
}

// markLive records that the kernel names this process the device's server
// (after cmd: START_DEV or END_USER_RECOVERY) and reads the device info.
func (d *Device) markLive(cmd string) error {
	d.started.Store(true)
	info, err := d.ctrl.GetDevInfo(d.ID())
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.info = info
	d.mu.Unlock()
	if info.State != StateLive {
		d.log.Warnf("ublk: device state after %s is %s", cmd, StateName(info.State))
	}
	return nil
}

// openCharDev opens /dev/ublkcN, waiting a little for udev/devtmpfs to
// create it. For an unprivileged device it also waits while the node is not
// yet the owner's (EACCES): udev's rule hands it over asynchronously
// (ublksrv's ublk_chown.sh).
func openCharDev(id uint32, patience time.Duration, unprivileged bool) (int, error) {
	path := CharDevPrefix + strconv.FormatUint(uint64(id), 10)
	deadline := time.Now().Add(patience)
	for {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		retry := errors.Is(err, unix.ENOENT) || (unprivileged && errors.Is(err, unix.EACCES))
		if !retry || time.Now().After(deadline) {
			switch {
			case errors.Is(err, unix.EBUSY):
				return -1, fmt.Errorf("ublk: open %s: %w (another server has it open)", path, err)
			case errors.Is(err, unix.EACCES) && unprivileged:
				return -1, fmt.Errorf("ublk: open %s: %w after %v: the node of an unprivileged device must be "+
					"given to its owner (udev rule of ublksrv's README, ublk_chown.sh)", path, err, patience)
			}
			return -1, fmt.Errorf("ublk: open %s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pinThread keeps the calling thread on the CPUs of cpus it may run on, so
// a queue's requests are served near the CPUs that submit them
// (ublksrv_set_sched_affinity). Nothing changes when cpus is empty, takes
// in every CPU the thread may use (one queue), or has none in common with
// them (a cpuset or taskset narrower than the queue's affinity).
func pinThread(cpus unix.CPUSet) error {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return fmt.Errorf("sched_getaffinity: %w", err)
	}
	set, ok := queueCPUs(cpus, allowed)
	if !ok {
		return nil
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("sched_setaffinity: %w", err)
	}
	return nil
}

// queueCPUs returns the CPUs in both want and allowed, and whether that
// narrows allowed at all.
func queueCPUs(want, allowed unix.CPUSet) (unix.CPUSet, bool) {
	var both unix.CPUSet
	for cpu := 0; cpu < 8*cpuSetBytes; cpu++ {
		if want.IsSet(cpu) && allowed.IsSet(cpu) {
			both.Set(cpu)
		}
	}
	n := both.Count()
	return both, n > 0 && n < allowed.Count()
}

// queueStart is what a queue goroutine reports once its fetches are in.
type queueStart struct {
	q   *queue
	tid int
	err error
}

// startQueues starts one goroutine per queue and waits until each has
// fetched all its tags (or failed).
func (d *Device) startQueues() error {
	n := int(d.added.NrHWQueues)
	ready := make(chan queueStart, n)
	for qid := 0; qid < n; qid++ {
		cpus, err := d.ctrl.GetQueueAffinity(d.ID(), uint16(qid))
		if err != nil {
			// Only a placement hint: the queue runs wherever the scheduler puts it.
			d.log.Warnf("ublk: queue %d: %v", qid, err)
		}
		d.exited.Add(1)
		go d.runQueue(uint16(qid), cpus, ready)
	}
	d.queues = make([]*queue, n)
	d.tids = make([]int, n)
	var errs []error
	for i := 0; i < n; i++ {
		st := <-ready
		if st.err != nil {
			errs = append(errs, st.err)
			continue
		}
		d.mu.Lock()
		d.queues[st.q.id] = st.q
		d.tids[st.q.id] = st.tid
		d.mu.Unlock()
	}
	return errors.Join(errs...)
}

// runQueue is the queue thread (ublksrv's ublksrv_io_handler_fn). It locks its
// OS thread for good: the thread that fetched a queue's tags is the only one
// allowed to commit them, and if the goroutine ends, the thread exits with it,
// which makes the kernel cancel whatever that thread still had in flight.
// The thread runs on cpus, the queue's blk-mq affinity, as ublksrv's queue
// threads do.
func (d *Device) runQueue(qid uint16, cpus unix.CPUSet, ready chan<- queueStart) {
	runtime.LockOSThread()
	defer d.exited.Done()
	if err := pinThread(cpus); err != nil {
		d.log.Warnf("ublk: queue %d: %v", qid, err)
	}
	var q *queue
	reported := false
	defer func() {
		// A bug in the loop must not take the process down with it: the
		// ring is closed (which aborts this queue's tags in the kernel).
		if p := recover(); p != nil {
			err := fmt.Errorf("ublk: queue %d panicked: %v", qid, p)
			d.log.Errorf("%v\n%s", err, debug.Stack())
			if q != nil {
				q.release()
			}
			if !reported {
				ready <- queueStart{err: err}
			}
			d.setErr(err)
		}
	}()
	q, err := d.openQueue(qid)
	if err == nil {
		if err = q.prime(); err != nil {
			q.release()
		}
	}
	reported = true
	if err != nil {
		ready <- queueStart{err: err}
		return
	}
	ready <- queueStart{q: q, tid: unix.Gettid()}
	err = q.serve()
	d.mu.Lock()
	d.ended.Add(q.snapshot())
	d.mu.Unlock()
	if rerr := q.release(); rerr != nil {
		d.log.Warnf("ublk: queue %d release: %v", qid, rerr)
	}
	if err != nil {
		d.setErr(err)
		d.log.Errorf("ublk: queue %d stopped: %v", qid, err)
	}
}

// openQueue maps the queue's descriptors and creates its ring and buffers.
func (d *Device) openQueue(qid uint16) (*queue, error) {
	depth := int(d.added.QueueDepth)
	// Read-only: ublk_ch_mmap refuses writable mappings of the descriptors.
	descs, err := unix.Mmap(d.cdev, IODescOffset(qid), IODescMapSize(depth), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("ublk: queue %d: mmap io descriptors: %w", qid, err)
	}
	var bufs dataSource
	if d.UserCopy() {
		bufs = newUserCopySource(d.cdev, qid, depth)
	} else if bufs, err = newBufferSource(depth, int(d.added.MaxIOBufBytes)); err != nil {
		unix.Munmap(descs)
		return nil, err
	}
	var files []int
	if ft, ok := d.target.(FileTarget); ok {
		fd, _ := ft.RingFile()
		files = append(files, fd)
	}
	ring, err := newKernelRing(d.cdev, qid, depth, files...)
	if err != nil {
		bufs.close()
		unix.Munmap(descs)
		return nil, err
	}
	desc := func(tag uint16) IODesc {
		var io IODesc
		io.Unmarshal(descs[int(tag)*IODescSize:])
		return io
	}
	q := newQueue(qid, depth, d.opts.Params.Size, ring, desc, bufs, d.target, d.log)
	q.stats = &d.stats
	q.closers = append(q.closers, func() error { return unix.Munmap(descs) })
	maxIO := min(d.opts.Params.withDefaults().MaxIOBytes, d.added.MaxIOBufBytes)
	if q.file, err = newFileIO(d.target, ring, bufs, d.cdev, depth, int(maxIO)); err != nil {
		q.release()
		return nil, err
	}
	return q, nil
}

func (d *Device) setErr(err error) {
	d.errOnce.Do(func() { d.err = err })
}

// supervise closes the char device once every queue has exited, whoever
// stopped the device (Stop, `btrfsdio del`, a failed Add): DEL_DEV waits for
// that close, so it must not wait for Stop. The target is closed first (as
// ublksrv_dev_deinit runs the target's deinit before closing the char
// device), so that when DEL_DEV returns the target has written all it will
// to its backing store: whoever deleted the device may reuse the images at
// once. A failed Add leaves the target to its caller.
func (d *Device) supervise() {
	d.exited.Wait()
	if d.ownsTarget.Load() {
		if err := d.closeTarget(); err != nil {
			d.log.Errorf("%v", err)
		}
	}
	if d.cdev >= 0 {
		if err := unix.Close(d.cdev); err != nil {
			d.log.Warnf("ublk: close %s: %v", d.CharDevice(), err)
		}
	}
	close(d.done)
}

// Wait blocks until all queues have exited and returns the first queue error
// (nil after a clean stop). The queues also exit when someone else stops the
// device (`btrfsdio del`); call Stop afterwards all the same to release the
// control node and the target.
func (d *Device) Wait() error {
	<-d.done
	return d.err
}

// Done is closed when all queues have exited and the char device is closed.
func (d *Device) Done() <-chan struct{} { return d.done }

// Stop stops and deletes the device (ublksrv_ctrl_stop_dev + ublksrv_ctrl_del_dev):
// STOP_DEV while the queues still run, so in-flight requests complete and
// every tag is aborted; the queues exit and release their rings, the target
// is closed if it is an io.Closer (supervise), then DEL_DEV. Stop returns
// the target's Close error too. A device already removed by someone else is
// not an error. Stop is idempotent.
func (d *Device) Stop() error {
	d.stopOnce.Do(func() { d.stopErr = d.stop(d.opts.StopTimeout, true) })
	return d.stopErr
}

func (d *Device) stop(timeout time.Duration, closeTarget bool) error {
	id := d.ID()
	var errs []error
	// A device deleted from outside (`del -n ID`) may already have been
	// replaced by a new one with the same id: only send STOP_DEV and
	// DEL_DEV for it while the kernel still names this process its server.
	ours := d.stillOurs(id, false)
	if ours {
		if err := d.ctrl.StopDev(id); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, err)
		}
	}
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.log.Warnf("ublk: queues still running %v after STOP_DEV; closing their rings", timeout)
		d.forceQueues()
		<-d.done
	}
	if ours && d.stillOurs(id, true) {
		if err := d.ctrl.DelDev(id); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, d.ctrl.Close())
	if closeTarget {
		errs = append(errs, d.closeTarget())
	}
	return errors.Join(errs...)
}

// closeTarget closes the target if it is an io.Closer, once.
func (d *Device) closeTarget() error {
	d.targetOnce.Do(func() {
		if c, ok := d.target.(io.Closer); ok {
			if err := c.Close(); err != nil {
				d.targetErr = fmt.Errorf("ublk: close target: %w", err)
			}
		}
	})
	return d.targetErr
}

// stillOurs reports whether device id exists and this process serves it
// (GET_DEV_INFO's ublksrv_pid). Before START_DEV nobody else can have it.
// After this process sent STOP_DEV (stopped), the kernel has set ublksrv_pid
// to -1 (ublk_stop_dev): -1 then still means ours, while another pid means
// the id was deleted and taken by a new server.
func (d *Device) stillOurs(id uint32, stopped bool) bool {
	if !d.started.Load() {
		return true
	}
	info, err := d.ctrl.GetDevInfo(id)
	if err != nil {
		return false
	}
	return info.SrvPID == int32(os.Getpid()) || (stopped && info.SrvPID == -1)
}

func (d *Device) forceQueues() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range d.queues {
		if q != nil {
			q.forceQuit()
		}
	}
}

// ID returns the device id N of /dev/ublkbN.
func (d *Device) ID() uint32 { return d.added.DevID }

// Info returns the device info as last read from the kernel.
func (d *Device) Info() DevInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.info
}

// Params returns the parameters set with SET_PARAMS.
func (d *Device) Params() Params { return d.params }

// QueueStats returns the summed QueueStats of the queues that have ended;
// after Wait, those of the whole run. No kernel counterpart.
func (d *Device) QueueStats() QueueStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ended
}

// UserCopy reports whether requests use UBLK_F_USER_COPY (else per-tag buffers).
func (d *Device) UserCopy() bool { return d.added.Flags&FlagUserCopy != 0 }

// IOStats returns what the device's queues have served so far, by
// operation (no kernel counterpart: see IOStats).
func (d *Device) IOStats() IOSnapshot { return d.stats.Snapshot() }

// QueueTIDs returns the thread id of each queue (ublksrv prints them in list).
func (d *Device) QueueTIDs() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.tids...)
}

// BlockDevice returns /dev/ublkbN.
func (d *Device) BlockDevice() string { return BlockDevPrefix + strconv.FormatUint(uint64(d.ID()), 10) }

// CharDevice returns /dev/ublkcN.
func (d *Device) CharDevice() string { return CharDevPrefix + strconv.FormatUint(uint64(d.ID()), 10) }
