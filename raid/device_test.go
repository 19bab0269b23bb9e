package raid

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

func TestOpenDeviceErrors(t *testing.T) {
	dir := t.TempDir()
	opts := DeviceOptions{Logger: testLogger()}
	missing := filepath.Join(dir, "missing.img")
	if _, err := OpenDevice(missing, opts); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing image: %v", err)
	}
	if _, err := OpenDevice(dir, opts); err == nil || !strings.Contains(err.Error(), "not a regular file or block device") {
		t.Errorf("directory: %v", err)
	}
	if _, err := OpenDevice("/dev/null", opts); err == nil || !strings.Contains(err.Error(), "not a regular file or block device") {
		t.Errorf("character device: %v", err)
	}
	small := filepath.Join(dir, "small.img")
	if err := os.WriteFile(small, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDevice(small, opts); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("small image: %v", err)
	}
	if _, err := OpenDevice(filepath.Join(dir, "tiny.img"), DeviceOptions{Create: true, Size: 4096, Logger: testLogger()}); err == nil {
		t.Error("created an image below the minimum size")
	}
	if os.Geteuid() != 0 { // root opens a 0444 file for writing anyway
		ro := filepath.Join(dir, "ro.img")
		if err := os.WriteFile(ro, nil, 0o444); err != nil {
			t.Fatal(err)
		}
		os.Truncate(ro, MinDeviceSize)
		if _, err := OpenDevice(ro, opts); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("read-only image: %v", err)
		}
	}
	// Create makes a sparse file of the requested size, reused on reopen.
	img := filepath.Join(dir, "new.img")
	d, err := OpenDevice(img, DeviceOptions{Create: true, Size: 3 << 20, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if d.Size() != 3<<20 {
		t.Errorf("size %d", d.Size())
	}
	d.Close()
	if err := d.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(img, &st); err != nil || st.Blocks*512 >= 3<<20 {
		t.Errorf("image not sparse: %d blocks (%v)", st.Blocks, err)
	}
	d, err = OpenDevice(img, DeviceOptions{Create: true, Size: 8 << 20, Logger: testLogger()})
	if err != nil || d.Size() != 3<<20 {
		t.Fatalf("reopen with Create: %v, size %d", err, d.Size())
	}
	d.Close()
}

// TestReopenSameLayout writes through one volume, closes it, and scrubs
// and reads the images through a fresh read-only volume, as the CLI's
// offline scrub does.
func TestReopenSameLayout(t *testing.T) {
	for _, p := range []Profile{Raid10, Raid5, Dup} {
		devs := newDevices(t, deviceCount(p), R+256<<10)
		var paths []string
		for _, d := range devs {
			paths = append(paths, d.Path())
		}
		v, err := NewVolume(devs, p, VolumeOptions{Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(8, 8))
		model := randBytes(rng, int(v.Capacity()))
		if st := writeAt(t, v, 0, model, rng); st != blk.StsOK {
			t.Fatal(st)
		}
		if err := v.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		var again []*Device
		for _, path := range paths {
			d, err := OpenDevice(path, DeviceOptions{ReadOnly: true, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			again = append(again, d)
		}
		v2 := volumeOn(t, again, p)
		for m := 1; m <= v2.NumCopies(0, SectorSize); m++ {
			got, st := readAt(t, v2, 0, len(model), m, nil)
			if st != blk.StsOK || firstDiff(got, model) >= 0 {
				t.Fatalf("%s reopened, mirror %d: %v, first difference %d", p, m, st, firstDiff(got, model))
			}
		}
		if rep := scrub(t, v2, 0, v2.Capacity(), csumsOf(model, nil)); !rep.Clean() {
			t.Fatalf("%s reopened: scrub %+v", p, rep)
		}
		if st := writeAt(t, v2, 0, model[:SectorSize], nil); st != blk.StsIOErr {
			t.Fatalf("%s: write to read-only devices: %v", p, st)
		}
	}
}

func TestInjectFaultCountsAndStats(t *testing.T) {
	v := newVolume(t, Single, 4*S)
	d := v.devs[0]
	buf := blk.AlignedBuffer(2 * SectorSize)
	d.InjectFault(blk.OpRead, 2)
	for i, want := range []blk.Status{blk.StsIOErr, blk.StsIOErr, blk.StsOK} {
		if st := submitWait(t, v, buildBio(blk.OpRead, 0, buf, nil), 0); st != want {
			t.Fatalf("read %d: %v, want %v", i, st, want)
		}
	}
	if st := writeAt(t, v, 0, buf, nil); st != blk.StsOK {
		t.Fatal(st)
	}
	s := d.Stats()
	want := DeviceStats{Reads: 3, Writes: 1, BytesRead: 8192, BytesWritten: 8192, ReadErrors: 2, InjectedFaults: 2}
	if s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
	d.InjectFault(blk.OpWrite, -1)
	for i := 0; i < 3; i++ {
		if st := writeAt(t, v, 0, buf, nil); st != blk.StsIOErr {
			t.Fatalf("write %d with a permanent fault: %v", i, st)
		}
	}
	d.InjectFault(blk.OpWrite, 0)
	if st := writeAt(t, v, 0, buf, nil); st != blk.StsOK {
		t.Fatalf("write after clearing: %v", st)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	d.InjectFault(blk.OpFlush, 1)
	if err := v.Flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush with a fault: %v", err)
	}
}

func TestMaxDeviceBytes(t *testing.T) {
	devs := newDevices(t, 2, R+16*S)
	v, err := NewVolume(devs, Raid1, VolumeOptions{Logger: testLogger(), MaxDeviceBytes: R + 4*S + 123})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.Capacity() != 4*S {
		t.Fatalf("capacity %d, want %d", v.Capacity(), 4*S)
	}
}

// callCountingRemote counts the calls made to remote memory.
type callCountingRemote struct {
	memRemote
	reads, writes atomic.Int32
}

func (c *callCountingRemote) ReadAt(p []byte, off int64) (int, error) {
	c.reads.Add(1)
	return c.memRemote.ReadAt(p, off)
}

func (c *callCountingRemote) WriteAt(p []byte, off int64) (int, error) {
	c.writes.Add(1)
	return c.memRemote.WriteAt(p, off)
}

// A bio of contiguous 4 KiB remote pages (a ublk request) is copied in runs
// of bounce-buffer size, not page by page: one pread/pwrite of the request
// per run and per copy.
func TestRemotePagesCopiedInRuns(t *testing.T) {
	const n = 1 << 20
	v := newVolume(t, Raid1, 32<<20)
	mem := &callCountingRemote{memRemote: memRemote{b: randBytes(rand.New(rand.NewPCG(1, 2)), n)}}
	want := append([]byte(nil), mem.b...)
	bioOf := func(op blk.Op) *blk.Bio {
		bio := blk.BioAllocBioset(nil, n/blk.PageSize, blk.Opf(op))
		for off := 0; off < n; off += blk.PageSize {
			bio.AddPage(blk.NewRemotePage(mem, int64(off), blk.PageSize), blk.PageSize, 0)
		}
		return bio
	}
	if st := submitWait(t, v, bioOf(blk.OpWrite), 0); st != blk.StsOK {
		t.Fatalf("write: %v", st)
	}
	// Two copies, each read from the request by itself.
	if got, wantReads := mem.reads.Load(), int32(2*n/bounceSize); got != wantReads {
		t.Errorf("write: %d reads of remote memory, want %d", got, wantReads)
	}
	clear(mem.b)
	if st := submitWait(t, v, bioOf(blk.OpRead), 1); st != blk.StsOK {
		t.Fatalf("read: %v", st)
	}
	if got, wantWrites := mem.writes.Load(), int32(n/bounceSize); got != wantWrites {
		t.Errorf("read: %d writes of remote memory, want %d", got, wantWrites)
	}
	if !bytes.Equal(mem.b, want) {
		t.Error("the data read back differs")
	}
}
