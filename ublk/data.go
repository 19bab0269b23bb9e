package ublk

import (
	"errors"
	"fmt"
	"io"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errOutOfRange is returned by WriteAt past the end of a request.
var errOutOfRange = errors.New("ublk: access beyond the end of the request")

// dataSource gives each tag its buffer address for FETCH/COMMIT and the
// RequestData of the request it currently carries.
type dataSource interface {
	addr(tag uint16) uint64
	data(tag uint16, n int64) (RequestData, error)
	close() error
}

// userCopySource serves UBLK_F_USER_COPY: the request pages are reached by
// pread/pwrite on /dev/ublkcN and no buffer address is passed (addr must be 0).
type userCopySource struct {
	per []userCopyData
}

func newUserCopySource(fd int, q uint16, depth int) *userCopySource {
	s := &userCopySource{per: make([]userCopyData, depth)}
	for tag := range s.per {
		s.per[tag] = userCopyData{fd: fd, base: UserCopyOffset(q, uint16(tag))}
	}
	return s
}

func (s *userCopySource) addr(uint16) uint64 { return 0 }

func (s *userCopySource) data(tag uint16, n int64) (RequestData, error) {
	if n > MaxUserCopyBytes {
		return nil, fmt.Errorf("ublk: request of %d bytes exceeds the user-copy window", n)
	}
	u := &s.per[tag]
	u.size = n
	return u, nil
}

func (s *userCopySource) close() error { return nil }

// userCopyData is the RequestData of one tag under UBLK_F_USER_COPY. The kernel
// checks the direction: pread works on WRITE requests, pwrite on READ ones.
type userCopyData struct {
	fd   int
	base int64 // UserCopyOffset(q, tag)
	size int64
}

// ReadAt copies request bytes [off, off+len(p)) into p with pread.
func (u *userCopyData) ReadAt(p []byte, off int64) (int, error) {
	want, short, err := clampRange(len(p), off, u.size)
	if err != nil {
		return 0, err
	}
	n, err := userCopy(unix.Pread, u.fd, p[:want], u.base+off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

// WriteAt copies p into request bytes [off, off+len(p)) with pwrite.
func (u *userCopyData) WriteAt(p []byte, off int64) (int, error) {
	want, short, err := clampRange(len(p), off, u.size)
	if err != nil {
		return 0, err
	}
	n, err := userCopy(unix.Pwrite, u.fd, p[:want], u.base+off)
	if err == nil && short {
		err = errOutOfRange
	}
	return n, err
}

// clampRange limits an access of n bytes at off to a request of size bytes.
func clampRange(n int, off, size int64) (want int, short bool, err error) {
	if off < 0 {
		return 0, false, fmt.Errorf("ublk: negative request offset %d", off)
	}
	if off >= size {
		if n == 0 {
			return 0, false, nil
		}
		return 0, true, nil
	}
	if int64(n) > size-off {
		return int(size - off), true, nil
	}
	return n, false, nil
}

// userCopy is FullIO on the char device at off, with the offset in the error.
func userCopy(op func(int, []byte, int64) (int, error), fd int, p []byte, off int64) (int, error) {
	n, err := FullIO(op, fd, p, off)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("ublk: user copy at %#x: %w", off+int64(n), err)
	}
	return n, err
}

// FullIO repeats op (unix.Pread or unix.Pwrite) until p is done, retrying
// EINTR; a zero-byte transfer ends it with io.ErrUnexpectedEOF. No kernel
// counterpart: the short-transfer loop user copy and file-backed targets
// (ublksrv's loop) need around pread/pwrite.
func FullIO(op func(int, []byte, int64) (int, error), fd int, p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := op(fd, p[done:], off+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, io.ErrUnexpectedEOF
		}
		done += n
	}
	return done, nil
}

// bufferSource is the fallback without UBLK_F_USER_COPY: one buffer of
// max_io_buf_bytes per tag, whose address goes into FETCH and COMMIT; the
// kernel copies WRITE data in before the fetch completes and READ data out
// when the commit arrives. The buffers are mmapped so they are page aligned,
// outside the Go heap and only backed by memory once touched.
type bufferSource struct {
	mem    []byte
	per    int
	views  []bufData
	mapped bool
}

func newBufferSource(depth, per int) (*bufferSource, error) {
	mem, err := unix.Mmap(-1, 0, depth*per, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("ublk: mmap %d I/O buffers of %d bytes: %w", depth, per, err)
	}
	s := newBufferSourceOn(mem, depth, per)
	s.mapped = true
	return s, nil
}

// newBufferSourceOn uses caller-provided memory (tests).
func newBufferSourceOn(mem []byte, depth, per int) *bufferSource {
	return &bufferSource{mem: mem, per: per, views: make([]bufData, depth)}
}

func (s *bufferSource) addr(tag uint16) uint64 {
	return uint64(uintptr(unsafe.Pointer(&s.mem[int(tag)*s.per])))
}

func (s *bufferSource) data(tag uint16, n int64) (RequestData, error) {
	if n > int64(s.per) {
		return nil, fmt.Errorf("ublk: request of %d bytes exceeds the %d-byte tag buffer", n, s.per)
	}
	start := int(tag) * s.per
	v := &s.views[tag]
	v.b = s.mem[start : start+int(n)]
	return v, nil
}

func (s *bufferSource) close() error {
	if !s.mapped || s.mem == nil {
		return nil
	}
	err := unix.Munmap(s.mem)
	s.mem = nil
	return err
}

// bufData is the RequestData of one tag's buffer.
type bufData struct{ b []byte }

// ReadAt copies buffer bytes into p.
func (d *bufData) ReadAt(p []byte, off int64) (int, error) {
	want, short, err := clampRange(len(p), off, int64(len(d.b)))
	if err != nil {
		return 0, err
	}
	n := 0
	if want > 0 {
		n = copy(p[:want], d.b[off:])
	}
	if short {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt copies p into the buffer.
func (d *bufData) WriteAt(p []byte, off int64) (int, error) {
	want, short, err := clampRange(len(p), off, int64(len(d.b)))
	if err != nil {
		return 0, err
	}
	n := 0
	if want > 0 {
		n = copy(d.b[off:], p[:want])
	}
	if short {
		return n, errOutOfRange
	}
	return n, nil
}
