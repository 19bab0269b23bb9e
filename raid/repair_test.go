package raid

import (
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

// TestRaid56RepairLeavesParity: on RAID5/6 a repair write goes to the data
// stripe in place, whichever mirror it names (map_raid56_repair_block).
// Recomputing the parity instead, from a full stripe whose other data stripe
// is damaged, breaks the rebuild of that stripe (found by tests/fault/001 on
// raid5 in zerocopy mode, where every sector of a datasum read is repaired).
func TestRaid56RepairLeavesParity(t *testing.T) {
	for _, p := range []Profile{Raid5, Raid6} {
		v, model := filledVolume(t, p, 256<<10, 9)
		// Logical 0 and S are the first two data stripes of full stripe 0.
		ioc, _, err := v.MapBlock(blk.OpRead, 0, SectorSize, 1)
		if err != nil {
			t.Fatal(err)
		}
		a := ioc.Stripes[0]
		corrupt(t, a.Dev, a.Physical, SectorSize)
		good := blk.AlignedBuffer(SectorSize)
		copy(good, model[S:S+SectorSize])
		for m := 1; m <= v.NumCopies(S, SectorSize); m++ {
			if err := v.WriteMirror(S, m, good); err != nil {
				t.Fatalf("%s: repair write of mirror %d: %v", p, m, err)
			}
		}
		got, st := readAt(t, v, S, SectorSize, 1, nil)
		if st != blk.StsOK || firstDiff(got, model[S:S+SectorSize]) >= 0 {
			t.Fatalf("%s: the repaired sector reads back wrong (%v)", p, st)
		}
		got, st = readAt(t, v, 0, SectorSize, 2, nil)
		if st != blk.StsOK || firstDiff(got, model[:SectorSize]) >= 0 {
			t.Fatalf("%s: the damaged stripe no longer rebuilds from parity (%v)", p, st)
		}
	}
}
