package btrfsdio

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/raid"
)

// syncBuffer is a log destination the completion goroutines can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// detectorFS is a RAID1 filesystem whose warnings land in the returned log.
func detectorFS(t testing.TB, opts Options) (*testFS, *syncBuffer) {
	logs := &syncBuffer{}
	l := logrus.New()
	l.SetOutput(logs)
	opts.Log = l
	return newTestFS(t, raid.Raid1, 64*mib, opts), logs
}

// volatileWrites writes n 1 MiB blocks from buf, with scribblers changing it
// meanwhile when scribblers > 0, and returns the counters after.
func volatileWrites(t *testing.T, fs *testFS, buf []byte, n, scribblers int) Stats {
	t.Helper()
	stop := make(chan struct{})
	wg := scribble(buf, scribblers, stop)
	for i := 0; i < n; i++ {
		if _, err := fs.write(int64(i%16)*mib, buf, 0); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("write %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	fs.checkQuiescent(t)
	return fs.Stats()
}

// TestVolatileDetector: zero-copy writes from a buffer that two goroutines
// keep changing are counted and warned about with their file offset; the
// same writes from a quiet buffer are checked and count nothing.
func TestVolatileDetector(t *testing.T) {
	const writes = 100
	t.Run("scribbled", func(t *testing.T) {
		fs, logs := detectorFS(t, Options{Mode: ZeroCopy})
		st := volatileWrites(t, fs, mmapBuf(t, mib), writes, 2)
		t.Logf("%d of %d zero-copy writes changed in flight", st.VolatileWrites, st.VolatileChecked)
		if st.VolatileChecked != writes || st.VolatileWrites == 0 {
			t.Fatalf("checked %d (want %d), changed %d (want > 0)", st.VolatileChecked, writes, st.VolatileWrites)
		}
		if !strings.Contains(logs.String(), "modified while in flight: ino 257 offset 0x") {
			t.Fatalf("no warning naming the offset in the log:\n%s", logs)
		}
	})
	t.Run("quiet", func(t *testing.T) {
		fs, logs := detectorFS(t, Options{Mode: ZeroCopy})
		buf := mmapBuf(t, mib)
		fillPattern(buf, 9)
		st := volatileWrites(t, fs, buf, writes, 0)
		if st.VolatileChecked != writes || st.VolatileWrites != 0 {
			t.Fatalf("checked %d (want %d), changed %d (want 0)", st.VolatileChecked, writes, st.VolatileWrites)
		}
		if strings.Contains(logs.String(), "in flight") {
			t.Fatalf("warning without a change:\n%s", logs)
		}
	})
	t.Run("off", func(t *testing.T) {
		fs, _ := detectorFS(t, Options{Mode: ZeroCopy, NoVolatileDetect: true})
		if st := volatileWrites(t, fs, mmapBuf(t, mib), writes/4, 2); st.VolatileChecked != 0 {
			t.Fatalf("detector off, yet %d writes checked", st.VolatileChecked)
		}
	})
	// Bounce mode needs no detector: the devices only ever see the bounce
	// pages, filled before submission, which the caller cannot reach; the
	// scribbling reaches no copy (TestBounceMirrorsAgree).
	t.Run("bounce", func(t *testing.T) {
		fs, _ := detectorFS(t, Options{Mode: Bounce})
		if st := volatileWrites(t, fs, mmapBuf(t, mib), writes/4, 2); st.VolatileChecked != 0 {
			t.Fatalf("bounce mode checked %d writes", st.VolatileChecked)
		}
	})
}

// fileMemory is remote memory read with pread/pwrite on a file, as the
// ublk target reads a request's pages on /dev/ublkcN.
type fileMemory struct{ f *os.File }

func (m fileMemory) ReadAt(p []byte, off int64) (int, error)  { return m.f.ReadAt(p, off) }
func (m fileMemory) WriteAt(p []byte, off int64) (int, error) { return m.f.WriteAt(p, off) }

func newFileMemory(t testing.TB, size int) fileMemory {
	f, err := os.Create(filepath.Join(testDir(t), "request"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	return fileMemory{f}
}

// shiftingMemory is remote memory whose client rewrites it once, on read
// number at: the request's pages changing while the write is in flight.
type shiftingMemory struct {
	fileMemory
	reads atomic.Int64
	at    int64
}

func (m *shiftingMemory) ReadAt(p []byte, off int64) (int, error) {
	if m.reads.Add(1) == m.at {
		if _, err := m.f.WriteAt([]byte("scribble"), 100); err != nil {
			return 0, err
		}
	}
	return m.f.ReadAt(p, off)
}

// TestVolatileDetectorRemote: a remote source (the ublk case) is checked
// through reads. A quiet request counts nothing; one whose pages change
// right after the first checksum read them all is counted.
func TestVolatileDetectorRemote(t *testing.T) {
	fs, _ := detectorFS(t, Options{Mode: ZeroCopy})
	write := func(mem blk.RemoteMemory) Stats {
		it := iomap.NewRemoteIovIter(mem, 0, mib, blk.PageSize)
		if _, err := fs.Inode().DirectWrite(&iomap.Kiocb{}, it); err != nil {
			t.Fatal(err)
		}
		fs.checkQuiescent(t)
		return fs.Stats()
	}
	mem := newFileMemory(t, mib)
	if st := write(mem); st.VolatileChecked != 1 || st.VolatileWrites != 0 {
		t.Fatalf("quiet remote write: checked %d changed %d, want 1 and 0", st.VolatileChecked, st.VolatileWrites)
	}
	// The first checksum reads the request in csumChunk runs; the next read
	// is the devices' first copy of it.
	firstCopy := int64(mib/csumChunk) + 1
	if st := write(&shiftingMemory{fileMemory: mem, at: firstCopy}); st.VolatileChecked != 2 || st.VolatileWrites != 1 {
		t.Fatalf("remote write changed in flight: checked %d changed %d, want 2 and 1", st.VolatileChecked, st.VolatileWrites)
	}
}

// TestRatelimit: a burst per interval, then silence counted and reported
// with the next message allowed.
func TestRatelimit(t *testing.T) {
	var rs ratelimit
	now := time.Unix(1000, 0)
	for i := 0; i < defaultRatelimitBurst; i++ {
		if ok, _ := rs.allow(now); !ok {
			t.Fatalf("message %d of the burst refused", i)
		}
	}
	for i := 0; i < 3; i++ {
		if ok, _ := rs.allow(now.Add(time.Second)); ok {
			t.Fatal("message past the burst allowed")
		}
	}
	ok, missed := rs.allow(now.Add(defaultRatelimitInterval))
	if !ok || missed != 3 {
		t.Fatalf("after the interval: allowed %v, missed %d (want true, 3)", ok, missed)
	}
}

// BenchmarkVolatileDetector is the detector's cost on 1 MiB zero-copy RAID1
// writes, from process memory and from remote memory read with pread (the
// ublk target's case). Detector on and off run interleaved, so both see the
// same machine; it reports both rates and their ratio.
func BenchmarkVolatileDetector(b *testing.B) {
	const perRound = 16
	for _, remote := range []bool{false, true} {
		b.Run(fmt.Sprintf("remote=%v", remote), func(b *testing.B) {
			newIter := localIter(b)
			if remote {
				newIter = remoteIter(b)
			}
			var spent [2]time.Duration // [detector off, on]
			fss := [2]*testFS{
				newTestFS(b, raid.Raid1, 64*mib, Options{Mode: ZeroCopy, NoVolatileDetect: true}),
				newTestFS(b, raid.Raid1, 64*mib, Options{Mode: ZeroCopy}),
			}
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				for on, fs := range fss {
					start := time.Now()
					for i := 0; i < perRound; i++ {
						if _, err := fs.Inode().DirectWrite(&iomap.Kiocb{Pos: int64(i) * mib}, newIter()); err != nil {
							b.Fatal(err)
						}
					}
					spent[on] += time.Since(start)
				}
			}
			mibs := func(on int) float64 { return float64(b.N*perRound) / spent[on].Seconds() }
			b.ReportMetric(mibs(0), "off-MiB/s")
			b.ReportMetric(mibs(1), "on-MiB/s")
			b.ReportMetric(mibs(1)/mibs(0), "on/off")
		})
	}
}

// BenchmarkBioCsum is one checksum pass of the detector over a 1 MiB bio of
// 4 KiB pages, in process memory and in remote memory read with pread.
func BenchmarkBioCsum(b *testing.B) {
	for _, remote := range []bool{false, true} {
		b.Run(fmt.Sprintf("remote=%v", remote), func(b *testing.B) {
			newIter := localIter(b)
			if remote {
				newIter = remoteIter(b)
			}
			bio := blk.BioAllocBioset(nil, blk.BioMaxVecs, blk.Opf(blk.OpWrite))
			if err := iomap.BioIovIterGetPages(bio, newIter()); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(bio.Size()))
			for i := 0; i < b.N; i++ {
				if _, err := bioCsum(bio, bio.Iter); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func localIter(b *testing.B) func() *iomap.IovIter {
	buf := blk.AlignedBuffer(mib)
	fillPattern(buf, 4)
	return func() *iomap.IovIter { return iomap.NewIovIter(buf, 0) }
}

func remoteIter(b *testing.B) func() *iomap.IovIter {
	mem := newFileMemory(b, mib)
	return func() *iomap.IovIter { return iomap.NewRemoteIovIter(mem, 0, mib, blk.PageSize) }
}
