package btrfsdio

import (
	"slices"
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
	// dirty lists the file ranges replaced since the last commit took
	// them (takeDirty), when track is set: a volume with a metadata area.
	dirty    []span
	track    bool
	overflow bool // more than maxDirtySpans changes: the next commit is a checkpoint
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
	// [lo, hi) are the extents that overlap the range; only they change.
	lo := sort.Search(len(t.extents), func(i int) bool { return t.extents[i].start+t.extents[i].len > start })
	hi := lo
	for hi < len(t.extents) && t.extents[hi].start < end {
		hi++
	}
	var freed []span
	repl := make([]fileExtent, 0, 3)
	for _, e := range t.extents[lo:hi] {
		eEnd := e.start + e.len
		if e.start < start {
			repl = append(repl, fileExtent{e.start, start - e.start, e.diskBytenr})
		}
		ovS, ovE := max(e.start, start), min(eEnd, end)
		freed = append(freed, span{e.diskBytenr + (ovS - e.start), ovE - ovS})
	}
	if diskBytenr != holeAddr {
		repl = append(repl, fileExtent{start, length, diskBytenr})
	}
	// Only the last overlapping extent can run past the range.
	if hi > lo {
		if last := t.extents[hi-1]; last.start+last.len > end {
			repl = append(repl, fileExtent{end, last.start + last.len - end, last.diskBytenr + (end - last.start)})
		}
	}
	t.extents = slices.Replace(t.extents, lo, hi, repl...)
	if t.track && length > 0 {
		t.dirty, t.overflow = appendDirty(t.dirty, t.overflow, span{start, length})
	}
	return freed
}

// holeAddr is EXTENT_MAP_HOLE: replace with it punches a hole.
const holeAddr = ^uint64(0)

// snapshot returns a copy of the mapping, for a commit, the intent log and
// tests.
func (t *fileExtentTree) snapshot() []fileExtent {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return append([]fileExtent(nil), t.extents...)
}
