package raid

import (
	"bytes"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

// rawAt reads n bytes of an image at off, behind the volume's back.
func rawAt(t *testing.T, path string, off uint64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
	return b
}

// putRaw writes b into an image at off, behind the volume's back.
func putRaw(t *testing.T, path string, off uint64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
}

// TestRaid56JournalClosesWriteHole: a read-modify-write whose parity
// writes are lost to a power cut (the old parity put back on disk) leaves a
// full stripe whose parity rebuilds garbage for the committed data beside
// the write. Reopened without the device holding that committed data, the
// journal's replay rewrites the new parity first, so the rebuild returns the
// committed data; without the journal (NoJournal) the rebuild returns
// garbage: the write hole is real and the journal closes it.
func TestRaid56JournalClosesWriteHole(t *testing.T) {
	for _, p := range []Profile{Raid5, Raid6} {
		for _, journal := range []bool{true, false} {
			name := p.String() + "/journal"
			if !journal {
				name = p.String() + "/nojournal"
			}
			t.Run(name, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(p), 5))
				paths := imagePaths(t, deviceCount(p)-map[Profile]int{Raid5: 1, Raid6: 0}[p])
				devs := openImages(t, paths, 16<<20)
				v, sb, err := OpenVolume(devs, OpenOptions{Profile: p, Volume: VolumeOptions{Logger: testLogger(), NoJournal: !journal}})
				if err != nil {
					t.Fatal(err)
				}
				if sb.JournalBytes == 0 || sb.Version != superVersion {
					t.Fatalf("format gave a %s volume version %d with a %d-byte journal", p, sb.Version, sb.JournalBytes)
				}
				full := v.FullStripeLen()
				old := randBytes(rng, int(full))
				if st := writeAt(t, v, 0, old, rng); st != blk.StsOK {
					t.Fatal(st)
				}
				if err := v.Flush(); err != nil {
					t.Fatal(err)
				}
				ioc, _, err := v.MapBlock(blk.OpWrite, 0, full, 0)
				if err != nil {
					t.Fatal(err)
				}
				nd := v.DataStripes()
				var parity [][]byte
				for _, s := range ioc.Stripes[nd:] {
					parity = append(parity, rawAt(t, s.Dev.Path(), s.Physical, SectorSize))
				}
				// Data stripe 1, column 0: a read-modify-write, not flushed.
				neu := randBytes(rng, SectorSize)
				if st := writeAt(t, v, StripeLen, neu, rng); st != blk.StsOK {
					t.Fatal(st)
				}
				lostPath := ioc.Stripes[0].Dev.Path()
				var parityPaths []string
				for _, s := range ioc.Stripes[nd:] {
					parityPaths = append(parityPaths, s.Dev.Path())
				}
				if err := v.Close(); err != nil {
					t.Fatal(err)
				}
				// The cut: the data write landed, the parity writes did not.
				for i, s := range ioc.Stripes[nd:] {
					putRaw(t, parityPaths[i], s.Physical, parity[i])
				}
				// Then the device holding data stripe 0 is lost.
				var keep []string
				for _, path := range paths {
					if path != lostPath {
						keep = append(keep, path)
					}
				}
				devs = openImages(t, keep, 0)
				v, _, err = OpenVolume(devs, OpenOptions{Profile: p, Degraded: true, Volume: VolumeOptions{Logger: testLogger()}})
				if err != nil {
					closeAll(devs)
					t.Fatal(err)
				}
				defer v.Close()
				got, st := readAt(t, v, 0, SectorSize, 0, rng)
				rebuilt := st == blk.StsOK && bytes.Equal(got, old[:SectorSize])
				if journal && !rebuilt {
					t.Fatalf("committed data beside an interrupted write rebuilt wrong after the journal's replay (status %v)", st)
				}
				if !journal && rebuilt {
					t.Fatal("without the journal the interrupted write still rebuilt right: the test does not recreate the write hole")
				}
				if got, st := readAt(t, v, StripeLen, SectorSize, 0, rng); journal && (st != blk.StsOK || !bytes.Equal(got, neu)) {
					t.Fatalf("the journaled write reads back wrong (status %v)", st)
				}
			})
		}
	}
}

// TestRaid56JournalFillsAndRetires: read-modify-writes without a flush fill
// the smallest journal; a full journal forces the barrier that retires it,
// and every write lands. A torn copy of the first entry on one device is
// ignored by the replay, which takes the other device's copy.
func TestRaid56JournalFillsAndRetires(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	paths := imagePaths(t, 3)
	devs := openImages(t, paths, 2<<20)
	v, sb, err := OpenVolume(devs, OpenOptions{Profile: Raid5, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	if sb.JournalBytes != journalFloor(3) {
		t.Fatalf("a 2 MiB raid5 device got a %d-byte journal, want the %d-byte floor", sb.JournalBytes, journalFloor(3))
	}
	model := make([]byte, v.Capacity())
	for i := 0; i < 200; i++ {
		l := uint64(rng.IntN(int(v.Capacity()/SectorSize))) * SectorSize
		d := randBytes(rng, SectorSize)
		if st := writeAt(t, v, l, d, rng); st != blk.StsOK {
			t.Fatalf("write %d: %v", i, st)
		}
		copy(model[l:], d)
	}
	if v.journal.retired == 0 {
		t.Fatal("200 read-modify-writes never filled the journal")
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	// A torn copy at the start of the area: bad crc, ignored.
	putRaw(t, paths[0], sb.JournalOffset()+journalEntriesStart+100, []byte("torn"))
	devs = openImages(t, paths, 0)
	v, _, err = OpenVolume(devs, OpenOptions{Profile: Raid5, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	got, st := readAt(t, v, 0, int(v.Capacity()), 0, rng)
	if st != blk.StsOK || !bytes.Equal(got, model) {
		t.Fatalf("after the replay the volume does not hold what was written (status %v)", st)
	}
}

// TestVersion2ImageOpensWithoutJournal: a version 2 superblock decodes with
// no journal, and its raid5 volume writes unjournaled as before.
func TestVersion2ImageOpensWithoutJournal(t *testing.T) {
	sb := &Superblock{Bytenr: superOffsets[0], Generation: 3, Version: superVersionV2, Profile: Raid5,
		NumDevices: 3, Devid: 1, TotalBytes: 8 << 20, ChunkDevBytes: 7 << 20,
		MetaSlotBytes: 128 << 10, MetaCopies: 1, JournalBytes: 4 << 20}
	got, err := DecodeSuperblock(sb.Encode(), superOffsets[0])
	if err != nil {
		t.Fatal(err)
	}
	if got.JournalBytes != 0 {
		t.Fatalf("version 2 superblock decoded with a %d-byte journal", got.JournalBytes)
	}
}

// TestRaid56JournalConcurrent: journaled read-modify-writes from many
// goroutines, with barriers racing them and a journal small enough to fill
// again and again, land whole; the parity agrees, and a reopen (which
// replays what was not retired) changes nothing.
func TestRaid56JournalConcurrent(t *testing.T) {
	for _, p := range []Profile{Raid5, Raid6} {
		paths := imagePaths(t, deviceCount(p))
		devs := openImages(t, paths, 4<<20)
		v, _, err := OpenVolume(devs, OpenOptions{Profile: p, Volume: VolumeOptions{Logger: testLogger()}})
		if err != nil {
			t.Fatal(err)
		}
		span := 2 * v.FullStripeLen()
		model := make([]byte, span)
		workers := int(span / StripeLen)
		done := make(chan struct{}, workers)
		stop := make(chan struct{})
		flushed := make(chan struct{})
		go func() {
			defer close(flushed)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := v.Flush(); err != nil {
					t.Errorf("flush: %v", err)
					return
				}
			}
		}()
		for w := 0; w < workers; w++ {
			go func() {
				defer func() { done <- struct{}{} }()
				rng := rand.New(rand.NewPCG(uint64(w), 3))
				for round := 0; round < 2; round++ {
					for _, c := range rng.Perm(StripeLen / SectorSize) {
						s := uint64(w)*StripeLen + uint64(c)*SectorSize
						data := randBytes(rng, SectorSize)
						copy(model[s:], data) // each worker owns its stripe
						if st := writeAt(t, v, s, data, nil); st != blk.StsOK {
							t.Errorf("write at %d: %v", s, st)
						}
					}
				}
			}()
		}
		for w := 0; w < workers; w++ {
			<-done
		}
		close(stop)
		<-flushed
		if rep := scrub(t, v, 0, span, csumsOf(model, nil)); !rep.Clean() {
			t.Fatalf("%s: scrub after concurrent journaled writes: %d parity mismatches, %d differences",
				p, len(rep.ParityMismatches), len(rep.Differences))
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		devs = openImages(t, paths, 0)
		v, _, err = OpenVolume(devs, OpenOptions{Profile: p, Volume: VolumeOptions{Logger: testLogger()}})
		if err != nil {
			t.Fatal(err)
		}
		got, st := readAt(t, v, 0, int(span), 1, nil)
		if st != blk.StsOK || firstDiff(got, model) >= 0 {
			t.Fatalf("%s: data after the reopen: %v, first difference at %d", p, st, firstDiff(got, model))
		}
		v.Close()
	}
}

// TestRaid56JournalReadOnlyOpen: a read-only open (offline scrub, check)
// cannot replay the journal; it opens anyway, says so, and the next
// read-write open replays.
func TestRaid56JournalReadOnlyOpen(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	paths := imagePaths(t, 3)
	devs := openImages(t, paths, 16<<20)
	v, _, err := OpenVolume(devs, OpenOptions{Profile: Raid5, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(rng, SectorSize)
	if st := writeAt(t, v, StripeLen, data, rng); st != blk.StsOK { // a read-modify-write, not retired
		t.Fatal(st)
	}
	v.Close()
	var ro []*Device
	for _, p := range paths {
		d, err := OpenDevice(p, DeviceOptions{ReadOnly: true, Unclaimed: true, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		ro = append(ro, d)
	}
	v, _, err = OpenVolume(ro, OpenOptions{Profile: Raid5, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		closeAll(ro)
		t.Fatalf("read-only open with journal entries to replay: %v", err)
	}
	if v.journal != nil {
		t.Error("a read-only volume took the journal")
	}
	v.Close()
	devs = openImages(t, paths, 0)
	v, _, err = OpenVolume(devs, OpenOptions{Profile: Raid5, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.journal == nil || v.journal.retired == 0 {
		t.Fatal("the read-write open did not replay and retire the entry")
	}
	if got, st := readAt(t, v, StripeLen, SectorSize, 0, rng); st != blk.StsOK || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", st)
	}
}
