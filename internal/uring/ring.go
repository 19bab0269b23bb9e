// Package uring is a small, explicit io_uring binding on raw syscalls
// (include/uapi/linux/io_uring.h): ring setup and mmap, SQE preparation,
// submission and completion reaping. It exists because ublk needs URING_CMD on
// 128-byte SQEs and exact control over which thread enters the ring.
//
// A Ring is not safe for concurrent use: one goroutine owns it.
package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// System call numbers (amd64 and arm64 share them since io_uring was added late).
const (
	sysIOUringSetup    = 425
	sysIOUringEnter    = 426
	sysIOUringRegister = 427
)

// Setup flags (IORING_SETUP_*).
const (
	SetupIOPoll       = 1 << 0  // IORING_SETUP_IOPOLL
	SetupCQSize       = 1 << 3  // IORING_SETUP_CQSIZE
	SetupClamp        = 1 << 4  // IORING_SETUP_CLAMP
	SetupCoopTaskrun  = 1 << 8  // IORING_SETUP_COOP_TASKRUN
	SetupSQE128       = 1 << 10 // IORING_SETUP_SQE128
	SetupCQE32        = 1 << 11 // IORING_SETUP_CQE32
	SetupSingleIssuer = 1 << 12 // IORING_SETUP_SINGLE_ISSUER
	SetupDeferTaskrun = 1 << 13 // IORING_SETUP_DEFER_TASKRUN
)

// Feature bits reported in Params.Features (IORING_FEAT_*).
const (
	FeatSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP
	FeatNoDrop     = 1 << 1 // IORING_FEAT_NODROP
)

// io_uring_enter flags and mmap offsets.
const (
	EnterGetEvents      = 1 << 0 // IORING_ENTER_GETEVENTS
	EnterRegisteredRing = 1 << 4 // IORING_ENTER_REGISTERED_RING

	offSQRing = 0          // IORING_OFF_SQ_RING
	offCQRing = 0x8000000  // IORING_OFF_CQ_RING
	offSQEs   = 0x10000000 // IORING_OFF_SQES
)

// ErrRingFull is returned when every SQE slot holds an entry the kernel has not
// consumed yet; call Submit and try again.
var ErrRingFull = errors.New("uring: submission queue full")

// SQRingOffsets is struct io_sqring_offsets (40 bytes).
type SQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

// CQRingOffsets is struct io_cqring_offsets (40 bytes).
type CQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

// Params is struct io_uring_params (120 bytes), passed to io_uring_setup.
type Params struct {
	SQEntries    uint32
	CQEntries    uint32
	Flags        uint32
	SQThreadCPU  uint32
	SQThreadIdle uint32
	Features     uint32
	WQFd         uint32
	Resv         [3]uint32
	SQOff        SQRingOffsets // @40
	CQOff        CQRingOffsets // @80
}

// Ring is one io_uring instance with its three mappings.
type Ring struct {
	fd       int
	flags    uint32
	features uint32
	sqeSize  uint32
	cqeSize  uint32

	sqRing []byte
	cqRing []byte // same memory as sqRing with FEAT_SINGLE_MMAP
	sqeMem []byte

	sqHead, sqTail *uint32
	sqMask         uint32
	sqEntries      uint32
	cqHead, cqTail *uint32
	cqOverflow     *uint32
	cqMask         uint32
	cqEntries      uint32
	cqesOff        uint32

	// sqeTail is the next slot NextSQE hands out; it is published to the
	// kernel's tail word only when the entries are submitted.
	sqeTail uint32
	closed  bool
	enters  uint64

	// ringIndex is the ring's slot in its thread's registered rings, which
	// io_uring_enter is then called with in place of the fd; -1 unless
	// RegisterRingFd succeeded.
	ringIndex int
}

// New sets up a ring with at least entries SQEs (the kernel rounds up to a
// power of two) and the given IORING_SETUP_* flags (io_uring_queue_init).
func New(entries uint32, flags uint32) (*Ring, error) {
	return NewWithParams(entries, &Params{Flags: flags})
}

// NewWithParams is New with a full io_uring_params, e.g. for SetupCQSize.
// The kernel's answer (sizes, offsets, features) is written back into p.
func NewWithParams(entries uint32, p *Params) (*Ring, error) {
	fd, _, errno := unix.Syscall(sysIOUringSetup, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup(%d, flags %#x): %w", entries, p.Flags, errno)
	}
	r := &Ring{fd: int(fd), flags: p.Flags, features: p.Features, sqeSize: sqeSize, cqeSize: cqeSize,
		ringIndex: -1}
	if p.Flags&SetupSQE128 != 0 {
		r.sqeSize = 2 * sqeSize
	}
	if p.Flags&SetupCQE32 != 0 {
		r.cqeSize = 2 * cqeSize
	}
	if err := r.mapRings(p); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// mapRings maps the SQ ring, CQ ring and SQE array and resolves the shared
// words (io_uring_mmap in liburing).
func (r *Ring) mapRings(p *Params) error {
	sqSize := int(p.SQOff.Array + p.SQEntries*4)
	cqSize := int(p.CQOff.CQEs + p.CQEntries*r.cqeSize)
	single := p.Features&FeatSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	if r.sqRing, err = mmapRing(r.fd, offSQRing, sqSize); err != nil {
		return fmt.Errorf("io_uring mmap SQ ring: %w", err)
	}
	r.cqRing = r.sqRing
	if !single {
		if r.cqRing, err = mmapRing(r.fd, offCQRing, cqSize); err != nil {
			return fmt.Errorf("io_uring mmap CQ ring: %w", err)
		}
	}
	if r.sqeMem, err = mmapRing(r.fd, offSQEs, int(p.SQEntries*r.sqeSize)); err != nil {
		return fmt.Errorf("io_uring mmap SQEs: %w", err)
	}
	r.sqHead = word(r.sqRing, p.SQOff.Head)
	r.sqTail = word(r.sqRing, p.SQOff.Tail)
	r.sqMask = *word(r.sqRing, p.SQOff.RingMask)
	r.sqEntries = *word(r.sqRing, p.SQOff.RingEntries)
	r.cqHead = word(r.cqRing, p.CQOff.Head)
	r.cqTail = word(r.cqRing, p.CQOff.Tail)
	r.cqOverflow = word(r.cqRing, p.CQOff.Overflow)
	r.cqMask = *word(r.cqRing, p.CQOff.RingMask)
	r.cqEntries = *word(r.cqRing, p.CQOff.RingEntries)
	r.cqesOff = p.CQOff.CQEs
	// The indirection array maps SQ slots to SQE indexes; an identity map lets
	// NextSQE hand out SQEs in ring order and publish them by moving the tail.
	for i := uint32(0); i < r.sqEntries; i++ {
		*word(r.sqRing, p.SQOff.Array+4*i) = i
	}
	r.sqeTail = atomic.LoadUint32(r.sqTail)
	return nil
}

func mmapRing(fd int, off int64, size int) ([]byte, error) {
	return unix.Mmap(fd, off, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
}

// word returns a pointer to the u32 at off inside a ring mapping.
func word(m []byte, off uint32) *uint32 {
	return (*uint32)(unsafe.Pointer(&m[off]))
}

// Fd returns the ring's file descriptor.
func (r *Ring) Fd() int { return r.fd }

// Flags returns the IORING_SETUP_* flags the ring was created with.
func (r *Ring) Flags() uint32 { return r.flags }

// Features returns the IORING_FEAT_* bits the kernel reported.
func (r *Ring) Features() uint32 { return r.features }

// SQEntries returns the number of submission queue entries the kernel chose.
func (r *Ring) SQEntries() uint32 { return r.sqEntries }

// CQEntries returns the number of completion queue entries.
func (r *Ring) CQEntries() uint32 { return r.cqEntries }

// CmdLen returns the URING_CMD payload size of this ring's SQEs: 16 bytes, or
// 80 with SetupSQE128.
func (r *Ring) CmdLen() int {
	if r.sqeSize == 2*sqeSize {
		return CmdLenSQE128
	}
	return CmdLenSQE64
}

// NextSQE returns the next free, zeroed SQE, or nil when all slots are taken
// (io_uring_get_sqe). The entry reaches the kernel with the next Submit.
func (r *Ring) NextSQE() *SQE {
	head := atomic.LoadUint32(r.sqHead)
	if r.sqeTail-head >= r.sqEntries {
		return nil
	}
	off := (r.sqeTail & r.sqMask) * r.sqeSize
	r.sqeTail++
	mem := r.sqeMem[off : off+r.sqeSize]
	clear(mem)
	return (*SQE)(unsafe.Pointer(&mem[0]))
}

// Cmd returns the URING_CMD payload area of sqe (sqe->cmd, offset 48): 16
// bytes on a 64-byte ring, 80 bytes on an SQE128 ring. sqe must come from r.
func (r *Ring) Cmd(sqe *SQE) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(sqe), cmdOffset)), r.CmdLen())
}

// PrepUringCmd takes the next SQE and fills it as IORING_OP_URING_CMD on fd
// with cmdOp and payload copied into sqe->cmd (io_uring_prep_uring_cmd).
func (r *Ring) PrepUringCmd(fd int, cmdOp uint32, payload []byte, userData uint64) (*SQE, error) {
	if len(payload) > r.CmdLen() {
		return nil, fmt.Errorf("uring: URING_CMD payload of %d bytes exceeds %d", len(payload), r.CmdLen())
	}
	sqe := r.NextSQE()
	if sqe == nil {
		return nil, ErrRingFull
	}
	sqe.PrepUringCmd(fd, cmdOp, userData)
	copy(r.Cmd(sqe), payload)
	return sqe, nil
}

// SQSpace returns how many SQEs NextSQE can still hand out before a submit
// (io_uring_sq_space_left).
func (r *Ring) SQSpace() uint32 {
	return r.sqEntries - r.Pending()
}

// Pending returns how many prepared SQEs the kernel has not consumed yet.
func (r *Ring) Pending() uint32 {
	return r.sqeTail - atomic.LoadUint32(r.sqHead)
}

// Submit hands all prepared SQEs to the kernel (io_uring_submit) and returns
// how many it consumed.
func (r *Ring) Submit() (int, error) {
	return r.SubmitAndWait(0)
}

// SubmitAndWait submits the prepared SQEs and blocks until at least waitNr
// CQEs are ready (io_uring_submit_and_wait). EINTR, which Go's preemption
// signals cause routinely, is retried.
func (r *Ring) SubmitAndWait(waitNr uint32) (int, error) {
	submitted := 0
	for {
		// Publishing the tail with an atomic store orders the SQE writes
		// before it, which is the release the kernel's acquire pairs with.
		atomic.StoreUint32(r.sqTail, r.sqeTail)
		toSubmit := r.Pending()
		wait := waitNr > 0 && r.CQReady() < waitNr
		if toSubmit == 0 && !wait {
			return submitted, nil
		}
		var flags, minComplete uint32
		if wait {
			flags, minComplete = EnterGetEvents, waitNr
		}
		n, err := r.enter(toSubmit, minComplete, flags)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return submitted, err
		}
		submitted += n
		if n == 0 && toSubmit > 0 {
			return submitted, fmt.Errorf("io_uring_enter: consumed none of %d SQEs: %w", toSubmit, unix.EAGAIN)
		}
	}
}

// Enters returns how many io_uring_enter calls the ring made, a cheap
// per-request profile for its owner. No kernel counterpart.
func (r *Ring) Enters() uint64 { return r.enters }

// enter is the raw io_uring_enter(2) without a signal mask.
func (r *Ring) enter(toSubmit, minComplete, flags uint32) (int, error) {
	r.enters++
	fd := r.enterFd()
	if r.ringIndex >= 0 {
		flags |= EnterRegisteredRing
	}
	n, _, errno := unix.Syscall6(sysIOUringEnter, uintptr(fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), 0, 0)
	if errno != 0 {
		return 0, fmt.Errorf("io_uring_enter: %w", errno)
	}
	return int(n), nil
}

// enterFd is what io_uring_enter takes as its fd: the registered index when
// there is one (with IORING_ENTER_REGISTERED_RING), else the ring's fd.
func (r *Ring) enterFd() int {
	if r.ringIndex >= 0 {
		return r.ringIndex
	}
	return r.fd
}

// CQReady returns the number of CQEs waiting to be reaped (io_uring_cq_ready).
func (r *Ring) CQReady() uint32 {
	return atomic.LoadUint32(r.cqTail) - atomic.LoadUint32(r.cqHead)
}

// Overflow returns the kernel's CQ overflow counter (entries it had to drop or
// buffer because the CQ was full).
func (r *Ring) Overflow() uint32 { return atomic.LoadUint32(r.cqOverflow) }

func (r *Ring) cqeAt(head uint32) CQE {
	off := r.cqesOff + (head&r.cqMask)*r.cqeSize
	return *(*CQE)(unsafe.Pointer(&r.cqRing[off]))
}

// PeekCQE returns a copy of the oldest ready CQE without consuming it
// (io_uring_peek_cqe); SeenCQE consumes it.
func (r *Ring) PeekCQE() (CQE, bool) {
	head := atomic.LoadUint32(r.cqHead)
	if head == atomic.LoadUint32(r.cqTail) {
		return CQE{}, false
	}
	return r.cqeAt(head), true
}

// SeenCQE marks the oldest CQE consumed so the kernel may reuse its slot
// (io_uring_cqe_seen).
func (r *Ring) SeenCQE() {
	atomic.AddUint32(r.cqHead, 1)
}

// WaitCQE blocks until a CQE is ready and returns a copy of it without
// consuming it (io_uring_wait_cqe). It does not submit.
func (r *Ring) WaitCQE() (CQE, error) {
	for {
		if cqe, ok := r.PeekCQE(); ok {
			return cqe, nil
		}
		_, err := r.enter(0, 1, EnterGetEvents)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return CQE{}, err
		}
	}
}

// Reap copies up to len(dst) ready CQEs into dst, consumes them and returns
// the count (io_uring_peek_batch_cqe + io_uring_cq_advance).
func (r *Ring) Reap(dst []CQE) int {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	n := 0
	for ; head != tail && n < len(dst); n++ {
		dst[n] = r.cqeAt(head)
		head++
	}
	atomic.StoreUint32(r.cqHead, head)
	return n
}

// Register is the raw io_uring_register(2).
func (r *Ring) Register(opcode uint32, arg unsafe.Pointer, nrArgs uint32) (int, error) {
	n, _, errno := unix.Syscall6(sysIOUringRegister, uintptr(r.fd), uintptr(opcode), uintptr(arg), uintptr(nrArgs), 0, 0)
	if errno != 0 {
		return 0, fmt.Errorf("io_uring_register(%d): %w", opcode, errno)
	}
	return int(n), nil
}

const (
	registerFiles     = 2  // IORING_REGISTER_FILES
	registerRingFds   = 20 // IORING_REGISTER_RING_FDS
	unregisterRingFds = 21 // IORING_UNREGISTER_RING_FDS
)

// RegisterFiles makes fds the ring's fixed file table
// (io_uring_register_files): an SQE with SQEFixedFile names a file by its
// index there, and the kernel skips looking the fd up and taking a
// reference on it per request (in a multi-threaded process, such as any Go
// program, that reference is an atomic on the file). -1 leaves a slot empty.
func (r *Ring) RegisterFiles(fds []int32) error {
	if len(fds) == 0 {
		return nil
	}
	_, err := r.Register(registerFiles, unsafe.Pointer(&fds[0]), uint32(len(fds)))
	return err
}

// rsrcUpdate is struct io_uring_rsrc_update (16 bytes).
type rsrcUpdate struct {
	Offset uint32
	Resv   uint32
	Data   uint64
}

// RegisterRingFd registers the ring in the calling thread's table of rings
// (io_uring_register_ring_fd), and from then on enters it by that index:
// io_uring_enter no longer looks the ring's fd up on every call. The table
// is the thread's own, so the caller must hold its OS thread
// (runtime.LockOSThread) and enter and Close the ring only from it.
func (r *Ring) RegisterRingFd() error {
	upd := rsrcUpdate{Offset: ^uint32(0), Data: uint64(r.fd)} // any free slot
	if _, err := r.Register(registerRingFds, unsafe.Pointer(&upd), 1); err != nil {
		return err
	}
	r.ringIndex = int(upd.Offset)
	return nil
}

// unregisterRingFd drops the thread's reference to the ring, which would
// otherwise keep it (and everything in flight on it) alive after Close.
func (r *Ring) unregisterRingFd() error {
	if r.ringIndex < 0 {
		return nil
	}
	upd := rsrcUpdate{Offset: uint32(r.ringIndex)}
	r.ringIndex = -1
	_, err := r.Register(unregisterRingFds, unsafe.Pointer(&upd), 1)
	return err
}

const (
	registerProbe   = 8 // IORING_REGISTER_PROBE
	probeOps        = 256
	probeSupported  = 1 << 0 // IO_URING_OP_SUPPORTED
	probeHeaderSize = 16     // struct io_uring_probe without ops[]
	probeOpSize     = 8      // struct io_uring_probe_op
)

// OpSupported asks the kernel whether it knows opcode op (IORING_REGISTER_PROBE).
func (r *Ring) OpSupported(op uint8) (bool, error) {
	buf := make([]byte, probeHeaderSize+probeOps*probeOpSize)
	if _, err := r.Register(registerProbe, unsafe.Pointer(&buf[0]), probeOps); err != nil {
		return false, err
	}
	lastOp := buf[0]
	if op > lastOp {
		return false, nil
	}
	flags := uint16(buf[probeHeaderSize+int(op)*probeOpSize+2]) | uint16(buf[probeHeaderSize+int(op)*probeOpSize+3])<<8
	return flags&probeSupported != 0, nil
}

// Close unregisters the ring from its thread, unmaps the rings and closes the
// fd (io_uring_unregister_ring_fd + io_uring_queue_exit). Closing the last
// reference cancels whatever is still in flight. Close is idempotent.
func (r *Ring) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	var errs []error
	if err := r.unregisterRingFd(); err != nil {
		errs = append(errs, err)
	}
	if r.sqeMem != nil {
		errs = append(errs, unix.Munmap(r.sqeMem))
	}
	if r.cqRing != nil && unsafe.SliceData(r.cqRing) != unsafe.SliceData(r.sqRing) {
		errs = append(errs, unix.Munmap(r.cqRing))
	}
	if r.sqRing != nil {
		errs = append(errs, unix.Munmap(r.sqRing))
	}
	errs = append(errs, unix.Close(r.fd))
	r.sqeMem, r.cqRing, r.sqRing = nil, nil, nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uring: close: %w", err)
	}
	return nil
}
