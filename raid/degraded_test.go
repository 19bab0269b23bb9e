package raid

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

// redundantProfiles are the profiles that survive a lost device.
var redundantProfiles = []Profile{Raid1, Raid1C3, Raid1C4, Raid10, Raid5, Raid6}

// degradedImageSize gives every test device 4 stripes after the reserved MiB.
const degradedImageSize = 2 << 20

// formatModel formats n fresh images with p, fills the whole chunk with
// random data (the model) and closes the volume. It returns the image paths.
func formatModel(t *testing.T, p Profile, rng *rand.Rand) ([]string, []byte) {
	t.Helper()
	paths := imagePaths(t, deviceCount(p))
	v, _, err := OpenVolume(openImages(t, paths, degradedImageSize), OpenOptions{Profile: p, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	model := randBytes(rng, int(v.Capacity()))
	if st := writeAt(t, v, 0, model, rng); st != blk.StsOK {
		t.Fatalf("%s: writing the model: %v", p, st)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	return paths, model
}

// openDegraded opens the volume from paths minus the images at indexes
// drop, in reverse order (the superblocks sort them).
func openDegraded(t *testing.T, paths []string, drop []int, degraded bool) (*Volume, error) {
	t.Helper()
	var keep []string
	for i := len(paths) - 1; i >= 0; i-- {
		dropped := false
		for _, d := range drop {
			dropped = dropped || d == i
		}
		if !dropped {
			keep = append(keep, paths[i])
		}
	}
	devs := openImages(t, keep, 0)
	v, _, err := OpenVolume(devs, OpenOptions{Profile: AnyProfile, Degraded: degraded, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		closeAll(devs)
		return nil, err
	}
	t.Cleanup(func() { v.Close() })
	return v, nil
}

// readRepaired reads [logical, logical+n) as the filesystem does: the read
// policy's copy first and, for a piece that fails, every mirror in turn
// (btrfs_check_read_bio's repair, without csums).
func readRepaired(t *testing.T, v *Volume, logical uint64, n int) ([]byte, error) {
	t.Helper()
	out := make([]byte, 0, n)
	for off := 0; off < n; off += SectorSize * 4 {
		l := min(SectorSize*4, n-off)
		got, st := readAt(t, v, logical+uint64(off), l, 0, nil)
		for m := 1; st != blk.StsOK && m <= v.NumCopies(logical, uint64(l)); m++ {
			got, st = readAt(t, v, logical+uint64(off), l, m, nil)
		}
		if st != blk.StsOK {
			return nil, fmt.Errorf("read at %d: every mirror failed: %v", logical+uint64(off), st)
		}
		out = append(out, got...)
	}
	return out, nil
}

// writeModel writes a few ranges of fresh data (partial stripes, so RAID5/6
// read-modify-write, and a whole stripe) into model and the volume.
func writeModel(t *testing.T, v *Volume, model []byte, rng *rand.Rand) blk.Status {
	t.Helper()
	for _, r := range [][2]int{{0, SectorSize}, {3 * SectorSize, 5 * SectorSize}, {S - SectorSize, 2 * SectorSize}, {2 * S, S}} {
		data := randBytes(rng, r[1])
		if st := writeAt(t, v, uint64(r[0]), data, rng); st != blk.StsOK {
			return st
		}
		copy(model[r[0]:], data)
	}
	return blk.StsOK
}

// checkModel reads the whole chunk back and compares it with the model.
func checkModel(t *testing.T, v *Volume, model []byte, what string) {
	t.Helper()
	got, err := readRepaired(t, v, 0, len(model))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !bytes.Equal(got, model) {
		t.Fatalf("%s: data differs from the model", what)
	}
}

// TestDegradedOpen opens every redundant profile with as many devices
// missing as it tolerates: refused without Degraded (naming the devids),
// then with it reads return the model, writes succeed (degraded, counted)
// and read back; one more missing device is refused even degraded.
func TestDegradedOpen(t *testing.T) {
	for _, p := range redundantProfiles {
		t.Run(p.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(p), 11))
			paths, model := formatModel(t, p, rng)
			k := p.ToleratedFailures()
			drop := make([]int, k) // the last k devices
			var ids []string
			for i := range drop {
				drop[i] = len(paths) - k + i
				ids = append(ids, fmt.Sprint(drop[i]+1))
			}
			_, err := openDegraded(t, paths, drop, false)
			want := "devid " + strings.Join(ids, ", ") + " missing"
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "degraded") ||
				!errors.Is(err, syscall.ENODEV) {
				t.Fatalf("open without degraded: %v, want %q", err, want)
			}
			v, err := openDegraded(t, paths, drop, true)
			if err != nil {
				t.Fatal(err)
			}
			if got := v.MissingDevices(); len(got) != k || got[0] != uint64(drop[0]+1) {
				t.Fatalf("missing devices %v, want %v", got, ids)
			}
			checkModel(t, v, model, "degraded read")
			if st := writeModel(t, v, model, rng); st != blk.StsOK {
				t.Fatalf("degraded write: %v", st)
			}
			if v.DegradedWrites() == 0 {
				t.Error("degraded writes not counted")
			}
			if err := v.Flush(); err != nil {
				t.Errorf("flush with missing devices: %v", err)
			}
			checkModel(t, v, model, "read after degraded write")
			v.Close()

			_, err = openDegraded(t, paths, append(drop, 0), true)
			want = fmt.Sprintf("tolerates %d missing", k)
			if k+1 == len(paths) {
				want = "no devices to open"
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%d missing, degraded: %v", k+1, err)
			}
		})
	}
}

// failDevice makes every I/O of d fail (count -1) or stops that (0).
func failDevice(d *Device, count int) {
	for _, op := range []blk.Op{blk.OpRead, blk.OpWrite, blk.OpFlush} {
		d.InjectFault(op, count)
	}
}

// TestDegradedRuntime fails as many devices as each redundant profile
// tolerates while the volume runs: reads still return the model (through
// the other mirrors or parity), writes and flushes succeed and read back;
// one more failing device makes writes fail with EIO.
func TestDegradedRuntime(t *testing.T) {
	for _, p := range redundantProfiles {
		t.Run(p.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(p), 12))
			paths, model := formatModel(t, p, rng)
			v, err := openDegraded(t, paths, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			k := p.ToleratedFailures()
			for i := 0; i < k; i++ { // the first k devices
				failDevice(v.devs[i], -1)
			}
			checkModel(t, v, model, "read with failing devices")
			if st := writeModel(t, v, model, rng); st != blk.StsOK {
				t.Fatalf("write with %d failing devices: %v", k, st)
			}
			if v.DegradedWrites() == 0 {
				t.Error("degraded writes not counted")
			}
			if err := v.Flush(); err != nil {
				t.Errorf("flush with %d failing devices: %v", k, err)
			}
			checkModel(t, v, model, "read after degraded write")

			failDevice(v.devs[k], -1)
			if st := writeAt(t, v, 0, randBytes(rng, S), rng); st != blk.StsIOErr {
				t.Errorf("write with %d failing devices: %v, want EIO", k+1, st)
			}
			if err := v.Flush(); !errors.Is(err, syscall.EIO) {
				t.Errorf("flush with %d failing devices: %v, want EIO", k+1, err)
			}
			for i := 0; i <= k; i++ {
				failDevice(v.devs[i], 0)
			}
		})
	}
}

// TestMissingDeviceFailsEveryIO: the placeholder fails reads, writes and
// flushes with EIO and counts them.
func TestMissingDeviceFailsEveryIO(t *testing.T) {
	d := NewMissingDevice(3, degradedImageSize, testLogger())
	buf := blk.AlignedBuffer(SectorSize)
	if err := d.readBuf(buf, R); !errors.Is(err, syscall.EIO) {
		t.Errorf("read: %v", err)
	}
	if err := d.writeBuf(buf, R); !errors.Is(err, syscall.EIO) {
		t.Errorf("write: %v", err)
	}
	if err := d.flush(); !errors.Is(err, syscall.EIO) {
		t.Errorf("flush: %v", err)
	}
	if st := d.Stats(); st.ReadErrors != 1 || st.WriteErrors != 1 || st.FlushErrors != 1 {
		t.Errorf("stats %+v", st)
	}
	if !d.Missing() || d.Size() != degradedImageSize || !strings.Contains(d.Path(), "devid 3") {
		t.Errorf("missing %v size %d path %q", d.Missing(), d.Size(), d.Path())
	}
	if err := d.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
