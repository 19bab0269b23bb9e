package blk

import (
	"fmt"
	"io"
	"reflect"
)

// SameRemote reports whether a and b are the same remote memory, so that
// pages of both can be copied in one run; memory of a type that cannot be
// compared never is (no kernel counterpart: kernel pages need no such test).
func SameRemote(a, b RemoteMemory) bool {
	return a != nil && reflect.TypeOf(a).Comparable() && a == b
}

// CopyFromBio copies the data of bio under iter into dst (its first
// iter.Size bytes): memcpy_from_bvec over bio_for_each_bvec, except that
// remote pages that follow one another in the same remote memory are read
// with one ReadAt (one pread of a ublk request instead of one per page).
func CopyFromBio(bio *Bio, iter BvecIter, dst []byte) error {
	if len(dst) < int(iter.Size) {
		return fmt.Errorf("blk: copy of %d bytes of bio into %d", iter.Size, len(dst))
	}
	var run struct {
		mem    RemoteMemory
		off    int64
		pos, n int
	}
	flush := func() error {
		if run.n == 0 {
			return nil
		}
		b := dst[run.pos : run.pos+run.n]
		run.n = 0
		if n, err := run.mem.ReadAt(b, run.off); n != len(b) {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("blk: read %d of %d bytes of remote memory at %d: %w", n, len(b), run.off, err)
		}
		return nil
	}
	pos := 0
	err := bio.ForEachBvec(iter, func(bv BioVec) error {
		defer func() { pos += int(bv.Len) }()
		mem, base := bv.Page.Remote()
		if mem == nil {
			if err := flush(); err != nil {
				return err
			}
			return bv.Page.ReadAt(dst[pos:pos+int(bv.Len)], int(bv.Offset))
		}
		off := base + int64(bv.Offset)
		if run.n > 0 && SameRemote(mem, run.mem) && off == run.off+int64(run.n) {
			run.n += int(bv.Len)
			return nil
		}
		if err := flush(); err != nil {
			return err
		}
		run.mem, run.off, run.pos, run.n = mem, off, pos, int(bv.Len)
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}
