package btrfsdio

import (
	"sort"
	"sync"
)

// fileExtent is a file extent item: file bytes [start, start+len) live at
// disk_bytenr (a logical address in the data chunk).
type fileExtent struct {
	start, len, diskBytenr uint64
}

// fileExtentTree is the inode's part of the subvolume tree: the committed
// mapping of file offsets to disk, updated when an ordered extent completes
// (btrfs_finish_ordered_io -> insert_reserved_file_extent). Holes have no
// entry.
type fileExtentTree struct {
	mu      sync.RWMutex
	extents []fileExtent // sorted, non-overlapping
}

// lookup is btrfs_get_extent: the extent covering pos, or the hole from pos
// to the next extent (hole=true, diskBytenr unused). length bounds the hole.
func (t *fileExtentTree) lookup(pos, length uint64) (fe fileExtent, hole bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	i := sort.Search(len(t.extents), func(i int) bool { return t.extents[i].start+t.extents[i].len > pos })
	if i < len(t.extents) && t.extents[i].start <= pos {
		return t.extents[i], false
	}
	end := pos + length
	if i < len(t.extents) {
		end = min(end, t.extents[i].start)
	}
	return fileExtent{start: pos, len: end - pos}, true
}

// replace maps [start, start+len) to diskBytenr and returns the disk ranges
// that no longer back any file byte (btrfs_drop_extents). Each of our disk
// extents is referenced by exactly one file range (no reflinks, no
// snapshots), so the dropped part of an old extent is free at once.
func (t *fileExtentTree) replace(start, length, diskBytenr uint64) []span {
	t.mu.Lock()
	defer t.mu.Unlock()
	end := start + length
	var freed []span
	var out []fileExtent
	for _, e := range t.extents {
		eEnd := e.start + e.len
		if eEnd <= start || e.start >= end {
			out = append(out, e)
			continue
		}
		if e.start < start {
			out = append(out, fileExtent{e.start, start - e.start, e.diskBytenr})
		}
		ovS, ovE := max(e.start, start), min(eEnd, end)
		freed = append(freed, span{e.diskBytenr + (ovS - e.start), ovE - ovS})
		if eEnd > end {
			out = append(out, fileExtent{end, eEnd - end, e.diskBytenr + (end - e.start)})
		}
	}
	if diskBytenr != holeAddr {
		out = append(out, fileExtent{start, length, diskBytenr})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	t.extents = out
	return freed
}

// holeAddr is EXTENT_MAP_HOLE: replace with it punches a hole.
const holeAddr = ^uint64(0)

// snapshot returns a copy of the mapping, for scrub and tests.
func (t *fileExtentTree) snapshot() []fileExtent {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return append([]fileExtent(nil), t.extents...)
}
