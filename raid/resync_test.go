package raid

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

// commitDegraded opens paths without the last one (degraded), writes fresh
// data over parts of the model and commits a generation the left-out
// device does not get (MetaArea.WriteSupers), as a degraded mount does.
func commitDegraded(t *testing.T, paths []string, model []byte, rng *rand.Rand) {
	t.Helper()
	v, err := openDegraded(t, paths, []int{len(paths) - 1}, true)
	if err != nil {
		t.Fatal(err)
	}
	if st := writeModel(t, v, model, rng); st != blk.StsOK {
		t.Fatalf("degraded write: %v", st)
	}
	m, err := OpenMetaArea(v)
	if err != nil {
		t.Fatal(err)
	}
	root := MetaRoot{Generation: m.Root().Generation + 1, Slot: 1, Bytes: SectorSize}
	if err := m.WriteSlot(root.Slot, make([]byte, SectorSize)); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteSupers(root); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
}

// readEveryMirror reads the whole chunk from each mirror in turn and
// compares it with the model.
func readEveryMirror(t *testing.T, v *Volume, model []byte) {
	t.Helper()
	for m := 1; m <= v.NumCopies(0, uint64(len(model))); m++ {
		for off := 0; off < len(model); off += S {
			got, st := readAt(t, v, uint64(off), S, m, nil)
			if st != blk.StsOK {
				t.Fatalf("mirror %d at %d: %v", m, off, st)
			}
			if !bytes.Equal(got, model[off:off+S]) {
				t.Fatalf("mirror %d at %d: not the last write", m, off)
			}
		}
	}
}

// TestStaleDeviceReadsAndResync: a device left out of a degraded commit is
// stale when it comes back: reads never return its old data (the read
// policy skips it, a mirror mapped to it fails like a missing device's,
// RAID5/6 rebuild its columns), and after Resync every mirror returns the
// last write and every copy agrees.
func TestStaleDeviceReadsAndResync(t *testing.T) {
	for i, p := range redundantProfiles {
		t.Run(p.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 14))
			paths, model := formatModel(t, p, rng)
			commitDegraded(t, paths, model, rng)
			v, err := openDegraded(t, paths, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			stale := v.StaleDevices()
			if len(stale) != 1 || stale[0].Path != paths[len(paths)-1] || stale[0].Generation != v.Generation()-1 {
				t.Fatalf("stale devices %+v at volume generation %d, want %s one behind", stale, v.Generation(), paths[len(paths)-1])
			}
			for range 3 { // the round-robin policy visits every copy
				checkModel(t, v, model, "stale device present")
			}
			staleFails := 0
			for m := 1; m <= v.NumCopies(0, S); m++ {
				for off := 0; off < len(model); off += S {
					got, st := readAt(t, v, uint64(off), S, m, nil)
					switch {
					case st != blk.StsOK:
						staleFails++
					case !bytes.Equal(got, model[off:off+S]):
						t.Fatalf("mirror %d at %d returned old data", m, off)
					}
				}
			}
			if staleFails == 0 && !p.IsRaid56() {
				t.Fatal("no mirror read was mapped to the stale device: the test does not look at it")
			}
			if err := v.Resync(); err != nil {
				t.Fatal(err)
			}
			if len(v.StaleDevices()) != 0 {
				t.Fatalf("still stale after Resync: %+v", v.StaleDevices())
			}
			readEveryMirror(t, v, model)
			rep, err := v.Scrub(0, v.Capacity(), nil)
			if err != nil || !rep.Clean() {
				t.Fatalf("scrub after Resync: %v %+v", err, rep)
			}
		})
	}
}

// TestResyncRacingWrites runs Resync again and again while writers
// overwrite the chunk: every write lands before or after the copy of its
// region, never under it (the stripe locks), so afterwards every copy agrees
// and holds the last write.
func TestResyncRacingWrites(t *testing.T) {
	for i, p := range []Profile{Raid1, Raid10, Raid5} {
		t.Run(p.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 41))
			paths, model := formatModel(t, p, rng)
			commitDegraded(t, paths, model, rng)
			v, err := openDegraded(t, paths, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			devs := v.Devices()
			staleDev := devs[len(devs)-1]
			const writers = 4
			region := len(model) / writers / SectorSize * SectorSize
			for round := 0; round < 12; round++ {
				staleDev.stale.Store(true) // as markStale leaves it
				v.resync.running.Store(true)
				var wg sync.WaitGroup
				for w := 0; w < writers; w++ {
					wrng := rand.New(rand.NewPCG(uint64(round), uint64(w)))
					wg.Add(1)
					go func() {
						defer wg.Done()
						for n := 0; n < 20; n++ {
							l := (1 + wrng.IntN(16)) * SectorSize
							off := w*region + wrng.IntN((region-l)/SectorSize+1)*SectorSize
							data := randBytes(wrng, l)
							if st := writeAt(t, v, uint64(off), data, wrng); st != blk.StsOK {
								t.Errorf("write at %d: %v", off, st)
								return
							}
							copy(model[off:], data) // each writer owns its region
						}
					}()
				}
				if err := v.Resync(); err != nil {
					t.Fatal(err)
				}
				wg.Wait()
				if t.Failed() {
					return
				}
				rep, err := v.Scrub(0, v.Capacity(), nil)
				if err != nil || !rep.Clean() {
					t.Fatalf("round %d: copies differ after a resync beside writes: %d differing sectors, %d parity mismatches (%v)",
						round, len(rep.Differences), len(rep.ParityMismatches), err)
				}
			}
			readEveryMirror(t, v, model)
		})
	}
}
