package btrfsdio

import (
	"hash/crc32"
	"slices"
	"sync"
)

// castagnoli is btrfs's default data checksum, crc32c.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// csumData is the crc32c of one sector as btrfs stores it (seed ~0, final
// inversion, i.e. the standard CRC-32C).
func csumData(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// csumTree is the checksum tree (file-item.c): crc32c per data sector, keyed
// by logical address.
type csumTree struct {
	mu   sync.RWMutex
	sums map[uint64]uint32
	// dirty lists the disk ranges whose checksums changed since the last
	// commit took them (takeDirty), when track is set.
	dirty    []span
	track    bool
	overflow bool
}

func newCsumTree() *csumTree { return &csumTree{sums: make(map[uint64]uint32)} }

// lookup is btrfs_lookup_csums_list for one sector.
func (c *csumTree) lookup(logical uint64) (uint32, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.sums[logical]
	return s, ok
}

// insert is btrfs_csum_file_blocks: sums[i] belongs to the sector at
// logical + i*SectorSize.
func (c *csumTree) insert(logical uint64, sums []uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.track && len(sums) > 0 {
		c.dirty, c.overflow = appendDirty(c.dirty, c.overflow, span{logical, uint64(len(sums)) * SectorSize})
	}
	for i, s := range sums {
		c.sums[logical+uint64(i)*SectorSize] = s
	}
}

// delete is btrfs_del_csums over [logical, logical+length).
func (c *csumTree) delete(logical, length uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.track && length > 0 {
		c.dirty, c.overflow = appendDirty(c.dirty, c.overflow, span{logical, length})
	}
	for off := uint64(0); off < length; off += SectorSize {
		delete(c.sums, logical+off)
	}
}

// runs lists the checksums as runs of consecutive sectors, sorted (the csum
// items a commit writes).
func (c *csumTree) runs() []csumRun {
	c.mu.RLock()
	keys := make([]uint64, 0, len(c.sums))
	for k := range c.sums {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []csumRun
	for _, k := range keys {
		if n := len(out); n > 0 && out[n-1].logical+uint64(len(out[n-1].sums))*SectorSize == k {
			out[n-1].sums = append(out[n-1].sums, c.sums[k])
			continue
		}
		out = append(out, csumRun{logical: k, sums: []uint32{c.sums[k]}})
	}
	c.mu.RUnlock()
	return out
}

// load inserts committed csum runs.
func (c *csumTree) load(runs []csumRun) {
	for _, r := range runs {
		c.insert(r.logical, r.sums)
	}
}
