// Package ublk is a pure-Go ublk server (include/uapi/linux/ublk_cmd.h,
// drivers/block/ublk_drv.c; the C counterpart is ublksrv's libublksrv). It
// adds a /dev/ublkbN block device whose requests are answered by a Target.
// It knows nothing about what the target does with them.
package ublk

import (
	"fmt"
	"io"
	"math/bits"
)

// Op is the operation of a request (UBLK_IO_OP_*).
type Op uint8

// Operations a target may see. Values equal the UAPI ones.
const (
	OpRead        Op = 0 // UBLK_IO_OP_READ
	OpWrite       Op = 1 // UBLK_IO_OP_WRITE
	OpFlush       Op = 2 // UBLK_IO_OP_FLUSH (only with TargetParams.VolatileCache)
	OpDiscard     Op = 3 // UBLK_IO_OP_DISCARD (only with TargetParams.Discard)
	OpWriteZeroes Op = 5 // UBLK_IO_OP_WRITE_ZEROES (only with TargetParams.WriteZeroes)
)

// String returns the UAPI name without the UBLK_IO_OP_ prefix.
func (o Op) String() string {
	switch o {
	case OpRead:
		return "READ"
	case OpWrite:
		return "WRITE"
	case OpFlush:
		return "FLUSH"
	case OpDiscard:
		return "DISCARD"
	case OpWriteZeroes:
		return "WRITE_ZEROES"
	}
	return fmt.Sprintf("OP(%d)", uint8(o))
}

// ReqFlags are the UBLK_IO_F_* bits of a request, at their UAPI positions.
type ReqFlags uint32

// Request flags.
const (
	ReqFailfastDev       ReqFlags = 1 << 8  // UBLK_IO_F_FAILFAST_DEV
	ReqFailfastTransport ReqFlags = 1 << 9  // UBLK_IO_F_FAILFAST_TRANSPORT
	ReqFailfastDriver    ReqFlags = 1 << 10 // UBLK_IO_F_FAILFAST_DRIVER
	ReqMeta              ReqFlags = 1 << 11 // UBLK_IO_F_META
	ReqFUA               ReqFlags = 1 << 13 // UBLK_IO_F_FUA: make this write durable before answering
	ReqNoUnmap           ReqFlags = 1 << 15 // UBLK_IO_F_NOUNMAP: WRITE_ZEROES must keep blocks allocated
	ReqSwap              ReqFlags = 1 << 16 // UBLK_IO_F_SWAP
)

// RequestData gives access to the bytes of a READ or WRITE request. Offsets are
// relative to the first byte of the request; its length is Request.Bytes().
//
// ReadAt copies FROM the request, i.e. the data a client writes (WRITE only).
// WriteAt copies INTO the request, i.e. the data a client reads (READ only).
// Both may be called several times and concurrently for distinct or equal
// ranges (a mirroring target reads the same bytes once per mirror). With
// UBLK_F_USER_COPY they are pread/pwrite on /dev/ublkcN, straight to the
// client's pages; otherwise they copy a per-tag buffer.
type RequestData interface {
	io.ReaderAt
	io.WriterAt
}

// Request is one block request handed to a Target (struct ublksrv_io_desc,
// decoded). It and its Data are valid only until Handle returns.
type Request struct {
	Op      Op
	Flags   ReqFlags
	Sector  uint64 // first sector, always in 512-byte units
	Sectors uint32 // length in 512-byte sectors (0 for FLUSH)
	Data    RequestData
	Queue   uint16
	Tag     uint16
}

// Bytes is the request length in bytes.
func (r *Request) Bytes() int64 { return int64(r.Sectors) << 9 }

// Offset is the byte offset of the request on the device. A sector near
// 2^55 wraps it (to 0 at sector 2^55): targets call InRange first.
func (r *Request) Offset() int64 { return int64(r.Sector) << 9 }

// InRange is bio_check_eod: whether the request's sectors lie within a
// device of size bytes, computed in sectors so that neither the start nor
// the end can wrap. A request that fails it must be refused before Offset
// is used.
func (r *Request) InRange(size uint64) bool {
	sectors := size >> 9
	return uint64(r.Sectors) <= sectors && r.Sector <= sectors-uint64(r.Sectors)
}

// Target serves the requests of a device (ublksrv's ublk_tgt_type
// handle_io_async, made synchronous: the server calls Handle on a worker
// goroutine, never on a queue thread, so Handle may block).
//
// Handle returns the number of bytes done for READ/WRITE (Bytes() on
// success), 0 for FLUSH/DISCARD/WRITE_ZEROES, or a negative errno. A panic is
// recovered and answered with -EIO. If the target implements io.Closer, it
// is closed after the queues have stopped and before the char device is
// released, so DEL_DEV returns only once Close has.
type Target interface {
	Handle(r *Request) int32
}

// FileTarget is a Target whose READ and WRITE requests are plain file IO on
// one descriptor, device byte x at file byte x, as for ublksrv's loop target.
// The queue then does them itself through its own io_uring, as ublksrv's
// loop_queue_tgt_io does, with no hand-off to a worker goroutine: the file
// read or write, plus under UBLK_F_USER_COPY the copy on /dev/ublkcN, are
// linked SQEs submitted with the queue's next io_uring_enter. FUA writes, the
// other operations, and any transfer that fails or comes up short go to
// Handle on a worker as before, so Handle keeps the full semantics (errors,
// zeros past a shrunken file's end).
type FileTarget interface {
	Target
	// RingFile returns the descriptor and whether WRITEs may go to it.
	RingFile() (fd int, writable bool)
}

// TargetParams describe the device a target offers; they become the basic and
// discard parameters of SET_PARAMS (struct ublk_param_basic/_discard).
type TargetParams struct {
	Size               uint64 // bytes; a multiple of LogicalBlockSize
	LogicalBlockSize   uint32 // default 512; a power of two in [512, page size]
	PhysicalBlockSize  uint32 // default LogicalBlockSize
	MaxIOBytes         uint32 // largest request; default 1 MiB
	VolatileCache      bool   // the target caches writes: the kernel sends FLUSH
	FUA                bool   // the target honours ReqFUA (needs VolatileCache)
	Discard            bool   // the target handles OpDiscard
	WriteZeroes        bool   // the target handles OpWriteZeroes
	DiscardGranularity uint32 // default PhysicalBlockSize
	ReadOnly           bool
	Rotational         bool
}

// Defaults for TargetParams and Options.
const (
	DefaultMaxIOBytes = 1 << 20
	DefaultQueueDepth = 128
	DefaultQueues     = 1
	maxDiscardSectors = 0xFFFFFFFF >> 9 // what ublksrv's loop target announces
)

// withDefaults fills unset fields.
func (p TargetParams) withDefaults() TargetParams {
	if p.LogicalBlockSize == 0 {
		p.LogicalBlockSize = 512
	}
	if p.PhysicalBlockSize == 0 {
		p.PhysicalBlockSize = p.LogicalBlockSize
	}
	if p.MaxIOBytes == 0 {
		p.MaxIOBytes = DefaultMaxIOBytes
	}
	if p.DiscardGranularity == 0 {
		p.DiscardGranularity = p.PhysicalBlockSize
	}
	return p
}

// validate checks what ublk_validate_params would refuse, with clearer words.
func (p TargetParams) validate(pageSize int) error {
	pow2 := func(v uint32) bool { return v != 0 && v&(v-1) == 0 }
	switch {
	case !pow2(p.LogicalBlockSize) || p.LogicalBlockSize < 512 || int(p.LogicalBlockSize) > pageSize:
		return fmt.Errorf("ublk: logical block size %d must be a power of two in [512, %d]", p.LogicalBlockSize, pageSize)
	case !pow2(p.PhysicalBlockSize) || p.PhysicalBlockSize < p.LogicalBlockSize:
		return fmt.Errorf("ublk: physical block size %d must be a power of two >= logical block size %d", p.PhysicalBlockSize, p.LogicalBlockSize)
	case p.Size == 0 || p.Size%uint64(p.LogicalBlockSize) != 0:
		return fmt.Errorf("ublk: device size %d must be a non-zero multiple of the logical block size %d", p.Size, p.LogicalBlockSize)
	case p.MaxIOBytes < uint32(pageSize) || p.MaxIOBytes%uint32(pageSize) != 0:
		return fmt.Errorf("ublk: max I/O size %d must be a multiple of the page size %d", p.MaxIOBytes, pageSize)
	case p.MaxIOBytes > MaxUserCopyBytes:
		return fmt.Errorf("ublk: max I/O size %d exceeds the 32 MiB a ublk request can carry", p.MaxIOBytes)
	case p.FUA && !p.VolatileCache:
		return fmt.Errorf("ublk: FUA needs a volatile write cache (the kernel ignores FUA without one)")
	case (p.Discard || p.WriteZeroes) && !pow2(p.DiscardGranularity):
		return fmt.Errorf("ublk: discard granularity %d must be a power of two", p.DiscardGranularity)
	}
	return nil
}

// toParams builds the SET_PARAMS payload. maxIOBuf is the negotiated
// max_io_buf_bytes: max_sectors may not exceed it (ublk_validate_params).
func (p TargetParams) toParams(maxIOBuf uint32) Params {
	maxIO := min(p.MaxIOBytes, maxIOBuf)
	lbs := uint8(bits.TrailingZeros32(p.LogicalBlockSize))
	pbs := uint8(bits.TrailingZeros32(p.PhysicalBlockSize))
	out := Params{
		Len:   ParamsSize,
		Types: ParamTypeBasic,
		Basic: ParamBasic{
			LogicalBSShift:  lbs,
			PhysicalBSShift: pbs,
			IOMinShift:      pbs,
			IOOptShift:      pbs,
			MaxSectors:      maxIO >> 9,
			DevSectors:      p.Size >> 9,
		},
	}
	if p.VolatileCache {
		out.Basic.Attrs |= AttrVolatileCache
	}
	if p.FUA {
		out.Basic.Attrs |= AttrFUA
	}
	if p.ReadOnly {
		out.Basic.Attrs |= AttrReadOnly
	}
	if p.Rotational {
		out.Basic.Attrs |= AttrRotational
	}
	if p.Discard || p.WriteZeroes {
		out.Types |= ParamTypeDiscard
		out.Discard = ParamDiscard{Granularity: p.DiscardGranularity, MaxDiscardSegments: 1}
		if p.Discard {
			out.Discard.MaxDiscardSectors = maxDiscardSectors
		}
		if p.WriteZeroes {
			out.Discard.MaxWriteZeroesSectors = maxDiscardSectors
		}
	}
	return out
}
