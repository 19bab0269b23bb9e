package btrfsdio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// The metadata a commit writes (what btrfs keeps in its root, subvolume,
// extent and csum trees, reduced to one inode): i_size and flags, the file
// extent items and the data checksums. The data allocator is not stored:
// every disk extent backs exactly one file range, so the allocated space is
// the union of the file extents' disk ranges and is rebuilt from them.
//
// Format, little-endian, in blocks of metaBlockSize, each with a header:
//
//	[0:4]   crc32c of bytes [4:4096] of the block
//	[4:12]  magic "BDIOMETA"
//	[12:16] format version (1)
//	[16:24] generation of the commit that wrote it
//	[24:28] index of this block, [28:32] number of blocks
//	[32:]   payload
//
// The payloads, concatenated, hold a header and two arrays:
//
//	fsid [16]byte, i_size u64, inode flags u32, zero u32, data capacity u64,
//	number of extents u64, number of csum runs u64, stream length u64,
//	extents: file offset u64, length u64, disk bytenr u64 (sorted by offset),
//	csum runs: logical u64, count u32, count crc32c u32 (sorted by logical),
//
// and zeroes after the stream length. The generation in every block makes
// a block left over from an older commit in the same slot a detected error.
const (
	metaBlockSize    = 4096
	metaBlockHeader  = 32
	metaBlockPayload = metaBlockSize - metaBlockHeader
	metaMagic        = "BDIOMETA"
	metaVersion      = 1
	metaHeaderLen    = 64
	metaExtentLen    = 24
	metaRunHeaderLen = 12
)

// Inode flags as stored.
const (
	metaFlagNoDataSum = 1 << iota
	metaFlagNoDataCow
	metaFlagsKnown = metaFlagNoDataSum | metaFlagNoDataCow
)

// ErrCorruptMeta wraps every reason decodeMeta refuses a copy (-EUCLEAN
// from btrfs_validate_extent_buffer and the tree-checker).
var ErrCorruptMeta = errors.New("corrupt metadata")

// csumRun is a csum item: the checksums of consecutive sectors.
type csumRun struct {
	logical uint64
	sums    []uint32
}

// metaImage is one generation of metadata, decoded or about to be encoded.
type metaImage struct {
	fsid       [16]byte
	generation uint64
	size       uint64
	flags      uint32
	capacity   uint64
	extents    []fileExtent
	csums      []csumRun
	// checkpointBytes is, for a decoded root, the length of its
	// checkpoint: where its log starts (decodeMetaLog).
	checkpointBytes uint64
}

// appendExtents appends each extent's item: start, len, disk bytenr.
func appendExtents(stream []byte, extents []fileExtent) []byte {
	le := binary.LittleEndian
	for _, e := range extents {
		stream = le.AppendUint64(stream, e.start)
		stream = le.AppendUint64(stream, e.len)
		stream = le.AppendUint64(stream, e.diskBytenr)
	}
	return stream
}

// appendCsums appends each checksum run: logical, count, the sums.
func appendCsums(stream []byte, csums []csumRun) []byte {
	le := binary.LittleEndian
	for _, r := range csums {
		stream = le.AppendUint64(stream, r.logical)
		stream = le.AppendUint32(stream, uint32(len(r.sums)))
		for _, s := range r.sums {
			stream = le.AppendUint32(stream, s)
		}
	}
	return stream
}

// encodeMeta serialises img into whole blocks.
func encodeMeta(img *metaImage) []byte {
	le := binary.LittleEndian
	stream := make([]byte, metaHeaderLen, metaHeaderLen+len(img.extents)*metaExtentLen)
	copy(stream, img.fsid[:])
	le.PutUint64(stream[16:], img.size)
	le.PutUint32(stream[24:], img.flags)
	le.PutUint64(stream[32:], img.capacity)
	le.PutUint64(stream[40:], uint64(len(img.extents)))
	le.PutUint64(stream[48:], uint64(len(img.csums)))
	stream = appendExtents(stream, img.extents)
	stream = appendCsums(stream, img.csums)
	le.PutUint64(stream[56:], uint64(len(stream)))
	nblocks := max(1, (len(stream)+metaBlockPayload-1)/metaBlockPayload)
	out := make([]byte, nblocks*metaBlockSize)
	for i := 0; i < nblocks; i++ {
		b := out[i*metaBlockSize : (i+1)*metaBlockSize]
		copy(b[4:12], metaMagic)
		le.PutUint32(b[12:], metaVersion)
		le.PutUint64(b[16:], img.generation)
		le.PutUint32(b[24:], uint32(i))
		le.PutUint32(b[28:], uint32(nblocks))
		copy(b[metaBlockHeader:], stream[min(len(stream), i*metaBlockPayload):])
		le.PutUint32(b[0:], csumData(b[4:]))
	}
	return out
}

// decodeMeta is btrfs_validate_extent_buffer and tree-checker for one
// copy: every block's csum, magic, version, generation and place, then
// every item in range (see validate).
func decodeMeta(b []byte) (*metaImage, error) {
	le := binary.LittleEndian
	if len(b) < metaBlockSize || len(b)%metaBlockSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of blocks", ErrCorruptMeta, len(b))
	}
	nblocks := len(b) / metaBlockSize
	img := &metaImage{generation: le.Uint64(b[16:])}
	payload := make([]byte, 0, nblocks*metaBlockPayload)
	for i := 0; i < nblocks; i++ {
		blk := b[i*metaBlockSize : (i+1)*metaBlockSize]
		switch {
		case le.Uint32(blk) != csumData(blk[4:]):
			return nil, fmt.Errorf("%w: block %d: csum %#x, computed %#x", ErrCorruptMeta, i, le.Uint32(blk), csumData(blk[4:]))
		case string(blk[4:12]) != metaMagic:
			return nil, fmt.Errorf("%w: block %d: bad magic %q", ErrCorruptMeta, i, blk[4:12])
		case le.Uint32(blk[12:]) != metaVersion:
			return nil, fmt.Errorf("%w: block %d: version %d, this program knows %d", ErrCorruptMeta, i, le.Uint32(blk[12:]), metaVersion)
		case le.Uint64(blk[16:]) != img.generation:
			return nil, fmt.Errorf("%w: block %d: generation %d, block 0 has %d (left from another commit)",
				ErrCorruptMeta, i, le.Uint64(blk[16:]), img.generation)
		case le.Uint32(blk[24:]) != uint32(i) || le.Uint32(blk[28:]) != uint32(nblocks):
			return nil, fmt.Errorf("%w: block %d says it is block %d of %d, want of %d",
				ErrCorruptMeta, i, le.Uint32(blk[24:]), le.Uint32(blk[28:]), nblocks)
		}
		payload = append(payload, blk[metaBlockHeader:]...)
	}
	copy(img.fsid[:], payload)
	img.size = le.Uint64(payload[16:])
	img.flags = le.Uint32(payload[24:])
	img.capacity = le.Uint64(payload[32:])
	nExt, nRuns, streamLen := le.Uint64(payload[40:]), le.Uint64(payload[48:]), le.Uint64(payload[56:])
	switch {
	case le.Uint32(payload[28:]) != 0:
		return nil, fmt.Errorf("%w: reserved header field set", ErrCorruptMeta)
	case streamLen < metaHeaderLen || streamLen > uint64(len(payload)):
		return nil, fmt.Errorf("%w: stream of %d bytes in %d", ErrCorruptMeta, streamLen, len(payload))
	case (streamLen+metaBlockPayload-1)/metaBlockPayload != uint64(nblocks):
		return nil, fmt.Errorf("%w: %d blocks for a stream of %d bytes", ErrCorruptMeta, nblocks, streamLen)
	case !allZero(payload[streamLen:]):
		return nil, fmt.Errorf("%w: bytes after the stream", ErrCorruptMeta)
	case nExt > (streamLen-metaHeaderLen)/metaExtentLen:
		return nil, fmt.Errorf("%w: %d extents do not fit a %d-byte stream", ErrCorruptMeta, nExt, streamLen)
	}
	p := payload[metaHeaderLen:streamLen]
	img.extents = make([]fileExtent, nExt)
	for i := range img.extents {
		img.extents[i] = fileExtent{start: le.Uint64(p), len: le.Uint64(p[8:]), diskBytenr: le.Uint64(p[16:])}
		p = p[metaExtentLen:]
	}
	for r := uint64(0); r < nRuns; r++ {
		if len(p) < metaRunHeaderLen {
			return nil, fmt.Errorf("%w: csum run %d of %d truncated", ErrCorruptMeta, r, nRuns)
		}
		run := csumRun{logical: le.Uint64(p)}
		n := uint64(le.Uint32(p[8:]))
		p = p[metaRunHeaderLen:]
		if n == 0 || n > uint64(len(p))/4 {
			return nil, fmt.Errorf("%w: csum run %d has %d sums, %d bytes left", ErrCorruptMeta, r, n, len(p))
		}
		run.sums = make([]uint32, n)
		for i := range run.sums {
			run.sums[i] = le.Uint32(p[4*i:])
		}
		p = p[4*n:]
		img.csums = append(img.csums, run)
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last csum run", ErrCorruptMeta, len(p))
	}
	if err := img.validate(); err != nil {
		return nil, err
	}
	return img, nil
}

func allZero(b []byte) bool { return len(bytes.TrimLeft(b, "\x00")) == 0 }

// validate is the tree-checker of a decoded image: the inode fits the
// chunk; file extents are aligned, inside i_size and the chunk, sorted and
// non-overlapping both in the file and on disk (no extent is shared); csum
// runs are sorted, non-overlapping and cover only allocated sectors.
func (img *metaImage) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrCorruptMeta}, args...)...)
	}
	aligned := func(v uint64) bool { return v%SectorSize == 0 }
	switch {
	case img.generation == 0:
		return bad("generation 0")
	case img.capacity == 0 || !aligned(img.capacity):
		return bad("data capacity %d", img.capacity)
	case img.size == 0 || !aligned(img.size) || img.size > img.capacity:
		return bad("i_size %d in a %d-byte chunk", img.size, img.capacity)
	case img.flags&^metaFlagsKnown != 0:
		return bad("unknown inode flags %#x", img.flags)
	case img.flags&metaFlagNoDataCow != 0 && img.flags&metaFlagNoDataSum == 0:
		return bad("NODATACOW without NODATASUM")
	case img.flags&metaFlagNoDataSum != 0 && len(img.csums) > 0:
		return bad("NODATASUM inode with %d csum runs", len(img.csums))
	}
	var fileEnd uint64
	disk := make([]span, 0, len(img.extents))
	for i, e := range img.extents {
		switch {
		case e.len == 0 || !aligned(e.start) || !aligned(e.len) || !aligned(e.diskBytenr):
			return bad("extent %d [%d, +%d) at %d: not whole sectors", i, e.start, e.len, e.diskBytenr)
		case e.start < fileEnd:
			return bad("extent %d at file offset %d overlaps or precedes the one ending at %d", i, e.start, fileEnd)
		case e.len > img.size || e.start > img.size-e.len:
			return bad("extent %d [%d, +%d) beyond i_size %d", i, e.start, e.len, img.size)
		case e.len > img.capacity || e.diskBytenr > img.capacity-e.len:
			return bad("extent %d at disk %d +%d beyond the %d-byte chunk", i, e.diskBytenr, e.len, img.capacity)
		}
		fileEnd = e.start + e.len
		disk = append(disk, span{e.diskBytenr, e.len})
	}
	slices.SortFunc(disk, func(a, b span) int { return cmpU64(a.start, b.start) })
	for i := 1; i < len(disk); i++ {
		if disk[i-1].start+disk[i-1].len > disk[i].start {
			return bad("disk ranges [%d, +%d) and [%d, +%d) are shared", disk[i-1].start, disk[i-1].len, disk[i].start, disk[i].len)
		}
	}
	var csumEnd uint64
	for i, r := range img.csums {
		n := uint64(len(r.sums)) * SectorSize
		switch {
		case !aligned(r.logical) || r.logical < csumEnd:
			return bad("csum run %d at %d unaligned or overlapping", i, r.logical)
		case n > img.capacity || r.logical > img.capacity-n:
			return bad("csum run %d [%d, +%d) beyond the chunk", i, r.logical, n)
		case !covered(disk, r.logical, n):
			return bad("csum run %d [%d, +%d) covers unallocated sectors", i, r.logical, n)
		}
		csumEnd = r.logical + n
	}
	return nil
}

// covered reports whether [start, start+n) lies in the union of the
// sorted, disjoint spans.
func covered(spans []span, start, n uint64) bool {
	end := start + n
	i := sort.Search(len(spans), func(i int) bool { return spans[i].start+spans[i].len > start })
	for ; start < end; i++ {
		if i >= len(spans) || spans[i].start > start {
			return false
		}
		start = spans[i].start + spans[i].len
	}
	return true
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
