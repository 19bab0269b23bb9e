package raid

import (
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

// filledVolume is a volume of profile p written end to end with random
// data, and the model of its contents.
func filledVolume(t *testing.T, p Profile, perDev int64, seed uint64) (*Volume, []byte) {
	t.Helper()
	v := newVolume(t, p, perDev)
	rng := rand.New(rand.NewPCG(seed, 7))
	model := randBytes(rng, int(v.Capacity()))
	for off := 0; off < len(model); off += 1 << 20 {
		end := min(off+1<<20, len(model))
		if st := writeAt(t, v, uint64(off), model[off:end], rng); st != blk.StsOK {
			t.Fatalf("filling %s at %d: %v", p, off, st)
		}
	}
	return v, model
}

// csumsOf is a CsumLookup answering from the model, with optional lies.
func csumsOf(model []byte, wrong map[uint64]bool) CsumLookup {
	return func(logical uint64) (uint32, bool) {
		sum := crc32.Checksum(model[logical:logical+SectorSize], castagnoli)
		if wrong[logical] {
			sum ^= 1
		}
		return sum, true
	}
}

// corrupt overwrites n bytes at physical on dev's image behind the volume's
// back, as a bad disk would.
func corrupt(t *testing.T, dev *Device, physical uint64, n int) {
	t.Helper()
	f, err := os.OpenFile(dev.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := make([]byte, n)
	for i := range junk {
		junk[i] = byte(i*13 + 1)
	}
	if _, err := f.WriteAt(junk, int64(physical)); err != nil {
		t.Fatal(err)
	}
}

func scrub(t *testing.T, v *Volume, start, length uint64, csum CsumLookup) *ScrubReport {
	t.Helper()
	rep, err := v.Scrub(start, length, csum)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestScrubFindsCorruptedCopies(t *testing.T) {
	for _, p := range Profiles() {
		t.Run(p.String(), func(t *testing.T) {
			v, model := filledVolume(t, p, 512<<10, uint64(p))
			capacity := v.Capacity()
			rep := scrub(t, v, 0, capacity, csumsOf(model, nil))
			if !rep.Clean() || rep.SectorsChecked != capacity/SectorSize {
				t.Fatalf("consistent volume: %+v (checked %d of %d)", rep, rep.SectorsChecked, capacity/SectorSize)
			}
			// Corrupt the last copy (the data itself for one-copy profiles
			// and RAID5/6) of three sectors in different full stripes.
			n := v.NumCopies(0, SectorSize)
			last := n
			if p.IsRaid56() || n == 1 {
				last = 1
			}
			bad := []uint64{0, v.FullStripeLen() + 3*SectorSize, capacity - SectorSize}
			for _, l := range bad {
				ioc, _, err := v.MapBlock(blk.OpRead, l, SectorSize, last)
				if err != nil {
					t.Fatal(err)
				}
				corrupt(t, ioc.Stripes[0].Dev, ioc.Stripes[0].Physical, SectorSize)
			}
			rep = scrub(t, v, 0, capacity, csumsOf(model, nil))
			checkCorruptionReport(t, v, rep, bad, last)

			// A range holding one corrupted sector reports only that one.
			rep = scrub(t, v, bad[1], SectorSize, csumsOf(model, nil))
			if len(rep.CsumErrors) != 1 || rep.CsumErrors[0].Logical != bad[1] || rep.SectorsChecked != 1 {
				t.Errorf("one-sector scrub: %+v", rep)
			}
		})
	}
}

// checkCorruptionReport checks a scrub after corrupting copy `last` of the
// sectors bad.
func checkCorruptionReport(t *testing.T, v *Volume, rep *ScrubReport, bad []uint64, last int) {
	t.Helper()
	p := v.Profile()
	n := v.NumCopies(0, SectorSize)
	var wantDiff, wantCsum, wantParity []string
	for _, l := range bad {
		wantCsum = append(wantCsum, fmt.Sprintf("%d/%d", l, last))
		switch {
		case p == Raid5:
			wantDiff = append(wantDiff, fmt.Sprintf("%d:[[1] [2]]", l))
		case p == Raid6:
			wantDiff = append(wantDiff, fmt.Sprintf("%d:[[1] [2 3]]", l))
		case n > 1:
			var good []int
			for m := 1; m < n; m++ {
				good = append(good, m)
			}
			wantDiff = append(wantDiff, fmt.Sprintf("%d:%v", l, [][]int{good, {n}}))
		}
		if p.IsRaid56() {
			fs := l / v.FullStripeLen() * v.FullStripeLen()
			wantParity = append(wantParity, fmt.Sprintf("%d+%d:%v/%v", fs, (l-fs)%StripeLen, true, p == Raid6))
		}
	}
	var gotDiff, gotCsum, gotParity []string
	for _, d := range rep.Differences {
		gotDiff = append(gotDiff, fmt.Sprintf("%d:%v", d.Logical, d.Groups))
	}
	for _, c := range rep.CsumErrors {
		gotCsum = append(gotCsum, fmt.Sprintf("%d/%d", c.Logical, c.Mirror))
	}
	for _, m := range rep.ParityMismatches {
		gotParity = append(gotParity, fmt.Sprintf("%d+%d:%v/%v", m.FullStripe, m.Offset, m.P, m.Q))
	}
	for _, pair := range [][2][]string{{gotDiff, wantDiff}, {gotCsum, wantCsum}, {gotParity, wantParity}} {
		slices.Sort(pair[0])
		slices.Sort(pair[1])
		if fmt.Sprint(pair[0]) != fmt.Sprint(pair[1]) {
			t.Errorf("%s: got %v, want %v", p, pair[0], pair[1])
		}
	}
	if len(rep.ReadErrors) != 0 {
		t.Errorf("read errors: %+v", rep.ReadErrors)
	}
}

func TestScrubCsumLookup(t *testing.T) {
	v, model := filledVolume(t, Raid1C3, 256<<10, 3)
	lie := uint64(5 * SectorSize)
	rep := scrub(t, v, 0, v.Capacity(), csumsOf(model, map[uint64]bool{lie: true}))
	var got []string
	for _, c := range rep.CsumErrors {
		got = append(got, fmt.Sprintf("%d/%d", c.Logical, c.Mirror))
	}
	if want := fmt.Sprintf("[%d/1 %d/2 %d/3]", lie, lie, lie); fmt.Sprint(got) != want {
		t.Fatalf("csum errors %v, want %s", got, want)
	}
	none := func(uint64) (uint32, bool) { return 0, false }
	if rep := scrub(t, v, 0, v.Capacity(), none); !rep.Clean() {
		t.Fatalf("sectors without csums reported: %+v", rep)
	}
	if _, err := v.Scrub(1, SectorSize, nil); err == nil {
		t.Fatal("unaligned scrub accepted")
	}
	if _, err := v.Scrub(0, v.Capacity()+SectorSize, nil); err == nil {
		t.Fatal("scrub past the end accepted")
	}
}

// TestScrubRaid6ParityOnly corrupts only P of one column: P mismatches, Q
// does not, and no data sector is blamed.
func TestScrubRaid6ParityOnly(t *testing.T) {
	v, model := filledVolume(t, Raid6, 256<<10, 4)
	ioc, _, _ := v.MapBlock(blk.OpWrite, 2*v.FullStripeLen(), v.FullStripeLen(), 0)
	col := uint64(7 * SectorSize)
	pStripe := ioc.Stripes[v.DataStripes()]
	corrupt(t, pStripe.Dev, pStripe.Physical+col, SectorSize)
	rep := scrub(t, v, 0, v.Capacity(), csumsOf(model, nil))
	if len(rep.ParityMismatches) != 1 {
		t.Fatalf("parity mismatches %+v", rep.ParityMismatches)
	}
	if pm := rep.ParityMismatches[0]; pm.FullStripe != ioc.FullStripeLogical || pm.Offset != col || !pm.P || pm.Q {
		t.Fatalf("parity mismatch %+v", pm)
	}
	// P alone is wrong: mirrors 1 and 3 agree, so no data sector is blamed
	// and the stored data passes its csums.
	if len(rep.Differences) != 0 || len(rep.CsumErrors) != 0 {
		t.Errorf("differences %+v, csum errors %+v", rep.Differences, rep.CsumErrors)
	}
}

// TestScrubRaid5WithoutCsums: RAID5 parity cannot say which data sector of
// a bad column is wrong, so without csums every one of them is listed;
// with csums only the corrupted one.
func TestScrubRaid5WithoutCsums(t *testing.T) {
	v, model := filledVolume(t, Raid5, 256<<10, 6)
	l := v.FullStripeLen() + StripeLen + 2*SectorSize // data stripe 1, column 2
	ioc, _, _ := v.MapBlock(blk.OpRead, l, SectorSize, 1)
	corrupt(t, ioc.Stripes[0].Dev, ioc.Stripes[0].Physical, SectorSize)
	var got []uint64
	for _, d := range scrub(t, v, 0, v.Capacity(), nil).Differences {
		got = append(got, d.Logical)
	}
	full := v.FullStripeLen()
	want := []uint64{full + 2*SectorSize, l, full + 2*StripeLen + 2*SectorSize}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("without csums: %v, want %v", got, want)
	}
	rep := scrub(t, v, 0, v.Capacity(), csumsOf(model, nil))
	if len(rep.Differences) != 1 || rep.Differences[0].Logical != l || len(rep.CsumErrors) != 1 {
		t.Errorf("with csums: %+v", rep)
	}
}

// TestRaid56DegradedReads fails devices for reads: mirror 1 of a stripe on
// a failed device fails, and mirror 2 (and 3 on RAID6) rebuild it.
func TestRaid56DegradedReads(t *testing.T) {
	cases := []struct {
		p      Profile
		faulty []int
	}{
		{Raid5, []int{1}}, {Raid5, []int{3}}, {Raid6, []int{0}}, {Raid6, []int{1, 2}}, {Raid6, []int{0, 3}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s-%v", c.p, c.faulty), func(t *testing.T) {
			v, model := filledVolume(t, c.p, 256<<10, 5)
			for _, d := range c.faulty {
				v.devs[d].InjectFault(blk.OpRead, -1)
			}
			rebuilt := 0
			for off := uint64(0); off < v.Capacity(); off += S / 2 {
				want := model[off : off+S/2]
				got, st := readAt(t, v, off, S/2, 1, nil)
				if st == blk.StsOK {
					if firstDiff(got, want) >= 0 {
						t.Fatalf("mirror 1 at %d returned wrong data", off)
					}
					continue
				}
				rebuilt++
				mirrors := []int{2}
				if c.p == Raid6 && len(c.faulty) == 1 {
					mirrors = append(mirrors, 3)
				}
				for _, m := range mirrors {
					got, st = readAt(t, v, off, S/2, m, nil)
					if st != blk.StsOK || firstDiff(got, want) >= 0 {
						t.Fatalf("mirror %d at %d: status %v, correct %v", m, off, st, firstDiff(got, want) < 0)
					}
				}
			}
			if rebuilt == 0 {
				t.Fatal("no read needed a rebuild: the faults never fired")
			}
		})
	}
}

// volatileMem is remote memory that changes between reads, like a user
// buffer rewritten while its direct write is in flight: every ReadAt sees
// a new generation of bytes.
type volatileMem struct{ gen atomic.Int32 }

func (m *volatileMem) ReadAt(p []byte, off int64) (int, error) {
	g := byte(m.gen.Add(1))
	for i := range p {
		p[i] = g ^ byte(off+int64(i))
	}
	return len(p), nil
}

func (m *volatileMem) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }

// TestVolatileBufferBreaksMirrors is the bug this project reproduces: each
// mirror write reads the source pages itself, so a buffer that changes in
// flight leaves copies that differ, and reads depend on the mirror.
func TestVolatileBufferBreaksMirrors(t *testing.T) {
	v := newVolume(t, Raid1, 256<<10)
	const at, n = 8 * SectorSize, 4 * SectorSize
	bio := blk.BioAllocBioset(nil, 1, blk.Opf(blk.OpWrite))
	bio.Iter.Sector = at >> blk.SectorShift
	bio.AddPage(blk.NewRemotePage(&volatileMem{}, 0, n), n, 0)
	if st := submitWait(t, v, bio, 0); st != blk.StsOK {
		t.Fatal(st)
	}
	rep := scrub(t, v, 0, v.Capacity(), nil)
	var got []string
	for _, d := range rep.Differences {
		got = append(got, fmt.Sprintf("%d:%v", d.Logical, d.Groups))
	}
	want := []string{}
	for l := uint64(at); l < at+n; l += SectorSize {
		want = append(want, fmt.Sprintf("%d:[[1] [2]]", l))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("differences %v, want %v", got, want)
	}
	a, _ := readAt(t, v, at, n, 0, nil)
	b, _ := readAt(t, v, at, n, 0, nil)
	if firstDiff(a, b) < 0 {
		t.Fatal("two policy reads returned the same bytes from differing mirrors")
	}
}

// TestVolatileBufferBreaksParity: RAID5 computes parity from the pages at
// one moment and the data writes read them at another.
func TestVolatileBufferBreaksParity(t *testing.T) {
	v := newVolume(t, Raid5, 256<<10)
	n := uint32(v.FullStripeLen())
	bio := blk.BioAllocBioset(nil, 1, blk.Opf(blk.OpWrite))
	bio.AddPage(blk.NewRemotePage(&volatileMem{}, 0, int(n)), n, 0)
	if st := submitWait(t, v, bio, 0); st != blk.StsOK {
		t.Fatal(st)
	}
	rep := scrub(t, v, 0, v.Capacity(), nil)
	if len(rep.ParityMismatches) != StripeLen/SectorSize {
		t.Fatalf("%d parity mismatches, want one per column (%d)", len(rep.ParityMismatches), StripeLen/SectorSize)
	}
	for _, pm := range rep.ParityMismatches {
		if pm.FullStripe != 0 || !pm.P {
			t.Fatalf("parity mismatch %+v", pm)
		}
	}
	if len(rep.Differences) != int(n/SectorSize) {
		t.Fatalf("%d differing sectors, want %d", len(rep.Differences), n/SectorSize)
	}
}

// TestRaid56ConcurrentPartialWrites hammers the same parity sectors from
// many goroutines: each owns one data stripe and rewrites its sectors one
// at a time in random order, so columns shared with the other workers'
// stripes are read-modify-written concurrently. Without the per-stripe lock
// those RMWs lose each other's parity updates.
func TestRaid56ConcurrentPartialWrites(t *testing.T) {
	for _, p := range []Profile{Raid5, Raid6} {
		v := newVolume(t, p, 256<<10)
		span := 2 * v.FullStripeLen()
		model := make([]byte, span)
		workers := int(span / StripeLen)
		done := make(chan struct{}, workers)
		for w := 0; w < workers; w++ {
			go func() {
				defer func() { done <- struct{}{} }()
				rng := rand.New(rand.NewPCG(uint64(w), 1))
				for round := 0; round < 3; round++ {
					for _, c := range rng.Perm(StripeLen / SectorSize) {
						s := uint64(w)*StripeLen + uint64(c)*SectorSize
						data := randBytes(rng, SectorSize)
						copy(model[s:], data) // each worker owns its stripe
						bio := buildBio(blk.OpWrite, s, data, nil)
						st := make(chan blk.Status, 1)
						bio.EndIO = func(b *blk.Bio) { st <- b.Status }
						v.SubmitBio(bio, 0)
						if r := <-st; r != blk.StsOK {
							t.Errorf("write at %d: %v", s, r)
						}
					}
				}
			}()
		}
		for w := 0; w < workers; w++ {
			<-done
		}
		got, st := readAt(t, v, 0, int(span), 1, nil)
		if st != blk.StsOK || firstDiff(got, model) >= 0 {
			t.Fatalf("%s: data after concurrent writes: %v, first difference at %d", p, st, firstDiff(got, model))
		}
		if rep := scrub(t, v, 0, span, csumsOf(model, nil)); !rep.Clean() {
			t.Fatalf("%s: scrub after concurrent writes: %d parity mismatches, %d differences",
				p, len(rep.ParityMismatches), len(rep.Differences))
		}
	}
}
