package raid

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// fuzzImageSize is the image FuzzSuperblockImage opens: every length its
// superblock claims beyond it must be refused.
const fuzzImageSize = 4 << 20

// FuzzSuperblockImage is structure-aware: the fuzzer mutates the encoded
// fields of a valid superblock (the first superUsedBytes bytes; the rest of
// the block stays zero) and the target recomputes the crc32c, so every
// input reaches DecodeSuperblock's range checks (random bytes almost never
// pass the csum), and whatever they accept goes down OpenVolume and
// OpenMetaArea on a real 4 MiB image. Invariants: nothing panics; an
// accepted superblock encodes back to its bytes and its lengths add up
// without overflow within total_bytes; an opened volume's metadata slots
// lie within the image, and reading the root allocates no more than the
// image holds. They are checked before the root is read, so a regression
// fails instead of running out of memory.
func FuzzSuperblockImage(f *testing.F) {
	add := func(sb *Superblock) { f.Add(sb.Encode()[:superUsedBytes]) }
	// What Format writes on one 4 MiB device, committed once.
	slot := metaSlotBytes(1, fuzzImageSize)
	dup := &Superblock{Bytenr: superOffsets[0], Generation: 2, Version: superVersion, Profile: Dup,
		NumDevices: 1, Devid: 1, TotalBytes: fuzzImageSize, ChunkDevBytes: fuzzImageSize - 4*slot,
		MetaSlotBytes: slot, MetaCopies: 2, RootSlot: 1, RootBytes: 8 << 10}
	add(dup)
	raid1 := *dup
	raid1.Profile, raid1.NumDevices, raid1.Devid, raid1.MetaCopies = Raid1, 2, 2, 1
	raid1.ChunkDevBytes = fuzzImageSize - 2*slot
	add(&raid1)
	raid5 := raid1
	raid5.Profile, raid5.NumDevices, raid5.JournalBytes = Raid5, 3, journalFloor(3)
	raid5.ChunkDevBytes = fuzzImageSize - 2*slot - raid5.JournalBytes
	add(&raid5)
	v2 := raid1
	v2.Version = superVersionV2
	add(&v2)
	for _, mutate := range hostileSupers {
		sb := *dup
		mutate(&sb)
		add(&sb)
	}
	path := filepath.Join(f.TempDir(), "fuzz.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		f.Fatal(err)
	}
	if err := os.Truncate(path, fuzzImageSize); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, fields []byte) {
		b := make([]byte, SuperInfoSize)
		copy(b[superCsumSize:superUsedBytes], fields[min(len(fields), superCsumSize):])
		clear(b[56:64]) // no field there: not kept, so not round-tripped
		binary.LittleEndian.PutUint32(b, crc32.Checksum(b[superCsumSize:], castagnoli))
		got, err := DecodeSuperblock(b, superOffsets[0])
		if err != nil {
			return
		}
		if !bytes.Equal(got.Encode(), b) {
			t.Fatal("accepted superblock does not encode back to its bytes")
		}
		hi, area := bits.Mul64(2*uint64(got.MetaCopies), got.MetaSlotBytes)
		end, carry := bits.Add64(got.ChunkDevBytes, area, 0)
		jend, jcarry := bits.Add64(end, got.JournalBytes, 0)
		if jcarry != 0 || jend > got.TotalBytes {
			t.Fatalf("accepted a %d-byte journal after %d bytes in %d bytes", got.JournalBytes, end, got.TotalBytes)
		}
		if hi != 0 || carry != 0 || end > got.TotalBytes || got.RootBytes > got.MetaSlotBytes {
			t.Fatalf("accepted a chunk of %d and a metadata area of 2 x %d x %d with a %d-byte root in %d bytes",
				got.ChunkDevBytes, got.MetaCopies, got.MetaSlotBytes, got.RootBytes, got.TotalBytes)
		}
		openFuzzImage(t, path, got)
	})
}

// openFuzzImage writes sb to every copy of the image at path and opens it
// as OpenVolume and OpenMetaArea do, degraded so that one image of a
// larger volume opens too.
func openFuzzImage(t *testing.T, path string, sb *Superblock) {
	d, err := OpenDevice(path, DeviceOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WriteSuper(sb); err != nil {
		d.Close()
		t.Fatal(err)
	}
	v, _, err := OpenVolume([]*Device{d}, OpenOptions{Profile: AnyProfile, Degraded: true, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		d.Close()
		return
	}
	defer v.Close()
	m, err := OpenMetaArea(v)
	if err != nil {
		return
	}
	root := m.Root()
	for _, s := range []int{0, 1} {
		_, offs := m.copyOffsets(s)
		for _, off := range offs {
			if end, carry := bits.Add64(off, m.SlotBytes(), 0); carry != 0 || end > fuzzImageSize {
				t.Fatalf("metadata slot %d of %d bytes at %d runs past the %d-byte image", s, m.SlotBytes(), off, fuzzImageSize)
			}
		}
	}
	if root.Bytes > m.SlotBytes() {
		t.Fatalf("metadata root of %d bytes in a %d-byte slot", root.Bytes, m.SlotBytes())
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	m.ReadSlot(root.Slot, root.Bytes)
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 2*fuzzImageSize {
		t.Fatalf("reading a %d-byte root allocated %d bytes", root.Bytes, n)
	}
}
