package raid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// probeSize is the synthetic images' size: not a multiple of 64 KiB, so
// the md superblocks at the end are placed by rounding.
const probeSize = 8<<20 + 12345

// put writes b at off in img.
func put(img []byte, off int64, b ...[]byte) {
	for _, x := range b {
		off += int64(copy(img[off:], x))
	}
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// mbrEntryBytes is one MBR partition entry.
func mbrEntryBytes(boot, typ byte, start, sectors uint32) []byte {
	e := make([]byte, 16)
	e[0], e[4] = boot, typ
	binary.LittleEndian.PutUint32(e[8:], start)
	binary.LittleEndian.PutUint32(e[12:], sectors)
	return e
}

// extSuper plants an ext superblock with the given feature flags at base.
func extSuper(img []byte, base int64, compat, incompat, roCompat uint32) {
	put(img, base+1024+0x38, []byte{0x53, 0xef})
	put(img, base+1024+0x5c, le32(compat), le32(incompat), le32(roCompat))
}

// gptDisk plants a GPT of ss-byte sectors with one partition of n sectors
// at LBA first (entry array at LBA 2, backup header at the last LBA).
func gptDisk(img []byte, ss int64, first, n uint64) {
	size := int64(len(img))
	put(img, 446, mbrEntryBytes(0, 0xee, 1, uint32(size/512-1)))
	put(img, 510, []byte{0x55, 0xaa})
	last := uint64(size/ss - 1)
	hdr := func(my, arr uint64) []byte {
		h := make([]byte, 92)
		copy(h, gptHeaderMagic)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[72:], arr)
		binary.LittleEndian.PutUint32(h[80:], 128)
		binary.LittleEndian.PutUint32(h[84:], 128)
		return h
	}
	entry := make([]byte, 128)
	copy(entry, "linux data guid!")
	binary.LittleEndian.PutUint64(entry[32:], first)
	binary.LittleEndian.PutUint64(entry[40:], first+n-1)
	put(img, ss, hdr(1, 2))
	put(img, 2*ss, entry)
	put(img, int64(last)*ss, hdr(last, last-32))
	put(img, int64(last-32)*ss, entry)
}

// Each magic planted where its prober looks is found, named, and placed;
// a zeroed image has none.
func TestProbeSignatures(t *testing.T) {
	size := int64(probeSize)
	md0 := size&^(64<<10-1) - 64<<10
	md10 := size&^(4<<10-1) - 8<<10
	md1 := func(img []byte, off int64) {
		put(img, off, []byte(mdSBMagicLE), le32(1))
		put(img, off+144, le64(uint64(off)/512))
	}
	own := (&Superblock{Generation: 1, Version: superVersion}).Encode()
	cases := []struct {
		name  string
		plant func(img []byte)
		want  string // "Name What Offset MagicOffset", ";"-separated, sorted by offset
	}{
		{"zeroed", func([]byte) {}, ""},
		{"gpt 512", func(img []byte) { put(img, 512, []byte("EFI PART")) }, "gpt/gpt partition table/512/512"},
		{"gpt 4096", func(img []byte) { put(img, 4096, []byte("EFI PART")) }, "gpt/gpt partition table/4096/4096"},
		{"gpt backup 512", func(img []byte) { put(img, size&^511-512, []byte("EFI PART")) },
			"gpt/gpt backup header/8400384/8400384"},
		{"gpt backup 4096", func(img []byte) { put(img, size&^4095-4096, []byte("EFI PART")) },
			"gpt/gpt backup header/8396800/8396800"},
		{"dos", func(img []byte) {
			put(img, 446, mbrEntryBytes(0x80, 0x83, 2048, 100))
			put(img, 510, []byte{0x55, 0xaa})
		}, "dos/dos partition table/0/510"},
		{"PMBR", func(img []byte) {
			put(img, 446, mbrEntryBytes(0, 0xee, 1, 1000))
			put(img, 510, []byte{0x55, 0xaa})
		}, "PMBR/protective MBR/0/510"},
		{"boot signature, no entry", func(img []byte) { put(img, 510, []byte{0x55, 0xaa}) }, ""},
		{"boot signature, bad boot flag", func(img []byte) {
			put(img, 446, mbrEntryBytes(0x12, 0x83, 2048, 100))
			put(img, 510, []byte{0x55, 0xaa})
		}, ""},
		{"ext2", func(img []byte) { extSuper(img, 0, 0, 0x2, 0x1) }, "ext2/ext2 filesystem/0/1080"},
		{"ext3", func(img []byte) { extSuper(img, 0, 0x4, 0x2, 0x1) }, "ext3/ext3 filesystem/0/1080"},
		{"ext4", func(img []byte) { extSuper(img, 0, 0x4, 0x2|0x40|0x200, 0x1) }, "ext4/ext4 filesystem/0/1080"},
		{"ext4 by ro_compat", func(img []byte) { extSuper(img, 0, 0x4, 0x2, 0x8) }, "ext4/ext4 filesystem/0/1080"},
		{"jbd", func(img []byte) { extSuper(img, 0, 0, 0x8, 0) }, "jbd/ext3/ext4 external journal/0/1080"},
		{"xfs", func(img []byte) { put(img, 0, []byte("XFSB")) }, "xfs/xfs filesystem/0/0"},
		{"btrfs", func(img []byte) { put(img, 65536+64, []byte("_BHRfS_M")) }, "btrfs/btrfs filesystem/0/65600"},
		{"swap", func(img []byte) { put(img, 4096-10, []byte("SWAPSPACE2")) }, "swap/swap space/0/4086"},
		{"swap v0", func(img []byte) { put(img, 4096-10, []byte("SWAP-SPACE")) }, "swap/swap space (v0)/0/4086"},
		{"swap 64K pages", func(img []byte) { put(img, 65536-10, []byte("SWAPSPACE2")) }, "swap/swap space/0/65526"},
		{"LUKS1", func(img []byte) { put(img, 0, []byte("LUKS\xba\xbe"), be16(1)) }, "crypto_LUKS/LUKS header/0/0"},
		{"LUKS2", func(img []byte) { put(img, 0, []byte("LUKS\xba\xbe"), be16(2)) }, "crypto_LUKS/LUKS header/0/0"},
		{"LUKS version 3", func(img []byte) { put(img, 0, []byte("LUKS\xba\xbe"), be16(3)) }, ""},
		{"LUKS2 secondary", func(img []byte) {
			put(img, 32<<10, []byte("SKUL\xba\xbe"), be16(2))
			put(img, 32<<10+256, be64(32<<10))
		}, "crypto_LUKS/LUKS2 secondary header/32768/32768"},
		{"LUKS2 secondary, wrong hdr_offset", func(img []byte) {
			put(img, 32<<10, []byte("SKUL\xba\xbe"), be16(2))
			put(img, 32<<10+256, be64(16<<10))
		}, ""},
		{"LVM2", func(img []byte) { put(img, 512, []byte("LABELONE"), le64(1), le32(0), le32(32), []byte("LVM2 001")) },
			"LVM2_member/LVM2 physical volume/0/512"},
		{"LVM2 label in the wrong sector", func(img []byte) {
			put(img, 1024, []byte("LABELONE"), le64(1), le32(0), le32(32), []byte("LVM2 001"))
		}, ""},
		{"md 0.90", func(img []byte) { put(img, md0, []byte(mdSBMagicLE), le32(0)) },
			"linux_raid_member/md v0.90 superblock/8323072/8323072"},
		{"md 0.90 big-endian", func(img []byte) { put(img, md0, be32(0xa92b4efc), be32(0)) },
			"linux_raid_member/md v0.90 superblock/8323072/8323072"},
		{"md 1.0", func(img []byte) { md1(img, md10) }, "linux_raid_member/md v1.0 superblock/8392704/8392704"},
		{"md 1.1", func(img []byte) { md1(img, 0) }, "linux_raid_member/md v1.1 superblock/0/0"},
		{"md 1.2", func(img []byte) { md1(img, 4096) }, "linux_raid_member/md v1.2 superblock/4096/4096"},
		{"md 1.2, super_offset elsewhere", func(img []byte) {
			md1(img, 4096)
			put(img, 4096+144, le64(0))
		}, ""},
		{"btrfsdio", func(img []byte) { put(img, 64<<10, own) }, "btrfsdio/btrfsdio volume/0/65600"},
		{"btrfsdio, backup copy only", func(img []byte) { put(img, 512<<10, own) }, "btrfsdio/btrfsdio volume/0/524352"},
		{"ext4 in a GPT partition", func(img []byte) {
			gptDisk(img, 512, 2048, 4096)
			extSuper(img, 1<<20, 0x4, 0x40, 0)
		}, "PMBR/protective MBR/0/510;gpt/gpt partition table/512/512;ext4/ext4 filesystem/1048576/1049656;" +
			"gpt/gpt backup header/8400384/8400384"},
		{"xfs in a GPT partition, 4 KiB sectors", func(img []byte) {
			gptDisk(img, 4096, 256, 512)
			put(img, 1<<20, []byte("XFSB"))
		}, "PMBR/protective MBR/0/510;gpt/gpt partition table/4096/4096;xfs/xfs filesystem/1048576/1048576;" +
			"gpt/gpt backup header/8396800/8396800"},
		{"swap in a dos partition", func(img []byte) {
			put(img, 446, mbrEntryBytes(0, 0x83, 8, 8), mbrEntryBytes(0, 0x82, 2048, 4096))
			put(img, 510, []byte{0x55, 0xaa})
			put(img, 1<<20+4086, []byte("SWAPSPACE2"))
		}, "dos/dos partition table/0/510;swap/swap space/1048576/1052662"},
	}
	for _, c := range cases {
		img := make([]byte, size)
		c.plant(img)
		sigs, err := Probe(bytes.NewReader(img), size)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var got []string
		for _, s := range sigs {
			got = append(got, strings.Join([]string{s.Name, s.What, strconv.FormatInt(s.Offset, 10), strconv.FormatInt(s.MagicOffset, 10)}, "/"))
		}
		if g := strings.Join(got, ";"); g != c.want {
			t.Errorf("%s: found %q, want %q", c.name, g, c.want)
		}
	}
}

// A signature inside a partition says which, and its message where.
func TestSignatureString(t *testing.T) {
	img := make([]byte, probeSize)
	gptDisk(img, 512, 2048, 4096)
	extSuper(img, 1<<20, 0x4, 0x40, 0)
	sigs, err := Probe(bytes.NewReader(img), probeSize)
	if err != nil {
		t.Fatal(err)
	}
	want := "protective MBR at offset 0, gpt partition table at offset 512, ext4 filesystem at offset 1048576 (partition 1), " +
		"gpt backup header at offset 8400384"
	if got := joinSignatures(sigs); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

// Probe reports the read errors that could hide a signature.
func TestProbeReadError(t *testing.T) {
	if _, err := Probe(failingReader{}, probeSize); err == nil || !strings.Contains(err.Error(), "reading") {
		t.Errorf("Probe over failing reads: %v", err)
	}
}

type failingReader struct{}

func (failingReader) ReadAt([]byte, int64) (int, error) { return 0, errors.New("EIO") }

// plantFile writes b at off in the device's backing file.
func plantFile(t *testing.T, d *Device, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(d.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func fileBytes(t *testing.T, d *Device) []byte {
	t.Helper()
	b, err := os.ReadFile(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A blank device that holds something else is not formatted: PrepareFormat
// names what it found on which device and writes nothing; forced, it erases
// the signatures and OpenVolume formats.
func TestPrepareFormatRefusesForeign(t *testing.T) {
	devs := newDevices(t, 2, 8<<20)
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	img := make([]byte, 2<<20)
	extSuper(img, 0, 0x4, 0x40, 0)
	plantFile(t, devs[1], 0, img)
	before := fileBytes(t, devs[1])

	ok, err := PrepareFormat(devs, FormatCheck{})
	if ok || !errors.Is(err, ErrForeign) {
		t.Fatalf("PrepareFormat = %v, %v; want ErrForeign", ok, err)
	}
	want := devs[1].Path() + ": found ext4 filesystem at offset 0; refusing to format"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if !bytes.Equal(fileBytes(t, devs[1]), before) {
		t.Error("the refused device was written")
	}

	ok, err = PrepareFormat(devs, FormatCheck{Force: true})
	if !ok || err != nil {
		t.Fatalf("forced PrepareFormat = %v, %v", ok, err)
	}
	if sigs, err := devs[1].Probe(); err != nil || len(sigs) != 0 {
		t.Errorf("after the forced wipe: %v, %v", sigs, err)
	}
	v, _, err := OpenVolume(devs, OpenOptions{Profile: Raid1, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	devs = nil
	v.Close()
}

// Without Reformat a volume is left alone (OpenVolume mounts it); with it
// (mkfs) our own volume is a signature too, and forced, every device is
// made blank, a damaged superblock included, so OpenVolume formats anew.
func TestPrepareFormatReformat(t *testing.T) {
	devs := newDevices(t, 2, 8<<20)
	sb, err := Format(devs, Raid1)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := PrepareFormat(devs, FormatCheck{Force: true}); ok || err != nil {
		t.Fatalf("PrepareFormat of a volume = %v, %v; want false, nil", ok, err)
	}
	_, err = PrepareFormat(devs, FormatCheck{Reformat: true})
	want := devs[0].Path() + ": found btrfsdio volume at offset 0; " + devs[1].Path() +
		": found btrfsdio volume at offset 0; refusing to format"
	if !errors.Is(err, ErrForeign) || err.Error() != want {
		t.Fatalf("Reformat: %v, want %q", err, want)
	}
	if _, err := devs[0].ReadSuper(); err != nil {
		t.Fatalf("the refused volume was damaged: %v", err)
	}
	plantFile(t, devs[1], int64(superOffsets[0])+64, []byte("not ours"))
	for i := range superOffsets[1:] {
		plantFile(t, devs[1], int64(superOffsets[1+i]), make([]byte, SuperInfoSize))
	}
	if ok, err := PrepareFormat(devs, FormatCheck{Reformat: true, Force: true}); !ok || err != nil {
		t.Fatalf("forced Reformat = %v, %v", ok, err)
	}
	v, nsb, err := OpenVolume(devs, OpenOptions{Profile: Raid1, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if nsb.Fsid == sb.Fsid || nsb.Generation != 1 {
		t.Errorf("not a new volume: fsid %x generation %d (old %x)", nsb.Fsid[:4], nsb.Generation, sb.Fsid[:4])
	}
}
