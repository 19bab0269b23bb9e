package btrfsdio

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/raid"
)

// The superblock copies in the order WriteSuper writes them: the two
// backups, a flush, then the primary (btrfs_sb_offset(0) is 64 KiB).
var superWriteOrder = []uint64{256 << 10, 512 << 10, 64 << 10}

const primarySuper = 64 << 10

// superGen is the generation of the superblock copy at off of an image,
// 0 when that copy does not validate.
func superGen(t *testing.T, path string, off uint64) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, raid.SuperInfoSize)
	if _, err := f.ReadAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
	sb, err := raid.DecodeSuperblock(b, off)
	if err != nil {
		return 0
	}
	return sb.Generation
}

// newestSuper is the highest valid generation among an image's copies.
func newestSuper(t *testing.T, path string) uint64 {
	t.Helper()
	g := uint64(0)
	for _, off := range superWriteOrder {
		g = max(g, superGen(t, path, off))
	}
	return g
}

// commitStep is one device operation of a commit on a single device (two
// metadata copies, DUP-like): the skip-th operation of kind op fails.
type commitStep struct {
	name string
	op   blk.Op
	skip int
	// superWrites is how many superblock copies may hold the new
	// generation once this step failed.
	superWrites int
}

// commitSteps are a single-device commit's operations in order: flush the
// data; write the two metadata copies, flush; write the backups, flush;
// write the primary, flush.
var commitSteps = []commitStep{
	{"data flush", blk.OpFlush, 0, 0},
	{"metadata write", blk.OpWrite, 0, 0},
	{"metadata second copy write", blk.OpWrite, 1, 0},
	{"metadata flush", blk.OpFlush, 1, 0},
	{"first backup superblock write", blk.OpWrite, 2, 0},
	{"second backup superblock write", blk.OpWrite, 3, 1},
	{"backup superblocks flush", blk.OpFlush, 2, 2},
	{"primary superblock write", blk.OpWrite, 4, 2},
	{"final flush", blk.OpFlush, 3, 3},
}

// failedCommit is a single-device filesystem with write A flushed at
// generation gen and write B acknowledged since.
type failedCommit struct {
	pf   *persistFS
	a, b []byte
	gen  uint64
	// torn is the offset of a superblock copy the test left as garbage
	// (0: none): check must name it as damage, and a scrub repairs it.
	torn uint64
}

func newFailedCommit(t *testing.T, opts Options) *failedCommit {
	pf := newPersistFS(t, raid.Single, 8<<20, opts)
	fc := &failedCommit{pf: pf, a: mmapBuf(t, 64<<10), b: mmapBuf(t, 64<<10)}
	stamp(fc.a, 1, 0)
	if _, err := pf.write(0, fc.a, 0); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	fc.gen = pf.Generation()
	stamp(fc.b, 2, mib)
	if _, err := pf.write(mib, fc.b, 0); err != nil {
		t.Fatal(err)
	}
	return fc
}

// checkReopened reopens after a crash and checks the generation is gen or
// gen+1 and the data is that generation's: A, and B only at gen+1. The
// volume takes writes and flushes again, and check is clean.
func (fc *failedCommit) checkReopened(t *testing.T) {
	t.Helper()
	pf := fc.pf
	pf.crash()
	pf.reopen(t)
	got := pf.Generation()
	wantB := fc.b
	switch got {
	case fc.gen:
		wantB = make([]byte, len(fc.b))
	case fc.gen + 1:
	default:
		t.Fatalf("reopened at generation %d, want %d or %d", got, fc.gen, fc.gen+1)
	}
	all := pf.readAll(t)
	if !bytes.Equal(all[:len(fc.a)], fc.a) {
		t.Fatal("flushed write lost after reopen")
	}
	if !bytes.Equal(all[mib:mib+len(fc.b)], wantB) {
		t.Fatalf("generation %d: the unflushed write is not what that generation holds", got)
	}
	fc.repairTorn(t)
	pf.mustCheckClean(t)
	if _, err := pf.write(2*mib, fc.a, 0); err != nil {
		t.Fatalf("write after a fresh mount: %v", err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatalf("flush after a fresh mount: %v", err)
	}
}

// repairTorn checks that the torn superblock copy, if any, is the only bad
// one check reports, then rewrites it as scrub --repair does.
func (fc *failedCommit) repairTorn(t *testing.T) {
	t.Helper()
	if fc.torn == 0 {
		return
	}
	rep, err := Check(fc.pf.Vol)
	if err != nil {
		t.Fatal(err)
	}
	var bad []uint64
	for _, c := range rep.Supers {
		if c.Err != nil {
			bad = append(bad, c.Bytenr)
		}
	}
	if len(bad) != 1 || bad[0] != fc.torn {
		t.Fatalf("check names bad superblock copies at %v, want only the torn one at %d", bad, fc.torn)
	}
	if _, err := fc.pf.Vol.ScrubSupers(true); err != nil {
		t.Fatalf("repairing the torn copy: %v", err)
	}
}

// TestFailedFlushStaysFailed fails each device operation of a commit in
// turn (the fsyncgate case: a FLUSH that returned EIO must not be followed
// by one that succeeds while the data is gone). The FLUSH that hit it
// fails with EIO, and so do every later write, punch and FLUSH; reads go
// on; Stats says why; no superblock names the new generation unless the
// metadata it points to was flushed; reopening gives the last good commit
// (or the aborted one, whole, when its superblock was partly written).
func TestFailedFlushStaysFailed(t *testing.T) {
	for _, step := range commitSteps {
		t.Run(step.name, func(t *testing.T) {
			fc := newFailedCommit(t, Options{Mode: Bounce})
			pf := fc.pf
			d := pf.Vol.Devices()[0]
			d.InjectFaultAfter(step.op, step.skip, 1)
			if err := pf.Flush(); !errors.Is(err, syscall.EIO) {
				t.Fatalf("FLUSH that hit the failure: %v, want EIO", err)
			}
			if st := d.Stats(); st.InjectedFaults != 1 {
				t.Fatalf("the fault was not hit: %+v", st)
			}
			for i := 0; i < 2; i++ {
				if _, err := pf.write(2*mib, fc.a, 0); !errors.Is(err, syscall.EIO) {
					t.Fatalf("write %d after the failed FLUSH: %v, want EIO", i, err)
				}
				if err := pf.Inode().PunchHole(0, SectorSize); !errors.Is(err, syscall.EIO) {
					t.Fatalf("punch %d after the failed FLUSH: %v, want EIO", i, err)
				}
				if err := pf.Flush(); !errors.Is(err, syscall.EIO) {
					t.Fatalf("FLUSH %d after the failed FLUSH: %v, want EIO", i, err)
				}
			}
			all := pf.readAll(t)
			if !bytes.Equal(all[:len(fc.a)], fc.a) || !bytes.Equal(all[mib:mib+len(fc.b)], fc.b) {
				t.Fatal("reads after the failure do not return what was written")
			}
			if st := pf.Stats(); st.ReadOnly == "" {
				t.Error("Stats does not say the device is read-only")
			}
			path := pf.paths[0]
			newer := 0
			for _, off := range superWriteOrder {
				if g := superGen(t, path, off); g > fc.gen {
					newer++
				}
			}
			if newer > step.superWrites {
				t.Errorf("%d superblock copies name generation %d, at most %d may", newer, fc.gen+1, step.superWrites)
			}
			if step.op == blk.OpFlush && step.superWrites < 3 && superGen(t, path, primarySuper) != fc.gen {
				t.Errorf("the primary superblock of the device whose flush failed was rewritten")
			}
			fc.checkReopened(t)
		})
	}
}

// TestTornSuperblockCopy crashes a commit while each superblock copy is
// being written, that copy left as garbage: the volume still opens, at the
// old generation or the new one, with that generation's data.
func TestTornSuperblockCopy(t *testing.T) {
	for k, off := range superWriteOrder {
		t.Run(fmt.Sprintf("copy at %d KiB", off>>10), func(t *testing.T) {
			fc := newFailedCommit(t, Options{Mode: Bounce, DataSum: true})
			pf := fc.pf
			// Two metadata writes, then the superblock copies in order.
			pf.Vol.Devices()[0].InjectFaultAfter(blk.OpWrite, 2+k, -1)
			if err := pf.Flush(); !errors.Is(err, syscall.EIO) {
				t.Fatalf("FLUSH with a superblock write failing: %v", err)
			}
			pf.crash()
			f, err := os.OpenFile(pf.paths[0], os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			garbage := make([]byte, raid.SuperInfoSize)
			fillPattern(garbage, uint64(k))
			_, err = f.WriteAt(garbage, int64(off))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := newestSuper(t, pf.paths[0]); g != fc.gen && g != fc.gen+1 {
				t.Fatalf("newest valid superblock: generation %d", g)
			}
			fc.torn = off
			fc.checkReopened(t)
		})
	}
}

// TestFailedFlushOnOneMirror: on raid1, a device whose data flush failed is
// tolerated as btrfs tolerates it (the other copy is durable), but it gets
// no new superblock, at this commit or any later one, although its
// fdatasync works again; a failed flush on the other device then exceeds
// what raid1 tolerates and the device turns read-only. The next mount
// resyncs the device that fell behind.
func TestFailedFlushOnOneMirror(t *testing.T) {
	pf := newPersistFS(t, raid.Raid1, 8<<20, Options{Mode: Bounce})
	a := mmapBuf(t, 64<<10)
	stamp(a, 1, 0)
	if _, err := pf.write(0, a, 0); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	gen := pf.Generation()
	devs := pf.Vol.Devices()
	devs[1].InjectFaultAfter(blk.OpFlush, 0, 1) // its data flush
	for i := 0; i < 2; i++ {
		if _, err := pf.write(mib, a, 0); err != nil {
			t.Fatal(err)
		}
		if err := pf.Flush(); err != nil {
			t.Fatalf("commit %d with one raid1 flush failed: %v", i, err)
		}
	}
	if g := newestSuper(t, pf.paths[1]); g != gen {
		t.Fatalf("the device whose flush failed has a superblock of generation %d, want %d", g, gen)
	}
	if g := newestSuper(t, pf.paths[0]); g != gen+2 {
		t.Fatalf("the good device has generation %d, want %d", g, gen+2)
	}
	devs[0].InjectFaultAfter(blk.OpFlush, 0, 1)
	if err := pf.Flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("FLUSH with both devices' flushes failed: %v, want EIO", err)
	}
	if _, err := pf.write(mib, a, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("write after that: %v, want EIO", err)
	}
	if err := pf.Flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("FLUSH after that: %v, want EIO", err)
	}
	pf.crash()
	pf.reopen(t)
	// The device whose flush failed came back behind: the mount resyncs
	// it and commits once more, which makes it current.
	if pf.Generation() != gen+3 {
		t.Fatalf("reopened at generation %d, want %d (the last commit and the resync's)", pf.Generation(), gen+3)
	}
	if g := newestSuper(t, pf.paths[1]); g != gen+3 {
		t.Fatalf("the device whose flush failed has generation %d after the resync, want %d", g, gen+3)
	}
	if got := pf.readAll(t); !bytes.Equal(got[:len(a)], a) || !bytes.Equal(got[mib:mib+len(a)], a) {
		t.Fatal("flushed data lost")
	}
	// What the device took before its flush failed may be gone, and the
	// write-intent bitmap has no bits for those COW writes: it must have
	// given up its history, so the resync covered the whole chunk.
	if pr := pf.Vol.ResyncProgress(); pr.Total != pf.Vol.Capacity() || pr.Done != pr.Total {
		t.Fatalf("resync of the device whose flush failed: %+v, want the whole %d-byte chunk", pr, pf.Vol.Capacity())
	}
}
