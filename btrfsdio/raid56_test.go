package btrfsdio

import (
	"bytes"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/raid"
)

// TestRaid6RebuildsTwoBadSectorsInAColumn: two corrupt data sectors at the
// same offset of two data stripes of one full stripe are beyond P alone and
// beyond Q with P dropped; the mirrors past 3 (one per stripe, as the
// kernel's btrfs_num_copies gives RAID6) drop a second data stripe and
// rebuild both from P and Q. Every pair of data columns of a 4+2 volume,
// datasum: the file reads back as written.
func TestRaid6RebuildsTwoBadSectorsInAColumn(t *testing.T) {
	fs := newTestFSDevices(t, raid.Raid6, 6, 64*mib, Options{Mode: Bounce, DataSum: true})
	full := fs.Vol.FullStripeLen()
	size := int(2 * full)
	data := blk.AlignedBuffer(size)
	fillPattern(data, 21)
	if _, err := fs.write(0, data, 0); err != nil {
		t.Fatal(err)
	}
	ext := fs.AllocatedExtents()
	if len(ext) != 1 || ext[0][1] < uint64(size) {
		t.Fatalf("want one extent of %d bytes, got %v", size, ext)
	}
	base := ext[0][0]
	fullStart := (base + full - 1) / full * full
	if fullStart+full > base+uint64(size) {
		t.Fatalf("no whole full stripe inside the extent %v", ext)
	}
	nd := uint64(fs.Vol.DataStripes())
	col := uint64(0)
	for a := uint64(0); a < nd; a++ {
		for b := a + 1; b < nd; b++ {
			for _, d := range []uint64{a, b} {
				l := fullStart + d*raid.StripeLen + col*SectorSize
				if _, ok := fs.Csum(l); !ok {
					t.Fatalf("no csum at %d", l)
				}
				corruptCopy(t, fs, l, 1)
			}
			col++
		}
	}
	out := blk.AlignedBuffer(size)
	if _, err := fs.read(0, out, 0); err != nil {
		t.Fatalf("read with two bad sectors per column: %v", err)
	}
	if !bytes.Equal(out, data) {
		t.Fatal("read returned corrupt data")
	}
	if r := fs.Stats().ReadRepairs; r != int64(2*col) {
		t.Fatalf("%d read repairs, want %d", r, 2*col)
	}
	// The repairs were written back: a second read finds nothing to fix.
	if _, err := fs.read(0, out, 0); err != nil || !bytes.Equal(out, data) {
		t.Fatalf("second read: %v, equal %v", err, bytes.Equal(out, data))
	}
	if r := fs.Stats().ReadRepairs; r != int64(2*col) {
		t.Fatalf("second read repaired again (%d repairs): the bad copies were not rewritten", r)
	}
	if n := fs.Vol.NumCopies(0, SectorSize); n != 6 {
		t.Errorf("raid6 over 6 devices: num_copies %d, want 6 (one per stripe)", n)
	}
	fs.checkQuiescent(t)
}

// TestRaid56RMWDoesNotLaunderCorruption: a read-modify-write reads the data
// sectors it does not overwrite to compute the new parity; one that is
// silently corrupt must be verified against its csum and rebuilt from the
// old parity first (kernel 6.2's verify_bio_data_sectors), or the new
// parity is computed from the bad data and the sector can never be rebuilt.
// A 4 KiB write lands in data stripe 1, in the column of a corrupt sector of
// data stripe 0; the corrupt sector still reads back correct afterwards.
func TestRaid56RMWDoesNotLaunderCorruption(t *testing.T) {
	for _, p := range []raid.Profile{raid.Raid5, raid.Raid6} {
		t.Run(p.String(), func(t *testing.T) {
			fs := newTestFS(t, p, 64*mib, Options{Mode: Bounce, DataSum: true})
			first := blk.AlignedBuffer(raid.StripeLen)
			fillPattern(first, 31)
			if _, err := fs.write(0, first, 0); err != nil {
				t.Fatal(err)
			}
			ext := fs.AllocatedExtents()
			full := fs.Vol.FullStripeLen()
			if len(ext) != 1 || ext[0][0]%full != 0 {
				t.Fatalf("want the first extent at a full stripe start, got %v", ext)
			}
			bad := ext[0][0] + 3*SectorSize
			corruptCopy(t, fs, bad, 1)
			second := blk.AlignedBuffer(SectorSize)
			fillPattern(second, 32)
			// Sectors 0..3 of data stripe 1 hold the file's next 16 KiB; the
			// last of them sits in the corrupt sector's column.
			pad := blk.AlignedBuffer(3 * SectorSize)
			fillPattern(pad, 33)
			if _, err := fs.write(raid.StripeLen, append(pad, second...), 0); err != nil {
				t.Fatal(err)
			}
			if !allocated(fs, ext[0][0]+raid.StripeLen, 4*SectorSize) {
				t.Fatalf("the second write went to %v, not data stripe 1 of the same full stripe", fs.AllocatedExtents())
			}
			all := append(append(append([]byte(nil), first...), pad...), second...)
			out := blk.AlignedBuffer(len(all))
			if _, err := fs.read(0, out, 0); err != nil {
				t.Fatalf("read after the read-modify-write: %v", err)
			}
			if !bytes.Equal(out, all) {
				t.Fatal("read returned corrupt data")
			}
			if fs.Stats().ReadRepairs != 1 {
				t.Fatalf("%d read repairs, want 1 (the corrupt sector)", fs.Stats().ReadRepairs)
			}
			fs.checkQuiescent(t)
		})
	}
}

// allocated reports whether [start, start+length) lies in one allocated
// extent.
func allocated(fs *testFS, start, length uint64) bool {
	for _, e := range fs.AllocatedExtents() {
		if e[0] <= start && start+length <= e[0]+e[1] {
			return true
		}
	}
	return false
}
