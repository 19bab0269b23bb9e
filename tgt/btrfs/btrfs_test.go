package btrfs

import (
	"bytes"
	"io"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/raid"
	"github.com/btrfsdio/btrfsdio/ublk"
)

// memData is a request's pages in memory (what USER_COPY reaches with
// pread/pwrite on /dev/ublkcN).
type memData struct{ b []byte }

func (m *memData) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m.b[off:]), nil }
func (m *memData) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }

func newTarget(t *testing.T, mode btrfsdio.DioMode) *Target {
	return newTargetOpts(t, btrfsdio.Options{Mode: mode})
}

// newTargetOpts is a target on a fresh in-memory RAID1 filesystem.
func newTargetOpts(t *testing.T, opts btrfsdio.Options) *Target {
	log := logrus.New()
	log.SetOutput(io.Discard)
	dir := t.TempDir()
	var devs []*raid.Device
	for i := 0; i < 2; i++ {
		d, err := raid.OpenDevice(filepath.Join(dir, "d"+string(rune('0'+i))), raid.DeviceOptions{Create: true, Size: 32 << 20, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	vol, err := raid.NewVolume(devs, raid.Raid1, raid.VolumeOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	opts.Log = log
	fs, err := btrfsdio.NewFsInfo(vol, opts)
	if err != nil {
		t.Fatal(err)
	}
	tg := &Target{FS: fs}
	t.Cleanup(func() {
		if err := tg.Close(); err != nil {
			t.Error(err)
		}
	})
	return tg
}

func req(op ublk.Op, off int64, data []byte, flags ublk.ReqFlags) *ublk.Request {
	return &ublk.Request{Op: op, Flags: flags, Sector: uint64(off) >> 9, Sectors: uint32(len(data) >> 9), Data: &memData{b: data}}
}

func TestHandleEveryOp(t *testing.T) {
	for _, mode := range []btrfsdio.DioMode{btrfsdio.ZeroCopy, btrfsdio.Bounce} {
		tg := newTarget(t, mode)
		p := tg.Params()
		if p.LogicalBlockSize != 4096 || !p.VolatileCache || !p.FUA || !p.Discard || !p.WriteZeroes || p.Size == 0 {
			t.Fatalf("params %+v", p)
		}
		data := make([]byte, 1<<20)
		for i := range data {
			data[i] = byte(i * 7)
		}
		if got := tg.Handle(req(ublk.OpWrite, 4096, data, ublk.ReqFUA)); got != int32(len(data)) {
			t.Fatalf("%v: write returned %d", mode, got)
		}
		if got := tg.Handle(&ublk.Request{Op: ublk.OpFlush}); got != 0 {
			t.Fatalf("flush returned %d", got)
		}
		out := make([]byte, len(data))
		if got := tg.Handle(req(ublk.OpRead, 4096, out, 0)); got != int32(len(out)) || !bytes.Equal(out, data) {
			t.Fatalf("%v: read returned %d, equal %v", mode, got, bytes.Equal(out, data))
		}
		for _, op := range []ublk.Op{ublk.OpDiscard, ublk.OpWriteZeroes} {
			if got := tg.Handle(req(op, 4096, make([]byte, 8192), 0)); got != 0 {
				t.Fatalf("%v returned %d", op, got)
			}
			tg.Handle(req(ublk.OpRead, 4096, out, 0))
			if !bytes.Equal(out[:8192], make([]byte, 8192)) || !bytes.Equal(out[8192:], data[8192:]) {
				t.Fatalf("%v did not zero exactly its range", op)
			}
		}
		bad := []struct {
			r    *ublk.Request
			want syscall.Errno
		}{
			{req(ublk.OpRead, int64(p.Size), make([]byte, 4096), 0), syscall.EIO},
			{req(ublk.OpWrite, 512, make([]byte, 4096), 0), syscall.EINVAL},
			{&ublk.Request{Op: ublk.OpRead, Data: &memData{}}, syscall.EINVAL},
			{&ublk.Request{Op: ublk.Op(4)}, syscall.EOPNOTSUPP},
		}
		for _, c := range bad {
			if got := tg.Handle(c.r); got != -int32(c.want) {
				t.Fatalf("%v at sector %d: %d, want -%d", c.r.Op, c.r.Sector, got, c.want)
			}
		}
	}
}

// TestFlushAndFUAAreDurable: on formatted images, what a FUA write or a
// FLUSH acknowledged survives a crash (the volume closed without commit),
// and a discard acknowledged by a later FLUSH does too.
func TestFlushAndFUAAreDurable(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "a"), filepath.Join(dir, "b")}
	open := func(create int64) *Target {
		var devs []*raid.Device
		for _, p := range paths {
			d, err := raid.OpenDevice(p, raid.DeviceOptions{Create: create > 0, Size: create, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			devs = append(devs, d)
		}
		vol, _, err := raid.OpenVolume(devs, raid.OpenOptions{Profile: raid.Raid1, Volume: raid.VolumeOptions{Logger: log}})
		if err != nil {
			t.Fatal(err)
		}
		fs, err := btrfsdio.OpenFsInfo(vol, btrfsdio.Options{Mode: btrfsdio.Bounce, DataSum: true, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		return &Target{FS: fs}
	}
	tg := open(16 << 20)
	a, b := bytes.Repeat([]byte("fua!"), 16<<10), bytes.Repeat([]byte("flsh"), 16<<10)
	if got := tg.Handle(req(ublk.OpWrite, 0, a, ublk.ReqFUA)); got != int32(len(a)) {
		t.Fatalf("FUA write returned %d", got)
	}
	if got := tg.Handle(req(ublk.OpWrite, 1<<20, b, 0)); got != int32(len(b)) {
		t.Fatalf("write returned %d", got)
	}
	if got := tg.Handle(req(ublk.OpDiscard, 0, make([]byte, 4096), 0)); got != 0 {
		t.Fatalf("discard returned %d", got)
	}
	if got := tg.Handle(&ublk.Request{Op: ublk.OpFlush}); got != 0 {
		t.Fatalf("flush returned %d", got)
	}
	tg.FS.Vol.Close() // crash: no commit
	tg = open(0)
	want := append(make([]byte, 4096), a[4096:]...)
	for _, c := range []struct {
		off  int64
		want []byte
	}{{0, want}, {1 << 20, b}} {
		out := make([]byte, len(c.want))
		if got := tg.Handle(req(ublk.OpRead, c.off, out, 0)); got != int32(len(out)) || !bytes.Equal(out, c.want) {
			t.Fatalf("at %d after the crash: %d, equal %v", c.off, got, bytes.Equal(out, c.want))
		}
	}
	// A FUA write alone, then a crash.
	if got := tg.Handle(req(ublk.OpWrite, 2<<20, b, ublk.ReqFUA)); got != int32(len(b)) {
		t.Fatalf("FUA write returned %d", got)
	}
	tg.FS.Vol.Close()
	tg = open(0)
	defer tg.Close()
	out := make([]byte, len(b))
	if got := tg.Handle(req(ublk.OpRead, 2<<20, out, 0)); got != int32(len(out)) || !bytes.Equal(out, b) {
		t.Fatalf("FUA write lost in a crash: %d", got)
	}
}

// writeOnlyData is a READ request's pages under UBLK_F_USER_COPY: the
// driver lets the server write them, never read them.
type writeOnlyData struct{ memData }

func (w *writeOnlyData) ReadAt(p []byte, off int64) (int, error) { return 0, syscall.EINVAL }

// A zero-copy read of a datasum inode is verified in process memory: the
// request's pages cannot be read back, and verifying them in place would
// fail every checksum and "repair" every sector from the other copies.
func TestZeroCopyDatasumReadVerifiedLocally(t *testing.T) {
	tg := newTargetOpts(t, btrfsdio.Options{Mode: btrfsdio.ZeroCopy, DataSum: true})
	fs := tg.FS
	data := bytes.Repeat([]byte("datasum!"), 1<<20/8)
	if res := tg.Handle(req(ublk.OpWrite, 1<<20, data, 0)); res != int32(len(data)) {
		t.Fatalf("write: %d", res)
	}
	got := &writeOnlyData{memData{b: make([]byte, len(data))}}
	r := &ublk.Request{Op: ublk.OpRead, Sector: 1 << 20 >> 9, Sectors: uint32(len(data) >> 9), Data: got}
	if res := tg.Handle(r); res != int32(len(data)) || !bytes.Equal(got.b, data) {
		t.Fatalf("read: %d, data equal %v", res, bytes.Equal(got.b, data))
	}
	if st := fs.Stats(); st.CsumErrors != 0 || st.ReadRepairs != 0 {
		t.Errorf("a clean read counted %d csum errors and %d repairs", st.CsumErrors, st.ReadRepairs)
	}
}

// TestFailedFlushStaysFailed: once a FLUSH request failed because the
// devices' flush failed, every later FLUSH and write fails with EIO even
// though the devices flush again, and reads still work.
func TestFailedFlushStaysFailed(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	d, err := raid.OpenDevice(filepath.Join(t.TempDir(), "d"), raid.DeviceOptions{Create: true, Size: 32 << 20, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	vol, err := raid.NewVolume([]*raid.Device{d}, raid.Single, raid.VolumeOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Close()
	fs, err := btrfsdio.NewFsInfo(vol, btrfsdio.Options{Mode: btrfsdio.Bounce, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	tg := &Target{FS: fs}
	data := bytes.Repeat([]byte{0x5a}, 64<<10)
	if got := tg.Handle(req(ublk.OpWrite, 0, data, 0)); got != int32(len(data)) {
		t.Fatalf("write returned %d", got)
	}
	d.InjectFault(blk.OpFlush, 1)
	for i := 0; i < 3; i++ {
		if got := tg.Handle(&ublk.Request{Op: ublk.OpFlush}); got != -int32(syscall.EIO) {
			t.Fatalf("flush %d returned %d, want -EIO", i, got)
		}
	}
	for _, flags := range []ublk.ReqFlags{0, ublk.ReqFUA} {
		if got := tg.Handle(req(ublk.OpWrite, 0, data, flags)); got != -int32(syscall.EIO) {
			t.Fatalf("write (flags %#x) after a failed flush returned %d, want -EIO", flags, got)
		}
	}
	if got := tg.Handle(req(ublk.OpDiscard, 0, make([]byte, 4096), 0)); got != -int32(syscall.EIO) {
		t.Fatalf("discard after a failed flush returned %d, want -EIO", got)
	}
	out := make([]byte, len(data))
	if got := tg.Handle(req(ublk.OpRead, 0, out, 0)); got != int32(len(out)) || !bytes.Equal(out, data) {
		t.Fatalf("read after a failed flush returned %d", got)
	}
	if tg.Status().ReadOnly() == "" {
		t.Fatal("stats do not say the device is read-only")
	}
}

// TestWrappingSectorRefused: a request whose sector plus length wraps past
// 2^64 (sector 2^55 made offset 0) is refused with EIO (bio_check_eod) for
// every operation; nothing is written, allocated or punched.
func TestWrappingSectorRefused(t *testing.T) {
	tg := newTarget(t, btrfsdio.Bounce)
	data := bytes.Repeat([]byte{0x5a}, 4096)
	if got := tg.Handle(req(ublk.OpWrite, 0, data, 0)); got != 4096 {
		t.Fatalf("write at 0 = %d", got)
	}
	used := tg.FS.UsedBytes()
	for _, w := range []struct {
		sector  uint64
		sectors uint32
	}{
		{1<<55 - 1, 8}, // also (1<<64-1)>>9
		{1 << 55, 8},
		{1<<55 + 8, 8},
		{1 << 54, 8},
		{^uint64(0), 8},
		{tg.Params().Size>>9 - 4, 8}, // no wrap, just past the end
	} {
		for _, op := range []ublk.Op{ublk.OpWrite, ublk.OpRead, ublk.OpDiscard, ublk.OpWriteZeroes} {
			buf := make([]byte, int(w.sectors)<<9)
			r := &ublk.Request{Op: op, Sector: w.sector, Sectors: w.sectors, Data: &memData{b: buf}}
			if got := tg.Handle(r); got != -int32(syscall.EIO) {
				t.Errorf("%s of %d sectors at sector %d = %d, want -EIO", op, w.sectors, w.sector, got)
			}
		}
	}
	out := make([]byte, 4096)
	if got := tg.Handle(req(ublk.OpRead, 0, out, 0)); got != 4096 || !bytes.Equal(out, data) {
		t.Errorf("a refused request reached offset 0: read %d", got)
	}
	if got := tg.FS.UsedBytes(); got != used {
		t.Errorf("refused requests changed the allocated space from %d to %d bytes", used, got)
	}
}
