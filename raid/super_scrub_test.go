package raid

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/btrfsdio/btrfsdio/blk"
)

// formattedRaid1 formats two images as raid1 and returns their paths.
func formattedRaid1(t *testing.T) []string {
	t.Helper()
	paths := imagePaths(t, 2)
	devs := openImages(t, paths, 8<<20)
	if _, err := Format(devs, Raid1); err != nil {
		t.Fatal(err)
	}
	closeAll(devs)
	return paths
}

// openRaid1 opens the images formattedRaid1 made.
func openRaid1(t *testing.T, paths []string, degraded bool) (*Volume, error) {
	t.Helper()
	devs := openImages(t, paths, 0)
	v, _, err := OpenVolume(devs, OpenOptions{Profile: AnyProfile, Degraded: degraded, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		closeAll(devs)
		return nil, err
	}
	t.Cleanup(func() { v.Close() })
	return v, nil
}

func writeFile(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// badSupers lists "path#index@bytenr" of the bad copies.
func badSupers(copies []SuperCopy) []string {
	var bad []string
	for _, c := range copies {
		if c.Err != nil {
			bad = append(bad, fmt.Sprintf("%s#%d@%d", c.Device, c.Index, c.Bytenr))
		}
	}
	return bad
}

// TestScrubSupersFindsAndRepairs: a scribbled backup on one device and a
// zeroed primary on the other are both named (device, copy, offset); a
// repair rewrites them, flushes, and a second scrub is clean.
func TestScrubSupersFindsAndRepairs(t *testing.T) {
	paths := formattedRaid1(t)
	writeFile(t, paths[0], int64(superOffsets[1])+100, []byte("scribbled"))
	writeFile(t, paths[1], int64(superOffsets[0]), make([]byte, SuperInfoSize))
	v, err := openRaid1(t, paths, false)
	if err != nil {
		t.Fatal(err)
	}
	copies, err := v.ScrubSupers(false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{paths[0] + "#1@262144", paths[1] + "#0@65536"}
	if got := badSupers(copies); len(copies) != 6 || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("%d copies, bad %v, want 6 and %v", len(copies), got, want)
	}
	flushes := v.Devices()[0].Stats().Flushes
	if copies, err = v.ScrubSupers(true); err != nil {
		t.Fatal(err)
	}
	for _, c := range copies {
		if (c.Err != nil) != c.Repaired || c.RepairErr != nil {
			t.Errorf("repair of %+v", c)
		}
	}
	if v.Devices()[0].Stats().Flushes == flushes {
		t.Error("repaired device not flushed")
	}
	if copies, _ = v.ScrubSupers(false); len(badSupers(copies)) != 0 {
		t.Fatalf("after repair: %v", badSupers(copies))
	}
	for _, d := range v.Devices() {
		for _, off := range superOffsets {
			if st := d.readSuperCopy(off); st.err != nil {
				t.Errorf("%s copy at %d after repair: %v", d.Path(), off, st.err)
			}
		}
	}
}

// TestScrubSupersStaleIsNotDamage: a copy one generation behind (a commit
// interrupted between copies) is not reported; a copy naming another
// device is.
func TestScrubSupersStaleIsNotDamage(t *testing.T) {
	paths := formattedRaid1(t)
	v, err := openRaid1(t, paths, false)
	if err != nil {
		t.Fatal(err)
	}
	d := v.Devices()[0]
	sb, err := d.ReadSuper()
	if err != nil {
		t.Fatal(err)
	}
	newer := *sb
	newer.Generation++
	newer.Bytenr = superOffsets[2]
	buf := blk.AlignedBuffer(SuperInfoSize)
	copy(buf, newer.Encode())
	if err := d.writeBuf(buf, superOffsets[2]); err != nil {
		t.Fatal(err)
	}
	if copies, _ := v.ScrubSupers(false); len(badSupers(copies)) != 0 {
		t.Fatalf("stale copies reported: %v", badSupers(copies))
	}
	other := *sb
	other.Devid = 2
	other.Bytenr = superOffsets[1]
	copy(buf, other.Encode())
	if err := d.writeBuf(buf, superOffsets[1]); err != nil {
		t.Fatal(err)
	}
	copies, _ := v.ScrubSupers(false)
	if got := badSupers(copies); len(got) != 1 || !strings.Contains(copies[1].Err.Error(), "another device") {
		t.Fatalf("copy naming devid 2 on devid 1: %v", got)
	}
}

// TestDegradedTreatsInvalidSuperAsMissing: a device whose superblocks are
// zeroed, or all corrupt, stands in as missing when opened degraded, and
// is still refused without it.
func TestDegradedTreatsInvalidSuperAsMissing(t *testing.T) {
	for _, damage := range []string{"zeroed", "corrupt"} {
		t.Run(damage, func(t *testing.T) {
			paths := formattedRaid1(t)
			for _, off := range superOffsets {
				b := make([]byte, SuperInfoSize)
				if damage == "corrupt" {
					b = []byte("garbage!")
					off += 64
				}
				writeFile(t, paths[1], int64(off), b)
			}
			if _, err := openRaid1(t, paths, false); err == nil {
				t.Fatal("opened without degraded")
			}
			v, err := openRaid1(t, paths, true)
			if err != nil {
				t.Fatalf("degraded: %v", err)
			}
			if m := v.MissingDevices(); len(m) != 1 || m[0] != 2 {
				t.Fatalf("missing %v, want devid 2", m)
			}
		})
	}
	// Nothing valid at all is still an error.
	paths := formattedRaid1(t)
	for _, p := range paths {
		for _, off := range superOffsets {
			writeFile(t, p, int64(off), make([]byte, SuperInfoSize))
		}
	}
	if _, err := openRaid1(t, paths, true); err == nil {
		t.Fatal("opened degraded with no valid superblock")
	}
}

// TestImagesPrivateAndReadOnlyOpen: a created image is 0600, and a
// read-only open (check, scrub) holds the file O_RDONLY, so a read-only
// image never needs write access.
func TestImagesPrivateAndReadOnlyOpen(t *testing.T) {
	paths := imagePaths(t, 1)
	closeAll(openImages(t, paths, 8<<20))
	st, err := os.Stat(paths[0])
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("new image: %v %v, want mode 0600", st.Mode(), err)
	}
	d, err := OpenDevice(paths[0], DeviceOptions{ReadOnly: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var flags int
	var ferr error
	if err := d.control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil || ferr != nil {
		t.Fatal(errors.Join(err, ferr))
	}
	if flags&unix.O_ACCMODE != unix.O_RDONLY {
		t.Fatalf("read-only device opened with flags %#o", flags)
	}
}
