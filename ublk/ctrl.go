package ublk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/btrfsdio/btrfsdio/internal/uring"
	"golang.org/x/sys/unix"
)

// anyDevID asks ADD_DEV to pick a free device id.
const anyDevID = 0xFFFFFFFF

// noQueue is ublksrv_ctrl_cmd.queue_id for commands that are not per queue.
const noQueue = 0xFFFF

// Control is an open /dev/ublk-control with its SQE128 ring (ublksrv's
// struct ublksrv_ctrl_dev). Commands are serialised: each waits for its CQE.
// The control node is the same for every device, so one Control can serve
// several devices.
type Control struct {
	mu   sync.Mutex
	fd   int
	ring ctrlRing
	// page holds the buffer a command's addr points to. It is mmapped, not
	// Go memory, so the kernel may write it while the garbage collector runs.
	page []byte
	seq  uint64
	// unprivileged holds the ids of devices whose flags, as ADD_DEV or
	// GET_DEV_INFO2 returned them, have UBLK_F_UNPRIVILEGED_DEV: their
	// commands carry the char device path (ublk_ctrl_uring_cmd_permission).
	unprivileged map[uint32]bool
}

// ctrlRing is what Control needs of its io_uring (a *uring.Ring; tests
// put a fake kernel behind it).
type ctrlRing interface {
	PrepUringCmd(fd int, cmdOp uint32, payload []byte, userData uint64) (*uring.SQE, error)
	SubmitAndWait(waitNr uint32) (int, error)
	WaitCQE() (uring.CQE, error)
	SeenCQE()
	Close() error
}

// OpenControl opens /dev/ublk-control (ublksrv_ctrl_init). A missing node is
// reported as ErrNoDriver.
func OpenControl() (*Control, error) {
	fd, err := unix.Open(ControlPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, ErrNoDriver
	}
	if err != nil {
		return nil, fmt.Errorf("ublk: open %s: %w", ControlPath, err)
	}
	c := &Control{fd: fd, unprivileged: map[uint32]bool{}}
	// Control commands need 80 bytes of payload room; the kernel refuses
	// them on 64-byte SQEs (IO_URING_F_SQE128 check in ublk_ctrl_uring_cmd).
	ring, err := uring.New(4, uring.SetupSQE128)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("ublk: control ring: %w", err)
	}
	c.ring = ring
	if c.page, err = unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
		c.Close()
		return nil, fmt.Errorf("ublk: control buffer: %w", err)
	}
	return c, nil
}

// CheckDriver reports ErrNoDriver when /dev/ublk-control is absent, without
// opening it.
func CheckDriver() error {
	if _, err := os.Stat(ControlPath); errors.Is(err, os.ErrNotExist) {
		return ErrNoDriver
	}
	return nil
}

// Close releases the ring, buffer and fd.
func (c *Control) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	if c.ring != nil {
		errs = append(errs, c.ring.Close())
		c.ring = nil
	}
	if c.page != nil {
		errs = append(errs, unix.Munmap(c.page))
		c.page = nil
	}
	if c.fd >= 0 {
		errs = append(errs, unix.Close(c.fd))
		c.fd = -1
	}
	return errors.Join(errs...)
}

// call issues one control command and waits for its completion
// (__ublksrv_ctrl_cmd). The caller has put the input in c.data(id, withPath)
// when cmd.Len is set; the kernel leaves its output there. withPath puts
// "/dev/ublkcN" at the start of the buffer and sets dev_path_len: the kernel
// checks the caller's access to that node, then moves addr past it and takes
// it off len, so the command's own data follows the path
// (ublk_ctrl_uring_cmd_permission).
func (c *Control) call(op uint32, cmd CtrlCmd, withPath bool) error {
	if c.ring == nil {
		return fmt.Errorf("ublk: %s: control closed", cmdNames[op])
	}
	if withPath {
		n := copy(c.page, charDevPath(cmd.DevID))
		cmd.DevPathLen = uint16(n)
		cmd.Len += uint16(n)
	}
	if cmd.Len > 0 {
		cmd.Addr = uint64(uintptr(unsafe.Pointer(&c.page[0])))
	}
	var payload [CtrlCmdSize]byte
	cmd.Marshal(payload[:])
	c.seq++
	if _, err := c.ring.PrepUringCmd(c.fd, op, payload[:], c.seq); err != nil {
		return fmt.Errorf("ublk: %s: %w", cmdNames[op], err)
	}
	// The driver punts control commands to io-wq (it refuses non-blocking
	// issue), so the CQE may come much later: START_DEV waits for queues.
	if _, err := c.ring.SubmitAndWait(1); err != nil {
		return fmt.Errorf("ublk: %s: %w", cmdNames[op], err)
	}
	cqe, err := c.waitFor(c.seq)
	if err != nil {
		return fmt.Errorf("ublk: %s: %w", cmdNames[op], err)
	}
	if cqe.Res < 0 {
		return &CmdError{Cmd: cmdNames[op], DevID: cmd.DevID, Errno: unix.Errno(-cqe.Res)}
	}
	return nil
}

// charDevPath is /dev/ublkcN.
func charDevPath(id uint32) string { return CharDevPrefix + strconv.FormatUint(uint64(id), 10) }

// data is where a command's own input and output go in c.page: after the
// device path when the command carries one (see call).
func (c *Control) data(id uint32, withPath bool) []byte {
	if withPath {
		return c.page[len(charDevPath(id)):]
	}
	return c.page
}

// devCall issues a command on device id with the path when that device is
// unprivileged. The caller holds c.mu and has put its input in
// c.data(id, c.unprivileged[id]).
func (c *Control) devCall(op uint32, cmd CtrlCmd) error {
	return c.call(op, cmd, c.unprivileged[cmd.DevID])
}

// waitFor reaps CQEs until the one of command seq; older ones belong to
// commands whose caller already gave up on an io_uring error.
func (c *Control) waitFor(seq uint64) (uring.CQE, error) {
	for {
		cqe, err := c.ring.WaitCQE()
		if err != nil {
			return cqe, err
		}
		c.ring.SeenCQE()
		if cqe.UserData == seq {
			return cqe, nil
		}
		if cqe.UserData > seq {
			return cqe, fmt.Errorf("completion for command %d while waiting for %d", cqe.UserData, seq)
		}
	}
}

// GetFeatures returns the UBLK_F_* bits the driver supports (UBLK_U_CMD_GET_FEATURES).
func (c *Control) GetFeatures() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.call(CmdGetFeatures, CtrlCmd{DevID: anyDevID, QueueID: noQueue, Len: FeaturesSize}, false); err != nil {
		return 0, err
	}
	return le.Uint64(c.page), nil
}

// AddDev creates a device (UBLK_U_CMD_ADD_DEV). info.DevID is the wanted id or
// 0xFFFFFFFF; on success info holds what the kernel negotiated: the id, the
// flags it kept, the clamped queue count and the page-rounded max I/O size.
// ADD_DEV never carries the path; when the kernel kept
// UBLK_F_UNPRIVILEGED_DEV (it clears it for a caller with CAP_SYS_ADMIN),
// every later command on the device does.
func (c *Control) AddDev(info *DevInfo) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.page == nil {
		return fmt.Errorf("ublk: ADD_DEV: control closed")
	}
	info.Marshal(c.page)
	// dev_id must be the same in the command and in the info (ublk_ctrl_add_dev).
	if err := c.call(CmdAddDev, CtrlCmd{DevID: info.DevID, QueueID: noQueue, Len: DevInfoSize}, false); err != nil {
		return err
	}
	info.Unmarshal(c.page)
	if info.Flags&FlagUnprivilegedDev != 0 {
		c.unprivileged[info.DevID] = true
	}
	return nil
}

// GetDevInfo reads a device's info (UBLK_U_CMD_GET_DEV_INFO). A device
// created with UBLK_F_UNPRIVILEGED_DEV answers only GET_DEV_INFO2 with its
// char device path: the kernel refuses the plain command (EINVAL from root,
// which sent no path; EPERM from a user without CAP_SYS_ADMIN), so GetDevInfo
// then asks again that way and remembers the device's flags.
func (c *Control) GetDevInfo(id uint32) (DevInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var info DevInfo
	if c.unprivileged[id] {
		return c.getDevInfo2(id)
	}
	err := c.call(CmdGetDevInfo, CtrlCmd{DevID: id, QueueID: noQueue, Len: DevInfoSize}, false)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM) {
		if info2, err2 := c.getDevInfo2(id); err2 == nil {
			return info2, nil
		}
	}
	if err != nil {
		return info, err
	}
	info.Unmarshal(c.page)
	return info, nil
}

// GetDevInfo2 reads a device's info with its char device path, which the
// kernel checks for read access (UBLK_U_CMD_GET_DEV_INFO2).
func (c *Control) GetDevInfo2(id uint32) (DevInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.getDevInfo2(id)
}

func (c *Control) getDevInfo2(id uint32) (DevInfo, error) {
	var info DevInfo
	if err := c.call(CmdGetDevInfo2, CtrlCmd{DevID: id, QueueID: noQueue, Len: DevInfoSize}, true); err != nil {
		return info, err
	}
	info.Unmarshal(c.data(id, true))
	if info.Flags&FlagUnprivilegedDev != 0 {
		c.unprivileged[id] = true
	}
	return info, nil
}

// SetParams sets a device's parameters before START_DEV (UBLK_U_CMD_SET_PARAMS).
func (c *Control) SetParams(id uint32, p Params) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.page == nil {
		return fmt.Errorf("ublk: SET_PARAMS: control closed")
	}
	p.Len = ParamsSize
	p.Marshal(c.data(id, c.unprivileged[id]))
	return c.devCall(CmdSetParams, CtrlCmd{DevID: id, QueueID: noQueue, Len: ParamsSize})
}

// GetParams reads a device's parameters, including the char and block device
// numbers (UBLK_U_CMD_GET_PARAMS).
func (c *Control) GetParams(id uint32) (Params, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var p Params
	if c.page == nil {
		return p, fmt.Errorf("ublk: GET_PARAMS: control closed")
	}
	// The kernel reads params.len from the buffer to know how much to return.
	buf := c.data(id, c.unprivileged[id])
	(&Params{Len: ParamsSize}).Marshal(buf)
	if err := c.devCall(CmdGetParams, CtrlCmd{DevID: id, QueueID: noQueue, Len: ParamsSize}); err != nil {
		return p, err
	}
	p.Unmarshal(buf)
	return p, nil
}

// GetQueueAffinity returns the CPUs whose requests go to queue qid of
// device id: the blk-mq mapping of the hardware queue
// (UBLK_U_CMD_GET_QUEUE_AFFINITY; the queue id travels in data[0]).
func (c *Control) GetQueueAffinity(id uint32, qid uint16) (unix.CPUSet, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var set unix.CPUSet
	if c.page == nil {
		return set, fmt.Errorf("ublk: GET_QUEUE_AFFINITY: control closed")
	}
	buf := c.data(id, c.unprivileged[id])[:cpuSetBytes]
	clear(buf)
	cmd := CtrlCmd{DevID: id, QueueID: noQueue, Len: cpuSetBytes, Data: uint64(qid)}
	if err := c.devCall(CmdGetQueueAffinity, cmd); err != nil {
		return set, err
	}
	// The kernel's cpumask is an array of longs: bit n of the mask is bit
	// n%8 of byte n/8 on a little-endian machine, as in a cpu_set_t.
	for cpu := 0; cpu < 8*cpuSetBytes; cpu++ {
		if buf[cpu/8]&(1<<(cpu%8)) != 0 {
			set.Set(cpu)
		}
	}
	return set, nil
}

// StartDev adds /dev/ublkbN (UBLK_U_CMD_START_DEV). It blocks until every queue
// has fetched all its tags and the partition scan, served by those queues, is
// done: never call it from a queue thread.
func (c *Control) StartDev(id uint32, pid int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.devCall(CmdStartDev, CtrlCmd{DevID: id, QueueID: noQueue, Data: uint64(pid)})
}

// StopDev removes /dev/ublkbN after in-flight requests complete, then aborts
// every fetched tag with -ENODEV (UBLK_U_CMD_STOP_DEV).
func (c *Control) StopDev(id uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.devCall(CmdStopDev, CtrlCmd{DevID: id, QueueID: noQueue})
}

// DelDev deletes the device and waits until its last reference (an open
// /dev/ublkcN included) is gone (UBLK_U_CMD_DEL_DEV).
func (c *Control) DelDev(id uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.devCall(CmdDelDev, CtrlCmd{DevID: id, QueueID: noQueue})
}

// StartUserRecovery prepares a quiesced device, whose server died, for a new
// one (UBLK_U_CMD_START_USER_RECOVERY): the kernel forgets the old fetches
// and lets a new process open /dev/ublkcN and fetch every tag again.
func (c *Control) StartUserRecovery(id uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.devCall(CmdStartUserRecovery, CtrlCmd{DevID: id, QueueID: noQueue})
}

// EndUserRecovery makes the device live again with pid as its server
// (UBLK_U_CMD_END_USER_RECOVERY). It waits until every queue has fetched all
// its tags; the requests held while the device was quiesced are then
// dispatched to the new server.
func (c *Control) EndUserRecovery(id uint32, pid int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.devCall(CmdEndUserRecovery, CtrlCmd{DevID: id, QueueID: noQueue, Data: uint64(pid)})
}

// Status is what the kernel knows about a device (GET_DEV_INFO + GET_PARAMS).
type Status struct {
	Info   DevInfo `json:"dev_info"`
	Params Params  `json:"params"`
}

// GetFeatures returns the driver's UBLK_F_* bits (UBLK_U_CMD_GET_FEATURES).
func GetFeatures() (uint64, error) {
	c, err := OpenControl()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.GetFeatures()
}

// Delete stops and deletes device id whoever serves it (ublksrv's `ublk del -n`).
// A live server sees its queues aborted and releases the device, which lets
// DEL_DEV finish.
func Delete(id uint32) error {
	c, err := OpenControl()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.GetDevInfo(id); err != nil {
		return err
	}
	if err := c.StopDev(id); err != nil {
		return err
	}
	return c.DelDev(id)
}

// List returns the status of device id (ublksrv's `ublk list -n`).
func List(id uint32) (Status, error) {
	c, err := OpenControl()
	if err != nil {
		return Status{}, err
	}
	defer c.Close()
	return status(c, id)
}

func status(c *Control, id uint32) (Status, error) {
	info, err := c.GetDevInfo(id)
	if err != nil {
		return Status{}, err
	}
	params, err := c.GetParams(id)
	if err != nil {
		return Status{Info: info}, err
	}
	return Status{Info: info, Params: params}, nil
}

// ListAll returns the status of every device, found through
// /sys/class/ublk-char (or /dev/ublkc*). Devices that vanish meanwhile are skipped.
func ListAll() ([]Status, error) {
	ids, err := ListIDs()
	if err != nil {
		return nil, err
	}
	c, err := OpenControl()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var out []Status
	for _, id := range ids {
		st, err := status(c, id)
		if errors.Is(err, unix.ENODEV) {
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, st)
	}
	return out, nil
}

// ListIDs returns the ids of existing ublk devices, sorted.
func ListIDs() ([]uint32, error) {
	names, err := filepath.Glob(filepath.Join(sysCharClass, "ublkc*"))
	if err != nil || len(names) == 0 {
		names, err = filepath.Glob(CharDevPrefix + "*")
	}
	if err != nil {
		return nil, fmt.Errorf("ublk: list devices: %w", err)
	}
	return parseCharDevIDs(names), nil
}

// parseCharDevIDs extracts N from paths ending in ublkcN.
func parseCharDevIDs(names []string) []uint32 {
	seen := map[uint32]bool{}
	var ids []uint32
	for _, n := range names {
		s, ok := strings.CutPrefix(filepath.Base(n), "ublkc")
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(s, 10, 32)
		if err != nil || seen[uint32(id)] {
			continue
		}
		seen[uint32(id)] = true
		ids = append(ids, uint32(id))
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}
