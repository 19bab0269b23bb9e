package btrfsdio

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/btrfsdio/btrfsdio/raid"
)

// metaSeeds are valid metadata images: what commits write.
func metaSeeds() []*metaImage {
	base := func() *metaImage {
		return &metaImage{generation: 3, size: 1 << 20, capacity: 2 << 20,
			extents: []fileExtent{{0, 8192, 4096}, {8192, 4096, 65536}},
			csums:   []csumRun{{4096, []uint32{1, 2}}, {65536, []uint32{3}}}}
	}
	nocow := base()
	nocow.flags, nocow.csums = metaFlagNoDataSum|metaFlagNoDataCow, nil
	empty := base()
	empty.extents, empty.csums = nil, nil
	big := base()
	big.csums = nil
	for i := 0; i < 200; i++ {
		big.extents = append(big.extents, fileExtent{uint64(16384 + i*4096), 4096, uint64(131072 + i*4096)})
	}
	return []*metaImage{base(), nocow, empty, big}
}

// sealBlocks gives every whole block of b the csum of its content, as a
// commit would: what a structure-aware target does after mutating.
func sealBlocks(b []byte) {
	for off := 0; off+metaBlockSize <= len(b); off += metaBlockSize {
		blk := b[off : off+metaBlockSize]
		binary.LittleEndian.PutUint32(blk, csumData(blk[4:]))
	}
}

// allocatedBy runs fn and returns how many bytes it allocated.
func allocatedBy(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// FuzzDecodeMetaSealed is structure-aware: the fuzzer mutates valid
// encoded metadata and the target recomputes every block's csum, so the
// mutation reaches the header checks, the item decode and validate
// (random bytes stop at the crc32c). Invariants: no panic, no allocation
// beyond a few times the input (every count is held against the bytes
// that would hold it), and what is accepted encodes back to its bytes.
func FuzzDecodeMetaSealed(f *testing.F) {
	for _, img := range metaSeeds() {
		f.Add(encodeMeta(img))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sealBlocks(b)
		var img *metaImage
		var err error
		if n := allocatedBy(func() { img, err = decodeMeta(b) }); n > 4*uint64(len(b))+64<<10 {
			t.Fatalf("decoding %d bytes allocated %d", len(b), n)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(encodeMeta(img), b) {
			t.Fatal("accepted metadata does not encode back to its bytes")
		}
	})
}

// fuzzVolumeSize is the image FuzzCheckImage opens.
const fuzzVolumeSize = 4 << 20

// FuzzCheckImage puts the fuzzer's metadata stream on a real 4 MiB DUP
// volume, as the committed root of a new generation, with valid block
// headers and csums and the volume's own fsid and capacity, and runs what
// check and add run on it: Check, then OpenFsInfo. Invariants: no panic,
// and no allocation beyond a few times the image.
func FuzzCheckImage(f *testing.F) {
	path := filepath.Join(testDir(f), "fuzz.img") // tmpfs if there is one: commits flush
	d, err := raid.OpenDevice(path, raid.DeviceOptions{Create: true, Size: fuzzVolumeSize, Logger: quietLog()})
	if err != nil {
		f.Fatal(err)
	}
	vol, _, err := raid.OpenVolume([]*raid.Device{d}, raid.OpenOptions{Profile: raid.Dup, Volume: raid.VolumeOptions{Logger: quietLog()}})
	if err != nil {
		f.Fatal(err)
	}
	capacity := vol.Capacity() &^ (SectorSize - 1)
	vol.Close()
	for _, img := range metaSeeds() {
		img.capacity = capacity
		f.Add(streamOf(encodeMeta(img)))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		d, err := raid.OpenDevice(path, raid.DeviceOptions{Logger: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		vol, _, err := raid.OpenVolume([]*raid.Device{d}, raid.OpenOptions{Profile: raid.AnyProfile, Volume: raid.VolumeOptions{Logger: quietLog()}})
		if err != nil {
			d.Close()
			t.Fatal(err)
		}
		if !commitStream(t, vol, stream) {
			vol.Close()
			return
		}
		if n := allocatedBy(func() {
			Check(vol)
			if fs, err := OpenFsInfo(vol, Options{Mode: Bounce, Log: quietLog()}); err == nil {
				fs.Close()
			} else {
				vol.Close()
			}
		}); n > 16*fuzzVolumeSize {
			t.Fatalf("check and open of a %d-byte image allocated %d bytes", fuzzVolumeSize, n)
		}
	})
}

// streamOf is the stream of encoded metadata: the payloads, concatenated.
func streamOf(b []byte) []byte {
	var s []byte
	for off := 0; off < len(b); off += metaBlockSize {
		s = append(s, b[off+metaBlockHeader:off+metaBlockSize]...)
	}
	return s
}

// commitStream writes stream, with this volume's fsid and capacity, as the
// committed root of the next generation. It reports false when the
// stream does not fit the slot.
func commitStream(t *testing.T, vol *raid.Volume, stream []byte) bool {
	meta, err := raid.OpenMetaArea(vol)
	if err != nil {
		t.Fatal(err)
	}
	stream = append([]byte(nil), stream...)
	if len(stream) < metaHeaderLen {
		stream = append(stream, make([]byte, metaHeaderLen-len(stream))...)
	}
	fsid := meta.Fsid()
	copy(stream, fsid[:])
	binary.LittleEndian.PutUint64(stream[32:], vol.Capacity()&^(SectorSize-1))
	nblocks := (len(stream) + metaBlockPayload - 1) / metaBlockPayload
	b := make([]byte, nblocks*metaBlockSize)
	if uint64(len(b)) > meta.SlotBytes() {
		return false
	}
	root := raid.MetaRoot{Generation: meta.Root().Generation + 1, Slot: 1 - meta.Root().Slot, Bytes: uint64(len(b))}
	for i := 0; i < nblocks; i++ {
		blk := b[i*metaBlockSize : (i+1)*metaBlockSize]
		copy(blk[4:12], metaMagic)
		binary.LittleEndian.PutUint32(blk[12:], metaVersion)
		binary.LittleEndian.PutUint64(blk[16:], root.Generation)
		binary.LittleEndian.PutUint32(blk[24:], uint32(i))
		binary.LittleEndian.PutUint32(blk[28:], uint32(nblocks))
		copy(blk[metaBlockHeader:], stream[i*metaBlockPayload:])
	}
	sealBlocks(b)
	if err := meta.WriteSlot(root.Slot, b); err != nil {
		t.Fatal(err)
	}
	if err := meta.WriteSupers(root); err != nil {
		t.Fatal(err)
	}
	return true
}
