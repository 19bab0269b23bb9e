package raid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func imagePaths(t *testing.T, n int) []string {
	dir := t.TempDir()
	var ps []string
	for i := 0; i < n; i++ {
		ps = append(ps, filepath.Join(dir, "img"+string(rune('a'+i))))
	}
	return ps
}

func openImages(t *testing.T, paths []string, size int64) []*Device {
	t.Helper()
	var devs []*Device
	for _, p := range paths {
		d, err := OpenDevice(p, DeviceOptions{Create: size > 0, Size: size, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	return devs
}

func closeAll(devs []*Device) {
	for _, d := range devs {
		d.Close()
	}
}

func TestFormatThenReopenInAnyOrder(t *testing.T) {
	paths := imagePaths(t, 3)
	devs := openImages(t, paths, 16<<20)
	v, sb, err := OpenVolume(devs, OpenOptions{Profile: Raid5, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("btrfsdio"), 16<<10/8)
	rng := rand.New(rand.NewPCG(1, 2))
	if st := writeAt(t, v, 64<<10, data, rng); st != 0 {
		t.Fatalf("write: %v", st)
	}
	capacity := v.Capacity()
	v.Close()
	// Reopen with the images in another order and without naming the
	// profile: the superblocks put them back in devid order.
	rev := openImages(t, []string{paths[2], paths[0], paths[1]}, 0)
	v2, sb2, err := OpenVolume(rev, OpenOptions{Profile: AnyProfile, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if sb2.Fsid != sb.Fsid || v2.Profile() != Raid5 || v2.Capacity() != capacity {
		t.Fatalf("reopened %v capacity %d, want raid5 %d", v2.Profile(), v2.Capacity(), capacity)
	}
	if got, st := readAt(t, v2, 64<<10, len(data), 1, rng); st != 0 || !bytes.Equal(got, data) {
		t.Fatalf("data not found after reopening in another order: %v", st)
	}
}

func TestOpenVolumeRefusesBadSets(t *testing.T) {
	a := imagePaths(t, 2)
	b := imagePaths(t, 2)
	for _, set := range [][]string{a, b} {
		devs := openImages(t, set, 8<<20)
		v, _, err := OpenVolume(devs, OpenOptions{Profile: Raid1, Volume: VolumeOptions{Logger: testLogger()}})
		if err != nil {
			t.Fatal(err)
		}
		v.Close()
	}
	blankPath := filepath.Join(t.TempDir(), "blank")
	cases := []struct {
		name  string
		paths []string
		p     Profile
		want  string
	}{
		{"mixed volumes", []string{a[0], b[1]}, Raid1, "refusing to mix volumes"},
		{"wrong profile", a, Raid0, "hold a raid1 volume, not raid0"},
		{"missing device", a[:1], AnyProfile, "has 2 devices, 1 given: devid 2 missing"},
		{"blank and formatted", []string{a[0], blankPath}, Raid1, "refusing to mix them"},
	}
	for _, c := range cases {
		devs := openImages(t, c.paths, 8<<20)
		_, _, err := OpenVolume(devs, OpenOptions{Profile: c.p, Volume: VolumeOptions{Logger: testLogger()}})
		closeAll(devs)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	// Two readers share an image, so one given twice to OpenVolume (not
	// through Assemble, which refuses it) is caught by its devid.
	var twice []*Device
	for range 2 {
		d, err := OpenDevice(a[0], DeviceOptions{ReadOnly: true, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		twice = append(twice, d)
	}
	_, _, err := OpenVolume(twice, OpenOptions{Profile: Raid1, Volume: VolumeOptions{Logger: testLogger()}})
	closeAll(twice)
	if err == nil || !strings.Contains(err.Error(), "appears twice") {
		t.Errorf("same image twice: %v", err)
	}
	// A truncated image.
	if err := os.Truncate(a[1], 4<<20); err != nil {
		t.Fatal(err)
	}
	devs := openImages(t, a, 0)
	_, _, err = OpenVolume(devs, OpenOptions{Profile: AnyProfile})
	closeAll(devs)
	if err == nil || !strings.Contains(err.Error(), "truncated image") {
		t.Fatalf("truncated: %v", err)
	}
}

func TestCorruptPrimaryFallsBackToBackup(t *testing.T) {
	paths := imagePaths(t, 1)
	devs := openImages(t, paths, 8<<20)
	sb, err := Format(devs, Single)
	if err != nil {
		t.Fatal(err)
	}
	closeAll(devs)
	f, _ := os.OpenFile(paths[0], os.O_RDWR, 0)
	f.WriteAt([]byte("garbage!"), int64(superOffsets[0])+64)
	f.Close()
	devs = openImages(t, paths, 0)
	defer closeAll(devs)
	got, err := devs[0].ReadSuper()
	if err != nil || got.Fsid != sb.Fsid {
		t.Fatalf("backup not used: %v", err)
	}
	// All three copies bad: a clear error, never a blank device.
	for _, off := range superOffsets {
		f, _ := os.OpenFile(paths[0], os.O_RDWR, 0)
		f.WriteAt([]byte("garbage!"), int64(off)+64)
		f.Close()
	}
	if _, err := devs[0].ReadSuper(); !errors.Is(err, ErrCorruptSuper) {
		t.Fatalf("all copies bad: %v", err)
	}
}

// TestDecodeRejectsEachBadField corrupts each field in turn (keeping the
// csum right) and expects a clear refusal.
func TestDecodeRejectsEachBadField(t *testing.T) {
	good := &Superblock{Bytenr: superOffsets[0], Generation: 3, Version: superVersion, Profile: Raid1,
		NumDevices: 2, Devid: 1, TotalBytes: 8 << 20, ChunkDevBytes: 7 << 20,
		MetaSlotBytes: 128 << 10, MetaCopies: 1, RootSlot: 1, RootBytes: 8 << 10}
	if _, err := DecodeSuperblock(good.Encode(), superOffsets[0]); err != nil {
		t.Fatalf("good superblock refused: %v", err)
	}
	le := binary.LittleEndian
	cases := map[string]func(b []byte){
		"bytenr":     func(b []byte) { le.PutUint64(b[48:], 1) },
		"generation": func(b []byte) { le.PutUint64(b[72:], 0) },
		"version":    func(b []byte) { le.PutUint32(b[80:], 9) },
		"profile":    func(b []byte) { le.PutUint32(b[84:], 77) },
		"numdevices": func(b []byte) { le.PutUint64(b[88:], 0) },
		"devid":      func(b []byte) { le.PutUint64(b[96:], 3) },
		"chunkbytes": func(b []byte) { le.PutUint64(b[128:], 9<<20) },
		"metaslot":   func(b []byte) { le.PutUint64(b[136:], 4<<20) },
		"metacopies": func(b []byte) { le.PutUint32(b[144:], 3) },
		"rootslot":   func(b []byte) { le.PutUint32(b[148:], 2) },
		"rootbytes":  func(b []byte) { le.PutUint64(b[152:], 100) },
	}
	for name, mutate := range cases {
		b := good.Encode()
		mutate(b)
		le.PutUint32(b[0:], crc32.Checksum(b[superCsumSize:], castagnoli))
		if _, err := DecodeSuperblock(b, superOffsets[0]); !errors.Is(err, ErrCorruptSuper) {
			t.Errorf("%s: %v, want ErrCorruptSuper", name, err)
		}
	}
	b := good.Encode()
	b[200] ^= 1
	if _, err := DecodeSuperblock(b, superOffsets[0]); err == nil || !strings.Contains(err.Error(), "csum") {
		t.Errorf("flipped bit: %v", err)
	}
	b = good.Encode()
	copy(b[64:], "NOTMAGIC")
	if _, err := DecodeSuperblock(b, superOffsets[0]); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Errorf("magic: %v", err)
	}
}

// FuzzDecodeSuperblock: no input makes the parser panic, and whatever it
// accepts encodes back to the same bytes.
func FuzzDecodeSuperblock(f *testing.F) {
	good := &Superblock{Bytenr: superOffsets[0], Generation: 1, Version: superVersion, Profile: Raid6,
		NumDevices: 4, Devid: 2, TotalBytes: 1 << 30, ChunkDevBytes: 1 << 29,
		MetaSlotBytes: 32 << 20, MetaCopies: 1, RootBytes: 64 << 10}
	f.Add(good.Encode())
	f.Add(make([]byte, SuperInfoSize))
	f.Add([]byte("short"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := DecodeSuperblock(b, superOffsets[0])
		if err != nil {
			return
		}
		if !bytes.Equal(sb.Encode()[superCsumSize:superUsedBytes], b[superCsumSize:superUsedBytes]) {
			t.Fatal("accepted superblock does not encode back to its bytes")
		}
	})
}
