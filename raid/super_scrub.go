package raid

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
)

// SuperCopy is one superblock copy as ScrubSupers found it.
type SuperCopy struct {
	Device string
	// Index is the copy on its device: 0 the primary, 1 and 2 the backups.
	Index  int
	Bytenr uint64
	// Err says why the copy is bad; nil: it is valid and current.
	Err error
	// Repaired is set when ScrubSupers rewrote the bad copy and flushed
	// its device; RepairErr says why it could not.
	Repaired  bool
	RepairErr error
}

// superCopyState is what reading one copy found.
type superCopyState struct {
	sb  *Superblock
	err error
}

// ScrubSupers is scrub_supers (fs/btrfs/scrub.c, scrub_one_super per
// copy): it reads all three superblock copies of every present device. A
// copy is bad when it cannot be read, does not decode (zeroed, csum, magic,
// fields), or describes another device or volume than the device's newest
// valid copy. An older generation alone is not damage: it is a commit
// that a crash interrupted between copies or devices, which reading takes
// the newest copy over and the next commit rewrites. The kernel only
// counts super_errors and leaves them to the next commit; with repair,
// every bad copy is rewritten here from the device's newest copy and the
// device flushed, so the repair is durable when Repaired is set. Missing
// devices are skipped. An error means the volume is closed.
func (v *Volume) ScrubSupers(repair bool) ([]SuperCopy, error) {
	if !v.enter() {
		return nil, fmt.Errorf("raid: scrubbing superblocks: volume closed: %w", syscall.EIO)
	}
	defer v.inflight.Done()
	var out []SuperCopy
	for _, d := range v.devs {
		if d.Missing() {
			continue
		}
		var states [superMirrorsMax]superCopyState
		var best *Superblock
		for k, off := range superOffsets {
			states[k] = d.readSuperCopy(off)
			if sb := states[k].sb; sb != nil && (best == nil || sb.Generation > best.Generation) {
				best = sb
			}
		}
		var bad []int
		for k, off := range superOffsets {
			c := SuperCopy{Device: d.Path(), Index: k, Bytenr: off, Err: superCopyErr(states[k], best)}
			if c.Err != nil {
				bad = append(bad, len(out))
			}
			out = append(out, c)
		}
		if repair && len(bad) > 0 {
			d.repairSupers(out, bad, best)
		}
	}
	return out, nil
}

// readSuperCopy reads and decodes the copy at off.
func (d *Device) readSuperCopy(off uint64) superCopyState {
	buf := blk.AlignedBuffer(SuperInfoSize)
	if err := d.readBuf(buf, off); err != nil {
		return superCopyState{err: fmt.Errorf("unreadable: %w", err)}
	}
	sb, err := DecodeSuperblock(buf, off)
	if errors.Is(err, ErrBlankSuper) {
		err = errors.New("zeroed (no superblock)")
	}
	return superCopyState{sb: sb, err: err}
}

// superCopyErr says why a copy is bad, given the device's newest valid
// copy best; nil when it is good.
func superCopyErr(c superCopyState, best *Superblock) error {
	if c.err != nil {
		return c.err
	}
	w := *best // c itself is valid, so the device has a newest copy
	w.Bytenr, w.Generation, w.RootSlot, w.RootBytes = c.sb.Bytenr, c.sb.Generation, c.sb.RootSlot, c.sb.RootBytes
	if *c.sb != w {
		return errors.New("describes another device or volume than the device's newest copy")
	}
	return nil
}

// repairSupers rewrites the copies out[bad] of d from want (the device's
// newest copy), then flushes d.
func (d *Device) repairSupers(out []SuperCopy, bad []int, want *Superblock) {
	if want == nil {
		for _, i := range bad {
			out[i].RepairErr = errors.New("no valid copy on this device to rewrite it from")
		}
		return
	}
	var written []int
	for _, i := range bad {
		c := *want
		c.Bytenr = out[i].Bytenr
		buf := blk.AlignedBuffer(SuperInfoSize)
		copy(buf, c.Encode())
		if err := d.writeBuf(buf, c.Bytenr); err != nil {
			out[i].RepairErr = err
			continue
		}
		written = append(written, i)
	}
	if err := d.flush(); err != nil {
		for _, i := range written {
			out[i].RepairErr = fmt.Errorf("flushing %s: %w", d.Path(), err)
		}
		return
	}
	for _, i := range written {
		out[i].Repaired = true
	}
}

// FlushDevices is blkdev_issue_flush on every present device, in order:
// what an offline repair needs before it reports success. Unlike Flush
// (barrier_all_devices), no failure is tolerated; all are joined.
func (v *Volume) FlushDevices() error {
	var errs []error
	for _, d := range v.devs {
		if d.Missing() {
			continue
		}
		if err := d.flush(); err != nil {
			errs = append(errs, fmt.Errorf("raid: flush: %w", err))
		}
	}
	return errors.Join(errs...)
}
