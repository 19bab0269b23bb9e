package ublk

import (
	"encoding/binary"
	"os"
	"strconv"
)

// This file mirrors include/uapi/linux/ublk_cmd.h as of Linux 6.12. Structs are
// encoded explicitly (little endian, fixed offsets) instead of being cast from
// memory, so their layout is visible here and checked by uapi_test.go.

// Device node paths.
const (
	ControlPath    = "/dev/ublk-control" // the misc device that takes control commands
	CharDevPrefix  = "/dev/ublkc"        // /dev/ublkcN: per-device data plane
	BlockDevPrefix = "/dev/ublkb"        // /dev/ublkbN: the block device clients use
	sysCharClass   = "/sys/class/ublk-char"
)

// ioctl direction bits (_IOC_READ/_IOC_WRITE) and the 'u' type of ublk commands.
const (
	iocWrite = 1
	iocRead  = 2
	iocType  = 'u'
)

// IOC encodes an ioctl number the way _IOC(dir, type, nr, size) does; ublk
// identifies its io_uring commands by these numbers (UBLK_F_CMD_IOCTL_ENCODE).
func IOC(dir, typ, nr, size uint32) uint32 {
	return dir<<30 | size<<16 | typ<<8 | nr
}

// Struct sizes in bytes.
const (
	CtrlCmdSize  = 32  // struct ublksrv_ctrl_cmd
	DevInfoSize  = 64  // struct ublksrv_ctrl_dev_info
	ParamsSize   = 112 // struct ublk_params (6.12: basic, discard, devt, zoned)
	IOCmdSize    = 16  // struct ublksrv_io_cmd
	IODescSize   = 24  // struct ublksrv_io_desc
	FeaturesSize = 8   // UBLK_FEATURES_LEN
)

// Control commands (UBLK_U_CMD_*), ioctl-encoded over struct ublksrv_ctrl_cmd.
const (
	CmdGetQueueAffinity  = iocRead<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x01            // UBLK_U_CMD_GET_QUEUE_AFFINITY
	CmdGetDevInfo        = iocRead<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x02            // UBLK_U_CMD_GET_DEV_INFO
	CmdAddDev            = (iocRead|iocWrite)<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x04 // UBLK_U_CMD_ADD_DEV
	CmdDelDev            = (iocRead|iocWrite)<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x05 // UBLK_U_CMD_DEL_DEV
	CmdStartDev          = (iocRead|iocWrite)<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x06 // UBLK_U_CMD_START_DEV
	CmdStopDev           = (iocRead|iocWrite)<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x07 // UBLK_U_CMD_STOP_DEV
	CmdSetParams         = (iocRead|iocWrite)<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x08 // UBLK_U_CMD_SET_PARAMS
	CmdGetParams         = iocRead<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x09            // UBLK_U_CMD_GET_PARAMS
	CmdStartUserRecovery = (iocRead|iocWrite)<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x10 // UBLK_U_CMD_START_USER_RECOVERY
	CmdEndUserRecovery   = (iocRead|iocWrite)<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x11 // UBLK_U_CMD_END_USER_RECOVERY
	CmdGetDevInfo2       = iocRead<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x12            // UBLK_U_CMD_GET_DEV_INFO2
	CmdGetFeatures       = iocRead<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x13            // UBLK_U_CMD_GET_FEATURES
	CmdDelDevAsync       = iocRead<<30 | CtrlCmdSize<<16 | iocType<<8 | 0x14            // UBLK_U_CMD_DEL_DEV_ASYNC
	IOFetchReq           = (iocRead|iocWrite)<<30 | IOCmdSize<<16 | iocType<<8 | 0x20   // UBLK_U_IO_FETCH_REQ
	IOCommitAndFetchReq  = (iocRead|iocWrite)<<30 | IOCmdSize<<16 | iocType<<8 | 0x21   // UBLK_U_IO_COMMIT_AND_FETCH_REQ
	IONeedGetData        = (iocRead|iocWrite)<<30 | IOCmdSize<<16 | iocType<<8 | 0x22   // UBLK_U_IO_NEED_GET_DATA
)

// cmdNames names control commands in errors and logs.
var cmdNames = map[uint32]string{
	CmdGetQueueAffinity:  "GET_QUEUE_AFFINITY",
	CmdGetDevInfo:        "GET_DEV_INFO",
	CmdAddDev:            "ADD_DEV",
	CmdDelDev:            "DEL_DEV",
	CmdStartDev:          "START_DEV",
	CmdStopDev:           "STOP_DEV",
	CmdSetParams:         "SET_PARAMS",
	CmdGetParams:         "GET_PARAMS",
	CmdStartUserRecovery: "START_USER_RECOVERY",
	CmdEndUserRecovery:   "END_USER_RECOVERY",
	CmdGetDevInfo2:       "GET_DEV_INFO2",
	CmdGetFeatures:       "GET_FEATURES",
	CmdDelDevAsync:       "DEL_DEV_ASYNC",
}

// Device feature flags, ublksrv_ctrl_dev_info.flags (UBLK_F_*).
const (
	FlagSupportZeroCopy     = 1 << 0 // UBLK_F_SUPPORT_ZERO_COPY (cleared by 6.12)
	FlagURingCmdCompInTask  = 1 << 1 // UBLK_F_URING_CMD_COMP_IN_TASK
	FlagNeedGetData         = 1 << 2 // UBLK_F_NEED_GET_DATA
	FlagUserRecovery        = 1 << 3 // UBLK_F_USER_RECOVERY
	FlagUserRecoveryReissue = 1 << 4 // UBLK_F_USER_RECOVERY_REISSUE
	FlagUnprivilegedDev     = 1 << 5 // UBLK_F_UNPRIVILEGED_DEV
	FlagCmdIoctlEncode      = 1 << 6 // UBLK_F_CMD_IOCTL_ENCODE
	FlagUserCopy            = 1 << 7 // UBLK_F_USER_COPY
	FlagZoned               = 1 << 8 // UBLK_F_ZONED
	FlagUserRecoveryFailIO  = 1 << 9 // UBLK_F_USER_RECOVERY_FAIL_IO (6.13+)
)

var flagNames = []string{
	"SUPPORT_ZERO_COPY", "URING_CMD_COMP_IN_TASK", "NEED_GET_DATA", "USER_RECOVERY",
	"USER_RECOVERY_REISSUE", "UNPRIVILEGED_DEV", "CMD_IOCTL_ENCODE", "USER_COPY",
	"ZONED", "USER_RECOVERY_FAIL_IO",
}

// featureShortNames are the names ublksrv's `ublk features` prints for each
// UBLK_F_* bit (its feat_map), bits 0 to 18; later bits print as "unknown"
// there too.
var featureShortNames = []string{
	"ZERO_COPY", "COMP_IN_TASK", "GET_DATA", "USER_RECOVERY", "RECOVERY_REISSUE",
	"UNPRIVILEGED_DEV", "CMD_IOCTL_ENCODE", "USER_COPY", "ZONED", "RECOVERY_FAIL_IO",
	"UPDATE_SIZE", "AUTO_ZC", "QUIESCE", "PER_IO_DAEMON", "BUF_REG_OFF_DAEMON",
	"BATCH_IO", "INTEGRITY", "SAFE_STOP_DEV", "NO_AUTO_PART_SCAN",
}

// FeatureShortName is the name ublksrv's `ublk features` gives UBLK_F_*
// bit `bit` (no kernel counterpart: the kernel has only the UBLK_F_ macros;
// the short names are the ublksrv tool's, kept so scripts that grep its
// output carry over). "unknown" for a bit it does not name.
func FeatureShortName(bit int) string {
	if bit >= 0 && bit < len(featureShortNames) {
		return featureShortNames[bit]
	}
	return "unknown"
}

// FlagNames lists the UBLK_F_* names of the bits set in flags; unknown bits
// appear as "bitN".
func FlagNames(flags uint64) []string {
	var out []string
	for bit := 0; bit < 64; bit++ {
		if flags&(1<<bit) == 0 {
			continue
		}
		if bit < len(flagNames) {
			out = append(out, flagNames[bit])
		} else {
			out = append(out, "bit"+strconv.Itoa(bit))
		}
	}
	return out
}

// Device states, ublksrv_ctrl_dev_info.state (UBLK_S_DEV_*).
const (
	StateDead     = 0 // UBLK_S_DEV_DEAD
	StateLive     = 1 // UBLK_S_DEV_LIVE
	StateQuiesced = 2 // UBLK_S_DEV_QUIESCED
	StateFailIO   = 3 // UBLK_S_DEV_FAIL_IO (6.13+)
)

// StateName returns the name ublksrv prints for a device state.
func StateName(state uint16) string {
	switch state {
	case StateDead:
		return "DEAD"
	case StateLive:
		return "LIVE"
	case StateQuiesced:
		return "QUIESCED"
	case StateFailIO:
		return "FAIL_IO"
	}
	return "UNKNOWN"
}

// Parameter types and basic attributes (UBLK_PARAM_TYPE_*, UBLK_ATTR_*).
const (
	ParamTypeBasic   = 1 << 0
	ParamTypeDiscard = 1 << 1
	ParamTypeDevt    = 1 << 2
	ParamTypeZoned   = 1 << 3

	AttrReadOnly      = 1 << 0
	AttrRotational    = 1 << 1
	AttrVolatileCache = 1 << 2 // enables FLUSH requests
	AttrFUA           = 1 << 3 // enables REQ_FUA on writes
)

// Data-plane constants.
const (
	IOResOK          = 0   // UBLK_IO_RES_OK
	IOResNeedGetData = 1   // UBLK_IO_RES_NEED_GET_DATA
	IOResAbort       = -19 // UBLK_IO_RES_ABORT (-ENODEV): tag aborted, do not resubmit

	IOBufOffset      = 0x80000000 // UBLKSRV_IO_BUF_OFFSET: user-copy window in /dev/ublkcN
	MaxQueueDepth    = 4096       // UBLK_MAX_QUEUE_DEPTH
	MaxQueues        = 4096       // UBLK_MAX_NR_QUEUES
	ioBufBits        = 25         // UBLK_IO_BUF_BITS: 32 MiB per request
	tagOff           = ioBufBits  // UBLK_TAG_OFF
	qidOff           = 41         // UBLK_QID_OFF = UBLK_TAG_OFF + UBLK_TAG_BITS
	MaxUserCopyBytes = 1 << ioBufBits
	// descQueueStride is the mmap offset distance between two queues' io_desc
	// arrays: sized for UBLK_MAX_QUEUE_DEPTH whatever the real depth is.
	descQueueStride = MaxQueueDepth * IODescSize // 0x18000
)

// cpuSetBytes is the buffer GET_QUEUE_AFFINITY fills: a cpu_set_t (1024
// CPUs), as ublksrv passes; the kernel wants at least nr_cpu_ids bits, in
// whole longs.
const cpuSetBytes = 128

// UserCopyOffset is the /dev/ublkcN file offset of byte 0 of request (q, tag)
// for pread/pwrite under UBLK_F_USER_COPY (ublk_pos_to_hwq/tag in ublk_drv.c).
func UserCopyOffset(q, tag uint16) int64 {
	return IOBufOffset + int64(q)<<qidOff + int64(tag)<<tagOff
}

// IODescOffset is the mmap offset of queue q's io_desc array
// (UBLKSRV_CMD_BUF_OFFSET + q * ublk_max_cmd_buf_size()).
func IODescOffset(q uint16) int64 {
	return int64(q) * descQueueStride
}

// IODescMapSize is the exact mapping length the kernel accepts for a queue of
// the given depth: round_up(depth * 24, PAGE_SIZE) (ublk_ch_mmap).
func IODescMapSize(depth int) int {
	page := os.Getpagesize()
	return (depth*IODescSize + page - 1) / page * page
}

var le = binary.LittleEndian

// CtrlCmd is struct ublksrv_ctrl_cmd, carried in sqe->cmd of a control command.
type CtrlCmd struct {
	DevID      uint32 // @0
	QueueID    uint16 // @4, 0xFFFF when not per queue
	Len        uint16 // @6, length of the buffer at Addr
	Addr       uint64 // @8
	Data       uint64 // @16, data[0]
	DevPathLen uint16 // @24
	Pad        uint16 // @26
	Reserved   uint32 // @28
}

// Marshal writes c into b[:32].
func (c *CtrlCmd) Marshal(b []byte) {
	_ = b[CtrlCmdSize-1]
	le.PutUint32(b[0:], c.DevID)
	le.PutUint16(b[4:], c.QueueID)
	le.PutUint16(b[6:], c.Len)
	le.PutUint64(b[8:], c.Addr)
	le.PutUint64(b[16:], c.Data)
	le.PutUint16(b[24:], c.DevPathLen)
	le.PutUint16(b[26:], c.Pad)
	le.PutUint32(b[28:], c.Reserved)
}

// Unmarshal reads c from b[:32].
func (c *CtrlCmd) Unmarshal(b []byte) {
	_ = b[CtrlCmdSize-1]
	*c = CtrlCmd{
		DevID: le.Uint32(b[0:]), QueueID: le.Uint16(b[4:]), Len: le.Uint16(b[6:]),
		Addr: le.Uint64(b[8:]), Data: le.Uint64(b[16:]), DevPathLen: le.Uint16(b[24:]),
		Pad: le.Uint16(b[26:]), Reserved: le.Uint32(b[28:]),
	}
}

// DevInfo is struct ublksrv_ctrl_dev_info.
type DevInfo struct {
	NrHWQueues    uint16 `json:"nr_hw_queues"`     // @0
	QueueDepth    uint16 `json:"queue_depth"`      // @2
	State         uint16 `json:"state"`            // @4
	MaxIOBufBytes uint32 `json:"max_io_buf_bytes"` // @8
	DevID         uint32 `json:"dev_id"`           // @12
	SrvPID        int32  `json:"ublksrv_pid"`      // @16
	Flags         uint64 `json:"flags"`            // @24
	SrvFlags      uint64 `json:"ublksrv_flags"`    // @32
	OwnerUID      uint32 `json:"owner_uid"`        // @40
	OwnerGID      uint32 `json:"owner_gid"`        // @44
}

// Marshal writes d into b[:64], zeroing padding and reserved words.
func (d *DevInfo) Marshal(b []byte) {
	_ = b[DevInfoSize-1]
	clear(b[:DevInfoSize])
	le.PutUint16(b[0:], d.NrHWQueues)
	le.PutUint16(b[2:], d.QueueDepth)
	le.PutUint16(b[4:], d.State)
	le.PutUint32(b[8:], d.MaxIOBufBytes)
	le.PutUint32(b[12:], d.DevID)
	le.PutUint32(b[16:], uint32(d.SrvPID))
	le.PutUint64(b[24:], d.Flags)
	le.PutUint64(b[32:], d.SrvFlags)
	le.PutUint32(b[40:], d.OwnerUID)
	le.PutUint32(b[44:], d.OwnerGID)
}

// Unmarshal reads d from b[:64].
func (d *DevInfo) Unmarshal(b []byte) {
	_ = b[DevInfoSize-1]
	*d = DevInfo{
		NrHWQueues: le.Uint16(b[0:]), QueueDepth: le.Uint16(b[2:]), State: le.Uint16(b[4:]),
		MaxIOBufBytes: le.Uint32(b[8:]), DevID: le.Uint32(b[12:]), SrvPID: int32(le.Uint32(b[16:])),
		Flags: le.Uint64(b[24:]), SrvFlags: le.Uint64(b[32:]),
		OwnerUID: le.Uint32(b[40:]), OwnerGID: le.Uint32(b[44:]),
	}
}

// ParamBasic is struct ublk_param_basic (32 bytes, at params offset 8).
type ParamBasic struct {
	Attrs            uint32 `json:"attrs"`
	LogicalBSShift   uint8  `json:"logical_bs_shift"`
	PhysicalBSShift  uint8  `json:"physical_bs_shift"`
	IOOptShift       uint8  `json:"io_opt_shift"`
	IOMinShift       uint8  `json:"io_min_shift"`
	MaxSectors       uint32 `json:"max_sectors"`
	ChunkSectors     uint32 `json:"chunk_sectors"`
	DevSectors       uint64 `json:"dev_sectors"`
	VirtBoundaryMask uint64 `json:"virt_boundary_mask"`
}

// ParamDiscard is struct ublk_param_discard (20 bytes, at params offset 40).
type ParamDiscard struct {
	Alignment             uint32 `json:"discard_alignment"`
	Granularity           uint32 `json:"discard_granularity"`
	MaxDiscardSectors     uint32 `json:"max_discard_sectors"`
	MaxWriteZeroesSectors uint32 `json:"max_write_zeroes_sectors"`
	MaxDiscardSegments    uint16 `json:"max_discard_segments"`
}

// ParamDevt is struct ublk_param_devt (16 bytes, at params offset 60), filled
// by the kernel on GET_PARAMS.
type ParamDevt struct {
	CharMajor uint32 `json:"char_major"`
	CharMinor uint32 `json:"char_minor"`
	DiskMajor uint32 `json:"disk_major"`
	DiskMinor uint32 `json:"disk_minor"`
}

// ParamZoned is struct ublk_param_zoned (32 bytes, at params offset 76).
type ParamZoned struct {
	MaxOpenZones         uint32 `json:"max_open_zones"`
	MaxActiveZones       uint32 `json:"max_active_zones"`
	MaxZoneAppendSectors uint32 `json:"max_zone_append_sectors"`
}

// Params is struct ublk_params as of 6.12.
type Params struct {
	Len     uint32       `json:"len"`
	Types   uint32       `json:"types"`
	Basic   ParamBasic   `json:"basic"`
	Discard ParamDiscard `json:"discard"`
	Devt    ParamDevt    `json:"devt"`
	Zoned   ParamZoned   `json:"zoned"`
}

// Marshal writes p into b[:112]; Len is written as given (set it to ParamsSize).
func (p *Params) Marshal(b []byte) {
	_ = b[ParamsSize-1]
	clear(b[:ParamsSize])
	le.PutUint32(b[0:], p.Len)
	le.PutUint32(b[4:], p.Types)
	bb := b[8:]
	le.PutUint32(bb[0:], p.Basic.Attrs)
	bb[4], bb[5], bb[6], bb[7] = p.Basic.LogicalBSShift, p.Basic.PhysicalBSShift, p.Basic.IOOptShift, p.Basic.IOMinShift
	le.PutUint32(bb[8:], p.Basic.MaxSectors)
	le.PutUint32(bb[12:], p.Basic.ChunkSectors)
	le.PutUint64(bb[16:], p.Basic.DevSectors)
	le.PutUint64(bb[24:], p.Basic.VirtBoundaryMask)
	db := b[40:]
	le.PutUint32(db[0:], p.Discard.Alignment)
	le.PutUint32(db[4:], p.Discard.Granularity)
	le.PutUint32(db[8:], p.Discard.MaxDiscardSectors)
	le.PutUint32(db[12:], p.Discard.MaxWriteZeroesSectors)
	le.PutUint16(db[16:], p.Discard.MaxDiscardSegments)
	vb := b[60:]
	le.PutUint32(vb[0:], p.Devt.CharMajor)
	le.PutUint32(vb[4:], p.Devt.CharMinor)
	le.PutUint32(vb[8:], p.Devt.DiskMajor)
	le.PutUint32(vb[12:], p.Devt.DiskMinor)
	zb := b[76:]
	le.PutUint32(zb[0:], p.Zoned.MaxOpenZones)
	le.PutUint32(zb[4:], p.Zoned.MaxActiveZones)
	le.PutUint32(zb[8:], p.Zoned.MaxZoneAppendSectors)
}

// Unmarshal reads p from b[:112].
func (p *Params) Unmarshal(b []byte) {
	_ = b[ParamsSize-1]
	bb, db, vb, zb := b[8:], b[40:], b[60:], b[76:]
	*p = Params{
		Len: le.Uint32(b[0:]), Types: le.Uint32(b[4:]),
		Basic: ParamBasic{
			Attrs: le.Uint32(bb[0:]), LogicalBSShift: bb[4], PhysicalBSShift: bb[5],
			IOOptShift: bb[6], IOMinShift: bb[7], MaxSectors: le.Uint32(bb[8:]),
			ChunkSectors: le.Uint32(bb[12:]), DevSectors: le.Uint64(bb[16:]),
			VirtBoundaryMask: le.Uint64(bb[24:]),
		},
		Discard: ParamDiscard{
			Alignment: le.Uint32(db[0:]), Granularity: le.Uint32(db[4:]),
			MaxDiscardSectors: le.Uint32(db[8:]), MaxWriteZeroesSectors: le.Uint32(db[12:]),
			MaxDiscardSegments: le.Uint16(db[16:]),
		},
		Devt: ParamDevt{
			CharMajor: le.Uint32(vb[0:]), CharMinor: le.Uint32(vb[4:]),
			DiskMajor: le.Uint32(vb[8:]), DiskMinor: le.Uint32(vb[12:]),
		},
		Zoned: ParamZoned{
			MaxOpenZones: le.Uint32(zb[0:]), MaxActiveZones: le.Uint32(zb[4:]),
			MaxZoneAppendSectors: le.Uint32(zb[8:]),
		},
	}
}

// IOCmd is struct ublksrv_io_cmd, carried in sqe->cmd of FETCH/COMMIT commands.
type IOCmd struct {
	QID    uint16 // @0
	Tag    uint16 // @2
	Result int32  // @4, COMMIT only: bytes done or -errno
	Addr   uint64 // @8, buffer address; 0 with UBLK_F_USER_COPY
}

// Marshal writes c into b[:16].
func (c *IOCmd) Marshal(b []byte) {
	_ = b[IOCmdSize-1]
	le.PutUint16(b[0:], c.QID)
	le.PutUint16(b[2:], c.Tag)
	le.PutUint32(b[4:], uint32(c.Result))
	le.PutUint64(b[8:], c.Addr)
}

// Unmarshal reads c from b[:16].
func (c *IOCmd) Unmarshal(b []byte) {
	_ = b[IOCmdSize-1]
	*c = IOCmd{QID: le.Uint16(b[0:]), Tag: le.Uint16(b[2:]), Result: int32(le.Uint32(b[4:])), Addr: le.Uint64(b[8:])}
}

// IODesc is struct ublksrv_io_desc, one per tag in the mmapped array.
type IODesc struct {
	OpFlags     uint32 // @0: op in bits 0-7, UBLK_IO_F_* above
	NrSectors   uint32 // @4
	StartSector uint64 // @8: always 512-byte units
	Addr        uint64 // @16
}

// Op returns the UBLK_IO_OP_* of the descriptor (ublksrv_get_op).
func (d IODesc) Op() uint8 { return uint8(d.OpFlags) }

// Flags returns the UBLK_IO_F_* bits, in place (not shifted as ublksrv_get_flags does).
func (d IODesc) Flags() uint32 { return d.OpFlags &^ 0xff }

// Marshal writes d into b[:24] (used by tests that play the kernel).
func (d *IODesc) Marshal(b []byte) {
	_ = b[IODescSize-1]
	le.PutUint32(b[0:], d.OpFlags)
	le.PutUint32(b[4:], d.NrSectors)
	le.PutUint64(b[8:], d.StartSector)
	le.PutUint64(b[16:], d.Addr)
}

// Unmarshal reads d from b[:24].
func (d *IODesc) Unmarshal(b []byte) {
	_ = b[IODescSize-1]
	*d = IODesc{OpFlags: le.Uint32(b[0:]), NrSectors: le.Uint32(b[4:]), StartSector: le.Uint64(b[8:]), Addr: le.Uint64(b[16:])}
}
