package raid

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/btrfsdio/btrfsdio/blk"
)

// MetaArea is where a filesystem above commits its metadata, and the
// superblocks that point to it: the raid half of btrfs_commit_transaction
// (writing the tree blocks, then write_all_supers) and of open_ctree
// (reading the root the superblock names). Every device holds the area
// after its share of the data chunk: two slots that commits alternate
// between, so the committed one is never overwritten, and one copy of each
// per device (two on a single device, like the DUP metadata profile). The
// content is opaque here.
type MetaArea struct {
	v    *Volume
	devs []*Device        // the devices present (a degraded volume's missing ones hold nothing)
	sbs  []*Superblock    // devs[i]'s newest superblock
	bad  map[*Device]bool // devices whose copy of the slot being committed failed
	// holes are the devices whose copy of a slot lacks bytes written to
	// the others (an append that failed there, or a stale device): they
	// get no superblock naming that slot until a write from its start
	// (a checkpoint) fills it whole.
	holes map[metaHole]bool
	root  MetaRoot
}

// metaHole names one device's copy of one slot.
type metaHole struct {
	d    *Device
	slot int
}

// MetaRoot is the committed metadata: its generation and where it lies.
type MetaRoot struct {
	Generation uint64
	Slot       int
	Bytes      uint64 // 0: nothing committed yet
}

// MetaCopy is one copy of a slot as read from one device.
type MetaCopy struct {
	Where string // "path@offset"
	// Path, Index (0, or 1 for a single device's second copy) and Offset
	// name the copy in full, for messages and RewriteCopy.
	Path   string
	Index  int
	Offset uint64
	Data   []byte
	Err    error
	// Stale is set, with no Data and no Err, for a copy on a stale device
	// (Device.Stale): it is not read, since it may hold an older commit.
	Stale bool
}

// OpenMetaArea is btrfs_read_dev_super for every device of v, as open_ctree
// calls it: the root is the one of the newest superblock. A commit writes the
// metadata to every device before any superblock, so a crash between two
// superblocks leaves the newest one pointing to metadata that is whole.
func OpenMetaArea(v *Volume) (*MetaArea, error) {
	m := &MetaArea{v: v}
	for _, d := range v.Devices() {
		if !d.Missing() {
			m.devs = append(m.devs, d)
		}
	}
	if len(m.devs) == 0 {
		return nil, errors.New("raid: metadata area: no device present")
	}
	for _, d := range m.devs {
		sb, err := d.ReadSuper()
		if err != nil {
			return nil, fmt.Errorf("raid: metadata area: %w", err)
		}
		if len(m.sbs) > 0 && sb.Fsid != m.sbs[0].Fsid {
			return nil, fmt.Errorf("raid: metadata area: %s belongs to another volume", d.Path())
		}
		// Every copy is placed with the first device's layout, and the
		// root's length sizes a buffer: both must fit every device.
		if len(m.sbs) > 0 && (sb.ChunkDevBytes != m.sbs[0].ChunkDevBytes ||
			sb.MetaSlotBytes != m.sbs[0].MetaSlotBytes || sb.MetaCopies != m.sbs[0].MetaCopies) {
			return nil, fmt.Errorf("raid: metadata area: %s disagrees with %s about where the metadata lies", d.Path(), m.devs[0].Path())
		}
		if err := checkFits(d, sb); err != nil {
			return nil, fmt.Errorf("raid: metadata area: %w", err)
		}
		m.sbs = append(m.sbs, sb)
		if sb.Generation > m.root.Generation {
			m.root = MetaRoot{Generation: sb.Generation, Slot: int(sb.RootSlot), Bytes: sb.RootBytes}
		}
	}
	m.holes = map[metaHole]bool{}
	for i, d := range m.devs {
		if d.Stale() || m.sbs[i].Generation != m.root.Generation {
			m.holes[metaHole{d, 0}], m.holes[metaHole{d, 1}] = true, true
		}
	}
	v.noteCommitted(m.root.Generation)
	return m, nil
}

// Incomplete reports whether a device that may get a superblock lacks
// part of slot (no kernel counterpart: btrfs writes every dirty tree block
// to every mirror): a filesystem above should then write the next commit
// whole, from the other slot's start, rather than append. Devices whose
// flush failed never get a superblock again and stale ones none until
// their resync: they do not count.
func (m *MetaArea) Incomplete(slot int) bool {
	for h := range m.holes {
		if h.slot == slot && !h.d.FlushFailed() && !h.d.Stale() {
			return true
		}
	}
	return false
}

// Root is the committed metadata: btrfs_super_root and
// btrfs_super_generation of the newest superblock.
func (m *MetaArea) Root() MetaRoot { return m.root }

// Fsid is the volume's fsid (fs_devices->fsid), which the metadata records
// to prove it belongs here, as btrfs_header_fsid does.
func (m *MetaArea) Fsid() [16]byte { return m.sbs[0].Fsid }

// SlotBytes is the most one commit may write (no kernel counterpart: btrfs
// metadata grows by allocating chunks).
func (m *MetaArea) SlotBytes() uint64 { return m.sbs[0].MetaSlotBytes }

// copyOffsets lists (device, offset) of every copy of slot.
func (m *MetaArea) copyOffsets(slot int) ([]*Device, []uint64) {
	var devs []*Device
	var offs []uint64
	sb := m.sbs[0]
	for _, d := range m.devs {
		for c := uint64(0); c < uint64(sb.MetaCopies); c++ {
			devs = append(devs, d)
			offs = append(offs, sb.ChunkDevBytes+(2*c+uint64(slot))*sb.MetaSlotBytes)
		}
	}
	return devs, offs
}

// copyIndex is copy i of copyOffsets' list counted on its own device.
func (m *MetaArea) copyIndex(i int) int { return i % int(m.sbs[0].MetaCopies) }

// ReadSlot reads the first n bytes of every copy of slot
// (read_extent_buffer trying each mirror); each copy carries its own error.
// Copies on stale devices are listed, marked Stale, but not read.
func (m *MetaArea) ReadSlot(slot int, n uint64) []MetaCopy {
	devs, offs := m.copyOffsets(slot)
	out := make([]MetaCopy, len(devs))
	for i, d := range devs {
		out[i].Where = fmt.Sprintf("%s@%d", d.Path(), offs[i])
		out[i].Path, out[i].Index, out[i].Offset = d.Path(), m.copyIndex(i), offs[i]
		if d.Stale() {
			out[i].Stale = true
			continue
		}
		if n > m.SlotBytes() {
			out[i].Err = fmt.Errorf("raid: metadata of %d bytes exceeds the %d-byte slot", n, m.SlotBytes())
			continue
		}
		buf := blk.AlignedBuffer(int(n))
		if err := d.readBuf(buf, offs[i]); err != nil {
			out[i].Err = fmt.Errorf("raid: reading metadata copy: %w", err)
			continue
		}
		out[i].Data = buf
	}
	return out
}

// RewriteCopy is scrub_write_sectors, scrub's repair write of a tree
// block, for one copy: b, a valid copy of slot's content as ReadSlot
// returned it, over copy i of slot (ReadSlot's order), then a flush of its
// device, so the repair is durable when it returns.
func (m *MetaArea) RewriteCopy(slot, i int, b []byte) error {
	devs, offs := m.copyOffsets(slot)
	switch {
	case i < 0 || i >= len(devs):
		return fmt.Errorf("raid: metadata copy %d of %d: %w", i, len(devs), syscall.EINVAL)
	case uint64(len(b)) > m.SlotBytes() || len(b)%SectorSize != 0:
		return fmt.Errorf("raid: metadata of %d bytes does not fit the %d-byte slot in whole sectors", len(b), m.SlotBytes())
	}
	buf := blk.AlignedBuffer(len(b))
	copy(buf, b)
	if err := devs[i].writeBuf(buf, offs[i]); err != nil {
		return fmt.Errorf("raid: rewriting metadata copy: %w", err)
	}
	if err := devs[i].flush(); err != nil {
		return fmt.Errorf("raid: flushing rewritten metadata: %w", err)
	}
	return nil
}

// WriteSlot is btrfs_write_and_wait_transaction: write b to every copy of
// slot, then flush every device. A device whose copy fails to write or
// flush, or whose flush ever failed (FlushFailed), gets no new superblock
// either (WriteSupers), so it keeps naming its older root; the commit fails
// only when no device took a whole copy, as btrfs goes on with the mirrors
// of a tree block that remain.
func (m *MetaArea) WriteSlot(slot int, b []byte) error { return m.WriteSlotAt(slot, 0, b) }

// WriteSlotAt is btrfs_write_and_wait_transaction and btrfs_sync_log:
// WriteSlot for b at byte off of slot, with off 0 a whole new root (a
// checkpoint), past the committed root's end an append to it (as
// btrfs_sync_log writes log tree blocks). A device that misses an
// append has a hole in its copy until a write from the slot's start; a
// device with a hole in the committed slot gets no superblock (holes).
func (m *MetaArea) WriteSlotAt(slot int, off uint64, b []byte) error {
	if off > m.SlotBytes() || uint64(len(b)) > m.SlotBytes()-off || off%SectorSize != 0 || len(b)%SectorSize != 0 {
		return fmt.Errorf("raid: metadata of %d bytes at %d does not fit the %d-byte slot in whole sectors", len(b), off, m.SlotBytes())
	}
	buf := blk.AlignedBuffer(len(b))
	copy(buf, b)
	devs, offs := m.copyOffsets(slot)
	m.bad = map[*Device]bool{}
	epoch := m.v.bitmap.barrierBegin() // the data writes completed before it are flushed below
	var errs []error
	for i, d := range devs {
		if err := d.writeBuf(buf, offs[i]+off); err != nil {
			m.bad[d] = true
			errs = append(errs, fmt.Errorf("raid: writing metadata copy: %w", err))
		}
	}
	for _, d := range m.devs {
		if err := d.barrier(); err != nil {
			m.bad[d] = true
			errs = append(errs, fmt.Errorf("raid: flushing metadata: %w", err))
		} else if d.FlushFailed() { // an earlier flush failed: its data may be gone
			m.bad[d] = true
			errs = append(errs, fmt.Errorf("raid: %s: an earlier flush failed: %w", d.Path(), syscall.EIO))
		}
	}
	for _, d := range m.devs {
		switch {
		case m.bad[d] || d.Stale():
			m.holes[metaHole{d, slot}] = true
		case off == 0:
			delete(m.holes, metaHole{d, slot})
		}
	}
	if len(m.bad) == len(m.devs) {
		return errors.Join(errs...)
	}
	if len(m.bad) > 0 {
		m.v.bitmap.forfeitHistory() // before WriteSupers leaves the bad devices behind
	}
	if len(m.bad) == 0 && barriers {
		m.v.bitmap.barrierDone(epoch)
	}
	return nil
}

// WriteSupers is write_all_supers: every device's superblock copies now
// name root, each device flushed after its own. Devices whose metadata copy
// failed in WriteSlot, whose flush ever failed (their data since the last
// good flush may be gone, so a superblock there must not claim the new
// root), or whose superblock write fails, keep their older root; like
// write_all_supers (max_errors = devices - 1), the commit stands once one
// superblock holds the new root. So do stale devices (Device.Stale) until
// Volume.Resync brought them up to date: the commit after it makes them
// current, with the slot it just wrote to them.
func (m *MetaArea) WriteSupers(root MetaRoot) error {
	var errs []error
	written := 0
	for i, d := range m.devs {
		if m.bad[d] || d.FlushFailed() || d.Stale() || m.holes[metaHole{d, root.Slot}] { // it may have lost, or never had, data the new root maps
			continue
		}
		sb := *m.sbs[i]
		sb.Generation, sb.RootSlot, sb.RootBytes = root.Generation, uint32(root.Slot), root.Bytes
		if err := d.WriteSuper(&sb); err != nil {
			errs = append(errs, err)
			continue
		}
		m.sbs[i] = &sb
		written++
	}
	if written == 0 {
		return fmt.Errorf("raid: committing generation %d: no superblock written: %w", root.Generation, errors.Join(errs...))
	}
	m.root = root
	m.v.noteCommitted(root.Generation)
	return nil
}
