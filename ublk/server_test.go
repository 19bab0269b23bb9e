package ublk

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

func TestTargetParamsToParams(t *testing.T) {
	tp := TargetParams{Size: 1 << 30, VolatileCache: true, FUA: true, Discard: true, WriteZeroes: true}.withDefaults()
	if err := tp.validate(4096); err != nil {
		t.Fatal(err)
	}
	p := tp.toParams(1 << 20)
	want := Params{
		Len: ParamsSize, Types: ParamTypeBasic | ParamTypeDiscard,
		Basic: ParamBasic{Attrs: AttrVolatileCache | AttrFUA, LogicalBSShift: 9, PhysicalBSShift: 9,
			IOOptShift: 9, IOMinShift: 9, MaxSectors: 2048, DevSectors: 1 << 21},
		Discard: ParamDiscard{Granularity: 512, MaxDiscardSectors: 0xFFFFFFFF >> 9,
			MaxWriteZeroesSectors: 0xFFFFFFFF >> 9, MaxDiscardSegments: 1},
	}
	if p != want {
		t.Errorf("params\n got %+v\nwant %+v", p, want)
	}
	// max_sectors never exceeds what ADD_DEV negotiated.
	if got := tp.toParams(256 << 10).Basic.MaxSectors; got != 512 {
		t.Errorf("max_sectors with a 256 KiB buffer = %d", got)
	}
	// Only write-zeroes: discard params present, discard itself off.
	wz := TargetParams{Size: 4096, WriteZeroes: true, PhysicalBlockSize: 4096}.withDefaults().toParams(1 << 20)
	if wz.Types&ParamTypeDiscard == 0 || wz.Discard.MaxDiscardSectors != 0 || wz.Discard.MaxWriteZeroesSectors == 0 || wz.Discard.Granularity != 4096 {
		t.Errorf("write-zeroes-only params %+v", wz.Discard)
	}
	plain := TargetParams{Size: 4096, ReadOnly: true, Rotational: true}.withDefaults().toParams(1 << 20)
	if plain.Types != ParamTypeBasic || plain.Basic.Attrs != AttrReadOnly|AttrRotational {
		t.Errorf("plain params %+v", plain)
	}
}

func TestTargetParamsValidate(t *testing.T) {
	bad := map[string]TargetParams{
		"zero size":            {},
		"unaligned size":       {Size: 1000},
		"lbs not pow2":         {Size: 1 << 20, LogicalBlockSize: 1000},
		"lbs too big":          {Size: 1 << 20, LogicalBlockSize: 8192},
		"pbs < lbs":            {Size: 1 << 20, LogicalBlockSize: 4096, PhysicalBlockSize: 512},
		"max io unaligned":     {Size: 1 << 20, MaxIOBytes: 5000},
		"max io over 32 MiB":   {Size: 1 << 20, MaxIOBytes: 64 << 20},
		"fua without cache":    {Size: 1 << 20, FUA: true},
		"granularity not pow2": {Size: 1 << 20, Discard: true, DiscardGranularity: 3000},
	}
	for name, p := range bad {
		if err := p.withDefaults().validate(4096); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestOptionsNormalize(t *testing.T) {
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	o, err := Options{ID: AnyID, Queues: 1 << 10, Params: TargetParams{Size: 1 << 20}, Logger: quiet}.normalize()
	if err != nil {
		t.Fatal(err)
	}
	if o.Queues != runtime.NumCPU() || o.Depth != DefaultQueueDepth || o.Params.MaxIOBytes != 1<<20 || o.Logger == nil {
		t.Errorf("normalized %+v", o)
	}
	if f := o.requestedFlags(); f != FlagCmdIoctlEncode|FlagUserCopy {
		t.Errorf("flags %v", FlagNames(f))
	}
	// The kernel refuses USER_COPY on an unprivileged device (EINVAL).
	o.Unprivileged = true
	if f := o.requestedFlags(); f != FlagCmdIoctlEncode|FlagUnprivilegedDev {
		t.Errorf("unprivileged flags %v", FlagNames(f))
	}
	o.Unprivileged = false
	o.NoUserCopy, o.UserRecovery = true, true
	if f := o.requestedFlags(); f != FlagCmdIoctlEncode|FlagUserRecovery {
		t.Errorf("flags %v", FlagNames(f))
	}
	o.FailIO = true
	if f := o.requestedFlags(); f != FlagCmdIoctlEncode|FlagUserRecovery|FlagUserRecoveryFailIO {
		t.Errorf("flags %v", FlagNames(f))
	}
	for _, bad := range []Options{
		{ID: -2, Params: TargetParams{Size: 4096}},
		{ID: 1 << 20, Params: TargetParams{Size: 4096}},
		{Depth: 5000, Params: TargetParams{Size: 4096}},
		{Queues: -1, Params: TargetParams{Size: 4096}},
		{ID: 0},
	} {
		if _, err := bad.normalize(); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

func TestCmdErrorMessages(t *testing.T) {
	cases := []struct {
		err  *CmdError
		want string
	}{
		{&CmdError{Cmd: "ADD_DEV", DevID: 3, Errno: unix.EEXIST}, "ublk: ADD_DEV: file exists (device id 3 is already in use)"},
		{&CmdError{Cmd: "ADD_DEV", DevID: anyDevID, Errno: unix.ENODEV}, "ublk: ADD_DEV: no such device (is ublk_drv loaded?)"},
		{&CmdError{Cmd: "GET_DEV_INFO", DevID: 7, Errno: unix.ENODEV}, "ublk: GET_DEV_INFO: no such device (no ublk device 7)"},
		{&CmdError{Cmd: "START_DEV", DevID: 1, Errno: unix.EINVAL}, "ublk: START_DEV: invalid argument"},
	}
	for _, c := range cases {
		if got := c.err.Error(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
	var err error = &CmdError{Cmd: "DEL_DEV", Errno: unix.ENODEV}
	if !errors.Is(err, unix.ENODEV) {
		t.Error("CmdError does not unwrap to its errno")
	}
}

// On a machine without ublk_drv every entry point must say so, not hang or panic.
func TestNoDriver(t *testing.T) {
	if _, err := os.Stat(ControlPath); err == nil {
		t.Skip(ControlPath + " exists here")
	}
	if err := CheckDriver(); !errors.Is(err, ErrNoDriver) {
		t.Errorf("CheckDriver = %v", err)
	}
	if !strings.Contains(ErrNoDriver.Error(), "ublk_drv not loaded") {
		t.Errorf("message %q", ErrNoDriver)
	}
	_, err := Add(Options{ID: AnyID, Params: TargetParams{Size: 1 << 20}}, funcTarget(func(*Request) int32 { return 0 }))
	if !errors.Is(err, ErrNoDriver) {
		t.Errorf("Add = %v", err)
	}
	if _, err := GetFeatures(); !errors.Is(err, ErrNoDriver) {
		t.Errorf("GetFeatures = %v", err)
	}
	if err := Delete(0); !errors.Is(err, ErrNoDriver) {
		t.Errorf("Delete = %v", err)
	}
	if _, err := List(0); !errors.Is(err, ErrNoDriver) {
		t.Errorf("List = %v", err)
	}
}

func TestParseCharDevIDs(t *testing.T) {
	got := parseCharDevIDs([]string{"/sys/class/ublk-char/ublkc10", "/dev/ublkc2", "/dev/ublkc2", "/dev/ublkcx", "/dev/ublk-control", "ublkc0"})
	if want := []uint32{0, 2, 10}; !reflect.DeepEqual(got, want) {
		t.Errorf("ids = %v, want %v", got, want)
	}
}

// userCopyData is exercised on a plain file standing in for /dev/ublkcN: the
// offsets it uses must be the user-copy window of its queue and tag.
func TestUserCopyDataOffsets(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "ublkc"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	src := newUserCopySource(fd, 0, 4)
	if src.addr(3) != 0 {
		t.Error("user copy must pass addr 0")
	}
	rd, err := src.data(3, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.data(3, MaxUserCopyBytes+512); err == nil {
		t.Error("request larger than the window accepted")
	}
	// The request is 1024 bytes; fill it so the file is not short.
	if n, err := rd.WriteAt(make([]byte, 1024), 0); n != 1024 || err != nil {
		t.Fatalf("fill = %d, %v", n, err)
	}
	payload := bytes.Repeat([]byte{0x5A}, 100)
	if n, err := rd.WriteAt(payload, 24); n != 100 || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	check := make([]byte, 100)
	if _, err := f.ReadAt(check, UserCopyOffset(0, 3)+24); err != nil || !bytes.Equal(check, payload) {
		t.Fatalf("bytes not at the (q 0, tag 3) window: %v", err)
	}
	got := make([]byte, 100)
	if n, err := rd.ReadAt(got, 24); n != 100 || err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if n, err := rd.ReadAt(make([]byte, 100), 1000); n != 24 || err != io.EOF {
		t.Errorf("ReadAt across the end = %d, %v", n, err)
	}
	if n, err := rd.WriteAt(make([]byte, 100), 1000); n != 24 || !errors.Is(err, errOutOfRange) {
		t.Errorf("WriteAt across the end = %d, %v", n, err)
	}
}

// A queue thread runs on the CPUs that both its queue's affinity and the
// thread's own allow, and is left alone when that changes nothing or
// leaves nothing.
func TestQueueCPUs(t *testing.T) {
	set := func(cpus ...int) unix.CPUSet {
		var s unix.CPUSet
		for _, c := range cpus {
			s.Set(c)
		}
		return s
	}
	for _, tc := range []struct {
		want, allowed, got unix.CPUSet
		pin                bool
	}{
		{set(2), set(0, 1, 2, 3), set(2), true},
		{set(0, 1, 2, 3), set(1, 3), set(1, 3), false},
		{set(2, 3), set(0, 1, 2, 3), set(2, 3), true},
		{set(700, 1023), set(5, 1023), set(1023), true},
		{set(0, 1), set(2, 3), set(), false},
		{set(), set(0), set(), false},
	} {
		got, pin := queueCPUs(tc.want, tc.allowed)
		if pin != tc.pin || (pin && got != tc.got) {
			t.Errorf("queueCPUs(%v, %v) = %v %v, want %v %v", tc.want, tc.allowed, got, pin, tc.got, tc.pin)
		}
	}
}
