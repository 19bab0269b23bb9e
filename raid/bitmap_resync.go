package raid

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/btrfsdio/btrfsdio/blk"
)

// SectorVerifier tells whether data, one SectorSize sector read from a copy
// of logical, is right: known is false when nothing says (no checksum),
// ok is meaningful only when known. The filesystem above gives it (its
// csum tree); raid knows no checksums.
type SectorVerifier func(logical uint64, data []byte) (ok, known bool)

// resyncChunk bounds the buffers of one resync step per copy.
const resyncChunk = 1 << 20

// errStaleCopy stands for a stale device's copy, which the bitmap resync
// neither reads nor writes.
var errStaleCopy = errors.New("stale copy")

// formatBitmap writes an empty bitmap to every device of a volume just
// formatted (mkfs's part of md's bitmap creation).
func (v *Volume) formatBitmap(fsid [16]byte) error {
	b := v.bitmap
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fsid, b.needInit = fsid, true
	b.modSeq++
	if err := b.sync(b.modSeq, true); err != nil {
		return fmt.Errorf("raid: format: %w", err)
	}
	return nil
}

// ResyncBitmap is md_do_sync as md runs it at assembly after an unclean
// shutdown, over the regions the bitmap marks dirty, for the mirrored
// profiles: every copy of every dirty region is read,
// one is chosen sector by sector (the first copy verify accepts, else the
// first readable one, as md takes the first mirror), written over the
// copies that differ or failed to read, the devices flushed, and then the
// bits cleared. It must run before the volume serves any I/O; it first
// writes the bitmap of an image made before the bitmap existed. Regions of
// a volume out of sync (a device missing) are resynced among the present
// copies but keep their bits, as do RAID5/6 regions (parity is another
// mechanism's); on SINGLE and RAID0 there is nothing to resync. It
// returns how many regions it resynced.
func (v *Volume) ResyncBitmap(verify SectorVerifier) (int, error) {
	b := v.bitmap
	if b == nil {
		return 0, nil
	}
	b.mu.Lock()
	if b.needInit {
		b.modSeq++
		if err := b.sync(b.modSeq, true); err != nil {
			b.mu.Unlock()
			return 0, fmt.Errorf("raid: writing the first write-intent bitmap: %w", err)
		}
	}
	var dirty []uint64
	for r, reg := range b.regions {
		if reg.inflight == 0 {
			dirty = append(dirty, r)
		}
	}
	b.mu.Unlock()
	if len(dirty) == 0 || v.profile.IsRaid56() {
		return 0, nil
	}
	rewritten := 0
	if v.profile.Mirrored() {
		for _, r := range dirty {
			lo := r * b.regionSize
			n, err := v.resyncRange(lo, min(b.regionSize, v.chunk.length-lo), verify)
			rewritten += n
			if err != nil {
				return 0, err
			}
		}
		if err := v.Flush(); err != nil {
			return 0, fmt.Errorf("raid: resync: flushing: %w", err)
		}
	}
	if !v.inSync() {
		v.log.Warnf("raid: write-intent bitmap: %d regions resynced among the present copies; their bits stay set while the volume is degraded", len(dirty))
		return len(dirty), nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range dirty {
		if reg := b.regions[r]; reg != nil && reg.inflight == 0 {
			delete(b.regions, r)
			b.clear(r)
		}
	}
	b.modSeq++
	if err := b.sync(b.modSeq, false); err != nil {
		v.log.Warnf("raid: write-intent bitmap: writing cleared bits after a resync: %v", err)
	}
	v.log.Infof("raid: write-intent bitmap: resynced %d dirty regions of %d bytes (%d sectors rewritten)", len(dirty), b.regionSize, rewritten)
	return len(dirty), nil
}

// resyncRange makes every copy of [lo, lo+n) agree, one mapping at a time;
// it returns how many sectors it rewrote on some copy.
func (v *Volume) resyncRange(lo, n uint64, verify SectorVerifier) (int, error) {
	rewritten := 0
	for cur := lo; cur < lo+n; {
		ioc, mapLen, err := v.MapBlock(blk.OpWrite, cur, min(lo+n-cur, resyncChunk), 0)
		if err != nil {
			return rewritten, fmt.Errorf("raid: resync at %d: %w", cur, err)
		}
		bufs := make([][]byte, len(ioc.Stripes))
		for i := range bufs {
			bufs[i] = blk.AlignedBuffer(int(mapLen))
		}
		errs := readCopies(ioc, bufs, mapLen)
		for c, s := range ioc.Stripes {
			if s.Dev.Stale() { // Resync brings it up to date from the copies made to agree here
				errs[c] = errStaleCopy
			}
		}
		stale := make([]bool, len(bufs))
		for off := uint64(0); off < mapLen; off += SectorSize {
			k := chooseCopy(cur+off, bufs, errs, off, verify)
			if k < 0 {
				v.log.Errorf("raid: resync: no copy of the sector at %d can be read", cur+off)
				continue
			}
			want := bufs[k][off : off+SectorSize]
			for c := range bufs {
				if c != k && (errs[c] != nil || !bytes.Equal(bufs[c][off:off+SectorSize], want)) {
					copy(bufs[c][off:off+SectorSize], want)
					stale[c] = true
					rewritten++
				}
			}
		}
		var werrs []error
		for c, s := range ioc.Stripes {
			if stale[c] && !s.Dev.unreadable() {
				if err := s.Dev.writeBuf(bufs[c], s.Physical); err != nil {
					werrs = append(werrs, err)
				}
			}
		}
		if err := errors.Join(werrs...); err != nil {
			return rewritten, fmt.Errorf("raid: resync at %d: %w", cur, err)
		}
		cur += mapLen
	}
	return rewritten, nil
}

// chooseCopy picks the copy of the sector at logical (off into each buffer)
// that the others get: the first one verify accepts, else the first one
// read; -1 when none could be read.
func chooseCopy(logical uint64, bufs [][]byte, errs []error, off uint64, verify SectorVerifier) int {
	first := -1
	for c := range bufs {
		if errs[c] != nil {
			continue
		}
		if first < 0 {
			first = c
		}
		if verify == nil {
			break
		}
		if ok, known := verify(logical, bufs[c][off:off+SectorSize]); known && ok {
			return c
		}
	}
	return first
}
