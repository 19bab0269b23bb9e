package raid

import (
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

// TestMetaAppendMissedGetsNoSuper: a device whose copy missed an append
// (WriteSlotAt past the root's start) has a hole in that slot: it gets no
// superblock naming the slot, even after later appends succeed on it,
// Incomplete says so, and a write of the other slot from its start (a
// checkpoint) makes it current again.
func TestMetaAppendMissedGetsNoSuper(t *testing.T) {
	devs := newDevices(t, 2, 8<<20)
	v, _, err := OpenVolume(devs, OpenOptions{Profile: Raid1, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	m, err := OpenMetaArea(v)
	if err != nil {
		t.Fatal(err)
	}
	commit := func(slot int, off uint64, gen uint64) {
		t.Helper()
		if err := m.WriteSlotAt(slot, off, make([]byte, SectorSize)); err != nil {
			t.Fatal(err)
		}
		if err := m.WriteSupers(MetaRoot{Generation: gen, Slot: slot, Bytes: off + SectorSize}); err != nil {
			t.Fatal(err)
		}
	}
	gen := func(d *Device) uint64 {
		sb, err := d.ReadSuper()
		if err != nil {
			t.Fatal(err)
		}
		return sb.Generation
	}
	commit(0, 0, 2)
	devs[1].InjectFault(blk.OpWrite, 1) // its copy of the next append
	commit(0, SectorSize, 3)
	commit(0, 2*SectorSize, 4) // whole on both devices, but device 1 lacks the previous record
	if g := gen(devs[1]); g != 2 {
		t.Fatalf("device 1, which missed an append, has a superblock of generation %d naming the slot; want it left at 2", g)
	}
	if gen(devs[0]) != 4 || !m.Incomplete(0) || m.Incomplete(1) {
		t.Fatalf("device 0 at %d, Incomplete(0) %v, Incomplete(1) %v: want 4, true, false", gen(devs[0]), m.Incomplete(0), m.Incomplete(1))
	}
	commit(1, 0, 5) // a checkpoint
	if gen(devs[1]) != 5 || m.Incomplete(1) {
		t.Fatalf("after a checkpoint device 1 is at %d (want 5), Incomplete(1) %v", gen(devs[1]), m.Incomplete(1))
	}
}
