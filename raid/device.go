package raid

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/btrfsdio/btrfsdio/blk"
)

// ReservedBytes is BTRFS_DEVICE_RANGE_RESERVED: the first 1 MiB of every
// device holds no chunk (the primary superblock lives at 64 KiB).
const ReservedBytes = 1 << 20

// MinDeviceSize is the smallest device OpenDevice accepts: the reserved
// range plus one stripe.
const MinDeviceSize = ReservedBytes + StripeLen

// bounceSize is the size of one pooled O_DIRECT bounce buffer.
const bounceSize = 256 << 10

// iovMax is IOV_MAX: the most iovecs one preadv/pwritev takes.
const iovMax = 1024

// DeviceOptions says how OpenDevice opens a backing file or block device.
type DeviceOptions struct {
	// Create makes a missing image file (sparse) of Size bytes.
	Create bool
	Size   int64
	// ReadOnly opens O_RDONLY (offline scrub); writes then fail.
	ReadOnly bool
	// Buffered skips O_DIRECT even where the backing supports it.
	Buffered bool
	// Unclaimed opens a ReadOnly device without claiming it (see claim),
	// beside a server that may be writing it: what is read may be stale
	// or half-written. A device opened for writing is always claimed.
	Unclaimed bool
	// Holder names who holds a device whose claim failed ("" when it does
	// not know; the error then says "another process").
	Holder func(DeviceID) string
	// Logger gets the O_DIRECT fallback notice and I/O errors
	// (default: logrus' standard logger).
	Logger logrus.FieldLogger
}

// DeviceStats is a device's I/O counters (btrfs_dev_stat_* plus volume).
type DeviceStats struct {
	Reads, Writes, Flushes               uint64 // operations issued
	BytesRead, BytesWritten              uint64 // bytes moved successfully
	ReadErrors, WriteErrors, FlushErrors uint64 // failed operations (read_io_errs ...)
	InjectedFaults                       uint64 // failures that InjectFault caused
}

// Device is struct btrfs_device over a backing file or block device.
type Device struct {
	path     string
	id       DeviceID
	f        *os.File
	size     uint64
	direct   bool
	readOnly bool
	blockDev bool
	// missing is BTRFS_DEV_STATE_MISSING: no backing, every I/O fails.
	missing bool
	// stale is set at open when the superblock's generation is behind the
	// volume's (markStale): reads of the data chunk and metadata area fail
	// (errStale) until a resync clears it; writes go through.
	stale atomic.Bool
	// superGen is the generation of the superblock read at open.
	superGen uint64
	log      logrus.FieldLogger

	// faults[op] is the number of further ops of that kind to fail (<0:
	// all), after skips[op] more succeed; see InjectFault.
	faults, skips [3]atomic.Int64
	// flushFailed is BTRFS_DEV_STATE_FLUSH_FAILED: a flush of this device
	// failed once, so writes it acknowledged before may be gone (Linux
	// reports a writeback error once and may drop the pages). It is never
	// cleared: a later flush that succeeds proves nothing about them.
	flushFailed atomic.Bool
	// observe, when set (tests), sees every completed operation in order.
	observe func(op blk.Op, off uint64, n int)

	reads, writes, flushes         atomic.Uint64
	bytesRead, bytesWritten        atomic.Uint64
	readErrs, writeErrs, flushErrs atomic.Uint64
	injected                       atomic.Uint64
	closeOnce                      sync.Once
	closeErr                       error

	// rec sees every write and flush issued here (SetRecorder); nil in
	// production.
	rec Recorder
}

// Recorder is dm-log-writes under this device: it sees every write and
// flush that reaches the backing, in the order they are issued and
// complete, so that a harness (internal/powercut, after CrashMonkey and
// fstests' replay-log) can rebuild what a power cut would leave. Begin is
// called right before the operation is issued, with the bytes of a write
// (valid only during the call) or nil for a flush, and returns what to
// call with its result once it completed. Reads are not recorded.
type Recorder interface {
	Begin(d *Device, op blk.Op, off uint64, data []byte) (end func(error))
}

// SetRecorder attaches r to d; call it before any I/O (no kernel
// counterpart: dm-log-writes is a device-mapper target stacked under the
// filesystem).
func (d *Device) SetRecorder(r Recorder) { d.rec = r }

// OpenDevice is btrfs_open_one_device for an image file or block device:
// O_DIRECT when the backing allows it (else buffered, logged and reported by
// Direct), size from stat or BLKGETSIZE64, and the device claimed until
// Close (see claim; a ClaimError when someone else holds it).
func OpenDevice(path string, opts DeviceOptions) (*Device, error) {
	log := opts.Logger
	if log == nil {
		log = logrus.StandardLogger()
	}
	if opts.Unclaimed && !opts.ReadOnly {
		return nil, fmt.Errorf("raid: device %s: only a read-only open may leave it unclaimed", path)
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && opts.Create:
		if err := createImage(path, opts.Size); err != nil {
			return nil, err
		}
		if st, err = os.Stat(path); err != nil {
			return nil, fmt.Errorf("raid: device %s: %w", path, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("raid: device %s does not exist: %w", path, err)
	case err != nil:
		return nil, fmt.Errorf("raid: device %s: %w", path, err)
	}
	mode := st.Mode()
	blockDev := mode&fs.ModeDevice != 0 && mode&fs.ModeCharDevice == 0
	if !mode.IsRegular() && !blockDev {
		return nil, fmt.Errorf("raid: device %s is not a regular file or block device (mode %v)", path, mode)
	}
	d := &Device{path: path, readOnly: opts.ReadOnly, blockDev: blockDev, log: log.WithField("device", path)}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		d.id = deviceIDOf(sys) // who to name if the open finds it claimed
	}
	if err := d.open(opts); err != nil {
		return nil, err
	}
	err = d.identify()
	if err == nil {
		err = d.claim(opts)
	}
	if err != nil {
		d.f.Close()
		return nil, err
	}
	if err := d.readSize(st); err != nil {
		d.f.Close()
		return nil, err
	}
	if d.size < MinDeviceSize {
		d.f.Close()
		return nil, fmt.Errorf("raid: device %s is too small: %d bytes, need at least %d (1 MiB reserved + one %d KiB stripe)",
			path, d.size, MinDeviceSize, StripeLen>>10)
	}
	return d, nil
}

// createImage makes a sparse image file of size bytes, readable by its
// owner only (it holds the whole virtual disk), and makes it and its
// directory entry durable, as mkfs.btrfs fsyncs what it created.
func createImage(path string, size int64) error {
	if size < MinDeviceSize {
		return fmt.Errorf("raid: creating image %s: size %d is below the minimum %d", path, size, MinDeviceSize)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("raid: creating image %s: %w", path, err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("raid: creating image %s of %d bytes: %w", path, size, err)
	}
	return nil
}

// syncDir fsyncs a directory, making the entries created in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// open opens the backing, trying O_DIRECT first. A block device is opened
// O_EXCL, its claim (see claim).
func (d *Device) open(opts DeviceOptions) error {
	flags := os.O_RDWR
	if opts.ReadOnly {
		flags = os.O_RDONLY
	}
	if d.blockDev && !opts.Unclaimed {
		flags |= os.O_EXCL
	}
	if !opts.Buffered {
		f, err := os.OpenFile(d.path, flags|syscall.O_DIRECT, 0)
		if err == nil {
			d.f, d.direct = f, true
			return nil
		}
		if !errors.Is(err, syscall.EINVAL) {
			return d.openError(opts, err)
		}
		d.log.Warnf("raid: %s does not support O_DIRECT, using buffered I/O", d.path)
	}
	f, err := os.OpenFile(d.path, flags, 0)
	if err != nil {
		return d.openError(opts, err)
	}
	d.f = f
	return nil
}

func (d *Device) openError(opts DeviceOptions, err error) error {
	switch {
	case d.blockDev && errors.Is(err, syscall.EBUSY):
		return d.claimError(opts)
	case errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return fmt.Errorf("raid: device %s cannot be opened for writing: %w (a read-only image can only be scrubbed or checked)", d.path, err)
	}
	return fmt.Errorf("raid: opening device %s: %w", d.path, err)
}

// identify sets d.id from the open backing: what was opened, even if the
// path changed since it was looked up.
func (d *Device) identify() error {
	var st syscall.Stat_t
	var serr error
	if err := d.control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil {
		return fmt.Errorf("raid: device %s: %w", d.path, err)
	}
	if serr != nil {
		return fmt.Errorf("raid: device %s: fstat: %w", d.path, serr)
	}
	d.id = deviceIDOf(&st)
	return nil
}

// readSize is i_size_read(bdev->bd_inode) or the file size.
func (d *Device) readSize(st fs.FileInfo) error {
	if !d.blockDev {
		d.size = uint64(st.Size())
		return nil
	}
	var size uint64
	var errno syscall.Errno
	err := d.control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
	})
	if err == nil && errno != 0 {
		err = errno
	}
	if err != nil {
		return fmt.Errorf("raid: BLKGETSIZE64 on %s: %w", d.path, err)
	}
	d.size = size
	return nil
}

// control runs fn with the fd held open (a concurrent Close waits), which
// raw preadv/pwritev/fdatasync need.
func (d *Device) control(fn func(fd uintptr)) error {
	rc, err := d.f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(fn)
}

// Path is the backing path (rcu_str_deref(device->name)).
func (d *Device) Path() string { return d.path }

// ID is what the backing is (device->devt), whatever path named it.
func (d *Device) ID() DeviceID { return d.id }

// Size is the backing size in bytes (device->total_bytes).
func (d *Device) Size() uint64 { return d.size }

// Direct reports whether I/O bypasses the page cache (O_DIRECT), as the
// kernel's submit_bio to a block device always does.
func (d *Device) Direct() bool { return d.direct }

// Close is btrfs_close_one_device: it releases the claim with the backing.
// It is idempotent.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		if d.f == nil { // a missing device has no backing to close
			return
		}
		if err := d.f.Close(); err != nil {
			d.closeErr = fmt.Errorf("raid: closing device %s: %w", d.path, err)
		}
	})
	return d.closeErr
}

// faultSlot maps an op to its InjectFault counter.
func faultSlot(op blk.Op) (int, bool) {
	switch op {
	case blk.OpRead:
		return 0, true
	case blk.OpWrite:
		return 1, true
	case blk.OpFlush:
		return 2, true
	}
	return 0, false
}

// InjectFault makes the next count operations of kind op (blk.OpRead,
// OpWrite or OpFlush) on this device fail with EIO, as should_fail_bio's
// fault injection does; count < 0 fails all of them until InjectFault(op, 0).
// One operation is one device I/O of a bio piece, whatever its size.
func (d *Device) InjectFault(op blk.Op, count int) { d.InjectFaultAfter(op, 0, count) }

// InjectFaultAfter is InjectFault once skip more operations of kind op
// have succeeded: it aims a fault at one step of a sequence (the third
// write of a commit, its second flush).
func (d *Device) InjectFaultAfter(op blk.Op, skip, count int) {
	if i, ok := faultSlot(op); ok {
		d.faults[i].Store(int64(count))
		d.skips[i].Store(int64(skip))
	}
}

// takeFault consumes one injected fault for op, if any is armed.
func (d *Device) takeFault(op blk.Op) bool {
	i, ok := faultSlot(op)
	if !ok || d.faults[i].Load() == 0 {
		return false
	}
	for {
		s := d.skips[i].Load()
		if s <= 0 {
			break
		}
		if d.skips[i].CompareAndSwap(s, s-1) {
			return false
		}
	}
	for {
		n := d.faults[i].Load()
		switch {
		case n == 0:
			return false
		case n < 0:
			return true
		case d.faults[i].CompareAndSwap(n, n-1):
			return true
		}
	}
}

// Stats is btrfs_get_dev_stats plus operation and byte counts.
func (d *Device) Stats() DeviceStats {
	return DeviceStats{
		Reads: d.reads.Load(), Writes: d.writes.Load(), Flushes: d.flushes.Load(),
		BytesRead: d.bytesRead.Load(), BytesWritten: d.bytesWritten.Load(),
		ReadErrors: d.readErrs.Load(), WriteErrors: d.writeErrs.Load(), FlushErrors: d.flushErrs.Load(),
		InjectedFaults: d.injected.Load(),
	}
}

// errInjected is what an injected fault fails with.
var errInjected = fmt.Errorf("injected fault: %w", syscall.EIO)

// errMissing is what every I/O to a missing device fails with, as
// btrfs_submit_dev_bio ends a bio for a device without a bdev.
var errMissing = fmt.Errorf("device missing: %w", syscall.EIO)

// NewMissingDevice is add_missing_dev: a placeholder for devid, which the
// volume lists but whose image is absent. It has the size the chunk uses
// (so the layout stays as at format time) and fails every I/O with EIO, so
// the max_errors logic of writes and the rebuilds of reads treat it as a
// failed copy.
func NewMissingDevice(devid, size uint64, log logrus.FieldLogger) *Device {
	if log == nil {
		log = logrus.StandardLogger()
	}
	path := fmt.Sprintf("<missing devid %d>", devid)
	return &Device{path: path, size: size, missing: true, log: log.WithField("device", path)}
}

// Missing is the BTRFS_DEV_STATE_MISSING test: the device is a placeholder
// from NewMissingDevice.
func (d *Device) Missing() bool { return d.missing }

// errStale is what a read of a stale device's data or metadata fails with:
// what it holds may be older than what the volume committed.
var errStale = fmt.Errorf("device stale (behind the volume, not yet resynced): %w", syscall.EIO)

// Stale reports whether the device came back behind the volume and is not
// resynced yet (no kernel counterpart: btrfs has no such state; md's
// "faulty, being recovered" member is the model). See Volume.Resync.
func (d *Device) Stale() bool { return d.stale.Load() }

// unreadable is a copy a read must not be mapped to: a missing device or a
// stale one, whose reads fail alike.
func (d *Device) unreadable() bool { return d.missing || d.stale.Load() }

// account wraps one device operation of n bytes: it applies fault
// injection, counts the operation, hands it to the recorder if one is
// attached (src gives a write's bytes), and wraps the error with where it
// happened (btrfs_log_dev_io_error's information).
func (d *Device) account(op blk.Op, off uint64, n int, src func() ([]byte, error), io func() error) error {
	ops, errs, bytes := &d.reads, &d.readErrs, &d.bytesRead
	switch op {
	case blk.OpWrite:
		ops, errs, bytes = &d.writes, &d.writeErrs, &d.bytesWritten
	case blk.OpFlush:
		ops, errs, bytes = &d.flushes, &d.flushErrs, nil
	}
	ops.Add(1)
	var err error
	switch {
	case d.missing:
		err = errMissing
	case op == blk.OpRead && off >= ReservedBytes && d.stale.Load():
		err = errStale
	case d.takeFault(op):
		d.injected.Add(1)
		err = errInjected
	case uint64(n) > d.size || off > d.size-uint64(n): // off+n may wrap
		err = fmt.Errorf("%d bytes at %d run beyond the device end %d: %w", n, off, d.size, syscall.EIO)
	case d.rec != nil:
		err = d.recorded(op, off, src, io)
	default:
		err = io()
	}
	if err != nil {
		var se *memoryError
		if !errors.As(err, &se) { // the bio's memory failing is not the device's fault
			errs.Add(1)
		}
		return fmt.Errorf("raid: %s %s at %d (+%d): %w", d.path, op, off, n, err)
	}
	if bytes != nil {
		bytes.Add(uint64(n))
	}
	if d.observe != nil {
		d.observe(op, off, n)
	}
	return nil
}

// recorded runs io between the recorder's Begin and end. A write whose
// source cannot be read is left unrecorded: io fails the same way.
func (d *Device) recorded(op blk.Op, off uint64, src func() ([]byte, error), io func() error) error {
	var data []byte
	if op == blk.OpWrite {
		var err error
		if data, err = src(); err != nil {
			return io()
		}
	} else if op != blk.OpFlush {
		return io()
	}
	end := d.rec.Begin(d, op, off, data)
	err := io()
	end(err)
	return err
}

// flush is REQ_PREFLUSH on this device: fdatasync of the backing. A
// failure marks the device for good (wait_dev_flush setting
// BTRFS_DEV_STATE_FLUSH_FAILED; see FlushFailed).
func (d *Device) flush() error {
	err := d.account(blk.OpFlush, 0, 0, nil, func() error {
		var serr error
		if err := d.control(func(fd uintptr) { serr = unix.Fdatasync(int(fd)) }); err != nil {
			return err
		}
		return serr
	})
	if err != nil && !d.missing && d.flushFailed.CompareAndSwap(false, true) {
		d.log.Errorf("raid: %s: flush failed (%v): writes acknowledged before it may be lost on this device; "+
			"it gets no new superblock from now on", d.path, err)
	}
	return err
}

// FlushFailed is the BTRFS_DEV_STATE_FLUSH_FAILED test: a flush of the
// device failed since it was opened, so what it holds is not known to be
// durable. Like btrfs_check_rw_degradable, Volume.Flush counts such a
// device as failed from then on, and no superblock is written to it.
func (d *Device) FlushFailed() bool { return d.flushFailed.Load() }

// readBuf reads len(buf) bytes at off into memory this package allocated
// (blk.AlignedBuffer, fit for O_DIRECT).
func (d *Device) readBuf(buf []byte, off uint64) error {
	return d.account(blk.OpRead, off, len(buf), nil, func() error { return d.preadFull(buf, off) })
}

// writeBuf writes buf (aligned, this package's memory) at off.
func (d *Device) writeBuf(buf []byte, off uint64) error {
	return d.account(blk.OpWrite, off, len(buf), func() ([]byte, error) { return buf, nil },
		func() error { return d.pwriteFull(buf, off) })
}

// barrier is a flush that orders a commit (data before metadata before
// superblocks): flush, or nothing under the nobarrier build tag.
func (d *Device) barrier() error {
	if !barriers {
		return nil
	}
	return d.flush()
}

func (d *Device) preadFull(buf []byte, off uint64) error {
	n, err := d.f.ReadAt(buf, int64(off))
	if n == len(buf) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = fmt.Errorf("short read %d of %d: %w", n, len(buf), syscall.EIO)
	}
	return err
}

func (d *Device) pwriteFull(buf []byte, off uint64) error {
	if d.readOnly {
		return fmt.Errorf("device opened read-only: %w", syscall.EROFS)
	}
	n, err := d.f.WriteAt(buf, int64(off))
	if err == nil && n != len(buf) {
		err = fmt.Errorf("short write %d of %d: %w", n, len(buf), syscall.EIO)
	}
	return err
}

// seg is one piece of bio memory: n bytes at off in page.
type seg struct {
	page *blk.Page
	off  int
	n    int
}

// segsLen is the total length of segs.
func segsLen(segs []seg) int {
	n := 0
	for _, s := range segs {
		n += s.n
	}
	return n
}

// rwSegs is submit_bio of one device bio: read into or write from the bio
// memory segs at physical offset off, as ONE device operation. Each call
// touches the pages itself, at the moment the device gets to them, which is
// how a device DMA from user pages behaves.
func (d *Device) rwSegs(op blk.Op, off uint64, segs []seg) error {
	n := segsLen(segs)
	src := func() ([]byte, error) { // the recorder's copy of a write
		b := make([]byte, n)
		cur := segCursor{segs: segs}
		return b, cur.copyOut(b)
	}
	return d.account(op, off, n, src, func() error {
		if op == blk.OpWrite && d.readOnly {
			return fmt.Errorf("device opened read-only: %w", syscall.EROFS)
		}
		if iovs, ok := d.zeroCopy(segs); ok {
			return d.rwVectored(op, off, iovs)
		}
		return d.rwBounced(op, off, segs)
	})
}

// zeroCopy returns the segments as iovecs when they can be handed to the
// kernel directly: all in process memory and, under O_DIRECT, aligned.
func (d *Device) zeroCopy(segs []seg) ([][]byte, bool) {
	iovs := make([][]byte, 0, len(segs))
	for _, s := range segs {
		mem := s.page.Bytes()
		if mem == nil {
			return nil, false
		}
		b := mem[s.off : s.off+s.n]
		if d.direct && (uintptr(unsafe.Pointer(unsafe.SliceData(b)))%blk.PageSize != 0 || s.n%SectorSize != 0) {
			return nil, false
		}
		iovs = append(iovs, b)
	}
	return iovs, true
}

// rwVectored is preadv/pwritev, looping over short transfers and IOV_MAX.
func (d *Device) rwVectored(op blk.Op, off uint64, iovs [][]byte) error {
	for len(iovs) > 0 {
		batch := iovs[:min(len(iovs), iovMax)]
		var n int
		var ioErr error
		err := d.control(func(fd uintptr) {
			for {
				if op == blk.OpWrite {
					n, ioErr = unix.Pwritev(int(fd), batch, int64(off))
				} else {
					n, ioErr = unix.Preadv(int(fd), batch, int64(off))
				}
				if ioErr != syscall.EINTR {
					return
				}
			}
		})
		if err == nil {
			err = ioErr
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%s returned 0 bytes: %w", op, syscall.EIO)
		}
		off += uint64(n)
		iovs = advanceIovs(iovs, n)
	}
	return nil
}

// advanceIovs drops n transferred bytes from the front of iovs.
func advanceIovs(iovs [][]byte, n int) [][]byte {
	for n > 0 && len(iovs) > 0 {
		if n < len(iovs[0]) {
			rest := append([][]byte{iovs[0][n:]}, iovs[1:]...)
			return rest
		}
		n -= len(iovs[0])
		iovs = iovs[1:]
	}
	return iovs
}

// bouncePool holds aligned buffers for O_DIRECT I/O on memory that cannot
// be handed to the kernel (remote pages, unaligned memory).
var bouncePool = sync.Pool{New: func() any {
	b := blk.AlignedBuffer(bounceSize)
	return &b
}}

// rwBounced copies through aligned scratch, one bounce buffer at a time:
// a write reads the source pages chunk by chunk right before writing them.
func (d *Device) rwBounced(op blk.Op, off uint64, segs []seg) error {
	bp := bouncePool.Get().(*[]byte)
	defer bouncePool.Put(bp)
	cur := segCursor{segs: segs}
	for left := segsLen(segs); left > 0; {
		chunk := (*bp)[:min(left, bounceSize)]
		if op == blk.OpWrite {
			if err := cur.copyOut(chunk); err != nil {
				return err
			}
			if err := d.pwriteFull(chunk, off); err != nil {
				return err
			}
		} else {
			if err := d.preadFull(chunk, off); err != nil {
				return err
			}
			if err := cur.copyIn(chunk); err != nil {
				return err
			}
		}
		off += uint64(len(chunk))
		left -= len(chunk)
	}
	return nil
}

// memoryError is a failure to reach the bio's own pages (a remote page
// whose request is gone), as opposed to a device error.
type memoryError struct{ err error }

func (e *memoryError) Error() string { return "bio memory: " + e.err.Error() }
func (e *memoryError) Unwrap() error { return e.err }

// segCursor walks bio memory sequentially (kmap + memcpy, page by page).
// Remote pages that follow one another in the same remote memory are
// copied with one call: for a ublk request that is one pread or pwrite on
// /dev/ublkcN per contiguous run instead of one per 4 KiB page.
type segCursor struct {
	segs []seg
	i    int
	off  int // bytes consumed of segs[i]
}

// copyOut fills dst from the pages (reading the source of a write).
func (c *segCursor) copyOut(dst []byte) error {
	return c.walk(len(dst), func(s seg, at, n, pos int) error {
		return s.page.ReadAt(dst[pos:pos+n], s.off+at)
	}, func(mem blk.RemoteMemory, off int64, n, pos int) error {
		return remoteIO(mem.ReadAt, dst[pos:pos+n], off)
	})
}

// copyIn stores src into the pages (completing a read).
func (c *segCursor) copyIn(src []byte) error {
	return c.walk(len(src), func(s seg, at, n, pos int) error {
		return s.page.WriteAt(src[pos:pos+n], s.off+at)
	}, func(mem blk.RemoteMemory, off int64, n, pos int) error {
		return remoteIO(mem.WriteAt, src[pos:pos+n], off)
	})
}

// remoteIO runs one ReadAt or WriteAt of remote memory, all of it or an error.
func remoteIO(op func([]byte, int64) (int, error), b []byte, off int64) error {
	n, err := op(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil {
		err = io.ErrShortWrite
	}
	return fmt.Errorf("%d of %d bytes of remote memory at %d: %w", n, len(b), off, err)
}

// walk hands total bytes of the segments to local (one page at a time) or
// to remote (a run of contiguous remote memory at a time).
func (c *segCursor) walk(total int, local func(s seg, at, n, pos int) error,
	remote func(mem blk.RemoteMemory, off int64, n, pos int) error) error {
	for pos := 0; pos < total; {
		if c.i >= len(c.segs) {
			return &memoryError{fmt.Errorf("ends %d bytes short", total-pos)}
		}
		s := c.segs[c.i]
		mem, base := s.page.Remote()
		if mem == nil {
			n := min(s.n-c.off, total-pos)
			if err := local(s, c.off, n, pos); err != nil {
				return &memoryError{err}
			}
			pos += n
			c.advance(n)
			continue
		}
		start := base + int64(s.off+c.off)
		n := 0
		for pos+n < total && c.i < len(c.segs) {
			s := c.segs[c.i]
			m, b := s.page.Remote()
			if !blk.SameRemote(m, mem) || b+int64(s.off+c.off) != start+int64(n) {
				break
			}
			k := min(s.n-c.off, total-pos-n)
			n += k
			c.advance(k)
		}
		if err := remote(mem, start, n, pos); err != nil {
			return &memoryError{err}
		}
		pos += n
	}
	return nil
}

// advance consumes n bytes of the current segment.
func (c *segCursor) advance(n int) {
	c.off += n
	if c.off == c.segs[c.i].n {
		c.i++
		c.off = 0
	}
}
