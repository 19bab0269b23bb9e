package raid

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

// TestUnreadableSuperCopyFallsBack: a copy that fails to read (EIO, a bad
// sector) is skipped like a corrupt one, primary included; only when no
// copy can be read does ReadSuper fail, with the EIO.
func TestUnreadableSuperCopyFallsBack(t *testing.T) {
	paths := imagePaths(t, 1)
	devs := openImages(t, paths, 8<<20)
	defer closeAll(devs)
	d := devs[0]
	sb, err := Format(devs, Single)
	if err != nil {
		t.Fatal(err)
	}
	for i := range superOffsets {
		d.InjectFaultAfter(blk.OpRead, i, 1) // the read of copy i fails
		got, err := d.ReadSuper()
		if err != nil || got.Fsid != sb.Fsid || got.Generation != sb.Generation {
			t.Errorf("copy %d unreadable: %v", i, err)
		}
	}
	d.InjectFault(blk.OpRead, -1)
	if _, err := d.ReadSuper(); !errors.Is(err, syscall.EIO) {
		t.Errorf("no copy readable: %v, want EIO", err)
	}
	d.InjectFault(blk.OpRead, 0)
}

// superOp is one completed device operation of a superblock write.
type superOp struct {
	op  blk.Op
	off uint64
}

// TestSuperblockWritesSurvivePowerCut replays a superblock update under a
// power-loss model: at every cut point, the writes completed before the
// last completed flush are on disk, and each later one is lost, whole, or
// torn (new bytes up to tear, old ones after: garbage), in every
// combination. Some copy must always
// validate, at the old generation or the new one, and the new one once
// WriteSuper has returned.
func TestSuperblockWritesSurvivePowerCut(t *testing.T) {
	const tear = 64 // the new csum and fsid, the old generation: garbage
	paths := imagePaths(t, 1)
	devs := openImages(t, paths, 8<<20)
	defer closeAll(devs)
	d := devs[0]
	old, err := Format(devs, Single)
	if err != nil {
		t.Fatal(err)
	}
	before := imageSupers(t, paths[0])
	var ops []superOp
	d.observe = func(op blk.Op, off uint64, n int) { ops = append(ops, superOp{op, off}) }
	next := *old
	next.Generation, next.RootSlot, next.RootBytes = old.Generation+1, 1, SectorSize
	if err := d.WriteSuper(&next); err != nil {
		t.Fatal(err)
	}
	d.observe = nil
	after := imageSupers(t, paths[0])
	reader, err := OpenDevice(paths[0], DeviceOptions{Buffered: true, ReadOnly: true, Unclaimed: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	for cut := 0; cut <= len(ops); cut++ {
		durable := map[uint64]bool{}
		var pending []uint64
		for _, o := range ops[:cut] {
			switch o.op {
			case blk.OpWrite:
				pending = append(pending, o.off)
			case blk.OpFlush:
				for _, off := range pending {
					durable[off] = true
				}
				pending = nil
			}
		}
		combos := 1
		for range pending {
			combos *= 3
		}
		for c := 0; c < combos; c++ {
			img := map[uint64][]byte{}
			for off, b := range before {
				img[off] = b
				if durable[off] {
					img[off] = after[off]
				}
			}
			fate, desc := c, ""
			for _, off := range pending {
				switch fate % 3 {
				case 1:
					img[off] = after[off]
					desc += fmt.Sprintf(" %d:whole", off)
				case 2:
					img[off] = append(append([]byte(nil), after[off][:tear]...), before[off][tear:]...)
					desc += fmt.Sprintf(" %d:torn", off)
				default:
					desc += fmt.Sprintf(" %d:lost", off)
				}
				fate /= 3
			}
			setImageSupers(t, paths[0], img)
			got, err := reader.ReadSuper()
			switch {
			case err != nil:
				t.Errorf("cut after %d of %v,%s: no valid superblock: %v", cut, ops, desc, err)
			case got.Generation != old.Generation && got.Generation != next.Generation:
				t.Errorf("cut after %d,%s: generation %d", cut, desc, got.Generation)
			case cut == len(ops) && got.Generation != next.Generation:
				t.Errorf("after WriteSuper returned: generation %d, want %d", got.Generation, next.Generation)
			}
		}
	}
}

// readCopies reads the three superblock copies of an image.
func imageSupers(t *testing.T, path string) map[uint64][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[uint64][]byte{}
	for _, off := range superOffsets {
		b := make([]byte, SuperInfoSize)
		if _, err := f.ReadAt(b, int64(off)); err != nil {
			t.Fatal(err)
		}
		out[off] = b
	}
	return out
}

func setImageSupers(t *testing.T, path string, copies map[uint64][]byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off, b := range copies {
		if _, err := f.WriteAt(b, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFailedFlushStaysFailed is the fsyncgate rule: once a device's flush
// failed, later volume flushes count it as failed even when its fdatasync
// now succeeds, since what the failed one lost is not coming back.
func TestFailedFlushStaysFailed(t *testing.T) {
	v := newVolume(t, Raid0, 4*S)
	v.devs[1].InjectFault(blk.OpFlush, 1)
	if err := v.Flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush with a failing device: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := v.Flush(); !errors.Is(err, syscall.EIO) {
			t.Fatalf("flush %d after a failed one: %v, want EIO", i, err)
		}
	}
	if !v.devs[1].FlushFailed() || v.devs[0].FlushFailed() {
		t.Errorf("flush failed: %v %v, want only the second device", v.devs[0].FlushFailed(), v.devs[1].FlushFailed())
	}

	// raid1 tolerates one device whose flush failed, not a second one
	// later, even though the first device's fdatasync works again.
	m := newVolume(t, Raid1, 4*S)
	m.devs[1].InjectFault(blk.OpFlush, 1)
	if err := m.Flush(); err != nil {
		t.Fatalf("raid1 with one failed flush: %v", err)
	}
	m.devs[0].InjectFault(blk.OpFlush, 1)
	if err := m.Flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("raid1 with both devices' flushes failed: %v, want EIO", err)
	}
	data := bytes.Repeat([]byte{7}, S)
	if st := writeAt(t, m, 0, data, nil); st != blk.StsOK {
		t.Fatalf("write after failed flushes: %v (the volume refuses barriers, not writes)", st)
	}
}
