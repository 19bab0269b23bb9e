// Package iomap ports the direct IO half of the kernel's iomap layer
// (fs/iomap/direct-io.c and fs/iomap/iter.c): iomap_dio_rw walks a file range
// extent by extent through a filesystem's iomap_begin/iomap_end, builds bios
// from the user's pages (at most BIO_MAX_VECS bvecs each) and hands them to
// the filesystem's submit_io, counting references until the last bio ends.
package iomap

import (
	"errors"
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
)

// Type is the iomap type (IOMAP_HOLE ...).
type Type uint16

// iomap types from include/linux/iomap.h.
const (
	TypeHole      Type = 0
	TypeDelalloc  Type = 1
	TypeMapped    Type = 2
	TypeUnwritten Type = 3
	TypeInline    Type = 4
)

// NullAddr is IOMAP_NULL_ADDR: no disk address (holes).
const NullAddr = ^uint64(0)

// Flags passed to iomap_begin/iomap_end (IOMAP_WRITE ...).
const (
	FlagWrite  uint = 1 << 0
	FlagDirect uint = 1 << 4
	FlagNowait uint = 1 << 5
)

// Iomap is struct iomap: one mapping of a file range to disk.
type Iomap struct {
	Addr   uint64 // disk byte address, NullAddr for holes
	Offset int64  // file offset of the mapping
	Length uint64
	Type   Type
	Flags  uint16
	// LogicalBlockSize stands for bdev_logical_block_size(iomap->bdev).
	LogicalBlockSize uint32
}

// sector is iomap_sector: the disk sector of file position pos.
func (m *Iomap) sector(pos int64) uint64 {
	return (m.Addr + uint64(pos-m.Offset)) >> blk.SectorShift
}

// Inode is what the iomap layer needs of struct inode.
type Inode interface {
	// ISize is i_size_read.
	ISize() int64
}

// Ops is struct iomap_ops.
type Ops interface {
	// IomapBegin maps [pos, pos+length) and fills m (iomap_begin).
	IomapBegin(it *Iter, pos int64, length uint64, flags uint, m *Iomap) error
	// IomapEnd releases what IomapBegin took; written is what was submitted
	// (iomap_end).
	IomapEnd(it *Iter, pos int64, length uint64, written int64, flags uint, m *Iomap) error
}

// Iter is struct iomap_iter.
type Iter struct {
	Inode     Inode
	Pos       int64
	Len       uint64
	Processed int64 // bytes done in this iteration, or a negative errno
	Flags     uint
	Iomap     Iomap
	// Private is iter->private: the filesystem's per-call data.
	Private any
}

// Length is iomap_length: what is left of the current mapping.
func (it *Iter) Length() uint64 {
	end := uint64(it.Iomap.Offset) + it.Iomap.Length
	if uint64(it.Pos) >= end {
		return 0
	}
	return min(it.Len, end-uint64(it.Pos))
}

// Next is iomap_iter: finish the previous mapping with iomap_end, advance by
// what was processed, and map the next range with iomap_begin. It returns
// true while there is a mapping to process.
func (it *Iter) Next(ops Ops) (bool, error) {
	if it.Iomap.Length != 0 {
		written := max(it.Processed, 0)
		err := ops.IomapEnd(it, it.Pos, it.Length(), written, it.Flags, &it.Iomap)
		if err != nil && it.Processed == 0 {
			return false, err
		}
	}
	more, err := it.advance()
	if err != nil || !more {
		return false, err
	}
	it.Iomap = Iomap{}
	if err := ops.IomapBegin(it, it.Pos, it.Len, it.Flags, &it.Iomap); err != nil {
		return false, err
	}
	if it.Iomap.Length == 0 || it.Iomap.Offset > it.Pos {
		return false, errors.New("iomap: iomap_begin returned a mapping that does not cover pos")
	}
	return true, nil
}

// advance is iomap_iter_advance.
func (it *Iter) advance() (bool, error) {
	if it.Processed < 0 {
		return false, syscall.Errno(-it.Processed)
	}
	if it.Iomap.Length == 0 {
		it.Processed = 0
		return it.Len > 0, nil
	}
	if uint64(it.Processed) > it.Length() {
		return false, errors.New("iomap: processed more than the mapping")
	}
	p := it.Processed
	it.Pos += p
	it.Len -= uint64(p)
	it.Processed = 0
	return it.Len > 0 && p > 0, nil
}
