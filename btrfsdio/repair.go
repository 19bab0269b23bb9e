package btrfsdio

import (
	"sync"
	"sync/atomic"

	"github.com/btrfsdio/btrfsdio/blk"
)

// checkReadBio is btrfs_check_read_bio: verify each sector of a completed
// data read against its checksum (datasum inodes), and repair any sector that
// failed to read or verify from another copy (repair_one_sector). The bio's
// status is cleared when every bad sector was repaired.
func (fs *FsInfo) checkReadBio(bbio *Bio, iter blk.BvecIter) {
	bio := bbio.Bio
	ioErr := bio.Status != blk.StsOK
	if !ioErr && bbio.Inode.NoDataSum {
		return // nothing to verify, nothing to repair
	}
	var bad []int
	if !ioErr {
		if bad = fs.csumMismatches(bio, iter); len(bad) == 0 {
			return
		}
	}
	allGood := true
	logical := iter.Sector << blk.SectorShift
	for i := 0; iter.Size > 0; i++ {
		if ioErr || (len(bad) > 0 && bad[0] == i) {
			if len(bad) > 0 {
				bad = bad[1:]
			}
			secIter := iter
			secIter.Size = SectorSize
			if !fs.repairOneSector(bbio, logical, secIter) {
				allGood = false
			}
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

// csumMismatches is btrfs_data_csum_ok for every sector under iter: the
// indexes, in order, of the sectors that have a checksum their data does not
// match. Process memory is checksummed where it is, as the kernel does
// through kmap_local; anything else (a ublk request's pages) is copied out
// once, one read instead of one per sector. A sector that cannot be copied
// out counts as a mismatch.
func (fs *FsInfo) csumMismatches(bio *blk.Bio, iter blk.BvecIter) []int {
	logical := iter.Sector << blk.SectorShift
	var bad []int
	check := func(i int, data []byte) {
		if want, has := fs.csums.lookup(logical + uint64(i)*SectorSize); has && (data == nil || csumData(data) != want) {
			atomic.AddInt64(&fs.stats.CsumErrors, 1)
			bad = append(bad, i)
		}
	}
	nsec := int(iter.Size / SectorSize)
	if inPlace(bio, iter) {
		i := 0
		_ = bio.ForEachBvec(iter, func(bv blk.BioVec) error {
			mem := bv.Page.Bytes()[bv.Offset : bv.Offset+bv.Len]
			for off := 0; off < len(mem); off += SectorSize {
				check(i, mem[off:off+SectorSize])
				i++
			}
			return nil
		})
		return bad
	}
	bp := readCheckBuffers.Get().(*[]byte)
	defer readCheckBuffers.Put(bp)
	if cap(*bp) < int(iter.Size) {
		*bp = make([]byte, iter.Size)
	}
	data := (*bp)[:iter.Size]
	copied := blk.CopyFromBio(bio, iter, data) == nil
	for i := 0; i < nsec; i++ {
		if copied {
			check(i, data[i*SectorSize:(i+1)*SectorSize])
		} else {
			check(i, nil)
		}
	}
	return bad
}

// inPlace reports whether every segment under iter is process memory made
// of whole sectors, so each sector can be checksummed where it lies.
func inPlace(bio *blk.Bio, iter blk.BvecIter) bool {
	ok := true
	_ = bio.ForEachBvec(iter, func(bv blk.BioVec) error {
		if bv.Page.Bytes() == nil || bv.Len%SectorSize != 0 {
			ok = false
		}
		return nil
	})
	return ok
}

// readCheckBuffers hold the data csumMismatches copies out.
var readCheckBuffers = sync.Pool{New: func() any { return new([]byte) }}

// repairOneSector is repair_one_sector + btrfs_repair_io_failure: read the
// sector from each copy until one is good (its csum matches, or it simply
// reads when there is no csum), copy it into the bio, and rewrite the copies
// that were bad. It returns whether a good copy was found.
func (fs *FsInfo) repairOneSector(bbio *Bio, logical uint64, dst blk.BvecIter) bool {
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
	atomic.AddInt64(&fs.stats.ReadRepairs, 1)
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
