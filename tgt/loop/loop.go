// Package loop is the reference ublk target: it serves a regular file or a
// block device, like ublksrv's loop target (targets/ublksrv_tgt_loop) and
// drivers/block/loop.c, with plain pread/pwrite.
package loop

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/btrfsdio/btrfsdio/ublk"
	"golang.org/x/sys/unix"
)

// Options configure Open.
type Options struct {
	ReadOnly   bool   // open the backing file read-only and announce a read-only device
	MaxIOBytes uint32 // largest request; default ublk.DefaultMaxIOBytes
}

// Target is the loop target: a ublk.Target backed by a file or block device
// (ublksrv's loop target; struct loop_device in drivers/block/loop.c).
type Target struct {
	// fd is a raw descriptor, not an *os.File: an os.File's finalizer would
	// close it behind our back if only the fd number stayed referenced.
	fd       int
	path     string
	size     int64
	blockDev bool
	lbs, pbs uint32
	readOnly bool
	maxIO    uint32
	bufs     sync.Pool
	// noZeroRange remembers that FALLOC_FL_ZERO_RANGE is refused here
	// (tmpfs, some block devices) so WRITE_ZEROES goes straight to a fallback.
	noZeroRange atomic.Bool
	closeOnce   sync.Once
}

// Target is a ublk target that ublk closes when the device is deleted, and
// whose reads and writes the queues do in their own io_uring.
var (
	_ ublk.Target     = (*Target)(nil)
	_ ublk.FileTarget = (*Target)(nil)
	_ io.Closer       = (*Target)(nil)
)

// Open opens path as the backing store. The device size is the file size (or
// the block device size) rounded down to the logical block size.
func Open(path string, opts Options) (*Target, error) {
	flags := unix.O_RDWR | unix.O_CLOEXEC
	if opts.ReadOnly {
		flags = unix.O_RDONLY | unix.O_CLOEXEC
	}
	fd, err := openClaimed(path, flags)
	if err != nil {
		return nil, err
	}
	l := &Target{fd: fd, path: path, readOnly: opts.ReadOnly, maxIO: opts.MaxIOBytes, lbs: 512, pbs: 512}
	if l.maxIO == 0 {
		l.maxIO = ublk.DefaultMaxIOBytes
	}
	if err := l.probe(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	l.bufs.New = func() any { b := make([]byte, l.maxIO); return &b }
	return l, nil
}

// ErrInUse is what Open returns when another process holds the backing
// store: a server, a scrub of it, or a mount of the block device.
var ErrInUse = errors.New("in use by another process")

// openClaimed opens path and claims it for as long as it is open, as the
// kernel's loop driver cannot but ublksrv's users expect: a block device
// O_EXCL (which keeps out mounts and other exclusive openers), a file with
// a flock on the open file description (LOCK_EX, or LOCK_SH read-only),
// so two servers never write one backing store.
func openClaimed(path string, flags int) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
		flags |= unix.O_EXCL
	}
	fd, err := unix.Open(path, flags, 0)
	if errors.Is(err, unix.EBUSY) {
		return -1, fmt.Errorf("loop: %s is %w", path, ErrInUse)
	}
	if err != nil {
		return -1, fmt.Errorf("loop: open %s: %w", path, err)
	}
	if flags&unix.O_EXCL != 0 {
		return fd, nil
	}
	how := unix.LOCK_EX
	if flags&unix.O_ACCMODE == unix.O_RDONLY {
		how = unix.LOCK_SH
	}
	for {
		err = unix.Flock(fd, how|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == nil, errors.Is(err, unix.ENOLCK), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
		// A filesystem without flock cannot keep two owners apart.
		return fd, nil
	case errors.Is(err, unix.EWOULDBLOCK):
		unix.Close(fd)
		return -1, fmt.Errorf("loop: %s is %w", path, ErrInUse)
	}
	unix.Close(fd)
	return -1, fmt.Errorf("loop: locking %s: %w", path, err)
}

// probe finds the size and block sizes of the backing store.
func (l *Target) probe() error {
	var st unix.Stat_t
	if err := unix.Fstat(l.fd, &st); err != nil {
		return fmt.Errorf("loop: stat %s: %w", l.path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		l.size = st.Size
	case unix.S_IFBLK:
		l.blockDev = true
		size, err := unix.IoctlGetUint64(l.fd, unix.BLKGETSIZE64)
		if err != nil {
			return fmt.Errorf("loop: BLKGETSIZE64 %s: %w", l.path, err)
		}
		l.size = int64(size)
		if v, err := unix.IoctlGetInt(l.fd, unix.BLKSSZGET); err == nil && v >= 512 {
			l.lbs = uint32(v)
		}
		if v, err := unix.IoctlGetInt(l.fd, unix.BLKPBSZGET); err == nil && uint32(v) >= l.lbs {
			l.pbs = uint32(v)
		}
	default:
		return fmt.Errorf("loop: %s is neither a regular file nor a block device", l.path)
	}
	l.pbs = max(l.pbs, l.lbs)
	l.size -= l.size % int64(l.lbs)
	if l.size == 0 {
		return fmt.Errorf("loop: %s is smaller than one %d-byte block", l.path, l.lbs)
	}
	return nil
}

// Size returns the device size in bytes.
func (l *Target) Size() int64 { return l.size }

// Params describes the device: a volatile cache (so FLUSH and FUA reach
// fdatasync), discard and write-zeroes through fallocate.
func (l *Target) Params() ublk.TargetParams {
	return ublk.TargetParams{
		Size:              uint64(l.size),
		LogicalBlockSize:  l.lbs,
		PhysicalBlockSize: l.pbs,
		MaxIOBytes:        l.maxIO,
		VolatileCache:     !l.readOnly,
		FUA:               !l.readOnly,
		Discard:           !l.readOnly,
		WriteZeroes:       !l.readOnly,
		ReadOnly:          l.readOnly,
	}
}

// RingFile hands the backing file to the queues, which then read and write it
// through their own io_uring as ublksrv's loop_queue_tgt_io does; Handle
// still serves what they leave to it (FUA, flush, discard, short transfers).
func (l *Target) RingFile() (fd int, writable bool) { return l.fd, !l.readOnly }

// Handle serves one request (loop_queue_tgt_io in ublksrv).
func (l *Target) Handle(r *ublk.Request) int32 {
	if r.Op != ublk.OpFlush && !r.InRange(uint64(l.size)) {
		return -int32(unix.EIO) // what bio_check_eod answers
	}
	if l.readOnly && r.Op != ublk.OpRead {
		return -int32(unix.EROFS)
	}
	switch r.Op {
	case ublk.OpRead:
		return l.read(r)
	case ublk.OpWrite:
		return l.write(r)
	case ublk.OpFlush:
		return res(0, unix.Fdatasync(l.fd))
	case ublk.OpDiscard:
		return res(0, l.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, r.Offset(), r.Bytes()))
	case ublk.OpWriteZeroes:
		return res(0, l.writeZeroes(r))
	}
	return -int32(unix.EOPNOTSUPP)
}

// read copies file bytes into the request, chunk by chunk.
func (l *Target) read(r *ublk.Request) int32 {
	buf := l.getBuf()
	defer l.bufs.Put(buf)
	total := r.Bytes()
	for done := int64(0); done < total; {
		chunk := (*buf)[:min(int64(len(*buf)), total-done)]
		n, err := ublk.FullIO(unix.Pread, l.fd, chunk, r.Offset()+done)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			clear(chunk[n:]) // the file shrank under us: reads past EOF are zeros
		} else if err != nil {
			return res(0, err)
		}
		if _, err := r.Data.WriteAt(chunk, done); err != nil {
			return res(0, err)
		}
		done += int64(len(chunk))
	}
	return int32(total)
}

// write copies the request into the file; FUA makes it durable first.
func (l *Target) write(r *ublk.Request) int32 {
	buf := l.getBuf()
	defer l.bufs.Put(buf)
	total := r.Bytes()
	for done := int64(0); done < total; {
		chunk := (*buf)[:min(int64(len(*buf)), total-done)]
		if _, err := r.Data.ReadAt(chunk, done); err != nil {
			return res(0, err)
		}
		if _, err := ublk.FullIO(unix.Pwrite, l.fd, chunk, r.Offset()+done); err != nil {
			return res(0, err)
		}
		done += int64(len(chunk))
	}
	if r.Flags&ublk.ReqFUA != 0 {
		if err := unix.Fdatasync(l.fd); err != nil {
			return res(0, err)
		}
	}
	return int32(total)
}

// writeZeroes zeroes the range: ZERO_RANGE keeps blocks allocated (what
// REQ_NOUNMAP asks for); where it is refused, PUNCH_HOLE unless NOUNMAP, and
// plain zero writes as the last resort.
func (l *Target) writeZeroes(r *ublk.Request) error {
	if !l.noZeroRange.Load() {
		err := l.fallocate(unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, r.Offset(), r.Bytes())
		if !errors.Is(err, unix.EOPNOTSUPP) {
			return err
		}
		l.noZeroRange.Store(true)
	}
	if r.Flags&ublk.ReqNoUnmap == 0 {
		err := l.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, r.Offset(), r.Bytes())
		if !errors.Is(err, unix.EOPNOTSUPP) {
			return err
		}
	}
	buf := l.getBuf()
	defer l.bufs.Put(buf)
	clear(*buf)
	for done := int64(0); done < r.Bytes(); {
		chunk := (*buf)[:min(int64(len(*buf)), r.Bytes()-done)]
		if _, err := ublk.FullIO(unix.Pwrite, l.fd, chunk, r.Offset()+done); err != nil {
			return err
		}
		done += int64(len(chunk))
	}
	return nil
}

func (l *Target) fallocate(mode uint32, off, n int64) error {
	for {
		err := unix.Fallocate(l.fd, mode, off, n)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func (l *Target) getBuf() *[]byte { return l.bufs.Get().(*[]byte) }

// Close closes the backing file. It is idempotent.
func (l *Target) Close() error {
	var err error
	l.closeOnce.Do(func() {
		if err = unix.Close(l.fd); err != nil {
			err = fmt.Errorf("loop: close %s: %w", l.path, err)
		}
	})
	return err
}

// res turns an error into the negative errno ublk wants (-EIO when the error
// carries none), or returns ok.
func res(ok int32, err error) int32 {
	if err == nil {
		return ok
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return -int32(e)
	}
	return -int32(unix.EIO)
}
