package raid

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/btrfsdio/btrfsdio/blk"
)

// TestRoundTrip writes random ranges (crossing stripe and full-stripe
// boundaries, bvecs of every kind) and reads them back through the read
// policy, then reads the whole volume through every mirror.
func TestRoundTrip(t *testing.T) {
	for _, p := range Profiles() {
		t.Run(p.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(p), 99))
			v := newVolume(t, p, 1<<20)
			if !v.devs[0].Direct() {
				t.Logf("%s: backing does not do O_DIRECT, testing buffered I/O", v.devs[0].Path())
			}
			capSectors := int(v.Capacity() / SectorSize)
			model := make([]byte, v.Capacity())
			for i := 0; i < 12; i++ {
				n := 1 + rng.IntN(min(capSectors, 384))
				if i%4 == 0 {
					n = 1 + rng.IntN(3)
				}
				at := rng.IntN(capSectors - n + 1)
				data := randBytes(rng, n*SectorSize)
				if st := writeAt(t, v, uint64(at*SectorSize), data, rng); st != blk.StsOK {
					t.Fatalf("write %d sectors at %d: %v", n, at*SectorSize, st)
				}
				copy(model[at*SectorSize:], data)
				got, st := readAt(t, v, uint64(at*SectorSize), n*SectorSize, 0, rng)
				if st != blk.StsOK || !bytes.Equal(got, data) {
					t.Fatalf("read back %d sectors at %d: status %v, equal %v", n, at*SectorSize, st, bytes.Equal(got, data))
				}
			}
			for m := 1; m <= v.NumCopies(0, SectorSize); m++ {
				got, st := readAt(t, v, 0, len(model), m, rng)
				if st != blk.StsOK {
					t.Fatalf("mirror %d: %v", m, st)
				}
				if i := firstDiff(got, model); i >= 0 {
					t.Fatalf("mirror %d differs from the model at logical %d", m, i)
				}
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func TestWriteErrorAccounting(t *testing.T) {
	cases := []struct {
		p      Profile
		faulty []int // devices whose next write fails
		ok     bool
	}{
		{Raid1, []int{0}, true},
		{Raid1, []int{1}, true},
		{Raid1, []int{0, 1}, false},
		{Raid1C3, []int{0, 2}, true},
		{Raid1C3, []int{0, 1, 2}, false},
		{Raid1C4, []int{0, 1, 3}, true},
		{Raid10, []int{0}, true},
		{Raid10, []int{0, 1}, false},
		{Dup, []int{0}, false}, // max_errors 0: one of the two copies failing fails the write
		{Raid0, []int{0}, false},
		{Raid5, []int{2}, true},
		{Raid5, []int{1, 2}, false},
		{Raid6, []int{0, 3}, true},
		{Raid6, []int{0, 1, 3}, false},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s-%v", c.p, c.faulty), func(t *testing.T) {
			v := newVolume(t, c.p, 4*S)
			for _, d := range c.faulty {
				v.devs[d].InjectFault(blk.OpWrite, 1)
			}
			// One write at 0 that touches every device the profile writes
			// to first: a stripe, or for RAID5/6 the whole full stripe.
			size := int(v.FullStripeLen())
			data := randBytes(rand.New(rand.NewPCG(1, 1)), size)
			st := writeAt(t, v, 0, data, nil)
			if (st == blk.StsOK) != c.ok {
				t.Fatalf("write status %v, want ok=%v", st, c.ok)
			}
			var injected uint64
			for _, d := range c.faulty {
				s := v.devs[d].Stats()
				injected += s.InjectedFaults
				if s.WriteErrors != s.InjectedFaults {
					t.Errorf("device %d: %d write errors, %d injected", d, s.WriteErrors, s.InjectedFaults)
				}
			}
			if want := uint64(len(c.faulty)); injected != want {
				t.Errorf("%d faults fired, want %d", injected, want)
			}
			if !c.ok {
				return
			}
			if c.p.IsRaid56() {
				checkDegradedRaid56(t, v, data, c.faulty)
				return
			}
			// Every copy whose write succeeded holds the data, the others not.
			for m := 1; m <= v.NumCopies(0, S); m++ {
				got, st := readAt(t, v, 0, size, m, nil)
				if st != blk.StsOK {
					t.Fatalf("mirror %d: %v", m, st)
				}
				ioc, _, _ := v.MapBlock(blk.OpRead, 0, S, m)
				failedCopy := false
				for _, d := range c.faulty {
					failedCopy = failedCopy || ioc.Stripes[0].DevIndex == d
				}
				if bytes.Equal(got, data) == failedCopy {
					t.Errorf("mirror %d: equal %v, but copy failed %v", m, bytes.Equal(got, data), failedCopy)
				}
			}
		})
	}
}

// checkDegradedRaid56 reads back full stripe 0 after a write some devices
// missed, with those devices now failing reads too: a data stripe on a good
// device reads as mirror 1, one on a failed device fails mirror 1 and is
// rebuilt by mirror 2.
func checkDegradedRaid56(t *testing.T, v *Volume, data []byte, faulty []int) {
	t.Helper()
	for _, d := range faulty {
		v.devs[d].InjectFault(blk.OpRead, -1)
	}
	ioc, _, _ := v.MapBlock(blk.OpWrite, 0, v.FullStripeLen(), 0)
	for i := 0; i < v.DataStripes(); i++ {
		bad := false
		for _, d := range faulty {
			bad = bad || ioc.Stripes[i].DevIndex == d
		}
		want := data[i*S : (i+1)*S]
		got, st := readAt(t, v, uint64(i)*S, S, 1, nil)
		if bad != (st != blk.StsOK) || (!bad && !bytes.Equal(got, want)) {
			t.Errorf("data stripe %d (failed device %v), mirror 1: status %v", i, bad, st)
		}
		if !bad {
			continue
		}
		got, st = readAt(t, v, uint64(i)*S, S, 2, nil)
		if st != blk.StsOK || !bytes.Equal(got, want) {
			t.Errorf("data stripe %d rebuilt by mirror 2: status %v, equal %v", i, st, bytes.Equal(got, want))
		}
	}
}

func TestReadErrorFailsBio(t *testing.T) {
	v := newVolume(t, Raid1, 4*S)
	writeAt(t, v, 0, randBytes(rand.New(rand.NewPCG(1, 1)), 2*S), nil)
	v.devs[1].InjectFault(blk.OpRead, -1)
	if _, st := readAt(t, v, 0, 2*S, 2, nil); st != blk.StsIOErr {
		t.Fatalf("read of a failing mirror: %v", st)
	}
	if _, st := readAt(t, v, 0, 2*S, 1, nil); st != blk.StsOK {
		t.Fatalf("read of the good mirror: %v", st)
	}
	v.devs[1].InjectFault(blk.OpRead, 0)
	if _, st := readAt(t, v, 0, 2*S, 2, nil); st != blk.StsOK {
		t.Fatalf("read after clearing the fault: %v", st)
	}
}

func TestBadBiosCompleteWithError(t *testing.T) {
	v := newVolume(t, Raid0, 4*S)
	page := blk.NewPage(blk.AlignedBuffer(2 * blk.PageSize))
	mk := func(op blk.Op, sector uint64, sizes ...uint32) *blk.Bio {
		b := blk.BioAllocBioset(nil, 4, blk.Opf(op))
		b.Iter.Sector = sector
		for _, n := range sizes {
			b.AddPage(page, n, 0)
		}
		return b
	}
	short := mk(blk.OpWrite, 0, 4096)
	short.Iter.Size = 8192 // bvecs cover less than bi_size
	nilPage := blk.BioAllocBioset(nil, 1, blk.Opf(blk.OpRead))
	nilPage.IoVec = append(nilPage.IoVec, blk.BioVec{Len: 4096})
	nilPage.Iter.Size = 4096
	empty := mk(blk.OpRead, 0, 4096)
	empty.IoVec = append([]blk.BioVec{{Page: page, Len: 0}}, empty.IoVec...)
	overrun := mk(blk.OpRead, 0)
	overrun.IoVec = append(overrun.IoVec, blk.BioVec{Page: page, Offset: 4096, Len: 8192})
	overrun.Iter.Size = 8192
	cases := []struct {
		name   string
		bio    *blk.Bio
		mirror int
		want   blk.Status
	}{
		{"unaligned sector", mk(blk.OpRead, 1, 4096), 0, blk.StsIOErr},
		{"unaligned size", mk(blk.OpWrite, 0, 512), 0, blk.StsIOErr},
		{"beyond capacity", mk(blk.OpRead, (v.Capacity()-4096)>>9, 8192), 0, blk.StsIOErr},
		{"far beyond capacity", mk(blk.OpWrite, 1<<40, 4096), 0, blk.StsIOErr},
		{"empty", mk(blk.OpRead, 0), 0, blk.StsIOErr},
		{"bvecs short", short, 0, blk.StsIOErr},
		{"nil page", nilPage, 0, blk.StsIOErr},
		{"zero-length bvec", empty, 0, blk.StsIOErr},
		{"bvec past its page", overrun, 0, blk.StsIOErr},
		{"mirror out of range", mk(blk.OpRead, 0, 4096), 2, blk.StsIOErr},
		{"discard", mk(blk.OpDiscard, 0, 4096), 0, blk.StsNotSupp},
	}
	for _, c := range cases {
		if st := submitWait(t, v, c.bio, c.mirror); st != c.want {
			t.Errorf("%s: status %v, want %v", c.name, st, c.want)
		}
	}
	if st := submitWait(t, v, blk.BioAllocBioset(nil, 0, blk.Opf(blk.OpFlush)), 0); st != blk.StsOK {
		t.Errorf("flush bio: %v", st)
	}
	v.devs[2].InjectFault(blk.OpFlush, 1)
	if st := submitWait(t, v, blk.BioAllocBioset(nil, 0, blk.Opf(blk.OpFlush)), 0); st != blk.StsIOErr {
		t.Errorf("flush bio with a failing device: %v", st)
	}
	v.devs[1].InjectFault(blk.OpFlush, 1)
	fua := buildBio(blk.OpWrite, 0, blk.AlignedBuffer(4096), nil)
	fua.Opf |= blk.ReqFUA
	if st := submitWait(t, v, fua, 0); st != blk.StsIOErr {
		t.Errorf("FUA write with a failing flush: %v", st)
	}
	// A flush that failed stays failed (FlushFailed): raid0 refuses
	// every barrier from then on.
	pre := buildBio(blk.OpWrite, 0, blk.AlignedBuffer(4096), nil)
	pre.Opf |= blk.ReqPreflush | blk.ReqFUA
	if st := submitWait(t, v, pre, 0); st != blk.StsIOErr {
		t.Errorf("PREFLUSH|FUA write after failed flushes: %v", st)
	}
	fresh := newVolume(t, Raid0, 4*S)
	pre = buildBio(blk.OpWrite, 0, blk.AlignedBuffer(4096), nil)
	pre.Opf |= blk.ReqPreflush | blk.ReqFUA
	if st := submitWait(t, fresh, pre, 0); st != blk.StsOK {
		t.Errorf("PREFLUSH|FUA write: %v", st)
	}
}

// TestCompletionOnceAndOffSubmitter submits bios that split into many
// pieces and checks each original completes exactly once, never on the
// submitting goroutine, with the caller's iterator untouched.
func TestCompletionOnceAndOffSubmitter(t *testing.T) {
	for _, p := range []Profile{Raid10, Raid1C3, Raid6} {
		v := newVolume(t, p, 1<<20)
		rng := rand.New(rand.NewPCG(5, 5))
		const nbios = 16
		var calls [nbios]atomic.Int32
		var onSubmitter atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < nbios; i++ {
			op := blk.OpWrite
			if i%2 == 1 {
				op = blk.OpRead
			}
			size := 5*S + 4096
			at := uint64(rng.IntN(int((v.Capacity()-uint64(size))/SectorSize))) * SectorSize
			bio := buildBio(op, at, randBytes(rng, size), rng)
			before := bio.Iter
			released := make(chan struct{})
			wg.Add(1)
			bio.EndIO = func(b *blk.Bio) {
				defer wg.Done()
				select {
				case <-released:
				case <-time.After(5 * time.Second):
					onSubmitter.Add(1) // SubmitBio never returned: we run inside it
				}
				calls[i].Add(1)
				if b.Status != blk.StsOK {
					t.Errorf("%s bio %d: %v", p, i, b.Status)
				}
			}
			v.SubmitBio(bio, 0)
			close(released)
			if bio.Iter != before {
				t.Errorf("%s: SubmitBio changed the caller's iterator: %+v -> %+v", p, before, bio.Iter)
			}
		}
		wg.Wait()
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		for i := range calls {
			if n := calls[i].Load(); n != 1 {
				t.Errorf("%s: bio %d completed %d times", p, i, n)
			}
		}
		if onSubmitter.Load() != 0 {
			t.Errorf("%s: %d bios completed on the submitter", p, onSubmitter.Load())
		}
		if st := submitWait(t, v, buildBio(blk.OpRead, 0, blk.AlignedBuffer(4096), nil), 0); st != blk.StsIOErr {
			t.Errorf("%s: bio on a closed volume: %v", p, st)
		}
	}
}

// mirrorLog records SetMirrorNum calls (a btrfs_bio's mirror_num).
type mirrorLog struct {
	mu      sync.Mutex
	mirrors []int
}

func (m *mirrorLog) SetMirrorNum(logical uint64, length uint32, mirror int) {
	m.mu.Lock()
	m.mirrors = append(m.mirrors, mirror)
	m.mu.Unlock()
}

func TestMirrorRecorderSeesPolicyChoice(t *testing.T) {
	v := newVolume(t, Raid1, 4*S)
	var seen []int
	for i := 0; i < 4; i++ {
		rec := &mirrorLog{}
		bio := buildBio(blk.OpRead, 0, blk.AlignedBuffer(4096), nil)
		bio.Container = rec
		submitWait(t, v, bio, 0)
		seen = append(seen, rec.mirrors...)
	}
	if fmt.Sprint(seen) != "[1 2 1 2]" {
		t.Fatalf("round-robin mirrors %v, want [1 2 1 2]", seen)
	}
}

// brokenRemote is remote memory whose request has gone away.
type brokenRemote struct{}

func (brokenRemote) ReadAt(p []byte, off int64) (int, error)  { return 0, syscall.ENODEV }
func (brokenRemote) WriteAt(p []byte, off int64) (int, error) { return 0, syscall.ENODEV }

// TestUnreachablePagesFailWithoutBlamingDevices: a bio whose pages cannot
// be copied fails, but no device error is counted.
func TestUnreachablePagesFailWithoutBlamingDevices(t *testing.T) {
	for _, p := range []Profile{Raid1, Raid5} {
		v := newVolume(t, p, 4*S)
		for _, op := range []blk.Op{blk.OpWrite, blk.OpRead} {
			bio := blk.BioAllocBioset(nil, 1, blk.Opf(op))
			bio.AddPage(blk.NewRemotePage(brokenRemote{}, 0, 2*SectorSize), 2*SectorSize, 0)
			if st := submitWait(t, v, bio, 0); st != blk.StsIOErr {
				t.Errorf("%s %s from unreachable pages: %v", p, op, st)
			}
		}
		for i, d := range v.devs {
			if s := d.Stats(); s.WriteErrors+s.ReadErrors != 0 {
				t.Errorf("%s device %d blamed: %+v", p, i, s)
			}
		}
	}
}
