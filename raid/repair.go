package raid

import (
	"fmt"

	"github.com/btrfsdio/btrfsdio/blk"
)

// WriteMirror is btrfs_repair_io_failure: write buf (sector aligned, page
// aligned memory) over copy mirror of [logical, logical+len(buf)) only,
// leaving the other copies alone. On RAID5/6 every mirror (the data stripe,
// or a rebuild from P or Q) is repaired by writing the data stripe in place,
// parity untouched (map_raid56_repair_block): a read-modify-write would
// recompute the parity from the other data stripes, which may be the damaged
// ones, and destroy what rebuilds them.
func (v *Volume) WriteMirror(logical uint64, mirror int, buf []byte) error {
	if len(buf) == 0 || len(buf)%SectorSize != 0 {
		return fmt.Errorf("raid: repair write of %d bytes at %d: not sector sized", len(buf), logical)
	}
	if v.profile.IsRaid56() {
		mirror = 1
	}
	for done := 0; done < len(buf); {
		ioc, mapLen, err := v.MapBlock(blk.OpRead, logical+uint64(done), uint64(len(buf)-done), mirror)
		if err != nil {
			return fmt.Errorf("raid: repair write: %w", err)
		}
		s := ioc.Stripes[0]
		if err := s.Dev.writeBuf(buf[done:done+int(mapLen)], s.Physical); err != nil {
			return fmt.Errorf("raid: repair write mirror %d at %d: %w", mirror, logical, err)
		}
		done += int(mapLen)
	}
	return nil
}
