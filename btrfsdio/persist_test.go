package btrfsdio

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/raid"
)

// persistFS is a filesystem on formatted images, reopened by path.
type persistFS struct {
	*testFS
	opts Options
}

func openPaths(t testing.TB, paths []string, create int64, p raid.Profile, opts Options) (*FsInfo, error) {
	t.Helper()
	var devs []*raid.Device
	for _, path := range paths {
		d, err := raid.OpenDevice(path, raid.DeviceOptions{Create: create > 0, Size: create, Logger: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	vol, _, err := raid.OpenVolume(devs, raid.OpenOptions{Profile: p, Volume: raid.VolumeOptions{Logger: quietLog()}})
	if err != nil {
		t.Fatal(err)
	}
	if opts.Log == nil {
		opts.Log = quietLog()
	}
	fs, err := OpenFsInfo(vol, opts)
	if err != nil {
		vol.Close()
		return nil, err
	}
	return fs, nil
}

func newPersistFS(t testing.TB, p raid.Profile, devSize int64, opts Options) *persistFS {
	t.Helper()
	dir := testDir(t)
	var paths []string
	for i := 0; i < devicesFor(p); i++ {
		paths = append(paths, filepath.Join(dir, fmt.Sprintf("dev%d.img", i)))
	}
	fs, err := openPaths(t, paths, devSize, p, opts)
	if err != nil {
		t.Fatal(err)
	}
	pf := &persistFS{testFS: &testFS{FsInfo: fs, paths: paths}, opts: opts}
	t.Cleanup(func() { pf.Vol.Close() })
	return pf
}

// crash stops the filesystem without a commit: what is on the images is
// what a power cut after the last completed device write leaves.
func (pf *persistFS) crash() { pf.Vol.Close() }

// reopen mounts the images again (after Close or crash).
func (pf *persistFS) reopen(t testing.TB) {
	t.Helper()
	fs, err := openPaths(t, pf.paths, 0, raid.AnyProfile, pf.opts)
	if err != nil {
		t.Fatal(err)
	}
	pf.FsInfo = fs
	t.Cleanup(func() { fs.Vol.Close() })
}

// mustCheckClean runs Check and holds the allocator against the mapping:
// with no IO in flight, the used space is the mapped extents plus the
// pinned ones.
func (pf *persistFS) mustCheckClean(t testing.TB) {
	t.Helper()
	used := uint64(0)
	for _, e := range pf.AllocatedExtents() {
		used += e[1]
	}
	pf.trans.pinMu.Lock()
	for _, s := range pf.trans.pinned {
		used += s.len
	}
	pf.trans.pinMu.Unlock()
	if got := pf.UsedBytes(); got != used {
		t.Fatalf("allocator says %d bytes used, the mapping and pins %d", got, used)
	}
	rep, err := Check(pf.Vol)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() {
		t.Fatalf("check not clean: copies %v, scrub %+v", rep.MetaCopies, rep.Scrub)
	}
}

func (pf *persistFS) readAll(t testing.TB) []byte {
	t.Helper()
	size := pf.Inode().ISize()
	buf := mmapBuf(t, int(size))
	if n, err := pf.read(0, buf, 0); err != nil || n != int(size) {
		t.Fatalf("read back: %d, %v", n, err)
	}
	return append([]byte(nil), buf...)
}

// TestReopenRoundTrip writes, overwrites and punches on every profile,
// flushes, closes, reopens and reads everything back; check is clean.
func TestReopenRoundTrip(t *testing.T) {
	for i, p := range raid.Profiles() {
		for _, opts := range []Options{{Mode: Bounce, DataSum: i%2 == 0}, {Mode: ZeroCopy, NoCow: i%3 == 0}} {
			t.Run(fmt.Sprintf("%s/%s/datasum=%v/nocow=%v", p, opts.Mode, opts.DataSum, opts.NoCow), func(t *testing.T) {
				pf := newPersistFS(t, p, 8<<20, opts)
				size := pf.Inode().ISize()
				model := make([]byte, size)
				rng := rand.New(rand.NewPCG(uint64(i), 7))
				for n := 0; n < 12; n++ {
					off := rng.Int64N(size/SectorSize) * SectorSize
					l := min(size-off, (1+rng.Int64N(64))*SectorSize)
					b := mmapBuf(t, int(l))
					fillPattern(b, rng.Uint64())
					if _, err := pf.write(off, b, 0); err != nil {
						t.Fatal(err)
					}
					copy(model[off:], b)
					if n == 6 {
						if err := pf.Flush(); err != nil {
							t.Fatal(err)
						}
					}
				}
				if err := pf.Inode().PunchHole(SectorSize, 3*SectorSize); err != nil {
					t.Fatal(err)
				}
				clear(model[SectorSize : 4*SectorSize])
				gen := pf.Generation()
				if err := pf.Close(); err != nil {
					t.Fatal(err)
				}
				pf.reopen(t)
				if pf.Generation() != gen+1 {
					t.Errorf("generation %d after close, want %d", pf.Generation(), gen+1)
				}
				if pf.Inode().ISize() != size || pf.Inode().NoDataCow != opts.NoCow || pf.Inode().NoDataSum != (!opts.DataSum || opts.NoCow) {
					t.Fatalf("inode not restored: size %d flags %#x", pf.Inode().ISize(), pf.Inode().inodeFlags())
				}
				if got := pf.readAll(t); !bytes.Equal(got, model) {
					t.Fatal("data differs after reopen")
				}
				pf.mustCheckClean(t)
				pf.checkQuiescent(t)
			})
		}
	}
}

// stamp fills sector-sized pieces so that each says which write put it
// there and at which file offset.
func stamp(b []byte, id uint64, off int64) {
	for s := 0; s < len(b); s += SectorSize {
		sec := b[s : s+SectorSize]
		fillPattern(sec, id<<20^uint64(off+int64(s)))
		binary.LittleEndian.PutUint64(sec, id)
		binary.LittleEndian.PutUint64(sec[8:], uint64(off+int64(s)))
	}
}

// TestCrashConsistency runs random writes, punches and flushes, some
// commits aborted between the metadata and the superblocks, and crashes
// (no commit) at random points; after each reopen every sector holds what
// the last acknowledged FLUSH saw or something written since, intact, and
// check is clean. NODATACOW overwrites in place: the same holds per sector.
func TestCrashConsistency(t *testing.T) {
	for _, p := range []raid.Profile{raid.Single, raid.Dup, raid.Raid1, raid.Raid10, raid.Raid5, raid.Raid6} {
		for _, opts := range []Options{{Mode: Bounce, DataSum: true}, {Mode: Bounce}, {Mode: Bounce, NoCow: true}} {
			seeds := 3
			if testing.Short() {
				seeds = 1
			}
			for seed := range uint64(seeds) {
				t.Run(fmt.Sprintf("%s/datasum=%v/nocow=%v/seed=%d", p, opts.DataSum, opts.NoCow, seed), func(t *testing.T) {
					testCrashConsistency(t, p, opts, seed)
				})
			}
		}
	}
}

func testCrashConsistency(t *testing.T, p raid.Profile, opts Options, seed uint64) {
	pf := newPersistFS(t, p, 4<<20, opts)
	size := pf.Inode().ISize()
	nsec := int(size / SectorSize)
	durable := make([]uint64, nsec) // write id per sector at the last FLUSH (0: zeroes)
	since := make([]map[uint64]bool, nsec)
	rng := rand.New(rand.NewPCG(uint64(p), 99+seed))
	id := uint64(0)
	for cycle := 0; cycle < 6; cycle++ {
		steps := 5 + rng.IntN(40)
		for step := 0; step < steps; step++ {
			switch r := rng.IntN(10); {
			case r < 7:
				id++
				sec := rng.IntN(nsec)
				n := min(nsec-sec, 1+rng.IntN(24))
				b := mmapBuf(t, n*SectorSize)
				stamp(b, id, int64(sec)*SectorSize)
				if _, err := pf.write(int64(sec)*SectorSize, b, 0); err != nil {
					t.Fatal(err)
				}
				for i := sec; i < sec+n; i++ {
					if since[i] == nil {
						since[i] = map[uint64]bool{}
					}
					since[i][id] = true
				}
			case r < 8:
				sec := rng.IntN(nsec)
				n := min(nsec-sec, 1+rng.IntN(8))
				if err := pf.Inode().PunchHole(uint64(sec)*SectorSize, uint64(n)*SectorSize); err != nil {
					t.Fatal(err)
				}
				for i := sec; i < sec+n; i++ {
					if since[i] == nil {
						since[i] = map[uint64]bool{}
					}
					since[i][0] = true
				}
			default:
				aborted := rng.IntN(3) == 0
				if aborted {
					pf.Faults.CommitAbort.Store(1)
				}
				err := pf.Flush()
				if aborted != (err != nil) {
					t.Fatalf("flush with abort=%v: %v", aborted, err)
				}
				if aborted {
					// Stopped between the metadata and the superblocks:
					// crash there half of the time.
					if rng.IntN(2) == 0 {
						step = steps
					}
					continue
				}
				// Acknowledged: the new durable state is what a read sees.
				for i := range durable {
					durable[i] = sectorID(t, pf, i)
					since[i] = nil
				}
			}
		}
		pf.crash()
		pf.reopen(t)
		for i := range durable {
			got := sectorID(t, pf, i)
			if got != durable[i] && !since[i][got] {
				t.Fatalf("cycle %d: sector %d holds write %d, durable was %d (since: %v)", cycle, i, got, durable[i], since[i])
			}
			durable[i] = got
			since[i] = nil
		}
		pf.mustCheckClean(t)
		pf.checkQuiescent(t)
	}
}

// sectorID reads one sector and returns the write that put it there (0
// for zeroes), failing when the sector is not intact.
func sectorID(t *testing.T, pf *persistFS, sec int) uint64 {
	t.Helper()
	b := make([]byte, SectorSize)
	if _, err := pf.Inode().bufferedRead(uint64(sec)*SectorSize, iomap.NewIovIter(b, 0)); err != nil {
		t.Fatalf("sector %d: %v", sec, err)
	}
	id := binary.LittleEndian.Uint64(b)
	if id == 0 {
		if !allZero(b) {
			t.Fatalf("sector %d: neither zeroes nor a stamped write", sec)
		}
		return 0
	}
	want := make([]byte, SectorSize)
	stamp(want, id, int64(sec)*SectorSize)
	if !bytes.Equal(b, want) {
		t.Fatalf("sector %d: write %d's data is not intact here (offset %d)", sec, id, binary.LittleEndian.Uint64(b[8:]))
	}
	return id
}

// TestPinnedNotReusedBeforeCommit: an overwritten extent stays allocated
// until the commit that drops it, and running out of space commits to
// unpin rather than failing.
func TestPinnedNotReusedBeforeCommit(t *testing.T) {
	pf := newPersistFS(t, raid.Single, 8<<20, Options{Mode: Bounce})
	b := mmapBuf(t, 64<<10)
	fillPattern(b, 1)
	if _, err := pf.write(0, b, 0); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	old := pf.Inode().extents.snapshot()[0]
	fillPattern(b, 2)
	if _, err := pf.write(0, b, 0); err != nil {
		t.Fatal(err)
	}
	if cur := pf.Inode().extents.snapshot()[0]; cur.diskBytenr == old.diskBytenr {
		t.Fatal("COW overwrite went in place")
	}
	if !pf.trans.hasPinned() {
		t.Fatal("overwritten extent not pinned")
	}
	pf.mustCheckClean(t) // the committed mapping still reads its own data
	// Every reservation while pinned avoids the old extent.
	var taken []span
	for {
		d, got, err := pf.space.reserve(64<<10, SectorSize, old.diskBytenr)
		if err != nil {
			break
		}
		if d < old.diskBytenr+old.len && old.diskBytenr < d+got {
			t.Fatalf("pinned extent [%d,+%d) reallocated at %d", old.diskBytenr, old.len, d)
		}
		taken = append(taken, span{d, got})
	}
	for _, s := range taken {
		pf.space.release(s.start, s.len)
	}
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	if pf.trans.hasPinned() {
		t.Fatal("still pinned after commit")
	}
	if d, _, err := pf.space.reserve(old.len, SectorSize, old.diskBytenr); err != nil || d != old.diskBytenr {
		t.Fatalf("unpinned extent not free: %d, %v", d, err)
	}

	// Overwrite the whole file twice without a FLUSH: 2 x 7/8 of the
	// space only fits because running out commits and unpins.
	pf2 := newPersistFS(t, raid.Single, 8<<20, Options{Mode: Bounce})
	size := pf2.Inode().ISize()
	all := mmapBuf(t, int(size))
	for round := uint64(0); round < 3; round++ {
		fillPattern(all, round)
		// In requests of 256 KiB, as a block device sends them.
		for off := int64(0); off < size; off += 256 << 10 {
			if _, err := pf2.write(off, all[off:min(size, off+256<<10)], 0); err != nil {
				t.Fatalf("round %d at %d: %v", round, off, err)
			}
		}
	}
	if pf2.Stats().Commits < 2 {
		t.Fatalf("%d commits: the writes should have needed one to unpin space", pf2.Stats().Commits)
	}
	if got := pf2.readAll(t); !bytes.Equal(got, all) {
		t.Fatal("data differs")
	}
}

func imageSums(t *testing.T, paths []string) [][32]byte {
	var out [][32]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sha256.Sum256(b))
	}
	return out
}

// metaCopyOffsets returns where every copy of the committed root lies.
func metaCopyOffsets(t *testing.T, paths []string) ([]string, []int64, int) {
	var files []string
	var offs []int64
	var n int
	for _, p := range paths {
		d, err := raid.OpenDevice(p, raid.DeviceOptions{ReadOnly: true, Logger: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		sb, err := d.ReadSuper()
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		for c := uint64(0); c < uint64(sb.MetaCopies); c++ {
			files = append(files, p)
			offs = append(offs, int64(sb.ChunkDevBytes+(2*c+uint64(sb.RootSlot))*sb.MetaSlotBytes))
		}
		n = int(sb.RootBytes)
	}
	return files, offs, n
}

// TestCorruptMetadataFallsBackOrRefuses damages copies of the committed
// metadata in several ways: with one good copy left the volume opens with
// its data and check reports the bad copy; with none the open is refused
// with a clear message and the images stay untouched.
func TestCorruptMetadataFallsBackOrRefuses(t *testing.T) {
	le := binary.LittleEndian
	damage := map[string]func(t *testing.T, b []byte){
		"bad csum":  func(t *testing.T, b []byte) { b[100] ^= 1 },
		"bad magic": func(t *testing.T, b []byte) { copy(b[4:], "NOTMETA!"); le.PutUint32(b, csumData(b[4:metaBlockSize])) },
		"extent beyond the chunk": func(t *testing.T, b []byte) {
			img, err := decodeMeta(b)
			if err != nil {
				t.Fatal(err)
			}
			img.extents[0].diskBytenr = img.capacity
			copy(b, encodeMeta(img))
		},
		"overlapping mappings": func(t *testing.T, b []byte) {
			img, err := decodeMeta(b)
			if err != nil || len(img.extents) < 2 {
				t.Fatalf("%v, %d extents", err, len(img.extents))
			}
			img.extents[1].start = img.extents[0].start
			copy(b, encodeMeta(img))
		},
	}
	for _, p := range []raid.Profile{raid.Single, raid.Raid1} {
		for name, corrupt := range damage {
			t.Run(fmt.Sprintf("%s/%s", p, name), func(t *testing.T) {
				pf := newPersistFS(t, p, 8<<20, Options{Mode: Bounce, DataSum: true})
				b := mmapBuf(t, 256<<10)
				fillPattern(b, 5)
				for _, off := range []int64{0, 1 << 20} {
					if _, err := pf.write(off, b, 0); err != nil {
						t.Fatal(err)
					}
				}
				want := pf.readAll(t)
				pf.trans.needCheckpoint = true // the damage is done to a checkpoint, not a log record
				if err := pf.Close(); err != nil {
					t.Fatal(err)
				}
				files, offs, n := metaCopyOffsets(t, pf.paths)
				if len(files) != 2 {
					t.Fatalf("%d metadata copies, want 2 (DUP or one per device)", len(files))
				}
				damageCopy := func(i int) {
					f, err := os.OpenFile(files[i], os.O_RDWR, 0)
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					buf := make([]byte, n)
					if _, err := f.ReadAt(buf, offs[i]); err != nil {
						t.Fatal(err)
					}
					corrupt(t, buf)
					if _, err := f.WriteAt(buf, offs[i]); err != nil {
						t.Fatal(err)
					}
				}
				damageCopy(0)
				pf.reopen(t)
				if got := pf.readAll(t); !bytes.Equal(got, want) {
					t.Fatal("data differs after falling back to the good copy")
				}
				rep, err := Check(pf.Vol)
				if err != nil || rep.Clean() || rep.MetaCopies[0].Err == nil || rep.MetaCopies[1].Err != nil {
					t.Fatalf("check: %v, copies %v", err, rep.MetaCopies)
				}
				pf.Vol.Close()
				damageCopy(1)
				before := imageSums(t, pf.paths)
				_, err = openPaths(t, pf.paths, 0, raid.AnyProfile, pf.opts)
				if !errors.Is(err, errNoValidRoot) || !strings.Contains(err.Error(), "refusing to open") {
					t.Fatalf("open with no valid copy: %v", err)
				}
				if after := imageSums(t, pf.paths); !slicesEqual(before, after) {
					t.Fatal("a refused open changed the images")
				}
			})
		}
	}
}

func slicesEqual(a, b [][32]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDecodeMetaRejects feeds decodeMeta images that are wrong in one
// field each, with valid block csums.
func TestDecodeMetaRejects(t *testing.T) {
	good := func() *metaImage {
		return &metaImage{generation: 3, size: 1 << 20, capacity: 2 << 20,
			extents: []fileExtent{{0, 8192, 4096}, {8192, 4096, 65536}},
			csums:   []csumRun{{4096, []uint32{1, 2}}, {65536, []uint32{3}}}}
	}
	if _, err := decodeMeta(encodeMeta(good())); err != nil {
		t.Fatalf("good image refused: %v", err)
	}
	cases := map[string]func(m *metaImage){
		"generation 0":       func(m *metaImage) { m.generation = 0 },
		"size beyond chunk":  func(m *metaImage) { m.size = 4 << 20 },
		"unknown flag":       func(m *metaImage) { m.flags = 8 },
		"nocow with sums":    func(m *metaImage) { m.flags = metaFlagNoDataCow },
		"nodatasum w/ sums":  func(m *metaImage) { m.flags = metaFlagNoDataSum },
		"unaligned extent":   func(m *metaImage) { m.extents[0].len = 100 },
		"file overlap":       func(m *metaImage) { m.extents[1].start = 4096 },
		"beyond i_size":      func(m *metaImage) { m.extents[1].start = 1 << 20 },
		"disk beyond chunk":  func(m *metaImage) { m.extents[1].diskBytenr = 2<<20 - 4096 + 4096 },
		"shared disk range":  func(m *metaImage) { m.extents[1].diskBytenr = 8192 },
		"csum unallocated":   func(m *metaImage) { m.csums[1].logical = 1 << 20 },
		"csum overlap":       func(m *metaImage) { m.csums[1].logical = 8192 },
		"wrapping extent":    func(m *metaImage) { m.extents[1].len = ^uint64(0) - 4095 },
		"wrapping disk addr": func(m *metaImage) { m.extents[1].diskBytenr = ^uint64(0) - 4095 },
	}
	for name, mutate := range cases {
		m := good()
		mutate(m)
		if _, err := decodeMeta(encodeMeta(m)); !errors.Is(err, ErrCorruptMeta) {
			t.Errorf("%s: %v, want ErrCorruptMeta", name, err)
		}
	}
	// A block left from an older commit in a multi-block image.
	big := good()
	for i := 0; i < 400; i++ {
		big.extents = append(big.extents, fileExtent{uint64(16384 + i*4096), 4096, uint64(131072 + i*4096)})
	}
	b := encodeMeta(big)
	if len(b) < 2*metaBlockSize {
		t.Fatalf("image of %d bytes, want several blocks", len(b))
	}
	big.generation = 2
	copy(b[metaBlockSize:], encodeMeta(big)[metaBlockSize:2*metaBlockSize])
	if _, err := decodeMeta(b); err == nil || !strings.Contains(err.Error(), "another commit") {
		t.Errorf("stale block: %v", err)
	}
}

// FuzzDecodeMeta: no input makes the decoder panic or allocate without
// bound, and whatever it accepts encodes back to the same bytes. The seed
// corpus is in testdata/fuzz/FuzzDecodeMeta.
func FuzzDecodeMeta(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := decodeMeta(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeMeta(img), b) {
			t.Fatal("accepted metadata does not encode back to its bytes")
		}
	})
}

// TestCommitRacesWrites commits in a loop while writers overwrite and
// punch their own regions; after close and reopen every region holds its
// last write (run it under -race).
func TestCommitRacesWrites(t *testing.T) {
	for _, opts := range []Options{{Mode: Bounce, DataSum: true}, {Mode: ZeroCopy}, {Mode: Bounce, NoCow: true}} {
		pf := newPersistFS(t, raid.Raid1, 8<<20, opts)
		const writers = 4
		region := pf.Inode().ISize() / writers &^ (SectorSize - 1)
		models := make([][]byte, writers)
		stopFlushing := flushLoop(pf.Flush)
		errs := make(chan error, writers)
		for w := 0; w < writers; w++ {
			models[w] = make([]byte, region)
			go func() {
				rng := rand.New(rand.NewPCG(uint64(w), 3))
				base := int64(w) * region
				buf := mmapBuf(t, 128<<10)
				for i := 0; i < 40; i++ {
					off := rng.Int64N(region/SectorSize-32) * SectorSize
					l := (1 + rng.Int64N(32)) * SectorSize
					if i%7 == 6 {
						if err := pf.Inode().PunchHole(uint64(base+off), uint64(l)); err != nil {
							errs <- err
							return
						}
						clear(models[w][off : off+l])
						continue
					}
					fillPattern(buf[:l], rng.Uint64())
					if _, err := pf.write(base+off, buf[:l], 0); err != nil {
						errs <- err
						return
					}
					copy(models[w][off:], buf[:l])
				}
				errs <- nil
			}()
		}
		for w := 0; w < writers; w++ {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if err := stopFlushing(); err != nil {
			t.Fatal(err)
		}
		if err := pf.Close(); err != nil {
			t.Fatal(err)
		}
		pf.reopen(t)
		got := pf.readAll(t)
		for w := 0; w < writers; w++ {
			if !bytes.Equal(got[int64(w)*region:int64(w+1)*region], models[w]) {
				t.Fatalf("%+v: region %d differs after reopen", opts, w)
			}
		}
		pf.mustCheckClean(t)
	}
}

// BenchmarkCommit measures a FLUSH after one 4 KiB write on a RAID1 file
// of 4096 extents with data checksums: encoding, the data flush, the
// metadata write to both devices, the superblocks.
func BenchmarkCommit(b *testing.B) {
	pf := newPersistFS(b, raid.Raid1, 64<<20, Options{Mode: Bounce, DataSum: true})
	buf := mmapBuf(b, SectorSize)
	for i := int64(0); i < 4096; i++ {
		fillPattern(buf, uint64(i))
		if _, err := pf.write(2*i*SectorSize, buf, 0); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; b.Loop(); i++ {
		if _, err := pf.write(int64(i%4096)*2*SectorSize, buf, 0); err != nil {
			b.Fatal(err)
		}
		if err := pf.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(encodeMeta(pf.snapshotMeta()))), "meta-bytes")
}

// TestCrashBetweenSuperblocks: a commit whose superblock reached one device
// only (not the first) is the committed one after a crash, since its
// metadata was on every device before any superblock; the device that
// missed it is resynced at the mount, and the next commit completes cleanly.
func TestCrashBetweenSuperblocks(t *testing.T) {
	pf := newPersistFS(t, raid.Raid1, 8<<20, Options{Mode: Bounce, DataSum: true})
	b := mmapBuf(t, 64<<10)
	fillPattern(b, 1)
	if _, err := pf.write(0, b, 0); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	fillPattern(b, 2)
	if _, err := pf.write(0, b, 0); err != nil {
		t.Fatal(err)
	}
	want := pf.readAll(t)
	// The commit by hand, stopped with the superblock on the second device only.
	pf.trans.mu.Lock()
	img := pf.snapshotMeta()
	pf.trans.mu.Unlock()
	img.generation = pf.Generation() + 1
	enc := encodeMeta(img)
	root := raid.MetaRoot{Generation: img.generation, Slot: 1 - pf.meta.Root().Slot, Bytes: uint64(len(enc))}
	if err := pf.writeRoot(enc, root, 0); err != nil {
		t.Fatal(err)
	}
	d := pf.Vol.Devices()[1]
	sb, err := d.ReadSuper()
	if err != nil {
		t.Fatal(err)
	}
	sb.Generation, sb.RootSlot, sb.RootBytes = root.Generation, uint32(root.Slot), root.Bytes
	if err := d.WriteSuper(sb); err != nil {
		t.Fatal(err)
	}
	pf.crash()
	pf.reopen(t)
	// The first device missed the superblock: the mount resyncs it and
	// commits once more to make it current.
	if pf.Generation() != root.Generation+1 {
		t.Fatalf("generation %d after the crash and the resync commit, want %d", pf.Generation(), root.Generation+1)
	}
	if got := pf.readAll(t); !bytes.Equal(got, want) {
		t.Fatal("data of the half-committed generation lost")
	}
	pf.mustCheckClean(t)
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	pf.mustCheckClean(t)
}

// TestDegradedCommit: a raid1 volume mounted with a device missing, or
// with one failing every write, still commits on the device that remains
// (write_all_supers' max_errors); what was flushed reads back after a
// degraded remount.
func TestDegradedCommit(t *testing.T) {
	pf := newPersistFS(t, raid.Raid1, 8<<20, Options{Mode: Bounce})
	first := mmapBuf(t, mib)
	stamp(first, 1, 0)
	if _, err := pf.write(0, first, 0); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	// A device that fails every write: the commit goes on without it.
	pf.Vol.Devices()[1].InjectFault(blk.OpWrite, -1)
	second := mmapBuf(t, mib)
	stamp(second, 2, mib)
	if _, err := pf.write(mib, second, 0); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatalf("commit with one raid1 device failing writes: %v", err)
	}
	if err := pf.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	// Mounted with the second image missing.
	d, err := raid.OpenDevice(pf.paths[0], raid.DeviceOptions{Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	vol, _, err := raid.OpenVolume([]*raid.Device{d}, raid.OpenOptions{Profile: raid.AnyProfile, Degraded: true,
		Volume: raid.VolumeOptions{Logger: quietLog()}})
	if err != nil {
		t.Fatal(err)
	}
	fs, err := OpenFsInfo(vol, Options{Log: quietLog()})
	if err != nil {
		vol.Close()
		t.Fatalf("degraded mount: %v", err)
	}
	defer fs.Vol.Close()
	pf.FsInfo = fs
	third := mmapBuf(t, mib)
	stamp(third, 3, 2*mib)
	if _, err := pf.write(2*mib, third, 0); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatalf("commit with a raid1 device missing: %v", err)
	}
	got := mmapBuf(t, 3*mib)
	if n, err := pf.read(0, got, 0); err != nil || n != 3*mib {
		t.Fatalf("degraded read: %d, %v", n, err)
	}
	for i, want := range [][]byte{first, second, third} {
		if !bytes.Equal(got[i*mib:(i+1)*mib], want) {
			t.Errorf("MiB %d differs after the degraded commits", i)
		}
	}
}

// flushLoop calls flush over and over, beside the writers of a test, until
// the returned stop is called; stop returns the first flush error.
func flushLoop(flush func() error) (stop func() error) {
	done := make(chan struct{})
	flushed := make(chan error, 1)
	go func() {
		var err error
		for {
			select {
			case <-done:
				flushed <- err
				return
			default:
			}
			if ferr := flush(); ferr != nil && err == nil {
				err = ferr
			}
		}
	}()
	return func() error {
		close(done)
		return <-flushed
	}
}
