package btrfsdio

import (
	"bytes"
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/raid"
)

// fixModes are the three answers to bugzilla 99171 the port runs.
var fixModes = []DioMode{Bounce, Fallback, IomapBounce}

// TestFixesMirrorsAgreeUnderScribble: with a buffer scribbled on while the
// writes are in flight (raceMirrors, the reproducer TestZeroCopyMirrorsDiverge
// shows diverging), no fix leaves copies that differ, on every profile with
// more than one copy or parity.
func TestFixesMirrorsAgreeUnderScribble(t *testing.T) {
	for _, m := range fixModes {
		for _, p := range append([]raid.Profile{raid.Dup}, raceProfiles...) {
			t.Run(m.String()+"/"+p.String(), func(t *testing.T) {
				diffs, writes := raceMirrors(t, p, m, 32, false)
				if diffs != 0 {
					t.Fatalf("%v %v: %d differing sectors after %d racing writes", p, m, diffs, writes)
				}
			})
		}
	}
}

// TestModesChooseTheirPath: fallback sends direct writes of duplicated
// profiles through the buffered path and keeps SINGLE and RAID0 zero-copy
// (7c2830f00c3e); iomap-bounce never falls back, not even for datasum
// (file 18), and bounces exactly where need_stable_write says; the
// volatile-buffer detector runs in zero-copy mode only.
func TestModesChooseTheirPath(t *testing.T) {
	for _, p := range raid.Profiles() {
		dup := p != raid.Single && p != raid.Raid0
		for _, m := range DioModes() {
			for _, datasum := range []bool{false, true} {
				fs := newTestFS(t, p, 48*mib, Options{Mode: m, DataSum: datasum})
				buf := blk.AlignedBuffer(mib)
				fillPattern(buf, 5)
				if _, err := fs.write(0, buf, 0); err != nil {
					t.Fatalf("%v %v datasum=%v: %v", p, m, datasum, err)
				}
				st := fs.Stats()
				wantBuffered := datasum && m != IomapBounce || m == Fallback && dup
				if got := st.BufferedWrites != 0; got != wantBuffered {
					t.Errorf("%v %v datasum=%v: buffered %v, want %v", p, m, datasum, got, wantBuffered)
				}
				if got, want := fs.Inode().needStableWrite(), datasum || dup; got != want {
					t.Errorf("%v datasum=%v: need_stable_write %v, want %v", p, datasum, got, want)
				}
				if got, want := st.VolatileChecked != 0, m == ZeroCopy && !wantBuffered; got != want {
					t.Errorf("%v %v datasum=%v: volatile detector ran %v, want %v", p, m, datasum, got, want)
				}
				out := blk.AlignedBuffer(mib)
				if _, err := fs.read(0, out, 0); err != nil || !bytes.Equal(out, buf) {
					t.Fatalf("%v %v datasum=%v: read back: %v", p, m, datasum, err)
				}
				fs.checkQuiescent(t)
			}
		}
	}
}

// TestIomapBounceENOMEMAtEveryAllocation fails the generic bounce's folio
// allocations of a 2 MiB RAID1 write, one refused (folio_alloc_greedy takes
// a smaller folio: the write succeeds) and all refused from each one on
// (the write fails with ENOMEM). Every ordered byte is finished once, no
// lock is held, no folio leaks, and the data on disk is the old or the new.
func TestIomapBounceENOMEMAtEveryAllocation(t *testing.T) {
	const size = 2 * mib
	for _, datasum := range []bool{false, true} {
		fs := newTestFS(t, raid.Raid1, 64*mib, Options{Mode: IomapBounce, DataSum: datasum})
		old := blk.AlignedBuffer(size)
		fillPattern(old, 1)
		if _, err := fs.write(0, old, 0); err != nil {
			t.Fatal(err)
		}
		for i := int64(1); i <= 12; i++ {
			for _, stays := range []bool{false, true} {
				if stays && i > 2 {
					continue // a clean write makes two allocation calls
				}
				data := blk.AlignedBuffer(size)
				fillPattern(data, uint64(100*i))
				before := fs.Stats()
				if stays {
					fs.Pages.FailFrom(i)
				} else {
					fs.Pages.FailAt(i)
				}
				_, err := fs.write(0, data, 0)
				fs.Pages.FailFrom(0)
				fs.Pages.FailAt(0)
				if stays != (err != nil) || stays && !errors.Is(err, syscall.ENOMEM) {
					t.Fatalf("datasum=%v allocation %d refused (for good: %v): %v", datasum, i, stays, err)
				}
				// A short bio ends the mapping early: iomap_end cancels the
				// rest of its ordered extent and the next mapping makes a
				// new one, so a failed write may finish more ordered bytes
				// than it has; checkQuiescent sees that none is finished
				// twice or left.
				if got := fs.Stats().OrderedBytesFinished - before.OrderedBytesFinished; got != size && !stays || got < size {
					t.Fatalf("datasum=%v allocation %d: %d ordered bytes finished, want %d", datasum, i, got, size)
				}
				fs.checkQuiescent(t)
				out := blk.AlignedBuffer(size)
				if _, err := fs.read(0, out, 0); err != nil {
					t.Fatal(err)
				}
				for off := 0; off < size; off += SectorSize {
					got := out[off : off+SectorSize]
					if !bytes.Equal(got, data[off:off+SectorSize]) && !bytes.Equal(got, old[off:off+SectorSize]) {
						t.Fatalf("datasum=%v allocation %d: sector at %d is neither old nor new", datasum, i, off)
					}
				}
				if !stays && !bytes.Equal(out, data) {
					t.Fatalf("datasum=%v allocation %d refused once: write succeeded but data differs", datasum, i)
				}
				copy(old, out)
			}
		}
	}
}

// TestParseDioMode: every mode's name parses back to it; others are refused
// with the list.
func TestParseDioMode(t *testing.T) {
	for _, m := range DioModes() {
		if got, err := ParseDioMode(m.String()); err != nil || got != m {
			t.Fatalf("%q: %v %v", m.String(), got, err)
		}
	}
	if _, err := ParseDioMode("buffered"); err == nil || !strings.Contains(err.Error(), "iomap-bounce") {
		t.Fatalf("unknown mode: %v", err)
	}
}
