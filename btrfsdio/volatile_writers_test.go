package btrfsdio

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/raid"
)

// Volatile writers, after fio's verify and xfstests' volatile direct IO
// reproducers: every 512-byte unit of a writer's buffer is tagged with its
// file offset and an iteration word, the rest of the unit derived from both,
// so a unit read back is recognisable as one whole iteration of one offset,
// or as torn (bytes of two iterations), stale or foreign.
//
// Each writer owns one buffer and one file range and keeps writing it, and
// its buffer changes while each write is in flight, but only at the moment
// that matters: when a bbio of the write is handed to SubmitBbio, the units
// it carries become the next iteration in the user buffer (volatileHook, on
// the writer's own goroutine, before any device sees the bbio). A correct
// bounce copied those units before submitting, so every copy gets iteration
// k whole while the buffer ends at k+1. Zero-copy, a copy made after
// submission, or a bounce folio given back (and reused by another writer)
// before the devices are done all put something else on disk. A scribbler
// running free would also tear a correct bounce's copy, since it races with
// the copy itself, so "torn = fail" needs this discipline.
const (
	vUnit   = blk.SectorSize
	vMagic  = uint64(0xB0C5)
	vRegion = 4 * mib // file range of writer i starts at i*vRegion
)

// vWord is word i (2 and up) of the unit at file offset off, iteration iter.
func vWord(off, iter uint64, i int) uint64 {
	x := off*0x9E3779B97F4A7C15 ^ iter*0xC2B2AE3D27D4EB4F ^ uint64(i)*0x165667B19E3779F9
	x ^= x >> 29
	x *= 0xBF58476D1CE4E5B9
	return x ^ x>>32
}

// fillUnit makes u iteration iter of the unit at file offset off.
func fillUnit(u []byte, off, iter uint64) {
	binary.LittleEndian.PutUint64(u, vMagic<<48|off/vUnit)
	binary.LittleEndian.PutUint64(u[8:], iter)
	for i := 2; i < vUnit/8; i++ {
		binary.LittleEndian.PutUint64(u[8*i:], vWord(off, iter, i))
	}
}

// parseUnit returns the file offset and iteration u holds, ok only when u is
// exactly one whole iteration of one unit.
func parseUnit(u []byte) (off, iter uint64, ok bool) {
	w0 := binary.LittleEndian.Uint64(u)
	if w0>>48 != vMagic {
		return 0, 0, false
	}
	off, iter = (w0&(1<<48-1))*vUnit, binary.LittleEndian.Uint64(u[8:])
	for i := 2; i < vUnit/8; i++ {
		if binary.LittleEndian.Uint64(u[8*i:]) != vWord(off, iter, i) {
			return 0, 0, false
		}
	}
	return off, iter, true
}

type vWriter struct {
	start uint64
	buf   []byte // outside the Go heap: changed under the devices on purpose
	folio int
}

// volatileHook changes the writers' buffers in flight.
type volatileHook struct {
	writers   []*vWriter
	mutations atomic.Int64
}

// submitted turns the units a write bbio carries into their next iteration
// in the writer's buffer (FsInfo.submitted).
func (h *volatileHook) submitted(bbio *Bio) {
	start, end := bbio.FileOffset, bbio.FileOffset+uint64(bbio.Bio.Size())
	for off := start; off < end; off += vUnit {
		if off/vRegion >= uint64(len(h.writers)) {
			return
		}
		w := h.writers[off/vRegion]
		rel := off - w.start
		if rel+vUnit > uint64(len(w.buf)) {
			continue
		}
		u := w.buf[rel : rel+vUnit]
		fillUnit(u, off, binary.LittleEndian.Uint64(u[8:])+1)
		h.mutations.Add(1)
	}
}

// vSizes are the writers' request sizes: below, at and above the 1 MiB a
// bounce bbio carries, so requests take one, one and three bbios.
var vSizes = []int{256 << 10, mib, 5 * mib / 2}

// runVolatileWriters runs six writers for rounds rounds of perRound writes
// each and, after every round, reads every copy of every sector they wrote.
// It returns what the check found wrong (at most a few messages) and how
// many units were wrong in all.
func runVolatileWriters(t *testing.T, p raid.Profile, opts Options, rounds, perRound int) ([]string, int) {
	fs := newTestFS(t, p, 64*mib, opts)
	h := &volatileHook{}
	for i := 0; i < 6; i++ {
		w := &vWriter{start: uint64(i) * vRegion, buf: mmapBuf(t, vSizes[i%len(vSizes)]), folio: []int{0, 2 * mib}[i%2]}
		for u := 0; u < len(w.buf); u += vUnit {
			fillUnit(w.buf[u:u+vUnit], w.start+uint64(u), 0)
		}
		h.writers = append(h.writers, w)
	}
	fs.submitted = h.submitted
	var msgs []string
	bad := 0
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		errs := make(chan error, len(h.writers))
		for _, w := range h.writers {
			wg.Add(1)
			go func(w *vWriter) {
				defer wg.Done()
				for i := 0; i < perRound; i++ {
					if n, err := fs.write(int64(w.start), w.buf, w.folio); err != nil || n != len(w.buf) {
						errs <- fmt.Errorf("write of %d bytes at %d: %d, %v", len(w.buf), w.start, n, err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		m, n := h.check(t, fs)
		msgs = append(msgs, m...)
		bad += n
	}
	if h.mutations.Load() == 0 {
		t.Fatal("no buffer was changed in flight: SubmitBbio saw no write of the writers")
	}
	if len(msgs) > 5 {
		msgs = msgs[:5]
	}
	return msgs, bad
}

// check reads every copy of every sector the writers wrote. Each copy must
// equal the state the writer's buffer had when its last write was
// submitted: every unit whole, of its own offset, one iteration behind the
// buffer (the hook moved the buffer on as the write was submitted). And the
// copies must agree.
func (h *volatileHook) check(t *testing.T, fs *testFS) ([]string, int) {
	t.Helper()
	var msgs []string
	bad := 0
	report := func(format string, args ...any) {
		bad++
		if len(msgs) < 5 {
			msgs = append(msgs, fmt.Sprintf(format, args...))
		}
	}
	for wi, w := range h.writers {
		for pos := 0; pos < len(w.buf); pos += SectorSize {
			fo := w.start + uint64(pos)
			fe, hole := fs.inode.extents.lookup(fo, SectorSize)
			if hole {
				t.Fatalf("writer %d: file offset %d is a hole after its writes", wi, fo)
			}
			logical := fe.diskBytenr + (fo - fe.start)
			var first []byte
			for m := 1; m <= fs.Vol.NumCopies(logical, SectorSize); m++ {
				data, err := fs.readMirrorSector(logical, m)
				if err != nil {
					t.Fatalf("writer %d: read of logical %d mirror %d: %v", wi, logical, m, err)
				}
				if first == nil {
					first = data
				} else if !bytes.Equal(data, first) {
					report("writer %d, file offset %d: copy %d differs from copy 1", wi, fo, m)
				}
				for j := 0; j < SectorSize; j += vUnit {
					uoff := fo + uint64(j)
					want := binary.LittleEndian.Uint64(w.buf[pos+j+8:]) - 1
					off, iter, ok := parseUnit(data[j : j+vUnit])
					switch {
					case !ok:
						report("writer %d, file offset %d, copy %d: not one whole iteration (torn, stale or foreign bytes)", wi, uoff, m)
					case off != uoff:
						report("writer %d, file offset %d, copy %d: holds the unit of file offset %d", wi, uoff, m, off)
					case iter != want:
						report("writer %d, file offset %d, copy %d: iteration %d, but the buffer was at iteration %d when the write was submitted", wi, uoff, m, iter, want)
					}
				}
			}
		}
	}
	return msgs, bad
}

// vModes are the fixes the volatile writers run against: the seed's bounce
// (the pooled default, its page-by-page loop in the fixed port with the
// bounce pool off, and the seed as posted), then upstream's later answers:
// the buffered fallback of duplicated profiles and the generic bounce.
var vModes = []struct {
	name string
	opts Options
}{
	{"pooled", Options{Mode: Bounce}},
	{"page-by-page", Options{Mode: Bounce, BouncePool: NoBouncePool}},
	{"faithful", Options{Mode: Bounce, Faithful: true}},
	{"fallback", Options{Mode: Fallback}},
	{"iomap-bounce", Options{Mode: IomapBounce}},
}
