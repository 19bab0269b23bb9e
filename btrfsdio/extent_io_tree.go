package btrfsdio

import (
	"fmt"
	"sort"
	"sync"
)

// Extent state bits (EXTENT_* in extent-io-tree.h) used by direct IO.
const (
	ExtentLocked    uint32 = 1 << 0 // EXTENT_LOCKED
	ExtentDioLocked uint32 = 1 << 1 // EXTENT_DIO_LOCKED
)

// extentState is struct extent_state: bits set on the inclusive byte range
// [start, end].
type extentState struct {
	start, end uint64
	bits       uint32
}

// ExtentIOTree is struct extent_io_tree, reduced to the range locks direct
// IO takes: a sorted set of non-overlapping states, split and merged as bits
// are set and cleared, with waiters for a range to become free.
//
// mu guards states only; it is never held while the caller runs: a range
// lock is a bit in states, taken under mu and held after it is released
// (across IO for EXTENT_DIO_LOCKED). The range locks nest inside
// Inode.ilock, EXTENT_DIO_LOCKED before EXTENT_LOCKED, and outside
// Inode.orderedMu (see Inode).
type ExtentIOTree struct {
	mu     sync.Mutex
	cond   *sync.Cond
	states []extentState
	// badClears counts clears of bits that were not set: the kernel lets
	// that pass silently, we count it so tests can prove it never happens.
	badClears int
}

// NewExtentIOTree is btrfs_extent_io_tree_init.
func NewExtentIOTree() *ExtentIOTree {
	t := &ExtentIOTree{}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// anySetLocked reports whether any byte of [start, end] has one of bits.
func (t *ExtentIOTree) anySetLocked(start, end uint64, bits uint32) bool {
	i := sort.Search(len(t.states), func(i int) bool { return t.states[i].end >= start })
	for ; i < len(t.states) && t.states[i].start <= end; i++ {
		if t.states[i].bits&bits != 0 {
			return true
		}
	}
	return false
}

// splitAt makes a state boundary at pos (a state [a, b] with a < pos <= b
// becomes [a, pos-1] and [pos, b]).
func (t *ExtentIOTree) splitAt(pos uint64) {
	i := sort.Search(len(t.states), func(i int) bool { return t.states[i].end >= pos })
	if i == len(t.states) || t.states[i].start >= pos {
		return
	}
	s := t.states[i]
	t.states = append(t.states, extentState{})
	copy(t.states[i+2:], t.states[i+1:])
	t.states[i] = extentState{s.start, pos - 1, s.bits}
	t.states[i+1] = extentState{pos, s.end, s.bits}
}

// setBitsLocked is set_extent_bit: bits on every byte of [start, end].
func (t *ExtentIOTree) setBitsLocked(start, end uint64, bits uint32) {
	t.splitAt(start)
	if end != ^uint64(0) {
		t.splitAt(end + 1)
	}
	var out []extentState
	cur := start
	i := sort.Search(len(t.states), func(i int) bool { return t.states[i].end >= start })
	out = append(out, t.states[:i]...)
	for ; i < len(t.states) && t.states[i].start <= end; i++ {
		s := t.states[i]
		if s.start > cur {
			out = append(out, extentState{cur, s.start - 1, bits})
		}
		s.bits |= bits
		out = append(out, s)
		cur = s.end + 1
	}
	if cur <= end {
		out = append(out, extentState{cur, end, bits})
	}
	out = append(out, t.states[i:]...)
	t.states = out
}

// clearBitsLocked is btrfs_clear_extent_bit's core.
func (t *ExtentIOTree) clearBitsLocked(start, end uint64, bits uint32) {
	t.splitAt(start)
	if end != ^uint64(0) {
		t.splitAt(end + 1)
	}
	covered := uint64(0)
	out := t.states[:0]
	for _, s := range t.states {
		if s.start >= start && s.end <= end {
			if s.bits&bits != bits {
				t.badClears++
			}
			covered += s.end - s.start + 1
			s.bits &^= bits
		}
		if s.bits != 0 {
			out = append(out, s)
		}
	}
	if covered != end-start+1 {
		t.badClears++
	}
	t.states = out
	t.cond.Broadcast()
}

// lock waits until no byte of [start, end] has bits, then sets them.
func (t *ExtentIOTree) lock(start, end uint64, bits uint32) {
	t.mu.Lock()
	for t.anySetLocked(start, end, bits) {
		t.cond.Wait()
	}
	t.setBitsLocked(start, end, bits)
	t.mu.Unlock()
}

// tryLock sets bits on [start, end] if none is set there yet.
func (t *ExtentIOTree) tryLock(start, end uint64, bits uint32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.anySetLocked(start, end, bits) {
		return false
	}
	t.setBitsLocked(start, end, bits)
	return true
}

// LockExtent is btrfs_lock_extent.
func (t *ExtentIOTree) LockExtent(start, end uint64) { t.lock(start, end, ExtentLocked) }

// TryLockExtent is btrfs_try_lock_extent.
func (t *ExtentIOTree) TryLockExtent(start, end uint64) bool {
	return t.tryLock(start, end, ExtentLocked)
}

// UnlockExtent is btrfs_unlock_extent.
func (t *ExtentIOTree) UnlockExtent(start, end uint64) { t.ClearExtentBit(start, end, ExtentLocked) }

// LockDioExtent is btrfs_lock_dio_extent.
func (t *ExtentIOTree) LockDioExtent(start, end uint64) { t.lock(start, end, ExtentDioLocked) }

// TryLockDioExtent is btrfs_try_lock_dio_extent.
func (t *ExtentIOTree) TryLockDioExtent(start, end uint64) bool {
	return t.tryLock(start, end, ExtentDioLocked)
}

// UnlockDioExtent is btrfs_unlock_dio_extent.
func (t *ExtentIOTree) UnlockDioExtent(start, end uint64) {
	t.ClearExtentBit(start, end, ExtentDioLocked)
}

// ClearExtentBit is btrfs_clear_extent_bit: clear bits on [start, end] and
// wake waiters.
func (t *ExtentIOTree) ClearExtentBit(start, end uint64, bits uint32) {
	if end < start {
		return
	}
	t.mu.Lock()
	t.clearBitsLocked(start, end, bits)
	t.mu.Unlock()
}

// Held describes the ranges that still carry a bit (no kernel counterpart;
// for tests and diagnostics) ("every extent lock is released").
func (t *ExtentIOTree) Held() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, s := range t.states {
		out = append(out, fmt.Sprintf("[%d,%d] bits %#x", s.start, s.end, s.bits))
	}
	return out
}

// BadClears (no kernel counterpart) is how many times a bit was cleared on
// bytes that did not have
// it (a double unlock, or an unlock of someone else's range).
func (t *ExtentIOTree) BadClears() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.badClears
}
