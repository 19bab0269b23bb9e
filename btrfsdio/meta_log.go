package btrfsdio

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// The metadata log: a commit writes only what changed since the last one.
// The slot the superblock names holds a checkpoint (a full image, meta.go's
// format, unchanged since version 1) followed by log records, one per
// commit since that checkpoint; the superblock's root length covers the
// checkpoint and every committed record, so a record is part of the root
// only once it was written and flushed and a superblock then named it. A
// commit appends its record right after the root's end in the same slot
// (bytes no superblock names yet), flushes, then writes the superblocks
// with the longer length. When the log outgrows its budget (as many bytes
// as the checkpoint, at least metaLogMinBudget, within the slot) or a
// device lacks part of it, the commit writes a new checkpoint to the other
// slot instead, as every commit did before.
//
// This is what btrfs gets from two mechanisms: btrfs_commit_transaction
// copies on write only the tree blocks a transaction dirtied (so a commit
// costs what changed, not the tree's size), and the tree log
// (tree-log.c, btrfs_sync_log) makes fsync write only the inode's changed
// items, replayed at mount by btrfs_recover_log_trees. Here one inode's
// whole metadata is a flat image, so the delta record plays both parts.
//
// A record is a run of metaBlockSize blocks with meta.go's block header
// but the magic "BDIOMLOG", its own version and the generation of its
// commit; index and count number the record's own blocks. Its payload:
//
//	fsid [16]byte, i_size u64, inode flags u32, zero u32,
//	file ranges u64, extents u64, disk ranges u64, csum runs u64,
//	stream length u64,
//	file ranges: start u64, length u64 (sorted, disjoint)
//	extents: file offset u64, length u64, disk bytenr u64 (sorted, each
//	  inside a file range): the whole mapping of the file ranges
//	disk ranges: start u64, length u64 (sorted, disjoint)
//	csum runs: logical u64, count u32, count crc32c u32 (sorted, inside
//	  the disk ranges): every checksum of the disk ranges
//
// Replay (decodeMetaLog) takes the checkpoint, then for every record drops
// what the image maps in the file ranges and the checksums in the disk
// ranges, and puts the record's items in: a record states the content of
// its ranges, not an operation, so the result is the mapping at that
// commit. Records must carry increasing generations and this volume's
// fsid; anything inside the root's length that fails to decode makes the
// copy corrupt (the next copy is tried), since it was flushed before the
// superblock named it. Bytes after the root's length, a record torn by a
// crash before its superblock, are never read.
const (
	metaLogMagic     = "BDIOMLOG"
	metaLogVersion   = 1
	metaLogHeaderLen = 72
	metaRangeLen     = 16
	// metaLogMinBudget is the least log a checkpoint allows before the
	// next one, so that small images do not checkpoint at every commit.
	metaLogMinBudget = 1 << 20
)

// metaDelta is one commit's change: the full content of the file ranges
// and disk ranges it touched, and the inode's i_size and flags.
type metaDelta struct {
	fsid       [16]byte
	generation uint64
	size       uint64
	flags      uint32
	fileRanges []span
	extents    []fileExtent
	diskRanges []span
	csums      []csumRun
}

// empty reports whether the delta changes no item.
func (d *metaDelta) empty() bool { return len(d.fileRanges) == 0 && len(d.diskRanges) == 0 }

// encodeMetaDelta serialises d into whole blocks.
func encodeMetaDelta(d *metaDelta) []byte {
	le := binary.LittleEndian
	stream := make([]byte, metaLogHeaderLen, metaLogHeaderLen+len(d.fileRanges)*metaRangeLen+len(d.extents)*metaExtentLen)
	copy(stream, d.fsid[:])
	le.PutUint64(stream[16:], d.size)
	le.PutUint32(stream[24:], d.flags)
	le.PutUint64(stream[32:], uint64(len(d.fileRanges)))
	le.PutUint64(stream[40:], uint64(len(d.extents)))
	le.PutUint64(stream[48:], uint64(len(d.diskRanges)))
	le.PutUint64(stream[56:], uint64(len(d.csums)))
	for _, r := range d.fileRanges {
		stream = le.AppendUint64(stream, r.start)
		stream = le.AppendUint64(stream, r.len)
	}
	stream = appendExtents(stream, d.extents)
	for _, r := range d.diskRanges {
		stream = le.AppendUint64(stream, r.start)
		stream = le.AppendUint64(stream, r.len)
	}
	stream = appendCsums(stream, d.csums)
	le.PutUint64(stream[64:], uint64(len(stream)))
	return sealStream(stream, metaLogMagic, metaLogVersion, d.generation)
}

// sealStream cuts stream into blocks with headers of magic and version.
func sealStream(stream []byte, magic string, version uint32, generation uint64) []byte {
	le := binary.LittleEndian
	nblocks := max(1, (len(stream)+metaBlockPayload-1)/metaBlockPayload)
	out := make([]byte, nblocks*metaBlockSize)
	for i := 0; i < nblocks; i++ {
		b := out[i*metaBlockSize : (i+1)*metaBlockSize]
		copy(b[4:12], magic)
		le.PutUint32(b[12:], version)
		le.PutUint64(b[16:], generation)
		le.PutUint32(b[24:], uint32(i))
		le.PutUint32(b[28:], uint32(nblocks))
		copy(b[metaBlockHeader:], stream[min(len(stream), i*metaBlockPayload):])
		le.PutUint32(b[0:], csumData(b[4:]))
	}
	return out
}

// blockRun checks the block headers of the run of blocks that starts b
// (its length is block 0's count) and returns the run's length in bytes,
// its generation and its payload.
func blockRun(b []byte, magic string, version uint32) (int, uint64, []byte, error) {
	le := binary.LittleEndian
	if len(b) < metaBlockSize {
		return 0, 0, nil, fmt.Errorf("%w: %d bytes left, not a block", ErrCorruptMeta, len(b))
	}
	gen, nblocks := le.Uint64(b[16:]), uint64(le.Uint32(b[28:]))
	if nblocks == 0 || nblocks > uint64(len(b)/metaBlockSize) {
		return 0, 0, nil, fmt.Errorf("%w: a run of %d blocks in %d bytes", ErrCorruptMeta, nblocks, len(b))
	}
	payload := make([]byte, 0, nblocks*metaBlockPayload)
	for i := 0; i < int(nblocks); i++ {
		blk := b[i*metaBlockSize : (i+1)*metaBlockSize]
		switch {
		case le.Uint32(blk) != csumData(blk[4:]):
			return 0, 0, nil, fmt.Errorf("%w: block %d: csum %#x, computed %#x", ErrCorruptMeta, i, le.Uint32(blk), csumData(blk[4:]))
		case string(blk[4:12]) != magic:
			return 0, 0, nil, fmt.Errorf("%w: block %d: bad magic %q, want %q", ErrCorruptMeta, i, blk[4:12], magic)
		case le.Uint32(blk[12:]) != version:
			return 0, 0, nil, fmt.Errorf("%w: block %d: version %d, this program knows %d", ErrCorruptMeta, i, le.Uint32(blk[12:]), version)
		case le.Uint64(blk[16:]) != gen:
			return 0, 0, nil, fmt.Errorf("%w: block %d: generation %d, block 0 has %d (left from another commit)", ErrCorruptMeta, i, le.Uint64(blk[16:]), gen)
		case le.Uint32(blk[24:]) != uint32(i) || uint64(le.Uint32(blk[28:])) != nblocks:
			return 0, 0, nil, fmt.Errorf("%w: block %d says it is block %d of %d, want of %d", ErrCorruptMeta, i, le.Uint32(blk[24:]), le.Uint32(blk[28:]), nblocks)
		}
		payload = append(payload, blk[metaBlockHeader:]...)
	}
	return int(nblocks) * metaBlockSize, gen, payload, nil
}

// decodeMetaDelta decodes and checks one record at the start of b and
// returns it with its length in bytes: btrfs_validate_extent_buffer and
// the tree-checker for a log leaf.
func decodeMetaDelta(b []byte) (*metaDelta, int, error) {
	le := binary.LittleEndian
	n, gen, payload, err := blockRun(b, metaLogMagic, metaLogVersion)
	if err != nil {
		return nil, 0, err
	}
	d := &metaDelta{generation: gen}
	copy(d.fsid[:], payload)
	d.size, d.flags = le.Uint64(payload[16:]), le.Uint32(payload[24:])
	nFile, nExt, nDisk, nRuns, streamLen := le.Uint64(payload[32:]), le.Uint64(payload[40:]),
		le.Uint64(payload[48:]), le.Uint64(payload[56:]), le.Uint64(payload[64:])
	switch {
	case gen == 0:
		return nil, 0, fmt.Errorf("%w: log record of generation 0", ErrCorruptMeta)
	case le.Uint32(payload[28:]) != 0:
		return nil, 0, fmt.Errorf("%w: log record: reserved header field set", ErrCorruptMeta)
	case streamLen < metaLogHeaderLen || streamLen > uint64(len(payload)) ||
		(streamLen+metaBlockPayload-1)/metaBlockPayload != uint64(n/metaBlockSize):
		return nil, 0, fmt.Errorf("%w: log record: stream of %d bytes in %d blocks", ErrCorruptMeta, streamLen, n/metaBlockSize)
	case !allZero(payload[streamLen:]):
		return nil, 0, fmt.Errorf("%w: log record: bytes after the stream", ErrCorruptMeta)
	}
	p := payload[metaLogHeaderLen:streamLen]
	// Every count is held against the bytes that would hold it first.
	if nFile > uint64(len(p))/metaRangeLen || nExt > uint64(len(p))/metaExtentLen ||
		nDisk > uint64(len(p))/metaRangeLen || nRuns > uint64(len(p))/metaRunHeaderLen ||
		nFile*metaRangeLen+nExt*metaExtentLen+nDisk*metaRangeLen > uint64(len(p)) {
		return nil, 0, fmt.Errorf("%w: log record: %d file ranges, %d extents, %d disk ranges do not fit %d bytes", ErrCorruptMeta, nFile, nExt, nDisk, len(p))
	}
	ranges := func(k uint64) []span {
		out := make([]span, k)
		for i := range out {
			out[i] = span{le.Uint64(p), le.Uint64(p[8:])}
			p = p[metaRangeLen:]
		}
		return out
	}
	d.fileRanges = ranges(nFile)
	d.extents = make([]fileExtent, nExt)
	for i := range d.extents {
		d.extents[i] = fileExtent{start: le.Uint64(p), len: le.Uint64(p[8:]), diskBytenr: le.Uint64(p[16:])}
		p = p[metaExtentLen:]
	}
	d.diskRanges = ranges(nDisk)
	for r := uint64(0); r < nRuns; r++ {
		if len(p) < metaRunHeaderLen {
			return nil, 0, fmt.Errorf("%w: log record: csum run %d of %d truncated", ErrCorruptMeta, r, nRuns)
		}
		run := csumRun{logical: le.Uint64(p)}
		k := uint64(le.Uint32(p[8:]))
		p = p[metaRunHeaderLen:]
		if k == 0 || k > uint64(len(p))/4 {
			return nil, 0, fmt.Errorf("%w: log record: csum run %d has %d sums, %d bytes left", ErrCorruptMeta, r, k, len(p))
		}
		run.sums = make([]uint32, k)
		for i := range run.sums {
			run.sums[i] = le.Uint32(p[4*i:])
		}
		p = p[4*k:]
		d.csums = append(d.csums, run)
	}
	if len(p) != 0 {
		return nil, 0, fmt.Errorf("%w: log record: %d bytes after the last csum run", ErrCorruptMeta, len(p))
	}
	if err := d.check(); err != nil {
		return nil, 0, err
	}
	return d, n, nil
}

// check is the tree-checker of a record's shape: ranges aligned, sorted,
// disjoint and not empty; items sorted, disjoint and inside the ranges.
// What they map is checked on the replayed image (validate).
func (d *metaDelta) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: log record of generation %d: "+format, append([]any{ErrCorruptMeta, d.generation}, args...)...)
	}
	sorted := func(s []span) bool {
		var end uint64
		for i, r := range s {
			if r.len == 0 || r.start%SectorSize != 0 || r.len%SectorSize != 0 || r.start+r.len < r.start || (i > 0 && r.start < end) {
				return false
			}
			end = r.start + r.len
		}
		return true
	}
	if !sorted(d.fileRanges) || !sorted(d.diskRanges) {
		return bad("ranges unaligned, empty, unsorted or overlapping")
	}
	ext := make([]span, len(d.extents))
	for i, e := range d.extents {
		ext[i] = span{e.start, e.len}
	}
	runs := make([]span, len(d.csums))
	for i, r := range d.csums {
		runs[i] = span{r.logical, uint64(len(r.sums)) * SectorSize}
	}
	switch {
	case !sorted(ext) || !sorted(runs):
		return bad("items unaligned, unsorted or overlapping")
	case !inside(ext, d.fileRanges):
		return bad("an extent lies outside the record's file ranges")
	case !inside(runs, d.diskRanges):
		return bad("a csum run lies outside the record's disk ranges")
	}
	return nil
}

// inside reports whether every span of items (sorted, disjoint) lies in
// one of ranges (sorted, disjoint).
func inside(items, ranges []span) bool {
	for _, it := range items {
		i := sort.Search(len(ranges), func(i int) bool { return ranges[i].start+ranges[i].len > it.start })
		if i == len(ranges) || ranges[i].start > it.start || it.start+it.len > ranges[i].start+ranges[i].len {
			return false
		}
	}
	return true
}

// apply is replay_one_buffer for one record: img's items in the record's
// ranges give way to the record's, in one pass over each list.
func (img *metaImage) apply(d *metaDelta) {
	img.generation, img.size, img.flags = d.generation, d.size, d.flags
	if len(d.fileRanges) > 0 {
		kept := make([]fileExtent, 0, len(img.extents)+len(d.extents))
		cutOut(len(img.extents), d.fileRanges, func(i int) (uint64, uint64) { return img.extents[i].start, img.extents[i].len },
			func(i int, start, n uint64) {
				e := img.extents[i]
				kept = append(kept, fileExtent{start, n, e.diskBytenr + (start - e.start)})
			})
		img.extents = mergeSorted(kept, d.extents, func(e fileExtent) uint64 { return e.start })
	}
	if len(d.diskRanges) > 0 {
		kept := make([]csumRun, 0, len(img.csums)+len(d.csums))
		cutOut(len(img.csums), d.diskRanges, func(i int) (uint64, uint64) {
			return img.csums[i].logical, uint64(len(img.csums[i].sums)) * SectorSize
		}, func(i int, start, n uint64) {
			r := img.csums[i]
			off := (start - r.logical) / SectorSize
			kept = append(kept, csumRun{start, r.sums[off : off+n/SectorSize]})
		})
		img.csums = mergeSorted(kept, d.csums, func(r csumRun) uint64 { return r.logical })
	}
}

// compose folds the later record d into the delta s: s's items in d's
// ranges give way to d's, and s covers both deltas' ranges, so applying s
// is applying s's records then d.
func (s *metaDelta) compose(d *metaDelta) {
	items := &metaImage{extents: s.extents, csums: s.csums}
	items.apply(d)
	s.extents, s.csums = items.extents, items.csums
	if len(d.fileRanges) > 0 {
		s.fileRanges = mergeSpans(append(s.fileRanges, d.fileRanges...))
	}
	if len(d.diskRanges) > 0 {
		s.diskRanges = mergeSpans(append(s.diskRanges, d.diskRanges...))
	}
	s.generation, s.size, s.flags = d.generation, d.size, d.flags
}

// cutOut calls keep with every piece of the n sorted, disjoint items
// (item(i) is its start and length) that lies outside ranges (sorted,
// disjoint), in order.
func cutOut(n int, ranges []span, item func(int) (uint64, uint64), keep func(i int, start, n uint64)) {
	j := 0
	for i := 0; i < n; i++ {
		start, l := item(i)
		end := start + l
		for j < len(ranges) && ranges[j].start+ranges[j].len <= start {
			j++
		}
		for k := j; k < len(ranges) && ranges[k].start < end; k++ {
			if ranges[k].start > start {
				keep(i, start, ranges[k].start-start)
			}
			start = max(start, ranges[k].start+ranges[k].len)
		}
		if start < end {
			keep(i, start, end-start)
		}
	}
}

// mergeSorted merges two lists sorted by key.
func mergeSorted[T any](a, b []T, key func(T) uint64) []T {
	out := make([]T, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if key(a[0]) <= key(b[0]) {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}

// decodeMetaLog is btrfs_recover_log_trees for the metadata log: it
// decodes a root, the checkpoint at the start of b, then
// every log record after it, replayed in order, then the tree-checker on
// the result. It returns the image and the checkpoint's length in bytes.
func decodeMetaLog(b []byte) (*metaImage, int, error) {
	if len(b) < metaBlockSize {
		return nil, 0, fmt.Errorf("%w: %d bytes, not a block", ErrCorruptMeta, len(b))
	}
	nblocks := uint64(binary.LittleEndian.Uint32(b[28:]))
	if nblocks == 0 || nblocks > uint64(len(b)/metaBlockSize) {
		return nil, 0, fmt.Errorf("%w: a checkpoint of %d blocks in %d bytes", ErrCorruptMeta, nblocks, len(b))
	}
	ckpt := int(nblocks) * metaBlockSize
	img, err := decodeMeta(b[:ckpt])
	if err != nil {
		return nil, 0, err
	}
	img.checkpointBytes = uint64(ckpt)
	if ckpt == len(b) {
		return img, ckpt, nil
	}
	// The records are folded into one delta first, which holds about
	// what the log does, then applied to the checkpoint once: a pass over
	// the whole mapping per record would make a mount after a long log of
	// small commits cost records x mapping.
	sum := &metaDelta{generation: img.generation}
	for rest := b[ckpt:]; len(rest) > 0; {
		d, n, err := decodeMetaDelta(rest)
		switch {
		case err != nil:
			return nil, 0, fmt.Errorf("log record at byte %d: %w", len(b)-len(rest), err)
		case d.generation <= sum.generation:
			return nil, 0, fmt.Errorf("%w: log record at byte %d: generation %d after %d", ErrCorruptMeta, len(b)-len(rest), d.generation, sum.generation)
		case d.fsid != img.fsid:
			return nil, 0, fmt.Errorf("%w: log record at byte %d written for volume %x", ErrCorruptMeta, len(b)-len(rest), d.fsid[:4])
		}
		sum.compose(d)
		rest = rest[n:]
	}
	img.apply(sum)
	if err := img.validate(); err != nil {
		return nil, 0, fmt.Errorf("after replaying the log: %w", err)
	}
	return img, ckpt, nil
}

// takeDirty returns the merged file ranges whose mapping changed since the
// last call and the mapping inside them, and starts a new list (the
// caller holds trans.mu exclusive).
func (t *fileExtentTree) takeDirty() ([]span, []fileExtent) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ranges := mergeSpans(t.dirty)
	t.dirty = nil
	var out []fileExtent
	for _, r := range ranges {
		end := r.start + r.len
		i := sort.Search(len(t.extents), func(i int) bool { return t.extents[i].start+t.extents[i].len > r.start })
		for ; i < len(t.extents) && t.extents[i].start < end; i++ {
			e := t.extents[i]
			s, en := max(e.start, r.start), min(e.start+e.len, end)
			out = append(out, fileExtent{s, en - s, e.diskBytenr + (s - e.start)})
		}
	}
	return ranges, out
}

// takeDirty returns the merged disk ranges whose checksums changed since
// the last call and every checksum inside them, as runs, and starts a new
// list.
func (c *csumTree) takeDirty() ([]span, []csumRun) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ranges := mergeSpans(c.dirty)
	c.dirty = nil
	var out []csumRun
	for _, r := range ranges {
		for off := r.start; off < r.start+r.len; off += SectorSize {
			s, ok := c.sums[off]
			if !ok {
				continue
			}
			if n := len(out); n > 0 && out[n-1].logical+uint64(len(out[n-1].sums))*SectorSize == off {
				out[n-1].sums = append(out[n-1].sums, s)
				continue
			}
			out = append(out, csumRun{logical: off, sums: []uint32{s}})
		}
	}
	return ranges, out
}

// trackDirty starts recording the changes the next commit's record holds,
// once the mapping matches the committed root (at mount, before replaying
// the intent log, whose changes are recorded).
func (fs *FsInfo) trackDirty() {
	fs.inode.extents.mu.Lock()
	fs.inode.extents.dirty, fs.inode.extents.track, fs.inode.extents.overflow = nil, true, false
	fs.inode.extents.mu.Unlock()
	fs.csums.mu.Lock()
	fs.csums.dirty, fs.csums.track, fs.csums.overflow = nil, true, false
	fs.csums.mu.Unlock()
}

// maxDirtySpans bounds the changes a tree records between two commits (16
// bytes each): past it the tree stops recording and the next commit is a
// checkpoint, so a long run of writes without a FLUSH does not grow the
// list without bound.
const maxDirtySpans = 1 << 20

// appendDirty records s unless the list is full (overflow).
func appendDirty(dirty []span, overflow bool, s span) ([]span, bool) {
	if overflow || len(dirty) >= maxDirtySpans {
		return nil, true
	}
	return append(dirty, s), false
}

// dirtyEstimate is a guess of the next record's length from the number of
// changes recorded (16 bytes each, a range's least), so that a commit with
// many changes goes to a checkpoint without building a record first (the
// peak memory of a commit after a large change); a wrong guess only moves
// a checkpoint.
func (fs *FsInfo) dirtyEstimate() uint64 {
	fs.inode.extents.mu.RLock()
	n, over := len(fs.inode.extents.dirty), fs.inode.extents.overflow
	fs.inode.extents.mu.RUnlock()
	fs.csums.mu.RLock()
	n, over = n+len(fs.csums.dirty), over || fs.csums.overflow
	fs.csums.mu.RUnlock()
	if over {
		return ^uint64(0)
	}
	return uint64(n) * metaRangeLen
}

// takeDelta is the delta of the running transaction (the caller holds
// trans.mu exclusive).
func (fs *FsInfo) takeDelta() *metaDelta {
	d := &metaDelta{fsid: fs.meta.Fsid(), size: fs.inode.size, flags: fs.inode.inodeFlags()}
	d.fileRanges, d.extents = fs.inode.extents.takeDirty()
	d.diskRanges, d.csums = fs.csums.takeDirty()
	return d
}
