package btrfsdio

import (
	"slices"
	"sort"
	"sync"
	"syscall"
)

// freeSpace is the data free-space accounting behind btrfs_reserve_extent and
// btrfs_free_reserved_extent (extent-tree.c, free-space-cache.c), over the
// logical range of the one data chunk. Ranges are sector aligned.
type freeSpace struct {
	mu   sync.Mutex
	free []span // sorted, non-adjacent
	used uint64
}

type span struct{ start, len uint64 }

func newFreeSpace(start, length uint64) *freeSpace {
	return &freeSpace{free: []span{{start, length}}}
}

// newFreeSpaceExcept is the free space of [0, capacity) once the disjoint
// used ranges are taken (what caching the block group from the extent
// tree finds).
func newFreeSpaceExcept(capacity uint64, used []span) *freeSpace {
	used = slices.Clone(used)
	slices.SortFunc(used, func(a, b span) int { return cmpU64(a.start, b.start) })
	f := &freeSpace{}
	at := uint64(0)
	for _, u := range used {
		if u.start > at {
			f.free = append(f.free, span{at, u.start - at})
		}
		at = u.start + u.len
		f.used += u.len
	}
	if at < capacity {
		f.free = append(f.free, span{at, capacity - at})
	}
	return f
}

// reserve is btrfs_reserve_extent: find up to want bytes (at least minLen)
// at or after hint, first fit, wrapping around. A shorter extent is returned
// when no free range is long enough, as btrfs does when space is fragmented.
func (f *freeSpace) reserve(want, minLen, hint uint64) (uint64, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := sort.Search(len(f.free), func(i int) bool { return f.free[i].start+f.free[i].len > hint })
	best := -1
	for n := 0; n < len(f.free); n++ {
		j := (i + n) % len(f.free)
		if f.free[j].len >= want {
			best = j
			break
		}
		if f.free[j].len >= minLen && (best < 0 || f.free[j].len > f.free[best].len) {
			best = j
		}
	}
	if best < 0 {
		return 0, 0, syscall.ENOSPC
	}
	s := &f.free[best]
	start := s.start
	got := min(want, s.len)
	s.start += got
	s.len -= got
	if s.len == 0 {
		f.free = append(f.free[:best], f.free[best+1:]...)
	}
	f.used += got
	return start, got, nil
}

// release is btrfs_free_reserved_extent / the freeing of a dropped extent.
func (f *freeSpace) release(start, length uint64) {
	if length == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.used -= length
	i := sort.Search(len(f.free), func(i int) bool { return f.free[i].start > start })
	f.free = append(f.free, span{})
	copy(f.free[i+1:], f.free[i:])
	f.free[i] = span{start, length}
	// Merge with the neighbours so large extents stay available.
	if i+1 < len(f.free) && f.free[i].start+f.free[i].len == f.free[i+1].start {
		f.free[i].len += f.free[i+1].len
		f.free = append(f.free[:i+1], f.free[i+2:]...)
	}
	if i > 0 && f.free[i-1].start+f.free[i-1].len == f.free[i].start {
		f.free[i-1].len += f.free[i].len
		f.free = append(f.free[:i], f.free[i+1:]...)
	}
}

// usedBytes is the allocated data space.
func (f *freeSpace) usedBytes() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.used
}
