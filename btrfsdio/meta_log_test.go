package btrfsdio

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/btrfsdio/btrfsdio/raid"
)

// fragment gives pf's file n extents of one sector each, every stride
// bytes of the file, allocated as a write would and with a checksum each,
// without writing their data: a large mapping built in seconds.
func fragment(t testing.TB, pf *persistFS, n int, stride uint64) {
	t.Helper()
	fs := pf.FsInfo
	fs.trans.mu.RLock()
	defer fs.trans.mu.RUnlock()
	for i := 0; i < n; i++ {
		disk, got, err := fs.reserveData(SectorSize, fs.allocHint.Load())
		if err != nil || got != SectorSize {
			t.Fatalf("extent %d: reserve: %d bytes, %v", i, got, err)
		}
		fs.allocHint.Store(disk + SectorSize)
		fs.inode.extents.replace(uint64(i)*stride, SectorSize, disk)
		fs.csums.insert(disk, []uint32{uint32(i)})
	}
}

// devBytes is what every device of pf has written so far.
func devBytes(pf *persistFS) (n uint64) {
	for _, d := range pf.Vol.Devices() {
		n += d.Stats().BytesWritten
	}
	return n
}

// mappingOf is the committed-state view compared across a crash.
func mappingOf(fs *FsInfo) ([]fileExtent, []csumRun) {
	return fs.inode.extents.snapshot(), fs.csums.runs()
}

// TestCommitBytesIndependentOfMapping: a FLUSH after a one-sector write
// writes (counted at the devices: record, flushes' superblocks) about as
// much with 100000 extents mapped as with 100, where the whole-image
// commit wrote in proportion to the mapping.
func TestCommitBytesIndependentOfMapping(t *testing.T) {
	perCommit, checkpoints := map[int]uint64{}, map[int]int64{}
	for _, n := range []int{100, 100000} {
		pf := newPersistFS(t, raid.Single, 1<<30, Options{Mode: Bounce, DataSum: true, Size: 800 << 20})
		fragment(t, pf, n, 8192)
		if err := pf.Flush(); err != nil {
			t.Fatal(err)
		}
		b := mmapBuf(t, SectorSize)
		fillPattern(b, uint64(n))
		ckpts := pf.Stats().Checkpoints
		var total uint64
		for i := 0; i < 4; i++ {
			if _, err := pf.write(int64(i)*8192+4096, b, 0); err != nil {
				t.Fatal(err)
			}
			before := devBytes(pf)
			if err := pf.Flush(); err != nil {
				t.Fatal(err)
			}
			total += devBytes(pf) - before
		}
		perCommit[n], checkpoints[n] = total/4, pf.Stats().Checkpoints-ckpts
		t.Logf("%d extents mapped: %d device bytes per one-sector commit", n, total/4)
	}
	if perCommit[100000] >= 4*perCommit[100] {
		t.Fatalf("a one-sector commit writes %d bytes with 100000 extents mapped, %d with 100: it grows with the mapping",
			perCommit[100000], perCommit[100])
	}
	if checkpoints[100] != 0 || checkpoints[100000] != 0 {
		t.Fatalf("checkpoints during one-sector commits: %v", checkpoints)
	}
}

// TestFragmentedLargeVolumeCommits maps a 16 GiB volume's file with one
// sector every 64 KiB (245760 extents and checksums), commits, appends
// 300 records, crashes and mounts: the mapping comes back whole.
func TestFragmentedLargeVolumeCommits(t *testing.T) {
	if testing.Short() {
		t.Skip("16 GiB sparse image")
	}
	pf := newPersistFS(t, raid.Single, 16<<30, Options{Mode: Bounce, DataSum: true, Size: 15 << 30})
	n := int((15 << 30) / (64 << 10))
	fragment(t, pf, n, 64<<10)
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	b := mmapBuf(t, SectorSize)
	for i := 0; i < 300; i++ {
		fillPattern(b, uint64(i))
		if _, err := pf.write(int64(i%15)*(1<<30)+int64(i)*8192+8192, b, 0); err != nil {
			t.Fatal(err)
		}
		if err := pf.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	ext, sums := mappingOf(pf.FsInfo)
	if len(ext) < n {
		t.Fatalf("%d extents mapped, want at least %d", len(ext), n)
	}
	t.Logf("%d extents, root of %d bytes in a %d-byte slot, checkpoint %d bytes",
		len(ext), pf.meta.Root().Bytes, pf.meta.SlotBytes(), pf.trans.checkpointBytes)
	pf.crash()
	start := time.Now()
	pf.reopen(t)
	t.Logf("mount with %d bytes of log: %v", pf.meta.Root().Bytes-pf.trans.checkpointBytes, time.Since(start))
	gotExt, gotSums := mappingOf(pf.FsInfo)
	if !reflect.DeepEqual(gotExt, ext) || !reflect.DeepEqual(gotSums, sums) {
		t.Fatalf("after the crash: %d extents, %d csum runs; committed %d, %d", len(gotExt), len(gotSums), len(ext), len(sums))
	}
}

// TestMetaLogReplayMatchesCommits runs random writes, overwrites and
// punches with FLUSHes between them, through several checkpoints (a small
// Options.MetaLogBudget), and crashes at random points: every mount finds the
// mapping, checksums and data of the last FLUSH, and check is clean.
func TestMetaLogReplayMatchesCommits(t *testing.T) {
	for _, p := range []raid.Profile{raid.Single, raid.Raid1} {
		t.Run(p.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(p), 3))
			pf := newPersistFS(t, p, 32<<20, Options{Mode: Bounce, DataSum: true, Size: 4 << 20, MetaLogBudget: 64 << 10})
			buf := mmapBuf(t, 64<<10)
			var wantExt []fileExtent
			var wantSums []csumRun
			var wantData []byte
			ckpts, appends := 0, 0
			for round := 0; round < 60; round++ {
				for i := 0; i < 1+rng.IntN(6); i++ {
					off := int64(rng.IntN(1024)) * SectorSize
					n := min(int64(1+rng.IntN(16))*SectorSize, 4<<20-off)
					if rng.IntN(5) == 0 {
						if err := pf.Inode().PunchHole(uint64(off), uint64(n)); err != nil {
							t.Fatal(err)
						}
						continue
					}
					fillPattern(buf[:n], rng.Uint64())
					if _, err := pf.write(off, buf[:n], 0); err != nil {
						t.Fatal(err)
					}
				}
				if err := pf.Flush(); err != nil {
					t.Fatal(err)
				}
				if pf.trans.checkpointBytes == pf.meta.Root().Bytes {
					ckpts++
				} else {
					appends++
				}
				wantExt, wantSums = mappingOf(pf.FsInfo)
				wantData = pf.readAll(t)
				if rng.IntN(6) == 0 {
					// Changes after the FLUSH that the crash loses.
					fillPattern(buf, rng.Uint64())
					if _, err := pf.write(0, buf, 0); err != nil {
						t.Fatal(err)
					}
					pf.crash()
					pf.reopen(t)
					gotExt, gotSums := mappingOf(pf.FsInfo)
					if !reflect.DeepEqual(gotExt, wantExt) || !reflect.DeepEqual(gotSums, wantSums) {
						t.Fatalf("round %d: the mounted mapping differs from the last FLUSH's:\n%v\n%v", round, gotExt, wantExt)
					}
					if !bytes.Equal(pf.readAll(t), wantData) {
						t.Fatalf("round %d: data differs from the last FLUSH's", round)
					}
					pf.mustCheckClean(t)
				}
			}
			if ckpts < 2 || appends < 20 {
				t.Fatalf("%d checkpoints and %d log appends: the test does not cycle", ckpts, appends)
			}
		})
	}
}

// TestMetaLogTornTail: a commit cut after its record reached the slot but
// before any superblock named it (and garbage past it, as a torn write
// leaves) is not replayed; the next commit appends over it.
func TestMetaLogTornTail(t *testing.T) {
	pf := newPersistFS(t, raid.Dup, 16<<20, Options{Mode: Bounce, DataSum: true, Size: 2 << 20})
	b := mmapBuf(t, 64<<10)
	fillPattern(b, 1)
	if _, err := pf.write(0, b, 0); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	want := pf.readAll(t)
	root := pf.meta.Root()
	fillPattern(b, 2)
	if _, err := pf.write(0, b, 0); err != nil {
		t.Fatal(err)
	}
	pf.Faults.CommitAbort.Store(1)
	if err := pf.Flush(); err == nil {
		t.Fatal("the injected commit abort did not fail the FLUSH")
	}
	// A torn record after it: a valid first block, then garbage.
	rec := encodeMetaDelta(&metaDelta{fsid: pf.meta.Fsid(), generation: root.Generation + 5, size: 2 << 20,
		fileRanges: []span{{0, 8192}}})
	garbage := append(rec[:metaBlockSize:metaBlockSize], bytes.Repeat([]byte{0xa5}, metaBlockSize)...)
	if err := pf.meta.WriteSlotAt(root.Slot, root.Bytes+2*metaBlockSize, garbage); err != nil {
		t.Fatal(err)
	}
	pf.crash()
	pf.reopen(t)
	if pf.Generation() != root.Generation || !bytes.Equal(pf.readAll(t), want) {
		t.Fatalf("generation %d (want %d) or data of the torn commit replayed", pf.Generation(), root.Generation)
	}
	pf.mustCheckClean(t)
	fillPattern(b, 3)
	if _, err := pf.write(8192, b[:8192], 0); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := pf.meta.Root(); got.Slot != root.Slot || got.Bytes <= root.Bytes {
		t.Fatalf("root %+v after %+v: the commit did not append", got, root)
	}
	want = pf.readAll(t)
	pf.crash()
	pf.reopen(t)
	if !bytes.Equal(pf.readAll(t), want) {
		t.Fatal("data of the commit appended over the torn tail lost")
	}
	pf.mustCheckClean(t)
}

// TestMetaLogCorruptRecord: a record inside the committed root that does
// not decode makes its copy corrupt: the mount uses the other copy, check
// reports the bad one, and with both bad the mount refuses.
func TestMetaLogCorruptRecord(t *testing.T) {
	pf := newPersistFS(t, raid.Raid1, 16<<20, Options{Mode: Bounce, DataSum: true, Size: 2 << 20})
	b := mmapBuf(t, 64<<10)
	for i := 0; i < 3; i++ {
		fillPattern(b, uint64(i))
		if _, err := pf.write(int64(i)*(64<<10), b, 0); err != nil {
			t.Fatal(err)
		}
		if err := pf.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	want := pf.readAll(t)
	ckpt := pf.trans.checkpointBytes
	if pf.meta.Root().Bytes <= ckpt {
		t.Fatal("no log record to damage")
	}
	pf.crash()
	files, offs, n := metaCopyOffsets(t, pf.paths)
	damage := func(i int) {
		f, err := os.OpenFile(files[i], os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// The last record's first block, its csum made right again: the
		// tree-checker must refuse what the crc32c lets through.
		buf := make([]byte, metaBlockSize)
		off := offs[i] + int64(n) - metaBlockSize
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint64(buf[metaBlockHeader+metaLogHeaderLen:], 1) // a file range at an unaligned offset
		binary.LittleEndian.PutUint32(buf, csumData(buf[4:]))
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	damage(0)
	pf.reopen(t)
	if !bytes.Equal(pf.readAll(t), want) {
		t.Fatal("data differs after falling back to the good copy")
	}
	rep, err := Check(pf.Vol)
	if err != nil || rep.MetaCopies[0].Err == nil || rep.MetaCopies[1].Err != nil {
		t.Fatalf("check: %v, copies %v", err, rep.MetaCopies)
	}
	pf.crash()
	damage(1)
	if _, err := openPaths(t, pf.paths, 0, raid.AnyProfile, pf.opts); !errors.Is(err, errNoValidRoot) || !strings.Contains(err.Error(), "log record") {
		t.Fatalf("open with both copies' log damaged: %v", err)
	}
}

// TestMetaLogOldRootOpens: a root that is a checkpoint alone, what every
// commit wrote before the log (the encoder is unchanged), decodes through
// decodeMetaLog to the same image.
func TestMetaLogOldRootOpens(t *testing.T) {
	for _, img := range metaSeeds() {
		b := encodeMeta(img)
		got, ckpt, err := decodeMetaLog(b)
		if err != nil || ckpt != len(b) {
			t.Fatalf("%v, checkpoint %d of %d bytes", err, ckpt, len(b))
		}
		got.checkpointBytes = 0
		if !reflect.DeepEqual(got, img) && !(len(got.csums) == 0 && len(img.csums) == 0) {
			t.Fatalf("decoded %+v, want %+v", got, img)
		}
	}
}

// metaLogSeeds are valid roots with records: a checkpoint and deltas that
// overwrite, punch and move checksums.
func metaLogSeeds() [][]byte {
	var out [][]byte
	for _, img := range metaSeeds() {
		if img.flags != 0 {
			continue
		}
		b := encodeMeta(img)
		b = append(b, encodeMetaDelta(&metaDelta{fsid: img.fsid, generation: img.generation + 1, size: img.size,
			fileRanges: []span{{0, 4096}}, extents: []fileExtent{{0, 4096, 1 << 20}},
			diskRanges: []span{{4096, 4096}, {1 << 20, 4096}}, csums: []csumRun{{1 << 20, []uint32{9}}}})...)
		b = append(b, encodeMetaDelta(&metaDelta{fsid: img.fsid, generation: img.generation + 2, size: img.size,
			fileRanges: []span{{8192, 8192}}, diskRanges: []span{{65536, 4096}}})...)
		out = append(out, b)
	}
	return out
}

// TestDecodeMetaLogSeeds: the seeds replay to what the deltas say.
func TestDecodeMetaLogSeeds(t *testing.T) {
	img, _, err := decodeMetaLog(metaLogSeeds()[0])
	if err != nil {
		t.Fatal(err)
	}
	want := []fileExtent{{0, 4096, 1 << 20}, {4096, 4096, 8192}}
	if !reflect.DeepEqual(img.extents, want) || img.generation != 5 {
		t.Fatalf("replayed extents %v generation %d, want %v and 5", img.extents, img.generation, want)
	}
	if len(img.csums) != 2 || img.csums[0].logical != 8192 || img.csums[1].logical != 1<<20 {
		t.Fatalf("replayed csums %v", img.csums)
	}
}

// FuzzDecodeMetaLog mutates roots with log records, reseals every block,
// and holds decodeMetaLog to: no panic, no allocation beyond a few times
// the input, and an accepted root passes the tree-checker.
func FuzzDecodeMetaLog(f *testing.F) {
	for _, b := range metaLogSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		b = append([]byte(nil), b...)
		sealBlocks(b)
		var img *metaImage
		var err error
		if n := allocatedBy(func() { img, _, err = decodeMetaLog(b) }); n > 8*uint64(len(b))+64<<10 {
			t.Fatalf("decoding %d bytes allocated %d", len(b), n)
		}
		if err == nil {
			if verr := img.validate(); verr != nil {
				t.Fatalf("accepted a root the tree-checker refuses: %v", verr)
			}
		}
	})
}

// TestMetaLogOpensImageFromBeforeTheLog mounts raid1 images written by the
// code before the metadata log (commit ee37b29: eight 16 KiB writes at
// every 64 KiB, each flushed, 8 KiB punched at 192 KiB, closed), reads the
// data back, then commits a record onto its root and mounts again.
func TestMetaLogOpensImageFromBeforeTheLog(t *testing.T) {
	dir := testDir(t)
	f, err := os.Open("testdata/meta-v1-raid1.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var paths []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Base(h.Name))
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	want := make([]byte, 1<<20)
	for i := 0; i < 8; i++ {
		for j := 0; j < 16<<10; j++ {
			want[i*(64<<10)+j] = byte(i + 1)
		}
	}
	clear(want[3*(64<<10) : 3*(64<<10)+8192])
	opts := Options{Mode: Bounce, DataSum: true}
	fs, err := openPaths(t, paths, 0, raid.AnyProfile, opts)
	if err != nil {
		t.Fatalf("image from before the log: %v", err)
	}
	pf := &persistFS{testFS: &testFS{FsInfo: fs, paths: paths}, opts: opts}
	t.Cleanup(func() { pf.Vol.Close() })
	if pf.trans.checkpointBytes != pf.meta.Root().Bytes {
		t.Fatalf("the old root is not a checkpoint alone: %d of %d bytes", pf.trans.checkpointBytes, pf.meta.Root().Bytes)
	}
	if !bytes.Equal(pf.readAll(t), want) {
		t.Fatal("the old image's data differs")
	}
	pf.mustCheckClean(t)
	b := mmapBuf(t, 8192)
	fillPattern(b, 9)
	if _, err := pf.write(512<<10, b, 0); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	if pf.meta.Root().Bytes <= pf.trans.checkpointBytes {
		t.Fatal("the commit on the old root wrote a checkpoint, not a record")
	}
	copy(want[512<<10:], b)
	pf.crash()
	pf.reopen(t)
	if !bytes.Equal(pf.readAll(t), want) {
		t.Fatal("data differs after a record on the old root")
	}
	pf.mustCheckClean(t)
}
