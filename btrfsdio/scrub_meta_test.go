package btrfsdio

import (
	"errors"
	"os"
	"testing"

	"github.com/btrfsdio/btrfsdio/raid"
)

// TestScrubMetaRepairsACopy: on DUP (two copies on one device) a scribbled
// second copy is named by device, copy index and offset, check counts it
// and a corrupt superblock copy as damage, the repair rewrites the
// metadata copy from the first, and afterwards both scrubs are clean.
func TestScrubMetaRepairsACopy(t *testing.T) {
	pf := newPersistFS(t, raid.Dup, 8<<20, Options{Mode: Bounce, DataSum: true})
	b := mmapBuf(t, 64<<10)
	fillPattern(b, 3)
	if _, err := pf.write(0, b, 0); err != nil {
		t.Fatal(err)
	}
	if err := pf.Close(); err != nil {
		t.Fatal(err)
	}
	files, offs, _ := metaCopyOffsets(t, pf.paths)
	f, err := os.OpenFile(files[1], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt([]byte("scribbled"), offs[1]+200)
	if err == nil {
		_, err = f.WriteAt([]byte("scribbled"), 64<<10+100) // the primary superblock
	}
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pf.reopen(t)

	rep, err := Check(pf.Vol)
	if err != nil || rep.Clean() {
		t.Fatalf("check: %v, clean %v", err, rep != nil && rep.Clean())
	}
	if len(rep.Supers) != 3 || rep.Supers[0].Err == nil || rep.Supers[1].Err != nil || rep.Supers[2].Err != nil {
		t.Fatalf("superblock copies %+v, want the primary bad", rep.Supers)
	}
	copies, err := ScrubMeta(pf.Vol, false)
	if err != nil || len(copies) != 2 || copies[0].Err != nil || copies[1].Err == nil ||
		copies[1].Path != files[1] || copies[1].Index != 1 || int64(copies[1].Offset) != offs[1] {
		t.Fatalf("scrub: %v, %+v; want copy 1 at %d bad", err, copies, offs[1])
	}
	if copies[1].Repaired {
		t.Fatal("a scrub without repair repaired")
	}
	if copies, err = ScrubMeta(pf.Vol, true); err != nil || !copies[1].Repaired || copies[1].RepairErr != nil || copies[0].Repaired {
		t.Fatalf("repair: %v, %+v", err, copies)
	}
	if copies, err = ScrubMeta(pf.Vol, false); err != nil || copies[0].Err != nil || copies[1].Err != nil {
		t.Fatalf("after repair: %v, %+v", err, copies)
	}
	if _, err := pf.Vol.ScrubSupers(true); err != nil {
		t.Fatal(err)
	}
	pf.mustCheckClean(t)
}

// TestScrubMetaWithoutValidCopy: with every copy bad nothing is rewritten
// and the error says no copy is valid.
func TestScrubMetaWithoutValidCopy(t *testing.T) {
	pf := newPersistFS(t, raid.Raid1, 8<<20, Options{Mode: Bounce})
	if err := pf.Close(); err != nil {
		t.Fatal(err)
	}
	files, offs, _ := metaCopyOffsets(t, pf.paths)
	for i := range files {
		f, err := os.OpenFile(files[i], os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("scribbled"), offs[i]+200)
		f.Close()
	}
	devs := make([]*raid.Device, len(pf.paths))
	for i, p := range pf.paths {
		d, err := raid.OpenDevice(p, raid.DeviceOptions{Logger: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		devs[i] = d
	}
	vol, _, err := raid.OpenVolume(devs, raid.OpenOptions{Profile: raid.AnyProfile, Volume: raid.VolumeOptions{Logger: quietLog()}})
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Close()
	copies, err := ScrubMeta(vol, true)
	if !errors.Is(err, errNoValidRoot) || len(copies) != 2 || copies[0].Repaired || copies[1].Repaired {
		t.Fatalf("%v, %+v", err, copies)
	}
}
