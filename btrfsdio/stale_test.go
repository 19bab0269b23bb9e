package btrfsdio

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/raid"
)

// staleProfiles are the profiles a device can come back stale on: the ones
// that run without a device (DUP has one device, so it is never left out of
// a mount and never behind its own superblock).
var staleProfiles = []raid.Profile{raid.Raid1, raid.Raid1C3, raid.Raid1C4, raid.Raid10, raid.Raid5, raid.Raid6}

// staleOptions are the data paths a stale copy could leak through: csummed
// COW data (a stale copy fails its csum and is repaired), nodatasum COW
// data and NOCOW data overwritten in place (nothing catches a stale copy).
var staleOptions = []struct {
	name string
	opts Options
}{
	{"datasum", Options{Mode: Bounce, DataSum: true}},
	{"nodatasum", Options{Mode: Bounce}},
	{"nocow", Options{Mode: Bounce, NoCow: true}},
}

// openDevices opens paths as a volume, Degraded when some are left out.
func openDevices(t testing.TB, paths []string, degraded bool) *raid.Volume {
	t.Helper()
	var devs []*raid.Device
	for _, path := range paths {
		d, err := raid.OpenDevice(path, raid.DeviceOptions{Logger: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	vol, _, err := raid.OpenVolume(devs, raid.OpenOptions{Profile: raid.AnyProfile, Degraded: degraded,
		Volume: raid.VolumeOptions{Logger: quietLog()}})
	if err != nil {
		t.Fatal(err)
	}
	return vol
}

// mountVol is OpenFsInfo on vol, closing vol on failure.
func mountVol(t testing.TB, vol *raid.Volume, opts Options) *FsInfo {
	t.Helper()
	opts.Log = quietLog()
	fs, err := OpenFsInfo(vol, opts)
	if err != nil {
		vol.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Vol.Close() })
	return fs
}

// staleSetup formats a volume, writes A over the first 2 MiB and closes;
// mounts it degraded without its last device and writes B over the same
// range (partly in two pieces, so RAID5/6 read-modify-write), commits and
// closes. It returns the filesystem (closed), the left-out device's path
// and B.
func staleSetup(t *testing.T, p raid.Profile, opts Options) (*persistFS, string, []byte) {
	t.Helper()
	pf := newPersistFS(t, p, 8<<20, opts)
	a := mmapBuf(t, 2*mib)
	stamp(a, 1, 0)
	if _, err := pf.write(0, a, 0); err != nil {
		t.Fatal(err)
	}
	if err := pf.Close(); err != nil {
		t.Fatal(err)
	}
	left := pf.paths[len(pf.paths)-1]
	pf.FsInfo = mountVol(t, openDevices(t, pf.paths[:len(pf.paths)-1], true), opts)
	b := mmapBuf(t, 2*mib)
	stamp(b, 2, 0)
	for _, r := range [][2]int{{0, 3 * SectorSize}, {3 * SectorSize, 2*mib - 3*SectorSize}} {
		if _, err := pf.write(int64(r[0]), b[r[0]:r[0]+r[1]], 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := pf.Close(); err != nil {
		t.Fatal(err)
	}
	return pf, left, append([]byte(nil), b...)
}

// checkCurrent asserts what a resynced volume must show: the file reads B
// (many times, so the read policy visits every copy), every copy of the
// whole chunk agrees (a full scrub: mirrors compared, parity recomputed),
// check is clean, no device is stale and every superblock has the
// filesystem's generation.
func checkCurrent(t *testing.T, pf *persistFS, b []byte) {
	t.Helper()
	for i := 0; i < 8; i++ {
		got := mmapBuf(t, len(b))
		if n, err := pf.read(0, got, 0); err != nil || n != len(b) {
			t.Fatalf("read %d: %d, %v", i, n, err)
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("read %d returns data other than the last write (a stale copy)", i)
		}
	}
	rep, err := pf.Vol.Scrub(0, pf.Vol.Capacity(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() {
		t.Fatalf("copies differ after the resync: %d differing sectors, %d parity mismatches, %d read errors",
			len(rep.Differences), len(rep.ParityMismatches), len(rep.ReadErrors))
	}
	pf.mustCheckClean(t)
	if s := pf.Vol.StaleDevices(); len(s) != 0 {
		t.Fatalf("still stale: %+v", s)
	}
	for _, d := range pf.Vol.Devices() {
		sb, err := d.ReadSuper()
		if err != nil {
			t.Fatal(err)
		}
		if sb.Generation != pf.Generation() {
			t.Errorf("%s: superblock generation %d, the filesystem is at %d", d.Path(), sb.Generation, pf.Generation())
		}
	}
}

// TestStaleDeviceResync: a device left out of a degraded mount that wrote
// B over A comes back; the mount resyncs it, and every read returns B, every
// copy agrees, the device is current. On main the volume read the stale
// copy like a current one (nodatasum and nocow returned A; datasum data was
// repaired read by read but the copies stayed different).
func TestStaleDeviceResync(t *testing.T) {
	for _, p := range staleProfiles {
		for _, o := range staleOptions {
			t.Run(fmt.Sprintf("%s/%s", p, o.name), func(t *testing.T) {
				pf, left, b := staleSetup(t, p, o.opts)
				vol := openDevices(t, pf.paths, false)
				stale := vol.StaleDevices()
				pf.FsInfo = mountVol(t, vol, o.opts)
				checkCurrent(t, pf, b)
				if len(stale) != 1 || stale[0].Path != left || stale[0].Generation >= vol.Generation() {
					t.Fatalf("stale devices at open %+v (generation %d), want only %s", stale, vol.Generation(), left)
				}
				// The write-intent bitmap kept the regions the degraded
				// mount wrote: only they are copied, and checkCurrent
				// above proves they were all it missed.
				if pr := pf.Vol.ResyncProgress(); pr.Err != nil || pr.Done != pr.Total || pr.Total == 0 || pr.Total >= pf.Vol.Capacity() {
					t.Fatalf("resync progress %+v, want the regions the degraded mount wrote, less than the %d-byte chunk, all done", pr, pf.Vol.Capacity())
				}
				// In sync again: the commit after the resync cleared the bits.
				if dirty, _ := pf.Vol.BitmapDirty(); len(dirty) != 0 {
					t.Fatalf("bits still set after the resync and its commit: %+v", dirty)
				}
			})
		}
	}
}

// TestStaleDeviceResyncInterrupted: the resync fails part way (writes to
// the stale device fail after a few), the mount goes on with the device
// still stale, unread and without a new superblock even when a commit
// writes to it; a crash, a remount finishes the resync and everything is
// current.
func TestStaleDeviceResyncInterrupted(t *testing.T) {
	for _, p := range []raid.Profile{raid.Raid1, raid.Raid10, raid.Raid5, raid.Raid6} {
		t.Run(p.String(), func(t *testing.T) {
			opts := Options{Mode: Bounce}
			pf, left, b := staleSetup(t, p, opts)
			vol := openDevices(t, pf.paths, false)
			var staleDev *raid.Device
			for _, d := range vol.Devices() {
				if d.Path() == left {
					staleDev = d
				}
			}
			staleDev.InjectFaultAfter(blk.OpWrite, 5, -1)
			pf.FsInfo = mountVol(t, vol, opts)
			pr := pf.Vol.ResyncProgress()
			if pr.Err == nil || pr.Done >= pr.Total {
				t.Fatalf("resync progress %+v: want it stopped part way", pr)
			}
			if len(pf.Vol.StaleDevices()) != 1 {
				t.Fatalf("stale devices %+v after a failed resync", pf.Vol.StaleDevices())
			}
			for i := 0; i < 4; i++ {
				got := mmapBuf(t, len(b))
				if n, err := pf.read(0, got, 0); err != nil || n != len(b) || !bytes.Equal(got, b) {
					t.Fatalf("read %d during the stale period: %d, %v, equal %v", i, n, err, bytes.Equal(got, b))
				}
			}
			staleDev.InjectFault(blk.OpWrite, 0) // the device works again: only its staleness keeps its superblock old
			if err := pf.CommitTransaction(); err != nil {
				t.Fatal(err)
			}
			sb, err := staleDev.ReadSuper()
			if err != nil {
				t.Fatal(err)
			}
			if sb.Generation >= pf.Generation() {
				t.Fatalf("the stale device got generation %d (volume %d) before its resync finished", sb.Generation, pf.Generation())
			}
			pf.crash()
			pf.reopen(t)
			checkCurrent(t, pf, b)
		})
	}
}

// TestStaleDeviceResyncBackground: with the resync beside the I/O, reads
// during it never return the stale copy, writes during it are not undone
// by it, and once it ends everything is current; a close in the middle
// stops it, and the next mount finishes it.
func TestStaleDeviceResyncBackground(t *testing.T) {
	for _, p := range []raid.Profile{raid.Raid1, raid.Raid10, raid.Raid5, raid.Raid6} {
		t.Run(p.String(), func(t *testing.T) {
			opts := Options{Mode: Bounce, ResyncInBackground: true}
			pf, _, b := staleSetup(t, p, opts)
			pf.FsInfo = mountVol(t, openDevices(t, pf.paths, false), opts)
			c := mmapBuf(t, 256<<10)
			stamp(c, 3, mib)
			if _, err := pf.write(mib, c, 0); err != nil {
				t.Fatal(err)
			}
			copy(b[mib:], c)
			for i := 0; i < 4; i++ {
				got := mmapBuf(t, len(b))
				if n, err := pf.read(0, got, 0); err != nil || n != len(b) || !bytes.Equal(got, b) {
					t.Fatalf("read %d beside the resync: %d, %v, equal %v", i, n, err, bytes.Equal(got, b))
				}
			}
			pf.WaitResync()
			if pr := pf.Vol.ResyncProgress(); pr.Err != nil || pr.Running || pr.Done != pr.Total || pr.Total == 0 {
				t.Fatalf("resync progress %+v after WaitResync", pr)
			}
			checkCurrent(t, pf, b)
			if err := pf.Close(); err != nil {
				t.Fatal(err)
			}

			// Stale again (a degraded mount writes b2), then closed as
			// soon as mounted: wherever the resync stood, the next
			// mount ends it.
			pf.FsInfo = mountVol(t, openDevices(t, pf.paths[:len(pf.paths)-1], true), opts)
			stamp(c, 4, 0)
			if _, err := pf.write(0, c, 0); err != nil {
				t.Fatal(err)
			}
			copy(b, c)
			if err := pf.Close(); err != nil {
				t.Fatal(err)
			}
			pf.FsInfo = mountVol(t, openDevices(t, pf.paths, false), opts)
			if err := pf.Close(); err != nil {
				t.Fatal(err)
			}
			t.Logf("resync at the close: %+v", pf.Vol.ResyncProgress())
			pf.opts = Options{Mode: Bounce}
			pf.reopen(t)
			checkCurrent(t, pf, b)
		})
	}
}
