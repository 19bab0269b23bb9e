package raid

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

// hostileImageSize is the size of the crafted images: what an attacker
// hands over is small, what its superblock claims is not.
const hostileImageSize = 4 << 20

// craftImage formats a single-device image and overwrites its superblocks
// with what mutate makes of the real one, csum and all (Encode computes it),
// as a hostile image would carry.
func craftImage(t *testing.T, mutate func(sb *Superblock)) string {
	t.Helper()
	paths := imagePaths(t, 1)
	devs := openImages(t, paths, hostileImageSize)
	defer closeAll(devs)
	sb, err := Format(devs, Single)
	if err != nil {
		t.Fatal(err)
	}
	mutate(sb)
	if err := devs[0].WriteSuper(sb); err != nil {
		t.Fatal(err)
	}
	return paths[0]
}

// hostileSupers are superblocks with a valid csum whose lengths claim more
// than the 4 MiB image holds; the first three wrap 2*copies*slot to a
// small number, so the old range checks passed and the root's length sized
// a buffer of up to 1 TiB (fatal error: runtime: out of memory).
var hostileSupers = map[string]func(sb *Superblock){
	"area wraps to 0": func(sb *Superblock) {
		sb.TotalBytes, sb.MetaSlotBytes, sb.MetaCopies, sb.RootBytes = 1<<63, 1<<63, 1, 1<<40
	},
	"DUP area wraps to 0": func(sb *Superblock) {
		sb.TotalBytes, sb.MetaSlotBytes, sb.MetaCopies, sb.RootBytes = 1<<63, 1<<62, 2, 1<<40
	},
	"area wraps to 8 KiB": func(sb *Superblock) {
		sb.TotalBytes, sb.MetaSlotBytes, sb.MetaCopies, sb.RootBytes = ^uint64(0), 1<<63+4096, 1, 64<<20
	},
	"slot beyond the image": func(sb *Superblock) {
		sb.TotalBytes, sb.MetaSlotBytes, sb.MetaCopies, sb.RootBytes = 1<<40, 1<<30, 1, 1<<30
	},
	"chunk beyond the image": func(sb *Superblock) {
		sb.TotalBytes, sb.ChunkDevBytes = 1<<40, 1<<39
	},
	"journal beyond the image": func(sb *Superblock) {
		sb.Profile, sb.TotalBytes, sb.JournalBytes = Raid5, 1<<40, 1<<30
	},
	"journal wraps": func(sb *Superblock) {
		sb.Profile, sb.TotalBytes, sb.JournalBytes = Raid5, ^uint64(0), ^uint64(0)&^(SectorSize-1)
	},
}

// TestHostileSuperblockRefused: every crafted image is refused by
// OpenVolume with a clear error, before anything is sized by its lengths.
// The test never reads the root: on a regression it fails on the length
// it would have allocated, instead of running out of memory.
func TestHostileSuperblockRefused(t *testing.T) {
	for name, mutate := range hostileSupers {
		path := craftImage(t, mutate)
		devs := openImages(t, []string{path}, 0)
		v, _, err := OpenVolume(devs, OpenOptions{Profile: AnyProfile, Volume: VolumeOptions{Logger: testLogger()}})
		if err == nil {
			root, slot := uint64(0), uint64(0)
			if m, merr := OpenMetaArea(v); merr == nil {
				root, slot = m.Root().Bytes, m.SlotBytes()
			}
			v.Close()
			t.Errorf("%s: opened a %d-byte image whose metadata slot is %d bytes and root %d bytes", name, hostileImageSize, slot, root)
			continue
		}
		closeAll(devs)
		if !errors.Is(err, ErrCorruptSuper) && !strings.Contains(err.Error(), "truncated image") {
			t.Errorf("%s: %v, want a corrupt superblock or a truncated image", name, err)
		}
	}
}

// TestMetaAreaChecksTheDevice: a superblock rewritten after the volume was
// opened (OpenMetaArea reads them again) is held against the device too:
// its root may not size a buffer larger than the device.
func TestMetaAreaChecksTheDevice(t *testing.T) {
	paths := imagePaths(t, 1)
	devs := openImages(t, paths, hostileImageSize)
	v, sb, err := OpenVolume(devs, OpenOptions{Profile: Single, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	hostileSupers["slot beyond the image"](sb)
	if err := devs[0].WriteSuper(sb); err != nil {
		t.Fatal(err)
	}
	m, err := OpenMetaArea(v)
	if err == nil {
		t.Fatalf("metadata area opened with a %d-byte slot and a %d-byte root on a %d-byte image",
			m.SlotBytes(), m.Root().Bytes, hostileImageSize)
	}
	if !strings.Contains(err.Error(), "truncated image") {
		t.Fatalf("%v, want a truncated image", err)
	}
}

// TestDeviceRefusesWrappingOffsets: an offset whose end wraps past 2^64 is
// beyond the device end (EIO), not a negative file offset.
func TestDeviceRefusesWrappingOffsets(t *testing.T) {
	devs := openImages(t, imagePaths(t, 1), hostileImageSize)
	defer closeAll(devs)
	buf := make([]byte, SectorSize)
	for _, off := range []uint64{^uint64(0) - 100, 1 << 63, ^uint64(0) &^ (SectorSize - 1)} {
		if err := devs[0].readBuf(buf, off); !errors.Is(err, syscall.EIO) {
			t.Errorf("read at %d: %v, want EIO", off, err)
		}
		if err := devs[0].writeBuf(buf, off); !errors.Is(err, syscall.EIO) {
			t.Errorf("write at %d: %v, want EIO", off, err)
		}
	}
}

// TestMapBlockWrappingRange: a range whose end wraps past 2^64 maps
// nowhere, and one running past the chunk end maps only up to it
// (btrfs_map_block's map_length), for every profile.
func TestMapBlockWrappingRange(t *testing.T) {
	for _, p := range []Profile{Single, Dup, Raid0, Raid1, Raid10, Raid5, Raid6} {
		v, err := NewVolume(newDevices(t, deviceCount(p), 8<<20), p, VolumeOptions{Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range []blk.Op{blk.OpRead, blk.OpWrite} {
			for _, logical := range []uint64{^uint64(0) &^ (SectorSize - 1), 1 << 63, v.Capacity()} {
				if _, _, err := v.MapBlock(op, logical, 8192, 0); !errors.Is(err, syscall.EINVAL) {
					t.Errorf("%s %s at %d: %v, want EINVAL", p, op, logical, err)
				}
			}
			last := v.Capacity() - SectorSize
			if _, n, err := v.MapBlock(op, last, ^uint64(0), 0); err != nil || n != SectorSize {
				t.Errorf("%s %s of 2^64-1 bytes at the last sector: %d bytes mapped, %v", p, op, n, err)
			}
		}
		v.Close()
	}
}
