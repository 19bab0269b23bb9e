// Package blk is the slice of the Linux block layer that the btrfs direct IO
// path touches: struct bio, struct bio_vec, struct bvec_iter, blk_status_t,
// and the page allocator the bounce path draws from.
//
// It mirrors include/linux/bio.h, include/linux/bvec.h, include/linux/blk_types.h
// and block/bio.c closely enough that a reviewer can hold the btrfs code that
// uses it against the kernel's. Two things differ because Go is not C:
//
//   - A page is a *Page (a []byte of one or more contiguous pages, or a window
//     onto memory this process can only copy to and from, such as a ublk
//     request's pages under UBLK_F_USER_COPY). kmap + memcpy become
//     Page.ReadAt/WriteAt, which can fail for the second kind.
//   - container_of is Bio.Container: the structure that embeds the bio
//     (struct btrfs_bio, itself inside struct btrfs_dio_private).
package blk

const (
	// SectorShift is SECTOR_SHIFT: bi_sector is always in 512-byte units.
	SectorShift = 9
	// SectorSize is SECTOR_SIZE.
	SectorSize = 1 << SectorShift
	// PageShift is PAGE_SHIFT on x86-64.
	PageShift = 12
	// PageSize is PAGE_SIZE on x86-64.
	PageSize = 1 << PageShift
	// BioMaxVecs is BIO_MAX_VECS: the most bvecs one bio can hold.
	BioMaxVecs = 256
	// BioMaxSize is BIO_MAX_SIZE (UINT_MAX, "block: add a BIO_MAX_SIZE
	// constant and use it"): the most bytes bi_size can count.
	BioMaxSize = 1<<32 - 1
)
