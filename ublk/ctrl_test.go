package ublk

import (
	"bytes"
	"errors"
	"testing"
	"unsafe"

	"github.com/btrfsdio/btrfsdio/internal/uring"
	"golang.org/x/sys/unix"
)

// sentCmd is one control command as the fake kernel received it: the
// header and the bytes its addr/len named.
type sentCmd struct {
	op  uint32
	hdr CtrlCmd
	buf []byte
}

// fakeCtrlKernel stands behind a Control's ring. It follows 6.12's
// ublk_ctrl_uring_cmd_permission for one device: a device with
// UBLK_F_UNPRIVILEGED_DEV wants dev_path_len and the path at addr for every
// command but ADD_DEV (EINVAL otherwise), GET_DEV_INFO2 wants the path on
// every device, and the data of a command with a path follows it.
type fakeCtrlKernel struct {
	page  []byte
	info  DevInfo // the device
	sent  []sentCmd
	ready []uring.CQE
}

func (k *fakeCtrlKernel) PrepUringCmd(fd int, op uint32, payload []byte, userData uint64) (*uring.SQE, error) {
	var h CtrlCmd
	h.Unmarshal(payload)
	var buf []byte
	if h.Len > 0 {
		if h.Addr != uint64(uintptr(unsafe.Pointer(&k.page[0]))) {
			k.ready = append(k.ready, uring.CQE{UserData: userData, Res: -int32(unix.EFAULT)})
			return nil, nil
		}
		buf = append([]byte(nil), k.page[:h.Len]...)
	}
	k.sent = append(k.sent, sentCmd{op: op, hdr: h, buf: buf})
	k.ready = append(k.ready, uring.CQE{UserData: userData, Res: k.serve(op, h)})
	return nil, nil
}

func (k *fakeCtrlKernel) serve(op uint32, h CtrlCmd) int32 {
	if op == CmdAddDev {
		var in DevInfo
		in.Unmarshal(k.page)
		in.DevID = k.info.DevID
		k.info = in
		in.Marshal(k.page)
		return 0
	}
	unpriv := k.info.Flags&FlagUnprivilegedDev != 0
	if unpriv || op == CmdGetDevInfo2 {
		path := charDevPath(h.DevID)
		if int(h.DevPathLen) != len(path) || h.Len < h.DevPathLen || string(k.page[:h.DevPathLen]) != path {
			return -int32(unix.EINVAL)
		}
	}
	data := k.page[h.DevPathLen:]
	switch op {
	case CmdGetDevInfo, CmdGetDevInfo2:
		k.info.Marshal(data)
	}
	return 0
}

func (k *fakeCtrlKernel) SubmitAndWait(uint32) (int, error) { return 1, nil }
func (k *fakeCtrlKernel) SeenCQE()                          { k.ready = k.ready[1:] }
func (k *fakeCtrlKernel) Close() error                      { return nil }
func (k *fakeCtrlKernel) WaitCQE() (uring.CQE, error) {
	if len(k.ready) == 0 {
		return uring.CQE{}, errors.New("no completion")
	}
	return k.ready[0], nil
}

func newFakeControl(devID uint32) (*Control, *fakeCtrlKernel) {
	k := &fakeCtrlKernel{page: make([]byte, 4096), info: DevInfo{DevID: devID}}
	return &Control{fd: -1, ring: k, page: k.page, unprivileged: map[uint32]bool{}}, k
}

// runDevCommands issues SET_PARAMS, START_DEV, STOP_DEV and DEL_DEV on id.
func runDevCommands(t *testing.T, c *Control, id uint32, p Params) {
	t.Helper()
	if err := c.SetParams(id, p); err != nil {
		t.Fatalf("SET_PARAMS: %v", err)
	}
	if err := c.StartDev(id, 4242); err != nil {
		t.Fatalf("START_DEV: %v", err)
	}
	if err := c.StopDev(id); err != nil {
		t.Fatalf("STOP_DEV: %v", err)
	}
	if err := c.DelDev(id); err != nil {
		t.Fatalf("DEL_DEV: %v", err)
	}
}

// An unprivileged device's commands carry "/dev/ublkcN" at addr with
// dev_path_len set; len counts the path plus the command's data, which
// follows the path.
func TestCtrlUnprivilegedDevPath(t *testing.T) {
	const id = 7
	c, k := newFakeControl(id)
	info := DevInfo{NrHWQueues: 1, QueueDepth: 8, DevID: anyDevID, Flags: FlagUnprivilegedDev | FlagCmdIoctlEncode}
	if err := c.AddDev(&info); err != nil {
		t.Fatal(err)
	}
	if k.sent[0].hdr.DevPathLen != 0 || k.sent[0].hdr.Len != DevInfoSize {
		t.Fatalf("ADD_DEV carried a path: %+v", k.sent[0].hdr)
	}
	p := Params{Types: ParamTypeBasic, Basic: ParamBasic{LogicalBSShift: 9, PhysicalBSShift: 12, MaxSectors: 1024, DevSectors: 2048}}
	runDevCommands(t, c, id, p)
	got, err := c.GetDevInfo(id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Flags&FlagUnprivilegedDev == 0 || got.DevID != id {
		t.Fatalf("GET_DEV_INFO2 read %+v", got)
	}

	path := []byte("/dev/ublkc7")
	wantParams := make([]byte, ParamsSize)
	p.Len = ParamsSize
	p.Marshal(wantParams)
	want := []struct {
		op   uint32
		len  uint16
		data []byte // after the path
	}{
		{CmdSetParams, uint16(len(path)) + ParamsSize, wantParams},
		{CmdStartDev, uint16(len(path)), nil},
		{CmdStopDev, uint16(len(path)), nil},
		{CmdDelDev, uint16(len(path)), nil},
		{CmdGetDevInfo2, uint16(len(path)) + DevInfoSize, nil},
	}
	sent := k.sent[1:]
	if len(sent) != len(want) {
		t.Fatalf("sent %d commands after ADD_DEV, want %d", len(sent), len(want))
	}
	for i, w := range want {
		s := sent[i]
		if s.op != w.op {
			t.Fatalf("command %d: %s, want %s", i, cmdNames[s.op], cmdNames[w.op])
		}
		if s.hdr.DevPathLen != uint16(len(path)) || s.hdr.Len != w.len || s.hdr.DevID != id {
			t.Errorf("%s: dev_id %d dev_path_len %d len %d, want %d %d %d", cmdNames[s.op], s.hdr.DevID, s.hdr.DevPathLen, s.hdr.Len, id, len(path), w.len)
		}
		if !bytes.HasPrefix(s.buf, path) {
			t.Errorf("%s: buffer starts %q, want %q", cmdNames[s.op], s.buf[:min(len(s.buf), 16)], path)
		}
		if w.data != nil && !bytes.Equal(s.buf[len(path):], w.data) {
			t.Errorf("%s: data after the path differs", cmdNames[s.op])
		}
	}
	if sent[1].hdr.Data != 4242 {
		t.Errorf("START_DEV data[0] %d, want the pid 4242", sent[1].hdr.Data)
	}
}

// Without UBLK_F_UNPRIVILEGED_DEV (as root, the kernel clears it) nothing
// changes: no path, len is the data's, GET_DEV_INFO is the plain command.
func TestCtrlPrivilegedNoDevPath(t *testing.T) {
	const id = 3
	c, k := newFakeControl(id)
	info := DevInfo{NrHWQueues: 1, QueueDepth: 8, DevID: anyDevID, Flags: FlagCmdIoctlEncode}
	if err := c.AddDev(&info); err != nil {
		t.Fatal(err)
	}
	p := Params{Types: ParamTypeBasic, Basic: ParamBasic{LogicalBSShift: 9, MaxSectors: 1024, DevSectors: 2048}}
	runDevCommands(t, c, id, p)
	if _, err := c.GetDevInfo(id); err != nil {
		t.Fatal(err)
	}
	wantParams := make([]byte, ParamsSize)
	p.Len = ParamsSize
	p.Marshal(wantParams)
	want := []struct {
		op   uint32
		len  uint16
		data []byte
	}{
		{CmdAddDev, DevInfoSize, nil},
		{CmdSetParams, ParamsSize, wantParams},
		{CmdStartDev, 0, nil},
		{CmdStopDev, 0, nil},
		{CmdDelDev, 0, nil},
		{CmdGetDevInfo, DevInfoSize, nil},
	}
	if len(k.sent) != len(want) {
		t.Fatalf("sent %d commands, want %d", len(k.sent), len(want))
	}
	for i, w := range want {
		s := k.sent[i]
		if s.op != w.op || s.hdr.DevPathLen != 0 || s.hdr.Len != w.len {
			t.Errorf("command %d: %s dev_path_len %d len %d, want %s 0 %d", i, cmdNames[s.op], s.hdr.DevPathLen, s.hdr.Len, cmdNames[w.op], w.len)
		}
		if w.len == 0 && s.hdr.Addr != 0 {
			t.Errorf("%s: addr %#x without data", cmdNames[s.op], s.hdr.Addr)
		}
		if w.data != nil && !bytes.Equal(s.buf, w.data) {
			t.Errorf("%s: data differs", cmdNames[s.op])
		}
	}
}

// A Control that did not add the device (list, del, recover from another
// process, or root on a user's device) learns it is unprivileged when
// GET_DEV_INFO is refused and GET_DEV_INFO2 with the path answers; its
// later commands then carry the path.
func TestCtrlLearnsUnprivilegedFromGetDevInfo2(t *testing.T) {
	const id = 12
	c, k := newFakeControl(id)
	k.info = DevInfo{DevID: id, NrHWQueues: 1, QueueDepth: 8, Flags: FlagUnprivilegedDev | FlagCmdIoctlEncode}
	info, err := c.GetDevInfo(id)
	if err != nil {
		t.Fatal(err)
	}
	if info.Flags&FlagUnprivilegedDev == 0 {
		t.Fatalf("flags %#x", info.Flags)
	}
	if len(k.sent) != 2 || k.sent[0].op != CmdGetDevInfo || k.sent[1].op != CmdGetDevInfo2 {
		t.Fatalf("sent %v", k.sent)
	}
	if _, err := c.GetParams(id); err != nil {
		t.Fatal(err)
	}
	if err := c.StopDev(id); err != nil {
		t.Fatal(err)
	}
	for _, s := range k.sent[2:] {
		if s.hdr.DevPathLen != uint16(len("/dev/ublkc12")) || !bytes.HasPrefix(s.buf, []byte("/dev/ublkc12")) {
			t.Errorf("%s after GET_DEV_INFO2 has no path: %+v", cmdNames[s.op], s.hdr)
		}
	}
}
