package raid

import (
	"fmt"

	"github.com/btrfsdio/btrfsdio/blk"
)

// WriteMirror is btrfs_repair_io_failure: write buf (sector aligned, page
// aligned memory) over copy mirror of [logical, logical+len(buf)) only,
// leaving the other copies alone. On RAID5/6 the data and its parity are
// rewritten together (a read-modify-write of the full stripe), because a
// rebuilt copy is only as good as the parity it came from.
func (v *Volume) WriteMirror(logical uint64, mirror int, buf []byte) error {
	if len(buf) == 0 || len(buf)%SectorSize != 0 {
		return fmt.Errorf("raid: repair write of %d bytes at %d: not sector sized", len(buf), logical)
	}
	if v.profile.IsRaid56() {
		return v.writeSync(logical, buf)
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

// writeSync writes buf to every copy through SubmitBio and waits.
func (v *Volume) writeSync(logical uint64, buf []byte) error {
	bio := blk.BioAllocBioset(nil, 1, blk.Opf(blk.OpWrite))
	bio.Iter.Sector = logical >> blk.SectorShift
	bio.AddPage(blk.NewPage(buf), uint32(len(buf)), 0)
	done := make(chan struct{})
	bio.EndIO = func(*blk.Bio) { close(done) }
	v.SubmitBio(bio, 0)
	<-done
	if err := bio.Status.Err(); err != nil {
		return fmt.Errorf("raid: repair write at %d: %w", logical, err)
	}
	return nil
}
