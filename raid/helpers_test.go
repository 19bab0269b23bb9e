package raid

import (
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/blk"
)

// S is BTRFS_STRIPE_LEN and R the reserved range, short for the tables.
const (
	S = StripeLen
	R = ReservedBytes
)

func testLogger() logrus.FieldLogger {
	l := logrus.New()
	if !testing.Verbose() {
		l.SetOutput(io.Discard)
	}
	l.SetLevel(logrus.DebugLevel)
	return l
}

// deviceCount is how many devices the tests give each profile.
func deviceCount(p Profile) int {
	switch p {
	case Single, Dup:
		return 1
	case Raid1:
		return 2
	case Raid1C3:
		return 3
	}
	return 4
}

func newDevices(t testing.TB, n int, size int64) []*Device {
	t.Helper()
	dir := t.TempDir()
	var devs []*Device
	for i := 0; i < n; i++ {
		d, err := OpenDevice(filepath.Join(dir, fmt.Sprintf("dev%d.img", i)),
			DeviceOptions{Create: true, Size: size, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	return devs
}

// newVolume builds a volume of profile p whose devices hold perDev bytes
// after the reserved MiB. Cleanup closes it and checks no clone leaked.
func newVolume(t testing.TB, p Profile, perDev int64) *Volume {
	t.Helper()
	return volumeOn(t, newDevices(t, deviceCount(p), R+perDev), p)
}

func volumeOn(t testing.TB, devs []*Device, p Profile) *Volume {
	t.Helper()
	v, err := NewVolume(devs, p, VolumeOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Error(err)
		}
		if n := v.BioSet().InUse(); n != 0 {
			t.Errorf("%d clone bios leaked", n)
		}
	})
	return v
}

// memRemote is remote memory over a byte slice (a ublk request's pages
// reached by copy).
type memRemote struct{ b []byte }

func (m *memRemote) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m.b[off:]), nil }
func (m *memRemote) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }

// buildBio makes a bio over buf at logical, cut into bvecs of random sizes
// (multiples of 512) and kinds: process memory at whatever alignment the
// cut gives, or remote pages over the same bytes. A nil rng gives one bvec.
func buildBio(op blk.Op, logical uint64, buf []byte, rng *rand.Rand) *blk.Bio {
	bio := blk.BioAllocBioset(nil, blk.BioMaxVecs, blk.Opf(op))
	bio.Iter.Sector = logical >> blk.SectorShift
	if rng == nil {
		bio.AddPage(blk.NewPage(buf), uint32(len(buf)), 0)
		return bio
	}
	remote := &memRemote{b: buf}
	maxChunk := max(2*len(buf)/blk.BioMaxVecs, 16<<10)
	for off := 0; off < len(buf); {
		n := (1 + rng.IntN(maxChunk/512)) * 512
		if bio.Vcnt() == blk.BioMaxVecs-1 || off+n > len(buf) {
			n = len(buf) - off
		}
		var page *blk.Page
		if rng.IntN(3) == 0 {
			page = blk.NewRemotePage(remote, int64(off), n)
		} else {
			page = blk.NewPage(buf[off : off+n])
		}
		bio.AddPage(page, uint32(n), 0)
		off += n
	}
	return bio
}

// submitWait submits bio and waits for its completion, failing the test if
// it never completes or completes twice.
func submitWait(t testing.TB, v *Volume, bio *blk.Bio, mirror int) blk.Status {
	t.Helper()
	var calls atomic.Int32
	done := make(chan blk.Status, 2)
	bio.EndIO = func(b *blk.Bio) {
		calls.Add(1)
		done <- b.Status
	}
	v.SubmitBio(bio, mirror)
	select {
	case st := <-done:
		select {
		case <-done:
			t.Fatalf("bio at sector %d completed twice", bio.Iter.Sector)
		case <-time.After(time.Millisecond):
		}
		return st
	case <-time.After(20 * time.Second):
		t.Fatalf("bio at sector %d never completed", bio.Iter.Sector)
	}
	return blk.StsIOErr
}

func writeAt(t testing.TB, v *Volume, logical uint64, data []byte, rng *rand.Rand) blk.Status {
	t.Helper()
	return submitWait(t, v, buildBio(blk.OpWrite, logical, data, rng), 0)
}

func readAt(t testing.TB, v *Volume, logical uint64, n int, mirror int, rng *rand.Rand) ([]byte, blk.Status) {
	t.Helper()
	buf := blk.AlignedBuffer(n)
	st := submitWait(t, v, buildBio(blk.OpRead, logical, buf, rng), mirror)
	return buf, st
}

// randPool is random bytes that randBytes takes windows of: filling every
// buffer from the generator byte by byte is slow under the race detector.
var randPool = sync.OnceValue(func() []byte {
	b := make([]byte, 8<<20)
	rand.NewChaCha8([32]byte{1}).Read(b)
	return b
})

// randBytes is n random bytes in a fresh page-aligned buffer.
func randBytes(rng *rand.Rand, n int) []byte {
	pool := randPool()
	b := blk.AlignedBuffer(n)
	for off := 0; off < n; {
		start := rng.IntN(len(pool)/2) &^ 7
		off += copy(b[off:], pool[start:])
	}
	return b
}
