package raid

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/blk"
)

// The superblock (struct btrfs_super_block, reduced): one 4 KiB block with
// a crc32c over everything after its csum field, kept in three copies in
// each device's reserved first MiB.
const (
	SuperInfoSize = 4096
	superCsumSize = 32
	// SuperMagic identifies a btrfsdio device ("_BHRfS_M" is btrfs's).
	SuperMagic = "BTRFSDIO"
	// superVersion 2 added the metadata area and its root (version 1
	// kept the file's mapping in memory only); version 3 the RAID5/6
	// journal area after it (JournalBytes). Version 2 images still open,
	// without a journal.
	superVersion    = 3
	superVersionV2  = 2
	superMirrorsMax = 3
	// superUsedBytes is where the encoded fields end.
	superUsedBytes = 168
)

// superOffsets are the copies: btrfs_sb_offset's 64 KiB primary, and two
// backups that fit the reserved MiB (btrfs puts its mirrors at 64 MiB and
// 256 GiB).
var superOffsets = [superMirrorsMax]uint64{64 << 10, 256 << 10, 512 << 10}

// Superblock is what a device records about the volume it belongs to.
type Superblock struct {
	Fsid       [16]byte
	Bytenr     uint64 // where this copy lives
	Generation uint64
	Version    uint32
	Profile    Profile
	NumDevices uint64
	Devid      uint64 // 1-based position in the volume
	DevUUID    [16]byte
	// TotalBytes is the device size at format; ChunkDevBytes how much of
	// each device the data chunk uses, so the layout never depends on a
	// device growing later.
	TotalBytes    uint64
	ChunkDevBytes uint64
	// MetaSlotBytes and MetaCopies size the metadata area that follows
	// the chunk on every device: two alternating slots of MetaSlotBytes,
	// MetaCopies times (2 on a single device: DUP, else 1 per device).
	MetaSlotBytes uint64
	MetaCopies    uint32
	// RootSlot and RootBytes locate the metadata committed at Generation
	// (btrfs_super_block.root); RootBytes 0 means nothing committed yet.
	RootSlot  uint32
	RootBytes uint64
	// JournalBytes is the RAID5/6 journal area that follows the metadata
	// area on every device (version 3; 0: no journal, as every version 2
	// image and every profile without parity).
	JournalBytes uint64
}

// MetaAreaBytes is how much of each device the metadata area takes (no
// kernel counterpart: btrfs allocates metadata chunks like data chunks).
// DecodeSuperblock accepts only superblocks where it cannot overflow.
func (sb *Superblock) MetaAreaBytes() uint64 { return 2 * uint64(sb.MetaCopies) * sb.MetaSlotBytes }

// metaAreaFits reports whether the chunk and the metadata area after it fit
// in size bytes, without overflowing on hostile fields: the area's length is
// 2*copies*slot, compared against what the chunk leaves.
func (sb *Superblock) metaAreaFits(size uint64) bool {
	return sb.MetaCopies >= 1 && sb.MetaCopies <= 2 && sb.ChunkDevBytes <= size &&
		sb.MetaSlotBytes <= (size-sb.ChunkDevBytes)/(2*uint64(sb.MetaCopies))
}

// journalFits reports whether the journal area fits in size bytes after
// the chunk and the metadata area, without overflowing on hostile fields.
func (sb *Superblock) journalFits(size uint64) bool {
	return sb.metaAreaFits(size) && sb.JournalBytes <= size-sb.ChunkDevBytes-sb.MetaAreaBytes()
}

// JournalOffset is where the journal area starts on every device (no kernel
// counterpart: btrfs has no RAID5/6 journal).
func (sb *Superblock) JournalOffset() uint64 { return sb.ChunkDevBytes + sb.MetaAreaBytes() }

// checkFits is btrfs_verify_dev_extents' size half (a dev extent beyond
// the device's total_bytes is refused): the chunk and the metadata area the
// superblock describes must lie within the real device, so no offset or
// buffer they size can exceed it.
func checkFits(d *Device, sb *Superblock) error {
	if !sb.journalFits(d.Size()) {
		journal := ""
		if sb.JournalBytes != 0 {
			journal = fmt.Sprintf(" and the %d journal bytes", sb.JournalBytes)
		}
		return fmt.Errorf("raid: %s is %d bytes, too small for the %d data bytes and the 2 x %d x %d metadata bytes%s its superblock lays out: truncated image",
			d.Path(), d.Size(), sb.ChunkDevBytes, sb.MetaCopies, sb.MetaSlotBytes, journal)
	}
	return nil
}

// Encode is write_dev_supers' serialisation: the block with its csum.
func (sb *Superblock) Encode() []byte {
	b := make([]byte, SuperInfoSize)
	le := binary.LittleEndian
	copy(b[32:48], sb.Fsid[:])
	le.PutUint64(b[48:], sb.Bytenr)
	copy(b[64:72], SuperMagic)
	le.PutUint64(b[72:], sb.Generation)
	le.PutUint32(b[80:], sb.Version)
	le.PutUint32(b[84:], uint32(sb.Profile))
	le.PutUint64(b[88:], sb.NumDevices)
	le.PutUint64(b[96:], sb.Devid)
	copy(b[104:120], sb.DevUUID[:])
	le.PutUint64(b[120:], sb.TotalBytes)
	le.PutUint64(b[128:], sb.ChunkDevBytes)
	le.PutUint64(b[136:], sb.MetaSlotBytes)
	le.PutUint32(b[144:], sb.MetaCopies)
	le.PutUint32(b[148:], sb.RootSlot)
	le.PutUint64(b[152:], sb.RootBytes)
	if sb.Version >= superVersion {
		le.PutUint64(b[160:], sb.JournalBytes)
	}
	le.PutUint32(b[0:], crc32.Checksum(b[superCsumSize:], castagnoli))
	return b
}

// Errors of DecodeSuperblock.
var (
	ErrBlankSuper   = errors.New("no superblock (blank device)")
	ErrCorruptSuper = errors.New("corrupt superblock")
)

// DecodeSuperblock is btrfs_check_super_valid for one copy read from
// bytenr: magic, csum, and every field in range.
func DecodeSuperblock(b []byte, bytenr uint64) (*Superblock, error) {
	if len(b) != SuperInfoSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrCorruptSuper, len(b), SuperInfoSize)
	}
	if bytes.Equal(b, make([]byte, SuperInfoSize)) {
		return nil, ErrBlankSuper
	}
	le := binary.LittleEndian
	if string(b[64:72]) != SuperMagic {
		return nil, fmt.Errorf("%w: bad magic %q", ErrCorruptSuper, b[64:72])
	}
	if want, got := le.Uint32(b[0:]), crc32.Checksum(b[superCsumSize:], castagnoli); want != got {
		return nil, fmt.Errorf("%w: csum %#x, computed %#x", ErrCorruptSuper, want, got)
	}
	sb := &Superblock{
		Bytenr: le.Uint64(b[48:]), Generation: le.Uint64(b[72:]), Version: le.Uint32(b[80:]),
		Profile: Profile(le.Uint32(b[84:])), NumDevices: le.Uint64(b[88:]), Devid: le.Uint64(b[96:]),
		TotalBytes: le.Uint64(b[120:]), ChunkDevBytes: le.Uint64(b[128:]),
		MetaSlotBytes: le.Uint64(b[136:]), MetaCopies: le.Uint32(b[144:]),
		RootSlot: le.Uint32(b[148:]), RootBytes: le.Uint64(b[152:]),
	}
	copy(sb.Fsid[:], b[32:48])
	copy(sb.DevUUID[:], b[104:120])
	if sb.Version >= superVersion {
		sb.JournalBytes = le.Uint64(b[160:])
	}
	switch {
	case sb.Bytenr != bytenr:
		return nil, fmt.Errorf("%w: copy at %d says it lives at %d", ErrCorruptSuper, bytenr, sb.Bytenr)
	case sb.Version == 1:
		return nil, fmt.Errorf("%w: format version 1 kept the file's mapping in memory only, so the image holds no reachable data: recreate it", ErrCorruptSuper)
	case sb.Version != superVersion && sb.Version != superVersionV2:
		return nil, fmt.Errorf("%w: version %d, this program knows %d and %d", ErrCorruptSuper, sb.Version, superVersionV2, superVersion)
	case sb.Version == superVersionV2 && le.Uint64(b[160:]) != 0:
		return nil, fmt.Errorf("%w: version %d with bytes past its last field", ErrCorruptSuper, sb.Version)
	case !sb.Profile.valid():
		return nil, fmt.Errorf("%w: profile %d", ErrCorruptSuper, sb.Profile)
	case sb.NumDevices == 0 || sb.NumDevices > 64:
		return nil, fmt.Errorf("%w: %d devices", ErrCorruptSuper, sb.NumDevices)
	case sb.Devid == 0 || sb.Devid > sb.NumDevices:
		return nil, fmt.Errorf("%w: devid %d of %d", ErrCorruptSuper, sb.Devid, sb.NumDevices)
	case sb.ChunkDevBytes < MinDeviceSize || sb.ChunkDevBytes > sb.TotalBytes:
		return nil, fmt.Errorf("%w: chunk uses %d of %d device bytes", ErrCorruptSuper, sb.ChunkDevBytes, sb.TotalBytes)
	case sb.Generation == 0:
		return nil, fmt.Errorf("%w: generation 0", ErrCorruptSuper)
	case sb.MetaSlotBytes == 0 || sb.MetaSlotBytes%SectorSize != 0 || !sb.metaAreaFits(sb.TotalBytes):
		return nil, fmt.Errorf("%w: metadata area of %d x 2 x %d bytes after %d does not fit %d device bytes",
			ErrCorruptSuper, sb.MetaCopies, sb.MetaSlotBytes, sb.ChunkDevBytes, sb.TotalBytes)
	case sb.RootSlot > 1 || sb.RootBytes > sb.MetaSlotBytes || sb.RootBytes%SectorSize != 0:
		return nil, fmt.Errorf("%w: metadata root of %d bytes in slot %d", ErrCorruptSuper, sb.RootBytes, sb.RootSlot)
	case sb.JournalBytes%SectorSize != 0 || !sb.journalFits(sb.TotalBytes) ||
		(sb.JournalBytes != 0 && (!sb.Profile.IsRaid56() || sb.JournalBytes < journalFloor(sb.NumDevices))):
		return nil, fmt.Errorf("%w: journal area of %d bytes for %s after %d data and %d metadata bytes does not fit %d device bytes",
			ErrCorruptSuper, sb.JournalBytes, sb.Profile, sb.ChunkDevBytes, sb.MetaAreaBytes(), sb.TotalBytes)
	}
	return sb, nil
}

// ReadSuper is btrfs_read_dev_super: the valid copy with the highest
// generation (WriteSuper's order makes that the newest whole one). A copy
// that cannot be read (EIO on a bad sector) is a bad copy like a corrupt
// one, and the others are tried, as btrfs_read_dev_super goes on to the
// next mirror. A device whose copies are all zero is blank (ErrBlankSuper);
// one with no valid copy reports why the primary is bad.
func (d *Device) ReadSuper() (*Superblock, error) {
	var best *Superblock
	var primaryErr error
	blank := 0
	for i, off := range superOffsets {
		buf := blk.AlignedBuffer(SuperInfoSize)
		var sb *Superblock
		err := d.readBuf(buf, off)
		if err == nil {
			sb, err = DecodeSuperblock(buf, off)
		} else {
			err = fmt.Errorf("reading superblock at %d: %w", off, err)
		}
		switch {
		case errors.Is(err, ErrBlankSuper):
			blank++
		case err != nil:
			if i == 0 {
				primaryErr = err
			}
		case best == nil || sb.Generation > best.Generation:
			best = sb
		}
	}
	switch {
	case best != nil:
		if primaryErr != nil {
			d.log.Warnf("raid: %s: primary superblock bad (%v), using a backup copy", d.path, primaryErr)
		}
		return best, nil
	case blank == superMirrorsMax:
		return nil, fmt.Errorf("raid: %s: %w", d.path, ErrBlankSuper)
	case primaryErr != nil:
		return nil, fmt.Errorf("raid: %s: %w", d.path, primaryErr)
	}
	return nil, fmt.Errorf("raid: %s: %w: no valid copy", d.path, ErrCorruptSuper)
}

// WriteSuper is write_dev_supers + wait_dev_supers, ordered so that no
// torn or lost write can destroy every copy: the backups, a flush, then
// the primary and a flush. Until the first flush completes the primary
// still holds the previous generation; once it has, the backups hold the
// new one; so a power cut at any point leaves a whole copy of one or the
// other, and ReadSuper takes the newest that validates. (btrfs writes all
// copies, the primary with FUA, and waits for them together; its mirrors
// at 64 MiB and 256 GiB are for recovery, not read at mount.) The
// superblock is durable when it returns.
func (d *Device) WriteSuper(sb *Superblock) error {
	if err := d.writeSuperCopies(sb, superOffsets[1:]); err != nil {
		return err
	}
	return d.writeSuperCopies(sb, superOffsets[:1])
}

// writeSuperCopies writes sb at each of offs, then flushes.
func (d *Device) writeSuperCopies(sb *Superblock, offs []uint64) error {
	for _, off := range offs {
		c := *sb
		c.Bytenr = off
		buf := blk.AlignedBuffer(SuperInfoSize)
		copy(buf, c.Encode())
		if err := d.writeBuf(buf, off); err != nil {
			return fmt.Errorf("raid: %s: writing superblock at %d: %w", d.path, off, err)
		}
	}
	if err := d.flush(); err != nil {
		return fmt.Errorf("raid: %s: flushing superblock: %w", d.path, err)
	}
	return nil
}

// metaSlotBytes sizes one metadata slot for a volume of ndevs devices of
// size bytes: the data capacity is at most ndevs*size, and its metadata at
// most 1/146 of it (a 24-byte file extent and a 4-byte csum per 4 KiB
// sector, plus block headers), so 1/128 and 64 KiB more always fit.
func metaSlotBytes(ndevs int, size uint64) uint64 {
	return (uint64(ndevs)*size/128 + 2*metaSlotAlign - 1) / metaSlotAlign * metaSlotAlign
}

const metaSlotAlign = 64 << 10

// Format is mkfs.btrfs for one data chunk: give every device a superblock
// naming the new volume, its profile and the device's place in it, and
// set aside the metadata area at the end of every device.
func Format(devs []*Device, p Profile) (*Superblock, error) {
	if err := checkDeviceCount(devs, p); err != nil {
		return nil, err
	}
	size := devs[0].Size()
	for _, d := range devs[1:] {
		size = min(size, d.Size())
	}
	copies := uint32(1)
	if len(devs) == 1 {
		copies = 2
	}
	slot := metaSlotBytes(len(devs), size)
	area := 2 * uint64(copies) * slot
	journal := formatJournalBytes(p, len(devs), size, area)
	if size < MinDeviceSize+area || size-MinDeviceSize-area < journal {
		return nil, fmt.Errorf("raid: format: devices of %d bytes are too small for a %d-byte metadata area, a %d-byte journal and %d bytes of data",
			size, area, journal, MinDeviceSize)
	}
	var fsid [16]byte
	if _, err := rand.Read(fsid[:]); err != nil {
		return nil, fmt.Errorf("raid: format: %w", err)
	}
	var first *Superblock
	for i, d := range devs {
		sb := &Superblock{Fsid: fsid, Generation: 1, Version: superVersion, Profile: p,
			NumDevices: uint64(len(devs)), Devid: uint64(i + 1), TotalBytes: d.Size(), ChunkDevBytes: size - area - journal,
			MetaSlotBytes: slot, MetaCopies: copies, JournalBytes: journal}
		if _, err := rand.Read(sb.DevUUID[:]); err != nil {
			return nil, fmt.Errorf("raid: format: %w", err)
		}
		if err := d.WriteSuper(sb); err != nil {
			return nil, err
		}
		if first == nil {
			first = sb
		}
	}
	return first, nil
}

// OpenOptions says how OpenVolume treats the images.
type OpenOptions struct {
	// Profile formats blank devices; for formatted ones it must match
	// (Profile(-1): take the superblock's).
	Profile Profile
	Volume  VolumeOptions
	// Degraded is mount -o degraded: devices the superblocks list but
	// that were not given stand in as missing devices, as many as the
	// profile tolerates (see placeMembers).
	Degraded bool
}

// AnyProfile accepts whatever profile the superblocks record.
const AnyProfile Profile = -1

// OpenVolume is open_ctree's device half (btrfs_scan_one_device +
// btrfs_read_chunk_tree): read every superblock, format the devices if all
// are blank, otherwise insist they form one complete volume of the
// expected profile, put them in devid order and lay the chunk out as it was
// at format time. It returns the newest superblock; a device whose
// superblock is older missed commits and is stale (see Volume.Resync).
func OpenVolume(devs []*Device, opts OpenOptions) (*Volume, *Superblock, error) {
	if len(devs) == 0 {
		return nil, nil, errors.New("raid: no devices to open")
	}
	sbs := make([]*Superblock, len(devs))
	errs := make([]error, len(devs))
	blank := 0
	for i, d := range devs {
		sb, err := d.ReadSuper()
		switch {
		case errors.Is(err, ErrBlankSuper):
			blank++
		case err != nil && !opts.Degraded:
			return nil, nil, err
		}
		sbs[i], errs[i] = sb, err
	}
	if blank == len(devs) {
		if opts.Profile == AnyProfile {
			return nil, nil, fmt.Errorf("raid: no volume to open: %s blank (no superblock)", devicePaths(devs))
		}
		sb, err := Format(devs, opts.Profile)
		if err != nil {
			return nil, nil, err
		}
		opts.Volume.MaxDeviceBytes = sb.ChunkDevBytes
		v, err := NewVolume(devs, opts.Profile, opts.Volume)
		if err != nil {
			return nil, nil, err
		}
		if err := v.formatBitmap(sb.Fsid); err != nil {
			return nil, nil, err
		}
		if err := v.openJournal(sb); err != nil {
			return nil, nil, err
		}
		return v, sb, nil
	}
	if opts.Degraded {
		var err error
		if devs, sbs, err = dropInvalid(devs, sbs, errs, opts.Volume.Logger); err != nil {
			return nil, nil, err
		}
	} else if blank > 0 {
		return nil, nil, fmt.Errorf("raid: %d of %d devices are blank and the others hold a volume: refusing to mix them", blank, len(devs))
	}
	ordered, err := checkMembers(devs, sbs, opts.Profile, opts.Degraded, opts.Volume.Logger)
	if err != nil {
		return nil, nil, err
	}
	opts.Volume.MaxDeviceBytes = sbs[0].ChunkDevBytes
	v, err := NewVolume(ordered, sbs[0].Profile, opts.Volume)
	if err != nil {
		return nil, nil, err
	}
	if v.bitmap != nil {
		v.bitmap.load(sbs[0].Fsid)
	}
	newest := v.markStale(devs, sbs)
	// The journal is replayed before anything reads the volume (a stale
	// device's old entries are not read: it is unreadable until resynced).
	if err := v.openJournal(newest); err != nil {
		return nil, nil, err
	}
	return v, newest, nil
}

// dropInvalid is btrfs_scan_one_device failing for a device when mounting
// degraded: a device without a valid superblock (blank or corrupt) is not
// a member, so it is closed and its place left to a missing device.
func dropInvalid(devs []*Device, sbs []*Superblock, errs []error, log logrus.FieldLogger) ([]*Device, []*Superblock, error) {
	if log == nil {
		log = logrus.StandardLogger()
	}
	var keptDevs []*Device
	var keptSbs []*Superblock
	for i, d := range devs {
		if sbs[i] != nil {
			keptDevs, keptSbs = append(keptDevs, d), append(keptSbs, sbs[i])
			continue
		}
		log.Warnf("raid: %v: no valid superblock, treated as a missing device (degraded)", errs[i])
		d.Close()
	}
	if len(keptDevs) == 0 {
		return nil, nil, errors.Join(append([]error{errors.New("raid: no device holds a valid superblock")}, errs...)...)
	}
	return keptDevs, keptSbs, nil
}

// devicePaths lists the devices' paths for a message.
func devicePaths(devs []*Device) string {
	paths := make([]string, len(devs))
	for i, d := range devs {
		paths[i] = d.Path()
	}
	if len(paths) == 1 {
		return paths[0] + " is"
	}
	return strings.Join(paths, ", ") + " are"
}

// checkMembers is the fs_devices check of open_ctree: one fsid, the
// expected profile, no truncated device; placeMembers then puts them in
// devid order and accounts for the missing ones.
func checkMembers(devs []*Device, sbs []*Superblock, want Profile, degraded bool, log logrus.FieldLogger) ([]*Device, error) {
	first := sbs[0]
	for i, sb := range sbs {
		switch {
		case sb.Fsid != first.Fsid:
			return nil, fmt.Errorf("raid: %s belongs to volume %x, %s to %x: refusing to mix volumes",
				devs[i].Path(), sb.Fsid[:4], devs[0].Path(), first.Fsid[:4])
		case sb.Profile != first.Profile || sb.NumDevices != first.NumDevices || sb.ChunkDevBytes != first.ChunkDevBytes ||
			sb.MetaSlotBytes != first.MetaSlotBytes || sb.MetaCopies != first.MetaCopies || sb.JournalBytes != first.JournalBytes:
			return nil, fmt.Errorf("raid: %s disagrees with %s about the volume (profile, device count or size)", devs[i].Path(), devs[0].Path())
		}
		if err := checkFits(devs[i], sb); err != nil {
			return nil, err
		}
	}
	if want != AnyProfile && first.Profile != want {
		return nil, fmt.Errorf("raid: the devices hold a %s volume, not %s", first.Profile, want)
	}
	return placeMembers(devs, sbs, degraded, log)
}
