package raid

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

// bitmapWatch is a Recorder that holds every data write of a RAID1 volume
// to md's promise: when a write of region r reaches a device, a bitmap
// block with bit r set was written there AND flushed since (a flush that
// began after the bitmap write ended), and no later bitmap write cleared
// it before the data write.
type bitmapWatch struct {
	mu         sync.Mutex
	regionSize uint64
	exempt     map[uint64]bool    // regions written copy-on-write: no bit needed
	seq        int                // orders the bitmap writes
	written    map[*Device]bitImg // last completed write of bit block 0
	durable    map[*Device]bitImg // the newest that a completed flush made durable
	bad        []string
	bitmapIOs  int
	dataWrites int
}

// bitImg is one bitmap write of bit block 0, numbered in issue order.
type bitImg struct {
	seq int
	b   []byte
}

func newBitmapWatch() *bitmapWatch {
	return &bitmapWatch{written: map[*Device]bitImg{}, durable: map[*Device]bitImg{}, exempt: map[uint64]bool{}}
}

func (w *bitmapWatch) Begin(d *Device, op blk.Op, off uint64, data []byte) func(error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	block0 := uint64(bitmapOffset + bitmapBlockSize)
	switch {
	case op == blk.OpFlush:
		snap := w.written[d]
		return func(err error) {
			if err == nil {
				w.mu.Lock()
				if snap.seq > w.durable[d].seq { // flushes may end out of order
					w.durable[d] = snap
				}
				w.mu.Unlock()
			}
		}
	case op == blk.OpWrite && off >= bitmapOffset && off < ReservedBytes:
		w.bitmapIOs++
		var img bitImg
		if off <= block0 && off+uint64(len(data)) >= block0+bitmapBlockSize {
			w.seq++
			img = bitImg{w.seq, append([]byte(nil), data[block0-off:block0-off+bitmapBlockSize]...)}
		}
		return func(err error) {
			if err == nil && img.b != nil {
				w.mu.Lock()
				w.written[d] = img
				w.mu.Unlock()
			}
		}
	case op == blk.OpWrite && off >= ReservedBytes && w.regionSize != 0:
		w.dataWrites++
		logical := off - ReservedBytes // RAID1: stripe 0 of every device starts there
		for r := logical / w.regionSize; r <= (logical+uint64(len(data))-1)/w.regionSize; r++ {
			img := w.durable[d].b
			if !w.exempt[r] && (img == nil || img[bitmapBlockHdr+r/8]&(1<<(r%8)) == 0) {
				w.bad = append(w.bad, fmt.Sprintf("%s: data write at %d (region %d) before its bit was durable", d.Path(), off, r))
			}
		}
	}
	return func(error) {}
}

// watchedRaid1 is a RAID1 volume with a bitmapWatch on both devices; the
// nobarrier build, which drops the barrier ordering the bitmap before the
// data, skips the tests that use it.
func watchedRaid1(t *testing.T) (*Volume, *bitmapWatch) {
	if !barriers {
		t.Skip("nobarrier build: the bitmap's flush is a barrier, dropped on purpose")
	}
	w := newBitmapWatch()
	devs := newDevices(t, 2, R+4<<20)
	for _, d := range devs {
		d.SetRecorder(w)
	}
	v := volumeOn(t, devs, Raid1)
	w.mu.Lock()
	w.regionSize = v.bitmap.regionSize
	w.mu.Unlock()
	return v, w
}

func overwriteAt(t testing.TB, v *Volume, logical uint64, data []byte) blk.Status {
	t.Helper()
	bio := buildBio(blk.OpWrite, logical, data, nil)
	bio.Opf |= blk.ReqOverwrite
	return submitWait(t, v, bio, 0)
}

func dirtyRegions(v *Volume) []BitmapRange {
	r, _ := v.BitmapDirty()
	return r
}

// TestBitmapSetDurableBeforeOverwrite: an in-place overwrite of a mirror
// reaches no device before its bit is written and flushed on every device;
// a second overwrite of the region finds the bit durable and costs no
// bitmap I/O; a copy-on-write write sets no bit at all.
func TestBitmapSetDurableBeforeOverwrite(t *testing.T) {
	v, w := watchedRaid1(t)
	rng := rand.New(rand.NewPCG(1, 2))
	if st := overwriteAt(t, v, 3*v.bitmap.regionSize+4096, randBytes(rng, 8192)); st != blk.StsOK {
		t.Fatal(st)
	}
	w.mu.Lock()
	ios, bad, data := w.bitmapIOs, w.bad, w.dataWrites
	w.mu.Unlock()
	if len(bad) != 0 || data != 2 {
		t.Fatalf("%d data writes; violations: %v", data, bad)
	}
	if ios != 2 {
		t.Fatalf("%d bitmap writes for the first overwrite, want one per device", ios)
	}
	if got := dirtyRegions(v); len(got) != 1 || got[0].Logical != 3*v.bitmap.regionSize {
		t.Fatalf("dirty regions %v, want region 3", got)
	}
	if st := overwriteAt(t, v, 3*v.bitmap.regionSize, randBytes(rng, 4096)); st != blk.StsOK {
		t.Fatal(st)
	}
	w.mu.Lock()
	w.exempt[7] = true
	w.mu.Unlock()
	if st := writeAt(t, v, 7*v.bitmap.regionSize, randBytes(rng, 4096), nil); st != blk.StsOK {
		t.Fatal(st)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bitmapIOs != 2 {
		t.Fatalf("%d bitmap writes: the second overwrite or the COW write wrote the bitmap again", w.bitmapIOs)
	}
	if len(w.bad) != 0 {
		t.Fatal(w.bad)
	}
}

// TestBitmapConcurrentOverwrites races overwrites of a few regions from
// many goroutines against barriers that clear bits: every data write must
// still find its bit durable (set again after a clear), and once all is
// done and flushed no bit stays. Run it with -race.
func TestBitmapConcurrentOverwrites(t *testing.T) {
	v, w := watchedRaid1(t)
	region := v.bitmap.regionSize
	var wg sync.WaitGroup
	stop := make(chan struct{})
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := v.Flush(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; i < 40; i++ {
				r := uint64(rng.IntN(6))
				off := r*region + uint64(rng.IntN(int(region/4096)))*4096
				if st := overwriteAt(t, v, off, randBytes(rng, 4096)); st != blk.StsOK {
					t.Error(st)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-flushed
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	if w.dataWrites != 2*8*40 || len(w.bad) != 0 {
		t.Fatalf("%d data writes, want %d; violations (%d): %v", w.dataWrites, 2*8*40, len(w.bad), w.bad[:min(len(w.bad), 5)])
	}
	w.mu.Unlock()
	if got := dirtyRegions(v); len(got) != 0 {
		t.Fatalf("bits left after every write completed and a barrier: %v", got)
	}
}

// TestBitmapClearsOnlyAfterBarrier: a bit is cleared by a barrier begun
// after its writes completed, never by one begun while a write was in
// flight or before it completed, and the clearing reaches the disk.
func TestBitmapClearsOnlyAfterBarrier(t *testing.T) {
	paths := imagePaths(t, 2)
	v, _, err := OpenVolume(openImages(t, paths, 8<<20), OpenOptions{Profile: Raid1, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	b := v.bitmap
	rng := rand.New(rand.NewPCG(3, 4))
	if st := overwriteAt(t, v, 0, randBytes(rng, 4096)); st != blk.StsOK {
		t.Fatal(st)
	}
	if got := dirtyRegions(v); len(got) != 1 {
		t.Fatalf("no barrier yet: dirty %v, want region 0", got)
	}
	if bits := diskBits(t, v, 0); len(bits) != 1 || bits[0] != 0 {
		t.Fatalf("on disk before the barrier: %v, want [0]", bits)
	}
	// A write in flight across a barrier keeps its bit.
	hold, need := b.startWrite(b.regionSize, 4096, true)
	if err := b.waitDurable(need); err != nil {
		t.Fatal(err)
	}
	e := b.barrierBegin()
	b.barrierDone(e)
	if got := dirtyRegions(v); len(got) != 1 || got[0].Logical != b.regionSize {
		t.Fatalf("after a barrier: dirty %v, want only region 1 (in flight)", got)
	}
	// Completed after the barrier began: still not covered by it.
	e = b.barrierBegin()
	b.endWrite(hold, true)
	b.barrierDone(e)
	if got := dirtyRegions(v); len(got) != 1 {
		t.Fatalf("a write completed during the barrier lost its bit: dirty %v", got)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := dirtyRegions(v); len(got) != 0 {
		t.Fatalf("after a later barrier: dirty %v, want none", got)
	}
	if bits := diskBits(t, v, 0); len(bits) != 0 {
		t.Fatalf("on disk after clearing: %v, want none", bits)
	}
	if _, gen := v.BitmapDirty(); gen == 0 {
		t.Fatal("ClearedGen not recorded")
	}
}

// diskBits decodes bit block 0 of device i's bitmap copy.
func diskBits(t *testing.T, v *Volume, i int) []uint64 {
	t.Helper()
	img := blk.AlignedBuffer(bitmapBlockSize)
	if err := v.devs[i].readBuf(img, bitmapOffset+bitmapBlockSize); err != nil {
		t.Fatal(err)
	}
	if !v.bitmap.checkBlock(0, img) {
		t.Fatalf("device %d: bit block 0 is not valid", i)
	}
	var bits []uint64
	for r := uint64(0); r < v.bitmap.nbits && r < bitmapBlockBits; r++ {
		if img[bitmapBlockHdr+r/8]&(1<<(r%8)) != 0 {
			bits = append(bits, r)
		}
	}
	return bits
}

// TestBitmapDegradedWritesKeepBits: with a device missing, every write
// (copy-on-write too) sets its bit, and no barrier clears it; a write
// that failed on one copy keeps its bit too.
func TestBitmapDegradedWritesKeepBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	devs := newDevices(t, 1, R+4<<20)
	devs = append(devs, NewMissingDevice(2, devs[0].Size(), testLogger()))
	v := volumeOn(t, devs, Raid1)
	if st := writeAt(t, v, 2*v.bitmap.regionSize, randBytes(rng, 4096), nil); st != blk.StsOK {
		t.Fatal(st)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := dirtyRegions(v); len(got) != 1 || got[0].Logical != 2*v.bitmap.regionSize {
		t.Fatalf("degraded COW write: dirty %v after a barrier, want region 2", got)
	}

	v2 := newVolume(t, Raid1, 4<<20)
	if st := overwriteAt(t, v2, 0, randBytes(rng, 4096)); st != blk.StsOK {
		t.Fatal(st)
	}
	v2.devs[1].InjectFault(blk.OpWrite, 1) // the bit is durable: this is the data write
	if st := overwriteAt(t, v2, 0, randBytes(rng, 4096)); st != blk.StsOK {
		t.Fatal(st)
	}
	if st := overwriteAt(t, v2, v2.bitmap.regionSize, randBytes(rng, 4096)); st != blk.StsOK {
		t.Fatal(st)
	}
	if v2.inSync() {
		t.Fatal("a write missed a copy, yet the volume says it is in sync")
	}
	if err := v2.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := dirtyRegions(v2); len(got) != 1 || got[0].Length != 2*v2.bitmap.regionSize {
		t.Fatalf("after a failed copy and a barrier: dirty %v, want regions 0 and 1", got)
	}
}

// writeBitsOn writes bit block 0 with the given regions set to device i
// only (a copy that missed the other devices' updates).
func writeBitsOn(t *testing.T, v *Volume, i int, regions ...uint64) {
	t.Helper()
	tmp := newBitmap(v)
	tmp.fsid = v.bitmap.fsid
	for _, r := range regions {
		tmp.set(r)
	}
	img := blk.AlignedBuffer(bitmapBlockSize)
	tmp.encodeBlock(0, img)
	if err := v.devs[i].writeBuf(img, bitmapOffset+bitmapBlockSize); err != nil {
		t.Fatal(err)
	}
}

func reopen(t *testing.T, paths []string) *Volume {
	t.Helper()
	v, _, err := OpenVolume(openImages(t, paths, 0), OpenOptions{Profile: AnyProfile, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// TestBitmapLoadUnionOfCopies: the bits read at open are the union of the
// valid copies; a copy whose block fails its checksum is ignored; a block
// with no valid copy anywhere counts as all set; images without a bitmap
// load empty and get one at the first resync.
func TestBitmapLoadUnionOfCopies(t *testing.T) {
	paths := imagePaths(t, 3)
	v, _, err := OpenVolume(openImages(t, paths, 8<<20), OpenOptions{Profile: Raid1C3, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	region, nbits := v.bitmap.regionSize, v.bitmap.nbits
	writeBitsOn(t, v, 0, 1)
	writeBitsOn(t, v, 1, 4, 5)
	v.Close()
	v = reopen(t, paths)
	if got := dirtyRegions(v); fmt.Sprint(got) != fmt.Sprint([]BitmapRange{{region, region}, {4 * region, 2 * region}}) {
		t.Fatalf("union: dirty %v, want regions 1, 4 and 5", got)
	}
	// Corrupt device 1's block: only device 0's bit (and device 2's none) count.
	flipByte(t, v.devs[1], bitmapOffset+bitmapBlockSize+bitmapBlockHdr)
	v.Close()
	v = reopen(t, paths)
	if got := dirtyRegions(v); fmt.Sprint(got) != fmt.Sprint([]BitmapRange{{region, region}}) {
		t.Fatalf("corrupt copy ignored: dirty %v, want region 1", got)
	}
	// Every copy of the block corrupt: every region is dirty.
	flipByte(t, v.devs[0], bitmapOffset+bitmapBlockSize+100)
	flipByte(t, v.devs[2], bitmapOffset+bitmapBlockSize+100)
	v.Close()
	v = reopen(t, paths)
	if got := dirtyRegions(v); len(got) != 1 || got[0].Length != v.Capacity() {
		t.Fatalf("no valid copy: dirty %v, want all of [0,%d) (%d regions)", got, v.Capacity(), nbits)
	}
	// No bitmap at all (an older image): empty, written by the resync.
	zero := blk.AlignedBuffer(bitmapAreaBytes)
	for _, d := range v.devs {
		if err := d.writeBuf(zero, bitmapOffset); err != nil {
			t.Fatal(err)
		}
	}
	v.Close()
	v = reopen(t, paths)
	if got := dirtyRegions(v); len(got) != 0 || !v.bitmap.needInit {
		t.Fatalf("no bitmap on disk: dirty %v, needInit %v", got, v.bitmap.needInit)
	}
	if _, err := v.ResyncBitmap(nil); err != nil {
		t.Fatal(err)
	}
	if bits := diskBits(t, v, 2); len(bits) != 0 {
		t.Fatalf("bitmap written at first open holds %v", bits)
	}
}

func flipByte(t *testing.T, d *Device, off uint64) {
	t.Helper()
	b := blk.AlignedBuffer(SectorSize)
	at := off &^ (SectorSize - 1)
	if err := d.readBuf(b, at); err != nil {
		t.Fatal(err)
	}
	b[off-at] ^= 0x5a
	if err := d.writeBuf(b, at); err != nil {
		t.Fatal(err)
	}
}

// TestBitmapResyncPicksVerifiedCopy: after a crash left the copies of a
// dirty region different, the resync gives every copy the one the
// verifier accepts (else the first), and clears the bit on disk. A region
// whose bit is clear is left alone.
func TestBitmapResyncPicksVerifiedCopy(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	paths := imagePaths(t, 2)
	v, _, err := OpenVolume(openImages(t, paths, 8<<20), OpenOptions{Profile: Raid1, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	region := v.bitmap.regionSize
	oldData, newData := randBytes(rng, 4096), randBytes(rng, 4096)
	other := randBytes(rng, 4096)
	for m, b := range map[int][]byte{1: oldData, 2: newData} {
		if err := v.WriteMirror(0, m, b); err != nil { // region 0: dirty, verified copy is mirror 2
			t.Fatal(err)
		}
		if err := v.WriteMirror(region, m, b); err != nil { // region 1: dirty, nothing known: mirror 1 wins
			t.Fatal(err)
		}
	}
	if err := v.WriteMirror(2*region, 1, other); err != nil { // region 2: clean bit, left alone
		t.Fatal(err)
	}
	writeBitsOn(t, v, 0, 0, 1)
	writeBitsOn(t, v, 1, 0, 1)
	v.Close()
	v = reopen(t, paths)
	n, err := v.ResyncBitmap(func(logical uint64, data []byte) (bool, bool) {
		if logical != 0 {
			return false, false
		}
		return bytes.Equal(data, newData), true
	})
	if err != nil || n != 2 {
		t.Fatalf("resync: %d regions, %v; want 2", n, err)
	}
	for m := 1; m <= 2; m++ {
		for _, c := range []struct {
			at   uint64
			want []byte
		}{{0, newData}, {region, oldData}} {
			got, st := readAt(t, v, c.at, 4096, m, nil)
			if st != blk.StsOK || !bytes.Equal(got, c.want) {
				t.Errorf("mirror %d at %d: %v, wrong data after the resync", m, c.at, st)
			}
		}
	}
	if got, _ := readAt(t, v, 2*region, 4096, 2, nil); bytes.Equal(got, other) {
		t.Error("a region with a clear bit was resynced")
	}
	if got := dirtyRegions(v); len(got) != 0 {
		t.Errorf("dirty after the resync: %v", got)
	}
	for i := range v.devs {
		if bits := diskBits(t, v, i); len(bits) != 0 {
			t.Errorf("device %d keeps bits %v after the resync", i, bits)
		}
	}
}

// TestBitmapGeometry: regions are whole 64 KiB stripes, whole RAID10 rows
// (one stripe of every mirror group) and whole RAID5/6 full stripes, and
// grow by powers of two until the bits fit the area.
func TestBitmapGeometry(t *testing.T) {
	for _, c := range []struct {
		p    Profile
		unit uint64
	}{{Dup, S}, {Raid1, S}, {Raid1C3, S}, {Raid10, 2 * S}, {Raid5, 3 * S}, {Raid6, 2 * S}} {
		v := newVolume(t, c.p, 4<<20)
		b := v.bitmap
		if b.regionSize != c.unit || b.nbits != (v.Capacity()+c.unit-1)/c.unit {
			t.Errorf("%s: %d regions of %d, want regions of %d", c.p, b.nbits, b.regionSize, c.unit)
		}
		// A chunk far larger than the bits can cover at the unit.
		laid := v.chunk.length
		v.chunk.length = bitmapMaxBits*c.unit*5 + 1
		region, nbits := bitmapGeometry(v)
		v.chunk.length = laid
		if region != 8*c.unit || nbits > bitmapMaxBits || nbits*region < bitmapMaxBits*c.unit*5+1 {
			t.Errorf("%s: a huge chunk gets %d regions of %d, want regions of %d within %d bits",
				c.p, nbits, region, 8*c.unit, bitmapMaxBits)
		}
	}
}
