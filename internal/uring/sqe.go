package uring

import (
	"unsafe"
)

// Opcodes used by this project (enum io_uring_op in include/uapi/linux/io_uring.h).
const (
	OpNop      = 0  // IORING_OP_NOP
	OpReadv    = 1  // IORING_OP_READV
	OpWritev   = 2  // IORING_OP_WRITEV
	OpFsync    = 3  // IORING_OP_FSYNC
	OpRead     = 22 // IORING_OP_READ
	OpWrite    = 23 // IORING_OP_WRITE
	OpUringCmd = 46 // IORING_OP_URING_CMD
)

// SQEFixedFile in SQE.Flags makes Fd an index into the ring's registered
// files (IOSQE_FIXED_FILE; see Ring.RegisterFiles).
const SQEFixedFile = 1 << 0

// FsyncDatasync asks OpFsync for fdatasync semantics (IORING_FSYNC_DATASYNC).
const FsyncDatasync = 1

// SQE is struct io_uring_sqe, the 64-byte submission queue entry. On rings set up
// with SetupSQE128 every entry is followed by 64 more bytes that belong to the
// URING_CMD payload (see Ring.Cmd).
type SQE struct {
	Opcode      uint8  // @0  opcode
	Flags       uint8  // @1  IOSQE_* flags
	IOPrio      uint16 // @2  ioprio
	Fd          int32  // @4  fd
	Off         uint64 // @8  off / addr2; for URING_CMD: cmd_op u32 @8, __pad1 u32 @12
	Addr        uint64 // @16 addr
	Len         uint32 // @24 len
	OpFlags     uint32 // @28 rw_flags / fsync_flags / uring_cmd_flags
	UserData    uint64 // @32 user_data
	BufIndex    uint16 // @40 buf_index
	Personality uint16 // @42 personality
	SpliceFdIn  int32  // @44 splice_fd_in / file_index
	Addr3       uint64 // @48 addr3, or the first 8 bytes of cmd[]
	Pad2        uint64 // @56 __pad2[0]
}

// CQE is struct io_uring_cqe (16 bytes), copied out of the completion ring.
type CQE struct {
	UserData uint64 // @0
	Res      int32  // @8
	Flags    uint32 // @12
}

// Sizes and the URING_CMD payload offset, checked by the tests.
const (
	sqeSize       = 64
	cqeSize       = 16
	cmdOffset     = 48 // offsetof(struct io_uring_sqe, cmd)
	CmdLenSQE64   = 16 // payload bytes of a URING_CMD on a 64-byte SQE
	CmdLenSQE128  = 80 // payload bytes of a URING_CMD on a 128-byte SQE
	uringCmdOpOff = 8  // offsetof(struct io_uring_sqe, cmd_op)
)

// bufAddr returns the address of b's first byte as the kernel wants it. The
// caller keeps b alive (and unmoved: heap or mmap memory) until the CQE arrives.
func bufAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	forceEscape(p)
	return uint64(uintptr(p))
}

// escapeSink and forceEscape make every buffer handed to a prep helper escape
// to the heap: a pointer turned into an integer does not count as an escape,
// so without this a caller's small buffer could live on a goroutine stack,
// which moves when the stack grows while the kernel still writes to it.
var escapeSink struct {
	on bool
	p  unsafe.Pointer
}

func forceEscape(p unsafe.Pointer) {
	if escapeSink.on {
		escapeSink.p = p
	}
}

// PrepNop fills s as IORING_OP_NOP (io_uring_prep_nop in liburing).
func (s *SQE) PrepNop(userData uint64) {
	*s = SQE{Opcode: OpNop, UserData: userData}
}

// PrepRead fills s as IORING_OP_READ of len(buf) bytes at off (io_uring_prep_read).
func (s *SQE) PrepRead(fd int, buf []byte, off uint64, userData uint64) {
	*s = SQE{Opcode: OpRead, Fd: int32(fd), Addr: bufAddr(buf), Len: uint32(len(buf)), Off: off, UserData: userData}
}

// PrepWrite fills s as IORING_OP_WRITE of buf at off (io_uring_prep_write).
func (s *SQE) PrepWrite(fd int, buf []byte, off uint64, userData uint64) {
	*s = SQE{Opcode: OpWrite, Fd: int32(fd), Addr: bufAddr(buf), Len: uint32(len(buf)), Off: off, UserData: userData}
}

// PrepReadv fills s as IORING_OP_READV (io_uring_prep_readv). iov must stay
// alive until submission; the buffers it points to until completion.
func (s *SQE) PrepReadv(fd int, iov []Iovec, off uint64, userData uint64) {
	*s = SQE{Opcode: OpReadv, Fd: int32(fd), Addr: iovAddr(iov), Len: uint32(len(iov)), Off: off, UserData: userData}
}

// PrepFsync fills s as IORING_OP_FSYNC (io_uring_prep_fsync); flags may be FsyncDatasync.
func (s *SQE) PrepFsync(fd int, flags uint32, userData uint64) {
	*s = SQE{Opcode: OpFsync, Fd: int32(fd), OpFlags: flags, UserData: userData}
}

// PrepUringCmd fills the header of an IORING_OP_URING_CMD: cmd_op at offset 8,
// pad at 12 left zero. The payload is written with Ring.Cmd (or Ring.PrepUringCmd).
func (s *SQE) PrepUringCmd(fd int, cmdOp uint32, userData uint64) {
	*s = SQE{Opcode: OpUringCmd, Fd: int32(fd), Off: uint64(cmdOp), UserData: userData}
}

// CmdOp returns the cmd_op field of a URING_CMD SQE.
func (s *SQE) CmdOp() uint32 { return uint32(s.Off) }

// Iovec is struct iovec.
type Iovec struct {
	Base *byte
	Len  uint64
}

// IovecOf builds an Iovec covering b.
func IovecOf(b []byte) Iovec {
	if len(b) == 0 {
		return Iovec{}
	}
	return Iovec{Base: unsafe.SliceData(b), Len: uint64(len(b))}
}

func iovAddr(iov []Iovec) uint64 {
	if len(iov) == 0 {
		return 0
	}
	p := unsafe.Pointer(unsafe.SliceData(iov))
	forceEscape(p)
	return uint64(uintptr(p))
}
