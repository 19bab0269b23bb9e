package btrfsdio

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/raid"
)

// testDir prefers tmpfs: the tests write gigabytes and want them in memory.
func testDir(t testing.TB) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "btrfsdio-test-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// devicesFor is how many devices each profile's tests use.
func devicesFor(p raid.Profile) int {
	switch p {
	case raid.Single, raid.Dup:
		return 1
	case raid.Raid0, raid.Raid1:
		return 2
	case raid.Raid1C3, raid.Raid5:
		return 3
	}
	return 4
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

type testFS struct {
	*FsInfo
	paths []string
}

// dioModes are the direct IO paths: zero-copy (before the patch), pooled
// bounce, the seed's page-by-page bounce, and upstream's later fallback
// and generic bounce.
var dioModes = []struct {
	name string
	opts Options
}{
	{"zerocopy", Options{Mode: ZeroCopy}},
	{"bounce", Options{Mode: Bounce}},
	{"faithful", Options{Mode: Bounce, Faithful: true}},
	{"fallback", Options{Mode: Fallback}},
	{"iomap-bounce", Options{Mode: IomapBounce}},
}

func newTestFS(t testing.TB, p raid.Profile, devSize int64, opts Options) *testFS {
	t.Helper()
	return newTestFSDevices(t, p, devicesFor(p), devSize, opts)
}

// newTestFSDevices is newTestFS over ndevs devices.
func newTestFSDevices(t testing.TB, p raid.Profile, ndevs int, devSize int64, opts Options) *testFS {
	t.Helper()
	dir := testDir(t)
	var devs []*raid.Device
	var paths []string
	for i := 0; i < ndevs; i++ {
		path := filepath.Join(dir, fmt.Sprintf("dev%d.img", i))
		d, err := raid.OpenDevice(path, raid.DeviceOptions{Create: true, Size: devSize, Logger: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
		paths = append(paths, path)
	}
	vol, err := raid.NewVolume(devs, p, raid.VolumeOptions{Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vol.Close() })
	if opts.Log == nil {
		opts.Log = quietLog()
	}
	fs, err := NewFsInfo(vol, opts)
	if err != nil {
		t.Fatal(err)
	}
	if fs.BouncePool != nil {
		// A pool whose folios leak would make the next submitter wait for
		// ever: bound the wait, and fail the test naming the leak.
		fs.BouncePool.SetWaitLimit(poolWaitLimit)
		t.Cleanup(func() {
			if st := fs.BouncePool.Stats(); st.WaitTimeouts != 0 {
				t.Errorf("bounce pool: %d waits for room gave up after %v with %d of %d bytes out: bounce folios leaked (never given back to the pool)",
					st.WaitTimeouts, poolWaitLimit, st.InUse, fs.BouncePool.Limit())
			}
		})
	}
	return &testFS{FsInfo: fs, paths: paths}
}

// poolWaitLimit is how long a test's bounce pool lets a submitter wait for
// room: far beyond any wait for in-flight IO, even under -race on a loaded
// machine.
const poolWaitLimit = 20 * time.Second

// mmapBuf is memory outside the Go heap: the buffers that the tests scribble
// on while IO is in flight are racy on purpose, and the race detector only
// watches the Go heap.
func mmapBuf(t testing.TB, n int) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

func (fs *testFS) write(pos int64, buf []byte, folio int) (int, error) {
	return fs.Inode().DirectWrite(&iomap.Kiocb{Pos: pos}, iomap.NewIovIter(buf, folio))
}

func (fs *testFS) read(pos int64, buf []byte, folio int) (int, error) {
	return fs.Inode().DirectRead(&iomap.Kiocb{Pos: pos}, iomap.NewIovIter(buf, folio))
}

// checkQuiescent asserts that nothing is left behind once every IO has
// returned: no page, bio, ordered extent or extent lock, and no accounting
// warning.
func (fs *testFS) checkQuiescent(t testing.TB) {
	t.Helper()
	inode := fs.Inode()
	// iomap_dio_bio_end_io wakes the submitter before its bio_put, as the
	// kernel's does: give the last zero-copy completion time to put its bio.
	for deadline := time.Now().Add(2 * time.Second); fs.DioBioset.InUse() != 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	var errs []error
	if n := fs.Pages.InUse(); n != 0 {
		errs = append(errs, fmt.Errorf("%d bounce pages not freed", n))
	}
	if n := fs.DioBioset.InUse(); n != 0 {
		errs = append(errs, fmt.Errorf("%d dio bios not put", n))
	}
	if n := inode.OrderedCount(); n != 0 {
		errs = append(errs, fmt.Errorf("%d ordered extents left", n))
	}
	if held := inode.IOTree.Held(); len(held) != 0 {
		errs = append(errs, fmt.Errorf("extent locks held: %v", held))
	}
	if n := inode.IOTree.BadClears(); n != 0 {
		errs = append(errs, fmt.Errorf("%d unlocks of unlocked ranges", n))
	}
	if st := fs.Stats(); st.BounceCtls != st.BounceCtlsDone {
		errs = append(errs, fmt.Errorf("%d bounce_ctl made, %d completed", st.BounceCtls, st.BounceCtlsDone))
	}
	if n := fs.Stats().AccountingBugs; n != 0 {
		errs = append(errs, fmt.Errorf("%d ordered extent accounting errors", n))
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func fillPattern(b []byte, seed uint64) {
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
}

// scrubDiffs counts sectors whose copies disagree, parity included.
func scrubDiffs(rep *raid.ScrubReport) int {
	return len(rep.Differences) + len(rep.ParityMismatches)
}

func scrubCsumErrors(rep *raid.ScrubReport) int { return len(rep.CsumErrors) }

// corruptCopy flips bytes of one copy of the sector at logical, directly in
// the backing image.
func corruptCopy(t *testing.T, fs *testFS, logical uint64, mirror int) {
	t.Helper()
	ioc, _, err := fs.Vol.MapBlock(blk.OpRead, logical, SectorSize, mirror)
	if err != nil {
		t.Fatal(err)
	}
	s := ioc.Stripes[0]
	f, err := os.OpenFile(s.Dev.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := make([]byte, 512)
	for i := range junk {
		junk[i] = 0x5A
	}
	if _, err := f.WriteAt(junk, int64(s.Physical)+100); err != nil {
		t.Fatal(err)
	}
}
