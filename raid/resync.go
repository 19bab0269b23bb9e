package raid

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
)

// resyncState is what Volume.Resync has done so far (ResyncProgress).
type resyncState struct {
	running     atomic.Bool // a resync is to run or running: mirrored writes take the region locks
	active      atomic.Bool // Resync is running
	stop        atomic.Bool // StopResync or Close asked it to stop
	done, total atomic.Uint64
	mu          sync.Mutex
	err         error // why the last resync stopped, nil when it finished
}

// markStale is device_list_add's generation check (latest_dev is the
// device with the newest superblock), stricter than btrfs's, which reads
// an older device like a current one:
// devs[i] read sbs[i] at open; every device whose generation is below the
// newest one missed commits (it was left out of a degraded mount, lost a
// flush, or a crash cut write_all_supers short) and is marked stale, like an
// md member whose event count is behind: nothing is read from it until
// Resync brought it up to date, and it still gets every new write. More
// devices behind than the profile can rebuild cannot come from a degraded
// mount: they are read as current (see below). It returns the newest
// superblock.
func (v *Volume) markStale(devs []*Device, sbs []*Superblock) *Superblock {
	newest := sbs[0]
	for _, sb := range sbs {
		if sb.Generation > newest.Generation {
			newest = sb
		}
	}
	v.generation = newest.Generation
	var behind []int
	for i, d := range devs {
		d.superGen = sbs[i].Generation
		if sbs[i].Generation < newest.Generation {
			behind = append(behind, i)
		}
	}
	if len(behind)+len(v.MissingDevices()) > v.attr.toleratedFailures {
		// Not a device left out (a degraded mount leaves out at most
		// what the profile tolerates) but a commit cut short between
		// superblocks: the metadata and data reached every device
		// before the first superblock, so the older ones are whole.
		if len(behind) > 0 {
			v.log.Warnf("raid: %d device(s) behind generation %d, more than %s can rebuild: taken as a commit cut short between superblocks, read as current",
				len(behind), newest.Generation, v.profile)
		}
		return newest
	}
	for _, i := range behind {
		d := devs[i]
		d.stale.Store(true)
		v.resync.running.Store(true)
		v.log.Warnf("raid: %s is behind the volume (generation %d, the volume is at %d): it missed writes, "+
			"nothing is read from it until it is resynced", d.Path(), sbs[i].Generation, newest.Generation)
	}
	return newest
}

// staleRanges is the one place that says what a device last current at
// generation devGen may hold stale: logical ranges of the data chunk. The
// write-intent bitmap answers when it can (md's bitmap-based recovery):
// bits are never cleared while a device is missing, stale or failed, so a
// device whose generation is at least the bitmap's ClearedGen missed only
// the regions still dirty. Otherwise (an image from before the bitmap, a
// bitmap that forfeited its history, a device older than the last clearing)
// it is the whole chunk.
func (v *Volume) staleRanges(devGen uint64) []byteRange {
	whole := []byteRange{{v.chunk.start, v.chunk.start + v.chunk.length}}
	if v.bitmap == nil || !v.bitmap.history {
		return whole
	}
	dirty, clearedGen := v.BitmapDirty()
	if devGen < clearedGen {
		return whole
	}
	ranges := make([]byteRange, 0, len(dirty))
	for _, r := range dirty {
		ranges = append(ranges, byteRange{v.chunk.start + r.Logical, v.chunk.start + r.Logical + r.Length})
	}
	return ranges
}

// StaleDevice is a device that came back behind the volume.
type StaleDevice struct {
	Path  string
	Devid uint64
	// Generation is the one its superblock had at open.
	Generation uint64
}

// StaleDevices lists the devices still stale (no kernel counterpart, see
// Device.Stale).
func (v *Volume) StaleDevices() []StaleDevice {
	var out []StaleDevice
	for i, d := range v.devs {
		if d.Stale() {
			out = append(out, StaleDevice{Path: d.Path(), Devid: uint64(i + 1), Generation: d.superGen})
		}
	}
	return out
}

// Generation is the newest superblock generation seen at open: the
// generation a device must have to be current (fs_devices' latest
// generation, btrfs_super_generation of latest_dev).
func (v *Volume) Generation() uint64 { return v.generation }

// ResyncProgress is how far Resync got (no kernel counterpart: md's
// sync_completed).
type ResyncProgress struct {
	// Done and Total are logical bytes of the chunk; Total is 0 when no
	// resync ran.
	Done, Total uint64
	// Err is why the last resync stopped short (nil when it finished).
	Err error
	// Running is set while Resync runs.
	Running bool
}

// ResyncProgress reports the last or running resync.
func (v *Volume) ResyncProgress() ResyncProgress {
	v.resync.mu.Lock()
	defer v.resync.mu.Unlock()
	return ResyncProgress{Done: v.resync.done.Load(), Total: v.resync.total.Load(), Err: v.resync.err, Running: v.resync.active.Load()}
}

// errResyncStopped is why a resync that StopResync or Close interrupted
// ended.
var errResyncStopped = errors.New("stopped before the end (the volume is closing)")

// StopResync asks a running Resync to stop before its next region and
// return; the devices it did not finish stay stale (no kernel counterpart:
// md's MD_RECOVERY_INTR). Volume.Close calls it, so closing never waits for
// a whole resync.
func (v *Volume) StopResync() { v.resync.stop.Store(true) }

// Resync is md_do_sync, drivers/md's recovery of members whose event count
// is behind (btrfs has no counterpart: it leaves a stale mirror to scrub or
// to csum failures, and has none for nodatasum data). Every range staleRanges gives
// for the oldest stale device is brought up to date on every stale device:
// mirrored profiles copy a current copy, RAID5/6 rebuild the stale device's
// columns (data, P or Q) from the others (recover_sectors + finish_rmw's
// parity). Each region is done under its stripe lock, which writes take too
// while a resync is due (from OpenVolume on), so a write racing the resync
// lands after or before the copy, never under it. Once its ranges are copied
// and flushed, a device stops being stale and is read again; its superblock
// still names its old generation until the next commit writes it
// (MetaArea.WriteSupers), so a crash before then only resyncs it again. It
// may run while the volume serves I/O; StopResync (or Close) ends it early.
// On an error the devices stay stale (and unread) and the error is
// returned.
func (v *Volume) Resync() error {
	if !v.enter() {
		return fmt.Errorf("raid: resync: volume closed: %w", syscall.EIO)
	}
	defer v.inflight.Done()
	v.resync.active.Store(true)
	defer v.resync.active.Store(false)
	stale := v.StaleDevices()
	if len(stale) == 0 {
		v.resync.running.Store(false)
		return nil
	}
	oldest := stale[0].Generation
	for _, s := range stale {
		oldest = min(oldest, s.Generation)
	}
	ranges := v.staleRanges(oldest)
	var total uint64
	for _, r := range ranges {
		total += r.hi - r.lo
	}
	v.resync.mu.Lock()
	v.resync.done.Store(0)
	v.resync.total.Store(total)
	v.resync.err = nil
	v.resync.mu.Unlock()
	v.log.Warnf("raid: resyncing %d stale device(s): %d bytes", len(stale), total)
	err := v.resyncRanges(ranges)
	if err == nil {
		err = v.finishResync()
	}
	v.resync.mu.Lock()
	v.resync.err = err
	v.resync.mu.Unlock()
	if err != nil {
		v.log.Errorf("raid: resync stopped after %d of %d bytes: %v; the stale devices stay unread", v.resync.done.Load(), total, err)
		return fmt.Errorf("raid: resync: %w", err)
	}
	v.resync.running.Store(false)
	v.log.Infof("raid: resync done: %d bytes", total)
	return nil
}

// resyncRanges walks ranges one region at a time (a full stripe on RAID5/6,
// a stripe otherwise).
func (v *Volume) resyncRanges(ranges []byteRange) error {
	step := uint64(StripeLen)
	if v.profile.IsRaid56() {
		step = v.FullStripeLen()
	}
	buf := blk.AlignedBuffer(StripeLen)
	for _, r := range ranges {
		for at := r.lo / step * step; at < r.hi; at += step {
			if v.resync.stop.Load() {
				return errResyncStopped
			}
			var err error
			if v.profile.IsRaid56() {
				err = v.resyncFullStripe(at)
			} else {
				err = v.resyncMirrored(at, buf)
			}
			if err != nil {
				return err
			}
			v.resync.done.Add(min(at+step, r.hi) - max(at, r.lo))
		}
	}
	return nil
}

// resyncMirrored copies the stripe at logical from a current copy onto the
// stale copies, trying every current copy in turn.
func (v *Volume) resyncMirrored(logical uint64, buf []byte) error {
	ioc, n, err := v.MapBlock(blk.OpWrite, logical, StripeLen, 0)
	if err != nil {
		return err
	}
	var targets []IOStripe
	for _, s := range ioc.Stripes {
		if s.Dev.Stale() {
			targets = append(targets, s)
		}
	}
	if len(targets) == 0 {
		return nil
	}
	unlock := v.stripeLocks.lock(logical)
	defer unlock()
	var errs []error
	read := false
	for _, s := range ioc.Stripes {
		if s.Dev.unreadable() {
			continue
		}
		if err := s.Dev.readBuf(buf[:n], s.Physical); err != nil {
			errs = append(errs, err)
			continue
		}
		read = true
		break
	}
	if !read {
		return fmt.Errorf("no current copy of %d+%d readable: %w", logical, n, errors.Join(append(errs, syscall.EIO)...))
	}
	for _, t := range targets {
		if err := t.Dev.writeBuf(buf[:n], t.Physical); err != nil {
			return fmt.Errorf("writing %d+%d to the stale copy: %w", logical, n, err)
		}
	}
	return nil
}

// resyncFullStripe rebuilds the stale stripes of the full stripe at
// logical: the data from the current stripes (recover), P/Q from the data
// (genParity), then the stale stripes written.
func (v *Volume) resyncFullStripe(logical uint64) error {
	ioc, _, err := v.MapBlock(blk.OpWrite, logical, v.FullStripeLen(), 0)
	if err != nil {
		return err
	}
	failed := make([]bool, len(ioc.Stripes))
	anyStale := false
	for i, s := range ioc.Stripes {
		failed[i] = s.Dev.unreadable()
		anyStale = anyStale || s.Dev.Stale()
	}
	if !anyStale {
		return nil
	}
	r := v.newRbio(ioc)
	defer r.free()
	unlock := v.stripeLocks.lock(ioc.FullStripeLogical)
	defer unlock()
	all := []byteRange{{0, StripeLen}}
	r.readStripes(all, failed)
	if err := r.recover(all, failed); err != nil {
		return err
	}
	r.genParity(all[0])
	for i, s := range ioc.Stripes {
		if !s.Dev.Stale() {
			continue
		}
		if err := s.Dev.writeBuf(r.bufs[i], s.Physical); err != nil {
			return fmt.Errorf("writing stripe %d of full stripe %d to the stale device: %w", i, logical, err)
		}
	}
	return nil
}

// finishResync flushes every stale device and, once its copy is durable,
// lets it be read again.
func (v *Volume) finishResync() error {
	var errs []error
	for _, d := range v.devs {
		if !d.Stale() {
			continue
		}
		if err := d.flush(); err != nil {
			errs = append(errs, fmt.Errorf("flushing the resynced %s: %w", d.Path(), err))
			continue
		}
		d.stale.Store(false)
		v.log.Infof("raid: %s resynced: current again from the next commit", d.Path())
	}
	if len(errs) == 0 {
		v.bitmap.resynced()
	}
	return errors.Join(errs...)
}

// lockRegions takes the stripe locks Resync takes for the mirrored
// regions [logical, logical+n) covers, in ascending order (Resync holds one
// at a time, so no two lockers can wait on each other).
func (v *Volume) lockRegions(logical, n uint64) func() {
	var unlocks []func()
	for at := logical / StripeLen * StripeLen; at < logical+n; at += StripeLen {
		unlocks = append(unlocks, v.stripeLocks.lock(at))
	}
	return func() {
		for _, u := range unlocks {
			u()
		}
	}
}
