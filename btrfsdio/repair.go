package btrfsdio

import (
	"sync"

	"github.com/btrfsdio/btrfsdio/blk"
)

// checkReadBio is btrfs_check_read_bio: verify each sector of a completed
// data read against its checksum (datasum inodes), and repair any sector that
// failed to read or verify from another copy (repair_one_sector). The bio's
// status is cleared when every bad sector was repaired.
func (fs *FsInfo) checkReadBio(bbio *BtrfsBio, iter blk.BvecIter) {
	bio := bbio.Bio
	ioErr := bio.Status != blk.StsOK
	if !ioErr && bbio.Inode.NoDataSum {
		return // nothing to verify, nothing to repair
	}
	logical := iter.Sector << blk.SectorShift
	// The whole range is copied out once (kmap per sector in the kernel):
	// for a ublk request's pages, one read instead of one per sector.
	var data []byte
	copied := false
	if !ioErr && !bbio.Inode.NoDataSum {
		bp := readCheckBuffers.Get().(*[]byte)
		defer readCheckBuffers.Put(bp)
		if cap(*bp) < int(iter.Size) {
			*bp = make([]byte, iter.Size)
		}
		data = (*bp)[:iter.Size]
		copied = blk.CopyFromBio(bio, iter, data) == nil
	}
	allGood := true
	for pos := 0; iter.Size > 0; pos += SectorSize {
		secIter := iter
		secIter.Size = SectorSize
		ok := !ioErr
		if ok && !bbio.Inode.NoDataSum {
			if want, has := fs.csums.lookup(logical); has && (!copied || csumData(data[pos:pos+SectorSize]) != want) {
				fs.stats.csumErrors.Add(1)
				ok = false
			}
		}
		if !ok && !fs.repairOneSector(bbio, logical, secIter) {
			allGood = false
		}
		bio.AdvanceIter(&iter, SectorSize)
		logical += SectorSize
	}
	if allGood {
		bio.Status = blk.StsOK
	} else if bio.Status == blk.StsOK {
		bio.Status = blk.StsIOErr
	}
}

// readCheckBuffers hold the data checkReadBio verifies.
var readCheckBuffers = sync.Pool{New: func() any { return new([]byte) }}

// repairOneSector is repair_one_sector + btrfs_repair_io_failure: read the
// sector from each copy until one is good (its csum matches, or it simply
// reads when there is no csum), copy it into the bio, and rewrite the copies
// that were bad. It returns whether a good copy was found.
func (fs *FsInfo) repairOneSector(bbio *BtrfsBio, logical uint64, dst blk.BvecIter) bool {
	want, hasSum := uint32(0), false
	if !bbio.Inode.NoDataSum {
		want, hasSum = fs.csums.lookup(logical)
	}
	copies := fs.Vol.NumCopies(logical, SectorSize)
	var good []byte
	var bad []int
	for m := 1; m <= copies; m++ {
		data, err := fs.readMirrorSector(logical, m)
		if err != nil || (hasSum && csumData(data) != want) {
			bad = append(bad, m)
			continue
		}
		if good == nil {
			good = data
		}
	}
	if good == nil {
		fs.warnf("unable to fixup (regular) error at logical %d: no good copy of %d", logical, copies)
		return false
	}
	if err := copyToBio(bbio.Bio, &dst, good); err != nil {
		return false
	}
	fs.stats.readRepairs.Add(1)
	for _, m := range bad {
		if err := fs.writeMirrorSector(logical, m, good); err != nil {
			fs.warnf("failed to repair logical %d mirror %d: %v", logical, m, err)
		}
	}
	return true
}

// syncBio submits a one-sector bio to the chunk layer and waits for it.
func (fs *FsInfo) syncBio(op blk.Op, logical uint64, mirror int, page *blk.Page) error {
	bio := blk.BioAllocBioset(&fs.BioBioset, 1, blk.Opf(op))
	bio.Iter.Sector = logical >> blk.SectorShift
	bio.AddPage(page, SectorSize, 0)
	done := make(chan struct{})
	bio.EndIO = func(*blk.Bio) { close(done) }
	fs.Vol.SubmitBio(bio, mirror)
	<-done
	err := bio.Status.Err()
	bio.Put()
	return err
}

func (fs *FsInfo) readMirrorSector(logical uint64, mirror int) ([]byte, error) {
	buf := blk.AlignedBuffer(SectorSize)
	if err := fs.syncBio(blk.OpRead, logical, mirror, blk.NewPage(buf)); err != nil {
		return nil, err
	}
	return buf, nil
}

// writeMirrorSector writes one copy only (btrfs_repair_io_failure targets
// the failed mirror's device directly).
func (fs *FsInfo) writeMirrorSector(logical uint64, mirror int, data []byte) error {
	buf := blk.AlignedBuffer(SectorSize)
	copy(buf, data)
	return fs.Vol.WriteMirror(logical, mirror, buf)
}
