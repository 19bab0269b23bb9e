package ublk

import (
	"encoding/binary"
	"reflect"
	"testing"
)

// The literal values below are copied from the facts note checked against the
// 6.12 header; the constants are computed from _IOC, so both must agree.
func TestCommandNumbers(t *testing.T) {
	want := map[string][2]uint32{
		"GET_QUEUE_AFFINITY":  {CmdGetQueueAffinity, 0x80207501},
		"GET_DEV_INFO":        {CmdGetDevInfo, 0x80207502},
		"ADD_DEV":             {CmdAddDev, 0xC0207504},
		"DEL_DEV":             {CmdDelDev, 0xC0207505},
		"START_DEV":           {CmdStartDev, 0xC0207506},
		"STOP_DEV":            {CmdStopDev, 0xC0207507},
		"SET_PARAMS":          {CmdSetParams, 0xC0207508},
		"GET_PARAMS":          {CmdGetParams, 0x80207509},
		"START_USER_RECOVERY": {CmdStartUserRecovery, 0xC0207510},
		"END_USER_RECOVERY":   {CmdEndUserRecovery, 0xC0207511},
		"GET_DEV_INFO2":       {CmdGetDevInfo2, 0x80207512},
		"GET_FEATURES":        {CmdGetFeatures, 0x80207513},
		"DEL_DEV_ASYNC":       {CmdDelDevAsync, 0x80207514},
		"FETCH_REQ":           {IOFetchReq, 0xC0107520},
		"COMMIT_AND_FETCH":    {IOCommitAndFetchReq, 0xC0107521},
		"NEED_GET_DATA":       {IONeedGetData, 0xC0107522},
	}
	for name, v := range want {
		if v[0] != v[1] {
			t.Errorf("%s = %#x, want %#x", name, v[0], v[1])
		}
	}
	if got := IOC(iocRead|iocWrite, 'u', 0x04, CtrlCmdSize); got != CmdAddDev {
		t.Errorf("IOC(ADD_DEV) = %#x", got)
	}
	if got := IOC(iocRead, 'u', 0x13, CtrlCmdSize); got != CmdGetFeatures {
		t.Errorf("IOC(GET_FEATURES) = %#x", got)
	}
	for op, name := range cmdNames {
		if name == "" || op>>8&0xff != 'u' {
			t.Errorf("cmdNames[%#x] = %q", op, name)
		}
	}
}

func TestFlagAndStateValues(t *testing.T) {
	pairs := [][2]uint64{
		{FlagSupportZeroCopy, 1 << 0}, {FlagURingCmdCompInTask, 1 << 1}, {FlagNeedGetData, 1 << 2},
		{FlagUserRecovery, 1 << 3}, {FlagUserRecoveryReissue, 1 << 4}, {FlagUnprivilegedDev, 1 << 5},
		{FlagCmdIoctlEncode, 1 << 6}, {FlagUserCopy, 1 << 7}, {FlagZoned, 1 << 8},
		{StateDead, 0}, {StateLive, 1}, {StateQuiesced, 2},
		{ParamTypeBasic, 1}, {ParamTypeDiscard, 2}, {ParamTypeDevt, 4}, {ParamTypeZoned, 8},
		{AttrReadOnly, 1}, {AttrRotational, 2}, {AttrVolatileCache, 4}, {AttrFUA, 8},
		{uint64(OpRead), 0}, {uint64(OpWrite), 1}, {uint64(OpFlush), 2}, {uint64(OpDiscard), 3}, {uint64(OpWriteZeroes), 5},
		{uint64(ReqFUA), 1 << 13}, {uint64(ReqNoUnmap), 1 << 15},
		{IOBufOffset, 0x80000000}, {descQueueStride, 0x18000}, {MaxUserCopyBytes, 32 << 20},
	}
	for i, p := range pairs {
		if p[0] != p[1] {
			t.Errorf("pair %d: %#x != %#x", i, p[0], p[1])
		}
	}
	if IOResAbort != -19 {
		t.Errorf("IOResAbort = %d", IOResAbort)
	}
	// 6.12 answers GET_FEATURES with 0x1fe.
	got := FlagNames(0x1fe)
	want := []string{"URING_CMD_COMP_IN_TASK", "NEED_GET_DATA", "USER_RECOVERY", "USER_RECOVERY_REISSUE",
		"UNPRIVILEGED_DEV", "CMD_IOCTL_ENCODE", "USER_COPY", "ZONED"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("FlagNames(0x1fe) = %v", got)
	}
	if n := FlagNames(1 << 40); len(n) != 1 || n[0] != "bit40" {
		t.Errorf("FlagNames(1<<40) = %v", n)
	}
	if StateName(1) != "LIVE" || StateName(0) != "DEAD" || StateName(9) != "UNKNOWN" {
		t.Error("StateName")
	}
}

func TestOffsets(t *testing.T) {
	if got := UserCopyOffset(1, 2); got != 0x80000000+1<<41+2<<25 {
		t.Errorf("UserCopyOffset(1,2) = %#x", got)
	}
	if got := UserCopyOffset(0, 0); got != 0x80000000 {
		t.Errorf("UserCopyOffset(0,0) = %#x", got)
	}
	if got := IODescOffset(3); got != 3*0x18000 {
		t.Errorf("IODescOffset(3) = %#x", got)
	}
	for depth, want := range map[int]int{1: 4096, 128: 4096, 170: 4096, 171: 8192, 4096: 98304} {
		if got := IODescMapSize(depth); got != want {
			t.Errorf("IODescMapSize(%d) = %d, want %d", depth, got, want)
		}
	}
}

func TestCtrlCmdLayout(t *testing.T) {
	c := CtrlCmd{DevID: 0x11223344, QueueID: 0xFFFF, Len: 0x40, Addr: 0x1122334455667788, Data: 0xAABBCCDD, DevPathLen: 7, Pad: 0, Reserved: 0x99}
	b := make([]byte, CtrlCmdSize)
	c.Marshal(b)
	le := binary.LittleEndian
	checks := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"dev_id@0", uint64(le.Uint32(b[0:])), 0x11223344},
		{"queue_id@4", uint64(le.Uint16(b[4:])), 0xFFFF},
		{"len@6", uint64(le.Uint16(b[6:])), 0x40},
		{"addr@8", le.Uint64(b[8:]), 0x1122334455667788},
		{"data@16", le.Uint64(b[16:]), 0xAABBCCDD},
		{"dev_path_len@24", uint64(le.Uint16(b[24:])), 7},
		{"reserved@28", uint64(le.Uint32(b[28:])), 0x99},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	var back CtrlCmd
	back.Unmarshal(b)
	if back != c {
		t.Errorf("round trip: %+v", back)
	}
}

func TestDevInfoLayout(t *testing.T) {
	d := DevInfo{NrHWQueues: 2, QueueDepth: 128, State: 1, MaxIOBufBytes: 1 << 20, DevID: 0xFFFFFFFF,
		SrvPID: -1, Flags: 0x1fe, SrvFlags: 0x55, OwnerUID: 1000, OwnerGID: 1001}
	b := make([]byte, DevInfoSize)
	for i := range b {
		b[i] = 0xEE // Marshal must clear padding and reserved words
	}
	d.Marshal(b)
	le := binary.LittleEndian
	checks := map[string][2]uint64{
		"nr_hw_queues@0":     {uint64(le.Uint16(b[0:])), 2},
		"queue_depth@2":      {uint64(le.Uint16(b[2:])), 128},
		"state@4":            {uint64(le.Uint16(b[4:])), 1},
		"pad0@6":             {uint64(le.Uint16(b[6:])), 0},
		"max_io_buf_bytes@8": {uint64(le.Uint32(b[8:])), 1 << 20},
		"dev_id@12":          {uint64(le.Uint32(b[12:])), 0xFFFFFFFF},
		"ublksrv_pid@16":     {uint64(le.Uint32(b[16:])), 0xFFFFFFFF},
		"pad1@20":            {uint64(le.Uint32(b[20:])), 0},
		"flags@24":           {le.Uint64(b[24:]), 0x1fe},
		"ublksrv_flags@32":   {le.Uint64(b[32:]), 0x55},
		"owner_uid@40":       {uint64(le.Uint32(b[40:])), 1000},
		"owner_gid@44":       {uint64(le.Uint32(b[44:])), 1001},
		"reserved1@48":       {le.Uint64(b[48:]), 0},
		"reserved2@56":       {le.Uint64(b[56:]), 0},
	}
	for name, v := range checks {
		if v[0] != v[1] {
			t.Errorf("%s = %#x, want %#x", name, v[0], v[1])
		}
	}
	var back DevInfo
	back.Unmarshal(b)
	if back != d {
		t.Errorf("round trip: %+v", back)
	}
}

func TestParamsLayout(t *testing.T) {
	p := Params{
		Len: ParamsSize, Types: ParamTypeBasic | ParamTypeDiscard,
		Basic: ParamBasic{Attrs: AttrVolatileCache | AttrFUA, LogicalBSShift: 9, PhysicalBSShift: 12,
			IOOptShift: 13, IOMinShift: 10, MaxSectors: 2048, ChunkSectors: 8, DevSectors: 1 << 30, VirtBoundaryMask: 0xfff},
		Discard: ParamDiscard{Alignment: 1, Granularity: 4096, MaxDiscardSectors: 0x7FFFFF, MaxWriteZeroesSectors: 0x7FFFFE, MaxDiscardSegments: 1},
		Devt:    ParamDevt{CharMajor: 511, CharMinor: 3, DiskMajor: 259, DiskMinor: 4},
		Zoned:   ParamZoned{MaxOpenZones: 5, MaxActiveZones: 6, MaxZoneAppendSectors: 7},
	}
	b := make([]byte, ParamsSize)
	p.Marshal(b)
	le := binary.LittleEndian
	checks := map[string][2]uint64{
		"len@0":                       {uint64(le.Uint32(b[0:])), 112},
		"types@4":                     {uint64(le.Uint32(b[4:])), 3},
		"basic.attrs@8":               {uint64(le.Uint32(b[8:])), 12},
		"basic.logical_bs_shift@12":   {uint64(b[12]), 9},
		"basic.physical_bs_shift@13":  {uint64(b[13]), 12},
		"basic.io_opt_shift@14":       {uint64(b[14]), 13},
		"basic.io_min_shift@15":       {uint64(b[15]), 10},
		"basic.max_sectors@16":        {uint64(le.Uint32(b[16:])), 2048},
		"basic.chunk_sectors@20":      {uint64(le.Uint32(b[20:])), 8},
		"basic.dev_sectors@24":        {le.Uint64(b[24:]), 1 << 30},
		"basic.virt_boundary_mask@32": {le.Uint64(b[32:]), 0xfff},
		"discard.alignment@40":        {uint64(le.Uint32(b[40:])), 1},
		"discard.granularity@44":      {uint64(le.Uint32(b[44:])), 4096},
		"discard.max_discard@48":      {uint64(le.Uint32(b[48:])), 0x7FFFFF},
		"discard.max_write_zeroes@52": {uint64(le.Uint32(b[52:])), 0x7FFFFE},
		"discard.max_segments@56":     {uint64(le.Uint16(b[56:])), 1},
		"discard.reserved@58":         {uint64(le.Uint16(b[58:])), 0},
		"devt.char_major@60":          {uint64(le.Uint32(b[60:])), 511},
		"devt.char_minor@64":          {uint64(le.Uint32(b[64:])), 3},
		"devt.disk_major@68":          {uint64(le.Uint32(b[68:])), 259},
		"devt.disk_minor@72":          {uint64(le.Uint32(b[72:])), 4},
		"zoned.max_open@76":           {uint64(le.Uint32(b[76:])), 5},
		"zoned.max_active@80":         {uint64(le.Uint32(b[80:])), 6},
		"zoned.max_append@84":         {uint64(le.Uint32(b[84:])), 7},
	}
	for name, v := range checks {
		if v[0] != v[1] {
			t.Errorf("%s = %#x, want %#x", name, v[0], v[1])
		}
	}
	for i := 88; i < ParamsSize; i++ {
		if b[i] != 0 {
			t.Errorf("zoned.reserved byte %d = %#x", i, b[i])
		}
	}
	var back Params
	back.Unmarshal(b)
	if back != p {
		t.Errorf("round trip:\n%+v\n%+v", back, p)
	}
}

func TestIOCmdAndDescLayout(t *testing.T) {
	c := IOCmd{QID: 3, Tag: 0x1234, Result: -5, Addr: 0xdeadbeefcafe}
	b := make([]byte, IOCmdSize)
	c.Marshal(b)
	le := binary.LittleEndian
	if le.Uint16(b[0:]) != 3 || le.Uint16(b[2:]) != 0x1234 || int32(le.Uint32(b[4:])) != -5 || le.Uint64(b[8:]) != 0xdeadbeefcafe {
		t.Errorf("io cmd bytes % x", b)
	}
	var cb IOCmd
	cb.Unmarshal(b)
	if cb != c {
		t.Errorf("io cmd round trip %+v", cb)
	}

	raw := make([]byte, IODescSize)
	le.PutUint32(raw[0:], 1|1<<13)   // WRITE | FUA
	le.PutUint32(raw[4:], 8)         // nr_sectors
	le.PutUint64(raw[8:], 123456789) // start_sector
	le.PutUint64(raw[16:], 0x7000)   // addr
	var d IODesc
	d.Unmarshal(raw)
	if d.Op() != 1 || d.Flags() != 1<<13 || d.NrSectors != 8 || d.StartSector != 123456789 || d.Addr != 0x7000 {
		t.Errorf("desc = %+v op %d flags %#x", d, d.Op(), d.Flags())
	}
	out := make([]byte, IODescSize)
	d.Marshal(out)
	if string(out) != string(raw) {
		t.Error("desc round trip")
	}
}
