package btrfsdio

import (
	"github.com/btrfsdio/btrfsdio/blk"
)

// Bio is struct btrfs_bio: a bio plus what btrfs needs to finish it.
type Bio struct {
	Bio        *blk.Bio
	Inode      *Inode
	FileOffset uint64
	// Ordered is the ordered extent a data write accounts against.
	Ordered *OrderedExtent
	// EndIO is bbio->end_io, called once when all IO of the bio is done.
	EndIO func(*Bio)
	// Private is bbio->private.
	Private any
	// MirrorNum is the copy to read (0: any).
	MirrorNum int
	// outer is the structure that embeds this bbio (container_of).
	outer any
}

// btrfsBio is btrfs_bio(bio): the btrfs_bio around a bio.
func btrfsBio(bio *blk.Bio) *Bio {
	switch c := bio.Container.(type) {
	case *DioPrivate:
		return &c.Bbio
	case *Bio:
		return c
	}
	return nil
}

// BioInit is btrfs_bio_init.
func (bbio *Bio) BioInit(fs *FsInfo, endIO func(*Bio), private any) {
	bbio.Inode = nil
	bbio.FileOffset = 0
	bbio.Ordered = nil
	bbio.MirrorNum = 0
	bbio.EndIO = endIO
	bbio.Private = private
}

// BioAlloc is btrfs_bio_alloc: a btrfs_bio from btrfs_bioset.
func (fs *FsInfo) BioAlloc(nrVecs int, opf blk.Opf, inode *Inode, fileOffset uint64,
	endIO func(*Bio), private any) *Bio {
	bio := blk.BioAllocBioset(&fs.BioBioset, nrVecs, opf)
	bbio := &Bio{Bio: bio}
	bio.Container = bbio
	bbio.BioInit(fs, endIO, private)
	bbio.Inode = inode
	bbio.FileOffset = fileOffset
	return bbio
}

// SubmitBbio is btrfs_submit_bbio: checksum data writes of datasum inodes,
// hand the bio to the chunk layer, and on completion verify read checksums
// (repairing from other copies) before calling bbio.EndIO.
func (fs *FsInfo) SubmitBbio(bbio *Bio, mirror int) {
	bio := bbio.Bio
	if bio.Size() == 0 {
		// btrfs_submit_chunk would map a zero-length range; nothing below
		// expects that, so fail the bio the way a bad mapping does.
		fs.warnf("empty bio submitted at logical %d", bio.Iter.Sector<<blk.SectorShift)
		bio.Status = blk.StsIOErr
		bbioEndIO(bbio)
		return
	}
	bbio.MirrorNum = mirror
	write := bio.Opf.Op() == blk.OpWrite
	if write && fs.submitted != nil {
		fs.submitted(bbio)
	}
	if write && bbio.Inode != nil && !bbio.Inode.NoDataSum && bbio.Ordered != nil {
		if err := fs.csumOneBio(bbio); err != nil {
			bio.Status = blk.ErrnoToStatus(blk.ErrnoOf(err))
			bbioEndIO(bbio)
			return
		}
	}
	if write && bbio.Ordered != nil && bbio.Ordered.Flags()&OrderedNocow != 0 {
		bio.Opf |= blk.ReqOverwrite
	}
	var readIter blk.BvecIter
	if !write {
		readIter = bio.Iter
	}
	bio.EndIO = func(b *blk.Bio) {
		if !write && bbio.Inode != nil {
			fs.checkReadBio(bbio, readIter)
		}
		bbioEndIO(bbio)
	}
	fs.Vol.SubmitBio(bio, mirror)
}

// bbioEndIO is __btrfs_bio_end_io: run bbio->end_io, then drop the bio's
// reference on its ordered extent (end_io may free the bbio itself).
func bbioEndIO(bbio *Bio) {
	ordered := bbio.Ordered
	bbio.EndIO(bbio)
	if ordered != nil {
		ordered.PutOrderedExtent()
	}
}

// csumOneBio is btrfs_csum_one_bio: crc32c of every sector the write carries,
// attached to its ordered extent.
func (fs *FsInfo) csumOneBio(bbio *Bio) error {
	bio := bbio.Bio
	logical := bio.Iter.Sector << blk.SectorShift
	sums := make([]uint32, 0, bio.Size()/SectorSize)
	buf := make([]byte, SectorSize)
	iter := bio.Iter
	for iter.Size > 0 {
		if err := copyFromBio(bio, &iter, buf); err != nil {
			return err
		}
		sums = append(sums, csumData(buf))
	}
	oe := bbio.Ordered
	oe.mu.Lock()
	oe.sums = append(oe.sums, orderedSum{logical: logical, sums: sums})
	oe.mu.Unlock()
	return nil
}

// copyFromBio copies len(dst) bytes out of bio at iter, advancing iter.
func copyFromBio(bio *blk.Bio, iter *blk.BvecIter, dst []byte) error {
	for done := 0; done < len(dst) && iter.Size > 0; {
		seg := bio.Segment(*iter)
		n := min(int(seg.Len), len(dst)-done)
		if err := seg.Page.ReadAt(dst[done:done+n], int(seg.Offset)); err != nil {
			return err
		}
		done += n
		bio.AdvanceIter(iter, uint32(n))
	}
	return nil
}

// copyToBio copies src into bio at iter, advancing iter.
func copyToBio(bio *blk.Bio, iter *blk.BvecIter, src []byte) error {
	for done := 0; done < len(src) && iter.Size > 0; {
		seg := bio.Segment(*iter)
		n := min(int(seg.Len), len(src)-done)
		if err := seg.Page.WriteAt(src[done:done+n], int(seg.Offset)); err != nil {
			return err
		}
		done += n
		bio.AdvanceIter(iter, uint32(n))
	}
	return nil
}
