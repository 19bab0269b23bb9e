package raid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"sync/atomic"

	"github.com/btrfsdio/btrfsdio/blk"
)

// The write-intent bitmap (no btrfs counterpart: btrfs has none; md's
// drivers/md/md-bitmap.c is the model). One bit per region of the chunk's
// logical address space says "the copies of this region may differ": it is
// set and made durable before an in-place overwrite of mirrored data (or,
// on a volume out of sync, before any write) reaches a device, and cleared
// lazily once the writes completed and a barrier flushed them. After an
// unclean shutdown only the dirty regions need a resync (ResyncBitmap).
//
// On disk every present device keeps a copy in the reserved first MiB at
// [768 KiB, 1 MiB), which nothing else uses (the superblocks are at 64,
// 256 and 512 KiB): block 0 is a header (geometry), blocks 1.. hold the
// bits, each block with its own magic, fsid and crc32c. A bit block carries
// its own checksum (and ClearedGen) because the harness tears writes at
// 512-byte sectors: with one checksum over header and bits, a torn update
// would invalidate the whole copy. Reading unions the valid copies of each
// block; a block no device holds a valid copy of counts as all set. Every
// doubt goes towards "more resync": a set bit that should be clear costs a
// resync, a clear bit that should be set loses the copies' agreement.
const (
	bitmapOffset     = 768 << 10
	bitmapAreaBytes  = ReservedBytes - bitmapOffset
	bitmapBlockSize  = 4096
	bitmapMaxBlocks  = bitmapAreaBytes/bitmapBlockSize - 1 // bit blocks after the header
	bitmapBlockHdr   = 64
	bitmapBlockBits  = (bitmapBlockSize - bitmapBlockHdr) * 8
	bitmapMaxBits    = bitmapMaxBlocks * bitmapBlockBits
	bitmapHdrMagic   = "BDIOBMAP"
	bitmapBitsMagic  = "BDIOBMBT"
	bitmapVersion    = 1
	bitmapCsumOffset = 8 // crc32c of bytes [12, 4096)
)

var bitmapCrc = crc32.MakeTable(crc32.Castagnoli)

// bitmapRegion is one set bit's in-memory state (md's bitmap_counter_t:
// the in-flight count plus NEEDED/RESYNC flags).
type bitmapRegion struct {
	inflight  int
	setSeq    uint64 // modification that set it: durable once durableSeq >= setSeq
	doneEpoch uint64 // barrier epoch when its last write completed
	// sticky regions are cleared only by a resync: loaded from disk after
	// a crash, written while the volume was out of sync, or written with a
	// copy failing.
	sticky bool
}

// writeIntentBitmap is struct bitmap: geometry, the bits, and the state
// that orders their updates.
type writeIntentBitmap struct {
	v          *Volume
	regionSize uint64
	nbits      uint64
	nblocks    int // bit blocks in use

	mu         sync.Mutex
	cond       sync.Cond
	fsid       [16]byte
	bits       []uint64
	regions    map[uint64]*bitmapRegion
	dirty      []bool   // bit blocks changed since written
	clearedGen []uint64 // per bit block
	needInit   bool     // no header on disk yet: the next write-out writes every block
	history    bool     // a valid copy was loaded: the bits cover writes since ClearedGen
	events     uint64
	modSeq     uint64 // bumped by every change of the bits
	writtenSeq uint64 // every change <= it is written
	durableSeq uint64 // every change <= it is written and flushed
	writing    bool   // one write-out at a time: snapshots reach the disk in order
	failSeq    uint64 // the last flushed write-out that failed, and why
	failErr    error
	epoch      uint64 // barriers begun

	committedGen atomic.Uint64 // the volume's last committed generation (MetaArea)
	updates      atomic.Uint64 // durable updates written (figures)
}

// bitmapGeometry sizes the regions: the smallest power-of-two multiple of
// unit whose bits fit. unit is StripeLen (64 KiB), a RAID10 row (one
// stripe of every group: a region then covers the same physical range on
// every device, which is what a returning device's resync wants), or a
// RAID5/6 full stripe (the unit of parity). DUP's two copies share a
// device, and so does its one bitmap copy: its regions are plain 64 KiB.
func bitmapGeometry(v *Volume) (region, nbits uint64) {
	unit := uint64(StripeLen)
	switch {
	case v.profile == Raid10:
		unit = uint64(v.chunk.numStripes()/v.chunk.subStripes) * StripeLen
	case v.profile.IsRaid56():
		unit = v.FullStripeLen()
	}
	region = unit
	for (v.chunk.length+region-1)/region > bitmapMaxBits {
		region *= 2
	}
	return region, (v.chunk.length + region - 1) / region
}

func newBitmap(v *Volume) *writeIntentBitmap {
	b := &writeIntentBitmap{v: v, regions: map[uint64]*bitmapRegion{}, needInit: true}
	b.cond.L = &b.mu
	b.regionSize, b.nbits = bitmapGeometry(v)
	b.nblocks = int((b.nbits + bitmapBlockBits - 1) / bitmapBlockBits)
	b.bits = make([]uint64, (b.nbits+63)/64)
	b.dirty = make([]bool, b.nblocks)
	b.clearedGen = make([]uint64, b.nblocks)
	return b
}

func (b *writeIntentBitmap) test(r uint64) bool { return b.bits[r/64]&(1<<(r%64)) != 0 }

func (b *writeIntentBitmap) set(r uint64) {
	b.bits[r/64] |= 1 << (r % 64)
	b.dirty[r/bitmapBlockBits] = true
}

func (b *writeIntentBitmap) clear(r uint64) {
	b.bits[r/64] &^= 1 << (r % 64)
	i := r / bitmapBlockBits
	b.dirty[i] = true
	b.clearedGen[i] = max(b.clearedGen[i], b.committedGen.Load()+1)
}

// regionsOf is the region index range [first, last] of [logical, +length).
func (b *writeIntentBitmap) regionsOf(logical, length uint64) (uint64, uint64) {
	return logical / b.regionSize, (logical + length - 1) / b.regionSize
}

// bitmapWrite is one write's hold on its regions (md_bitmap_startwrite
// to md_bitmap_endwrite).
type bitmapWrite struct{ first, last uint64 }

// startWrite is md_bitmap_startwrite: count the write in its regions,
// setting the bits it needs. It returns the hold (nil when the write
// needs no bit) and the modification that must be durable before the
// write may reach a device (0: nothing to wait for). An in-place
// overwrite needs its bits; so does every write while the volume is out of
// sync, since a device misses it, and those bits stay until a resync.
func (b *writeIntentBitmap) startWrite(logical, length uint64, overwrite bool) (*bitmapWrite, uint64) {
	if b == nil {
		return nil, 0
	}
	degraded := !b.v.inSync()
	if !overwrite && !degraded {
		return nil, 0
	}
	first, last := b.regionsOf(logical, length)
	need := uint64(0)
	b.mu.Lock()
	defer b.mu.Unlock()
	for r := first; r <= last; r++ {
		reg := b.regions[r]
		if reg == nil {
			reg = &bitmapRegion{}
			b.regions[r] = reg
			if !b.test(r) {
				b.set(r)
				b.modSeq++
				reg.setSeq = b.modSeq
			}
		}
		reg.inflight++
		reg.sticky = reg.sticky || degraded
		need = max(need, reg.setSeq)
	}
	if need <= b.durableSeq {
		need = 0
	}
	return &bitmapWrite{first, last}, need
}

// waitDurable is md_bitmap_unplug for one writer: it blocks until
// modification need is on every present device and flushed, writing it
// out itself when no one else is. Concurrent writers share one write-out.
func (b *writeIntentBitmap) waitDurable(need uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sync(need, true)
}

// endWrite is md_bitmap_endwrite: the write's devices answered; clean
// says every copy took it. A region a write failed on keeps its bit until
// a resync.
func (b *writeIntentBitmap) endWrite(w *bitmapWrite, clean bool) {
	if w == nil {
		return
	}
	clean = clean && b.v.inSync()
	b.mu.Lock()
	defer b.mu.Unlock()
	for r := w.first; r <= w.last; r++ {
		reg := b.regions[r]
		reg.inflight--
		reg.doneEpoch = b.epoch
		reg.sticky = reg.sticky || !clean
	}
}

// barrierBegin marks the start of a flush of every device: writes that
// completed before it are durable once it succeeds.
func (b *writeIntentBitmap) barrierBegin() uint64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.epoch
	b.epoch++
	return e
}

// barrierDone is md_bitmap_daemon_work's clearing, run after the barrier
// begun at epoch e flushed every device: the bits of regions whose writes
// all completed before it are cleared and written out, unflushed (a stale
// set bit only costs a resync). Nothing is cleared while the volume is out
// of sync.
func (b *writeIntentBitmap) barrierDone(e uint64) {
	if b == nil || !b.v.inSync() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	cleared := false
	for r, reg := range b.regions {
		if reg.inflight == 0 && reg.doneEpoch <= e && !reg.sticky {
			delete(b.regions, r)
			b.clear(r)
			cleared = true
		}
	}
	if !cleared {
		return
	}
	b.modSeq++
	if err := b.sync(b.modSeq, false); err != nil {
		b.v.log.Warnf("raid: write-intent bitmap: writing cleared bits: %v (they stay set on disk: a resync at the next unclean mount)", err)
	}
}

// sync writes the bitmap out until modification need is written (and
// flushed, with flush). Called and returns with b.mu held.
func (b *writeIntentBitmap) sync(need uint64, flush bool) error {
	for {
		switch {
		case flush && b.durableSeq >= need, !flush && b.writtenSeq >= need:
			return nil
		case flush && b.failErr != nil && b.failSeq >= need:
			return b.failErr
		case b.writing:
			b.cond.Wait()
			continue
		}
		b.writing = true
		target := b.modSeq
		first, img := b.snapshot()
		b.mu.Unlock()
		err := b.writeOut(first, img, flush)
		b.mu.Lock()
		b.writing = false
		b.cond.Broadcast()
		if err != nil {
			b.redirty(first, len(img)/bitmapBlockSize)
			if flush {
				b.failSeq, b.failErr = target, err
			}
			return err
		}
		b.writtenSeq = max(b.writtenSeq, target)
		if flush {
			b.durableSeq = max(b.durableSeq, target)
			b.updates.Add(1)
		}
	}
}

// snapshot encodes the blocks to write, from the first changed one to the
// last (one device write), and forgets they changed. first counts the
// header as block 0.
func (b *writeIntentBitmap) snapshot() (int, []byte) {
	lo, hi := -1, -1
	for i, d := range b.dirty {
		if d || b.needInit {
			if lo < 0 {
				lo = i
			}
			hi = i
		}
	}
	first := lo + 1
	if b.needInit {
		first = 0
	}
	if lo < 0 && !b.needInit {
		return 0, nil
	}
	b.events++
	img := blk.AlignedBuffer((hi + 2 - first) * bitmapBlockSize)
	if first == 0 {
		b.encodeHeader(img[:bitmapBlockSize])
	}
	for i := lo; i <= hi; i++ {
		at := (i + 1 - first) * bitmapBlockSize
		b.encodeBlock(i, img[at:at+bitmapBlockSize])
		b.dirty[i] = false
	}
	b.needInit = false
	return first, img
}

// redirty marks blocks of a failed write-out as changed again.
func (b *writeIntentBitmap) redirty(first, n int) {
	if first == 0 && n > 0 {
		b.needInit = true
	}
	for i := max(first-1, 0); i < first-1+n && i < b.nblocks; i++ {
		b.dirty[i] = true
	}
}

func (b *writeIntentBitmap) encodeHeader(h []byte) {
	copy(h, bitmapHdrMagic)
	le := binary.LittleEndian
	le.PutUint32(h[12:], bitmapVersion)
	copy(h[16:32], b.fsid[:])
	le.PutUint64(h[32:], b.regionSize)
	le.PutUint64(h[40:], b.nbits)
	le.PutUint64(h[48:], b.v.chunk.length)
	le.PutUint64(h[56:], b.events)
	le.PutUint32(h[bitmapCsumOffset:], crc32.Checksum(h[12:], bitmapCrc))
}

func (b *writeIntentBitmap) encodeBlock(i int, h []byte) {
	copy(h, bitmapBitsMagic)
	le := binary.LittleEndian
	le.PutUint32(h[12:], uint32(i))
	copy(h[16:32], b.fsid[:])
	le.PutUint64(h[32:], b.events)
	le.PutUint64(h[40:], b.clearedGen[i])
	bits := h[bitmapBlockHdr:]
	base := uint64(i) * bitmapBlockBits
	for j := uint64(0); j < bitmapBlockBits && base+j < b.nbits; j++ {
		if b.test(base + j) {
			bits[j/8] |= 1 << (j % 8)
		}
	}
	le.PutUint32(h[bitmapCsumOffset:], crc32.Checksum(h[12:], bitmapCrc))
}

// writeOut writes img (blocks from first) to every present device, in
// parallel, each then flushed with its barrier when flush is set. It
// fails only when no device took it all: the others' copies are unioned
// at the next open.
func (b *writeIntentBitmap) writeOut(first int, img []byte, flush bool) error {
	devs := b.v.devs
	errs := make([]error, len(devs))
	var wg sync.WaitGroup
	for i, d := range devs {
		if d.Missing() {
			errs[i] = errMissing
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if len(img) > 0 {
				if err := d.writeBuf(img, bitmapOffset+uint64(first)*bitmapBlockSize); err != nil {
					errs[i] = err
					return
				}
			}
			if flush {
				errs[i] = d.barrier()
			}
		}()
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		if err == nil {
			ok++
		} else if !devs[i].Missing() {
			b.v.log.Warnf("raid: write-intent bitmap: %v", err)
		}
	}
	if ok == 0 {
		return fmt.Errorf("raid: write-intent bitmap: no device took the update: %w", errors.Join(errs...))
	}
	return nil
}

// load is md_bitmap_read_sb + md_bitmap_init_from_disk at open: the union
// of the bits of every valid copy. Devices with no header (images made
// before the bitmap) count as an empty bitmap, written at the first
// write-out; a copy whose header is corrupt is ignored, and when no copy
// is valid but some device holds something there, every region is
// dirty. Regions loaded dirty stay dirty until ResyncBitmap.
func (b *writeIntentBitmap) load(fsid [16]byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fsid = fsid
	have := make([]bool, b.nblocks)
	valid, garbage := 0, 0
	for _, d := range b.v.devs {
		if d.Missing() {
			continue
		}
		img := blk.AlignedBuffer((b.nblocks + 1) * bitmapBlockSize)
		if err := d.readBuf(img, bitmapOffset); err != nil {
			b.v.log.Warnf("raid: write-intent bitmap: %v (copy ignored)", err)
			garbage++
			continue
		}
		if err := b.checkHeader(img[:bitmapBlockSize]); err != nil {
			if !bytes.Equal(img[:bitmapBlockSize], make([]byte, bitmapBlockSize)) {
				b.v.log.Warnf("raid: write-intent bitmap on %s: %v (copy ignored)", d.Path(), err)
				garbage++
			}
			continue
		}
		valid++
		b.events = max(b.events, binary.LittleEndian.Uint64(img[56:]))
		for i := 0; i < b.nblocks; i++ {
			blob := img[(i+1)*bitmapBlockSize : (i+2)*bitmapBlockSize]
			if !b.checkBlock(i, blob) {
				b.v.log.Warnf("raid: write-intent bitmap on %s: block %d is corrupt (copy ignored)", d.Path(), i)
				continue
			}
			have[i] = true
			b.mergeBlock(i, blob)
		}
	}
	switch {
	case valid == 0 && garbage == 0: // older images: no bitmap yet
		b.needInit = true
		return
	case valid == 0:
		b.v.log.Warnf("raid: write-intent bitmap: no valid copy: every region is resynced")
		have = make([]bool, b.nblocks)
		b.needInit = true
	}
	for i, ok := range have {
		if ok {
			continue
		}
		if valid > 0 {
			b.v.log.Warnf("raid: write-intent bitmap: block %d has no valid copy: its regions are resynced", i)
		}
		for j := uint64(i) * bitmapBlockBits; j < min(uint64(i+1)*bitmapBlockBits, b.nbits); j++ {
			b.set(j)
		}
	}
	for r := uint64(0); r < b.nbits; r++ {
		if b.test(r) {
			b.regions[r] = &bitmapRegion{sticky: true}
		}
	}
	b.history = valid > 0
}

// forfeitHistory is md's "bitmap no longer covers this member" case: a
// present device's flush failed, so what it took since the last barrier
// may be gone, COW writes included, which set no bits; it will come back
// behind the volume (its superblock is not written again). ClearedGen moves past the committed generation,
// so BitmapDirty tells a device at that generation or older to resync in
// full. The change is written out unflushed: the next barrier, which comes
// before any superblock that could leave such a device behind, makes it
// durable.
func (b *writeIntentBitmap) forfeitHistory() {
	if b == nil {
		return
	}
	gen := b.committedGen.Load() + 1
	b.mu.Lock()
	defer b.mu.Unlock()
	changed := false
	for i := range b.clearedGen {
		if b.clearedGen[i] < gen {
			b.clearedGen[i], b.dirty[i], changed = gen, true, true
		}
	}
	if !changed {
		return
	}
	b.modSeq++
	if err := b.sync(b.modSeq, false); err != nil {
		b.v.log.Warnf("raid: write-intent bitmap: %v (a device that failed now may get a partial resync)", err)
	}
}

// resynced is md_bitmap_close_sync: Resync brought every stale device up
// to date, so the bits kept for them (sticky) go at the next barrier like
// any other, once nothing else keeps the volume out of sync.
func (b *writeIntentBitmap) resynced() {
	if b == nil || !b.v.inSync() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, reg := range b.regions {
		if reg.inflight == 0 {
			reg.sticky = false
		}
	}
}

func (b *writeIntentBitmap) checkHeader(h []byte) error {
	le := binary.LittleEndian
	switch {
	case string(h[:8]) != bitmapHdrMagic:
		return errors.New("no bitmap magic")
	case le.Uint32(h[bitmapCsumOffset:]) != crc32.Checksum(h[12:], bitmapCrc):
		return errors.New("header checksum mismatch")
	case le.Uint32(h[12:]) != bitmapVersion:
		return fmt.Errorf("version %d, want %d", le.Uint32(h[12:]), bitmapVersion)
	case !bytes.Equal(h[16:32], b.fsid[:]):
		return errors.New("belongs to another volume")
	case le.Uint64(h[32:]) != b.regionSize || le.Uint64(h[40:]) != b.nbits || le.Uint64(h[48:]) != b.v.chunk.length:
		return fmt.Errorf("geometry %d regions of %d bytes, want %d of %d", le.Uint64(h[40:]), le.Uint64(h[32:]), b.nbits, b.regionSize)
	}
	return nil
}

func (b *writeIntentBitmap) checkBlock(i int, h []byte) bool {
	le := binary.LittleEndian
	return string(h[:8]) == bitmapBitsMagic && le.Uint32(h[bitmapCsumOffset:]) == crc32.Checksum(h[12:], bitmapCrc) &&
		le.Uint32(h[12:]) == uint32(i) && bytes.Equal(h[16:32], b.fsid[:])
}

func (b *writeIntentBitmap) mergeBlock(i int, h []byte) {
	b.clearedGen[i] = max(b.clearedGen[i], binary.LittleEndian.Uint64(h[40:]))
	bits := h[bitmapBlockHdr:]
	base := uint64(i) * bitmapBlockBits
	for j := uint64(0); j < bitmapBlockBits && base+j < b.nbits; j++ {
		if bits[j/8]&(1<<(j%8)) != 0 {
			b.bits[(base+j)/64] |= 1 << ((base + j) % 64)
		}
	}
}

// inSync reports whether every device holds every write the volume
// acknowledged: none missing, none whose flush failed, no write or barrier
// that missed a copy (noteDegraded), none stale (behind the volume until
// Resync). While it is false every write sets its bits and no bit is
// cleared (md's degraded array).
func (v *Volume) inSync() bool {
	if v.degradedWrites.Load() != 0 {
		return false
	}
	for _, d := range v.devs {
		if d.Missing() || d.FlushFailed() || d.Stale() {
			return false
		}
	}
	return true
}

// BitmapRange is one dirty region of the write-intent bitmap, in the
// chunk's logical address space.
type BitmapRange struct{ Logical, Length uint64 }

// BitmapDirty lists the regions whose bit is set, merged into ranges, and
// ClearedGen: the volume generation at which bits were last cleared (the
// greatest over the bit blocks; 0 if never). No kernel counterpart
// (md-bitmap's events_cleared plays the part). A device whose superblock
// generation is >= clearedGen was present and flushed when those bits
// were cleared, so the ranges cover every write it may have missed: only
// they need resyncing onto it. A device older than clearedGen needs a
// full resync. Nil on a volume without a bitmap.
func (v *Volume) BitmapDirty() (ranges []BitmapRange, clearedGen uint64) {
	b := v.bitmap
	if b == nil {
		return nil, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for r := uint64(0); r < b.nbits; r++ {
		if !b.test(r) {
			continue
		}
		lo := r * b.regionSize
		n := min(b.regionSize, v.chunk.length-lo)
		if k := len(ranges); k > 0 && ranges[k-1].Logical+ranges[k-1].Length == lo {
			ranges[k-1].Length += n
		} else {
			ranges = append(ranges, BitmapRange{lo, n})
		}
	}
	for _, g := range b.clearedGen {
		clearedGen = max(clearedGen, g)
	}
	return ranges, clearedGen
}

// BitmapUpdates counts the durable bitmap updates written so far (a
// write-out and its flushes); no kernel counterpart, for figures.
func (v *Volume) BitmapUpdates() uint64 {
	if v.bitmap == nil {
		return 0
	}
	return v.bitmap.updates.Load()
}

// noteCommitted tells the bitmap the volume's committed generation
// (fs_info->last_trans_committed), which a clearing records as ClearedGen.
func (v *Volume) noteCommitted(gen uint64) {
	if v.bitmap != nil {
		v.bitmap.committedGen.Store(gen)
	}
}
