package raid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"syscall"
)

// Before formatting, mkfs.btrfs asks libblkid what a device holds
// (check_overwrite) and refuses unless -f is given; wipefs then erases the
// magics it reports. Probe does the same for the signatures a disk handed
// to this tool is likely to carry: partition tables, filesystems, swap,
// encryption, volume managers, software RAID, and our own volumes.

// Signature is one thing Probe recognised on a device: blkid's TYPE for
// it, where it lies, and which bytes WipeSignatures erases.
type Signature struct {
	// Name is blkid's TYPE: gpt, PMBR, dos, ext2, ext3, ext4, jbd, xfs,
	// btrfs, swap, crypto_LUKS, LVM2_member, linux_raid_member, or
	// btrfsdio for our own.
	Name string
	// What says it in words: "gpt partition table", "ext4 filesystem".
	What string
	// Offset is where it starts: a filesystem, swap area, LUKS or LVM
	// device at the start of the device or partition it occupies; a
	// partition table header, md superblock or LUKS2 secondary header
	// where that header lies.
	Offset int64
	// MagicOffset and MagicLen locate its magic bytes (wipefs's OFFSET).
	MagicOffset int64
	MagicLen    int
	// Partition is the 1-based number of the partition table entry it
	// lies in, 0 when it is on the device itself.
	Partition int
	// erase lists the byte ranges WipeSignatures zeroes.
	erase []eraseRange
}

// eraseRange is n bytes at off.
type eraseRange struct{ off, n int64 }

func (s Signature) String() string {
	str := fmt.Sprintf("%s at offset %d", s.What, s.Offset)
	if s.Partition > 0 {
		str += fmt.Sprintf(" (partition %d)", s.Partition)
	}
	return str
}

// place is where a header lies: off bytes from the start, or with
// fromEnd, off bytes before the end rounded down to align.
type place struct {
	off     int64
	fromEnd bool
	align   int64
}

// start is a place from the start of the device.
func start(offs ...int64) []place {
	ps := make([]place, len(offs))
	for i, o := range offs {
		ps[i] = place{off: o}
	}
	return ps
}

// at resolves p on a device of size bytes; false if it does not fit.
func (p place) at(size int64) (int64, bool) {
	if !p.fromEnd {
		return p.off, true
	}
	end := size &^ (p.align - 1)
	return end - p.off, end >= p.off
}

// sigMagic is one kind of signature: libblkid's struct blkid_idinfo with
// its blkid_idmag entries (magic, kboff, sboff), the superblock probers'
// facts in one table.
type sigMagic struct {
	name, what string
	magic      string
	// places are where the header holding the magic may lie; the magic
	// is at magicAt in it. Only the first place that matches counts:
	// they are the alternatives of one signature.
	places  []place
	magicAt int64
	// hdrLen is how much of the header check reads (at least up to the
	// end of the magic).
	hdrLen int64
	// check validates the header beyond its magic and may name what it
	// is more precisely (ext2/3/4); nil accepts the magic alone.
	check func(hdr []byte, hdrOff int64) (name, what string, ok bool)
	// table marks partition tables: they are not looked for inside
	// partitions.
	table bool
	// atHeader: Offset is the header's, not the start of the device or
	// partition.
	atHeader bool
	// whole erases every place's header entirely (our superblock: a
	// copy with only its magic zeroed is corrupt, not blank).
	whole bool
}

// Magic numbers of the signatures (libblkid's superblocks/*.c and
// partitions/*.c; our own from disk_io.go).
const (
	mdSBMagicLE      = "\xfc\x4e\x2b\xa9" // MD_SB_MAGIC 0xa92b4efc, little-endian
	mdSBMagicBE      = "\xa9\x2b\x4e\xfc"
	mdReservedBytes  = 64 << 10 // MD_RESERVED_BYTES: where v0.90 goes
	gptHeaderMagic   = "EFI PART"
	mbrMagic         = "\x55\xaa"
	mbrPartTable     = 446 // MBR_PT_OFFSET
	mbrProtectiveGPT = 0xee
)

// luks2SecondaryOffsets are LUKS2_HDR2_OFFSETS: where a LUKS2 secondary
// header may lie.
var luks2SecondaryOffsets = []int64{16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20}

// signatures is the table Probe goes through.
var signatures = []sigMagic{
	// partitions/dos.c: the boot signature with a plausible entry; a
	// 0xEE entry makes it the protective MBR of a GPT disk (PMBR).
	{name: "dos", what: "dos partition table", magic: mbrMagic, places: start(0), magicAt: 510, hdrLen: 512,
		check: checkMBR, table: true},
	// partitions/gpt.c: the header at LBA 1 and the backup at the last
	// LBA, for 512- and 4096-byte sectors.
	{name: "gpt", what: "gpt partition table", magic: gptHeaderMagic, places: start(512, 4096),
		table: true, atHeader: true},
	{name: "gpt", what: "gpt backup header", magic: gptHeaderMagic,
		places: []place{{off: 512, fromEnd: true, align: 512}, {off: 4096, fromEnd: true, align: 4096}},
		table:  true, atHeader: true},
	// superblocks/ext.c: s_magic 0xEF53 at 0x38 of the superblock at
	// 1024; the feature flags tell ext2, ext3, ext4 and journals apart.
	{name: "ext4", what: "ext4 filesystem", magic: "\x53\xef", places: start(1024), magicAt: 0x38, hdrLen: 0x68,
		check: checkExt},
	// superblocks/xfs.c: "XFSB" at 0.
	{name: "xfs", what: "xfs filesystem", magic: "XFSB", places: start(0)},
	// superblocks/btrfs.c: the primary superblock at 64 KiB.
	{name: "btrfs", what: "btrfs filesystem", magic: "_BHRfS_M", places: start(64 << 10), magicAt: 0x40},
	// superblocks/swap.c: at the end of the first page, 4 KiB to 64 KiB.
	{name: "swap", what: "swap space", magic: "SWAPSPACE2", places: swapPlaces},
	{name: "swap", what: "swap space (v0)", magic: "SWAP-SPACE", places: swapPlaces},
	// superblocks/luks.c: the LUKS1 or LUKS2 header at 0, and a LUKS2
	// secondary header whose hdr_offset says where it is.
	{name: "crypto_LUKS", what: "LUKS header", magic: "LUKS\xba\xbe", places: start(0), hdrLen: 264,
		check: checkLUKS},
	{name: "crypto_LUKS", what: "LUKS2 secondary header", magic: "SKUL\xba\xbe", places: start(luks2SecondaryOffsets...),
		hdrLen: 264, check: checkLUKS, atHeader: true},
	// superblocks/lvm.c: the label in one of the first four sectors.
	{name: "LVM2_member", what: "LVM2 physical volume", magic: "LABELONE", places: start(0, 512, 1024, 1536), hdrLen: 32,
		check: checkLVM2},
	// superblocks/linux_raid.c: v0.90 64 KiB before the end rounded to
	// 64 KiB (either byte order), v1.0 8 KiB before the end rounded to
	// 4 KiB, v1.1 at 0, v1.2 at 4 KiB.
	{name: "linux_raid_member", what: "md v0.90 superblock", magic: mdSBMagicLE,
		places: []place{{off: mdReservedBytes, fromEnd: true, align: mdReservedBytes}}, hdrLen: 8, check: checkMD0LE, atHeader: true},
	{name: "linux_raid_member", what: "md v0.90 superblock", magic: mdSBMagicBE,
		places: []place{{off: mdReservedBytes, fromEnd: true, align: mdReservedBytes}}, hdrLen: 8, check: checkMD0BE, atHeader: true},
	{name: "linux_raid_member", what: "md v1.0 superblock", magic: mdSBMagicLE,
		places: []place{{off: 8 << 10, fromEnd: true, align: 4 << 10}}, hdrLen: 152, check: checkMD1, atHeader: true},
	{name: "linux_raid_member", what: "md v1.1 superblock", magic: mdSBMagicLE, places: start(0), hdrLen: 152,
		check: checkMD1, atHeader: true},
	{name: "linux_raid_member", what: "md v1.2 superblock", magic: mdSBMagicLE, places: start(4 << 10), hdrLen: 152,
		check: checkMD1, atHeader: true},
	// Our own superblock, any copy (disk_io.go).
	{name: "btrfsdio", what: "btrfsdio volume", magic: SuperMagic,
		places: start(int64(superOffsets[0]), int64(superOffsets[1]), int64(superOffsets[2])), magicAt: 64, hdrLen: SuperInfoSize,
		whole: true},
}

// swapPlaces are SWAPSPACE2's places: 10 bytes before the end of a first
// page of 4, 8, 16, 32 or 64 KiB.
var swapPlaces = start(4<<10-10, 8<<10-10, 16<<10-10, 32<<10-10, 64<<10-10)

// checkMBR is dos_probe's plausibility test: every boot indicator 0 or
// 0x80 and at least one used entry; an entry of type 0xEE makes it a
// protective MBR.
func checkMBR(b []byte, _ int64) (string, string, bool) {
	used, protective := 0, false
	for _, e := range mbrEntries(b) {
		if e.boot != 0 && e.boot != 0x80 {
			return "", "", false
		}
		if e.typ != 0 && e.sectors != 0 {
			used++
			protective = protective || e.typ == mbrProtectiveGPT
		}
	}
	switch {
	case protective:
		return "PMBR", "protective MBR", true
	case used > 0:
		return "", "", true
	}
	return "", "", false
}

// mbrEntry is struct dos_partition, reduced.
type mbrEntry struct {
	boot, typ      byte
	start, sectors uint32
}

func mbrEntries(b []byte) [4]mbrEntry {
	var es [4]mbrEntry
	for i := range es {
		e := b[mbrPartTable+16*i:]
		es[i] = mbrEntry{boot: e[0], typ: e[4], start: binary.LittleEndian.Uint32(e[8:]), sectors: binary.LittleEndian.Uint32(e[12:])}
	}
	return es
}

// The ext2 feature bits probe_ext2/3/4 look at (ext.c).
const (
	extCompatHasJournal   = 0x0004
	extIncompatJournalDev = 0x0008
	// What ext3 knows (EXT3_FEATURE_INCOMPAT_SUPP, _RO_COMPAT_SUPP):
	// any other bit makes the filesystem ext4.
	ext3IncompatSupp = 0x0002 | 0x0004 | 0x0010
	ext3RoCompatSupp = 0x0001 | 0x0002 | 0x0004
)

// checkExt is probe_jbd, probe_ext4, probe_ext3 and probe_ext2 in one:
// which of them the feature flags of the superblock say it is.
func checkExt(b []byte, _ int64) (string, string, bool) {
	le := binary.LittleEndian
	compat, incompat, roCompat := le.Uint32(b[0x5c:]), le.Uint32(b[0x60:]), le.Uint32(b[0x64:])
	switch {
	case incompat&extIncompatJournalDev != 0:
		return "jbd", "ext3/ext4 external journal", true
	case incompat&^ext3IncompatSupp != 0 || roCompat&^ext3RoCompatSupp != 0:
		return "ext4", "ext4 filesystem", true
	case compat&extCompatHasJournal != 0:
		return "ext3", "ext3 filesystem", true
	}
	return "ext2", "ext2 filesystem", true
}

// checkLUKS is luks_valid: version 1 or 2 for the primary header, 2 for a
// secondary one, and a LUKS2 header's hdr_offset is where it lies.
func checkLUKS(b []byte, off int64) (string, string, bool) {
	version := binary.BigEndian.Uint16(b[6:])
	hdrOffset := binary.BigEndian.Uint64(b[256:])
	switch {
	case version == 1 && off == 0:
		return "", "", true
	case version == 2 && hdrOffset == uint64(off):
		return "", "", true
	}
	return "", "", false
}

// checkLVM2 is probe_lvm2: the label says it is in this sector, and its
// type is "LVM2 001".
func checkLVM2(b []byte, off int64) (string, string, bool) {
	return "", "", binary.LittleEndian.Uint64(b[8:]) == uint64(off/512) && string(b[24:32]) == "LVM2 001"
}

// checkMD0LE and checkMD0BE are probe_raid0 plus mdadm's test of
// major_version, in either byte order.
func checkMD0LE(b []byte, _ int64) (string, string, bool) {
	return "", "", binary.LittleEndian.Uint32(b[4:]) == 0
}

func checkMD0BE(b []byte, _ int64) (string, string, bool) {
	return "", "", binary.BigEndian.Uint32(b[4:]) == 0
}

// checkMD1 is probe_raid1: major_version 1 and super_offset (in sectors)
// where the superblock lies.
func checkMD1(b []byte, off int64) (string, string, bool) {
	le := binary.LittleEndian
	return "", "", le.Uint32(b[4:]) == 1 && le.Uint64(b[144:]) == uint64(off)>>9
}

// Probe is blkid_do_probe over every prober at once, with wipefs's
// report of where each magic is (no kernel counterpart: libblkid's
// superblock and partition probers, reduced to their magics): the
// signatures on a device of size bytes read through r, and those of the
// filesystems inside the partitions its partition table lists, sorted by
// offset. A device whose every byte is zero has none.
func Probe(r io.ReaderAt, size int64) ([]Signature, error) {
	sigs, err := probeArea(r, size, false)
	if err != nil {
		return nil, err
	}
	parts, err := partitions(r, size, sigs)
	if err != nil {
		return nil, err
	}
	for i, p := range parts {
		if p.len <= 0 {
			continue
		}
		in, err := probeArea(io.NewSectionReader(r, p.off, p.len), p.len, true)
		if err != nil {
			return nil, fmt.Errorf("partition %d: %w", i+1, err)
		}
		for _, s := range in {
			s.Offset += p.off
			s.MagicOffset += p.off
			for j := range s.erase {
				s.erase[j].off += p.off
			}
			s.Partition = i + 1
			sigs = append(sigs, s)
		}
	}
	sort.SliceStable(sigs, func(i, j int) bool {
		if sigs[i].Offset != sigs[j].Offset {
			return sigs[i].Offset < sigs[j].Offset
		}
		return sigs[i].MagicOffset < sigs[j].MagicOffset
	})
	return sigs, nil
}

// probeArea runs the table over size bytes of r; inPartition leaves the
// partition tables out.
func probeArea(r io.ReaderAt, size int64, inPartition bool) ([]Signature, error) {
	var sigs []Signature
	for _, m := range signatures {
		if m.table && inPartition {
			continue
		}
		s, err := m.probe(r, size)
		if err != nil {
			return nil, err
		}
		if s != nil {
			sigs = append(sigs, *s)
		}
	}
	return sigs, nil
}

// probe looks for m at each of its places; the first that matches is the
// signature.
func (m *sigMagic) probe(r io.ReaderAt, size int64) (*Signature, error) {
	hdrLen := max(m.hdrLen, m.magicAt+int64(len(m.magic)))
	for _, p := range m.places {
		off, ok := p.at(size)
		if !ok || off < 0 || off+hdrLen > size {
			continue
		}
		hdr := make([]byte, hdrLen)
		if err := readFull(r, hdr, off); err != nil {
			return nil, err
		}
		if string(hdr[m.magicAt:m.magicAt+int64(len(m.magic))]) != m.magic {
			continue
		}
		name, what := m.name, m.what
		if m.check != nil {
			n, w, ok := m.check(hdr, off)
			if !ok {
				continue
			}
			if n != "" {
				name, what = n, w
			}
		}
		s := &Signature{Name: name, What: what, MagicOffset: off + m.magicAt, MagicLen: len(m.magic)}
		if m.atHeader {
			s.Offset = off
		}
		s.erase = []eraseRange{{s.MagicOffset, int64(s.MagicLen)}}
		if m.whole {
			s.erase = s.erase[:0]
			for _, q := range m.places {
				if o, ok := q.at(size); ok && o+hdrLen <= size {
					s.erase = append(s.erase, eraseRange{o, hdrLen})
				}
			}
		}
		return s, nil
	}
	return nil, nil
}

// readFull is ReadAt that accepts io.EOF once every byte is in.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading %d bytes at %d: %w", len(b), off, err)
}

// partition is a byte range a partition table entry gives.
type partition struct{ off, len int64 }

// GPT header and entry fields (struct gpt_header, gpt_entry).
const (
	gptMaxEntries = 128 // what every partitioning tool writes; more are not looked at
	gptEntryMin   = 128
)

// partitions lists the partitions of the tables among sigs: the GPT's
// entries (primary header, else backup), else the MBR's primary entries.
// Entries that do not fit the device are left out (their number kept).
func partitions(r io.ReaderAt, size int64, sigs []Signature) ([]partition, error) {
	for _, s := range sigs {
		if s.Name != "gpt" {
			continue
		}
		return gptPartitions(r, size, s.Offset, gptSectorSize(size, s.Offset))
	}
	for _, s := range sigs {
		if s.Name != "dos" {
			continue
		}
		b := make([]byte, 512)
		if err := readFull(r, b, 0); err != nil {
			return nil, err
		}
		var parts []partition
		for _, e := range mbrEntries(b) {
			off, n := int64(e.start)*512, int64(e.sectors)*512
			if e.typ == 0 || isExtended(e.typ) || e.start == 0 || off+n > size {
				n = 0
			}
			parts = append(parts, partition{off, n})
		}
		return parts, nil
	}
	return nil, nil
}

// isExtended reports the MBR types of an extended partition (a chain of
// logical partitions, not a filesystem).
func isExtended(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

// gptSectorSize is the sector size a GPT header at hdr implies: it lies at
// LBA 1 or at the last LBA.
func gptSectorSize(size, hdr int64) int64 {
	for _, ss := range []int64{512, 4096} {
		if hdr == ss || hdr == size&^(ss-1)-ss {
			return ss
		}
	}
	return 512
}

// gptPartitions reads the entry array the header at hdr names, on a disk
// of ss-byte sectors.
func gptPartitions(r io.ReaderAt, size, hdr, ss int64) ([]partition, error) {
	h := make([]byte, 92)
	if err := readFull(r, h, hdr); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	lba, count, esize := le.Uint64(h[72:]), le.Uint32(h[80:]), int64(le.Uint32(h[84:]))
	if esize < gptEntryMin || esize > 4096 || lba == 0 || lba > uint64(size/ss) {
		return nil, nil
	}
	n := min(int64(count), gptMaxEntries)
	arr := int64(lba) * ss
	if arr+n*esize > size {
		return nil, nil
	}
	b := make([]byte, n*esize)
	if err := readFull(r, b, arr); err != nil {
		return nil, err
	}
	var parts []partition
	last := -1
	for i := int64(0); i < n; i++ {
		e := b[i*esize:]
		first, end := le.Uint64(e[32:]), le.Uint64(e[40:])
		p := partition{}
		if !allZeroBytes(e[:16]) && first > 0 && first <= end && end < uint64(size/ss) {
			p = partition{int64(first) * ss, int64(end-first+1) * ss}
			last = int(i)
		}
		parts = append(parts, p)
	}
	return parts[:last+1], nil
}

func allZeroBytes(b []byte) bool { return len(bytes.TrimLeft(b, "\x00")) == 0 }

// Probe is Probe on the device (blkid_probe_set_device + blkid_do_probe):
// it reads through a second, buffered descriptor of the same open file, so
// its small reads need no O_DIRECT alignment.
func (d *Device) Probe() ([]Signature, error) {
	f, err := d.reopen(os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sigs, err := Probe(f, int64(d.size))
	if err != nil {
		return nil, fmt.Errorf("raid: probing %s: %w", d.path, err)
	}
	return sigs, nil
}

// WipeSignatures is wipefs -a for what Probe found on d: zero each
// signature's magic (a btrfsdio superblock: every copy whole, so the
// device reads as blank), then flush.
func (d *Device) WipeSignatures(sigs []Signature) error {
	var ranges []eraseRange
	for _, s := range sigs {
		ranges = append(ranges, s.erase...)
	}
	return d.zeroRanges(ranges)
}

// zeroRanges writes zeroes over ranges and flushes them.
func (d *Device) zeroRanges(ranges []eraseRange) error {
	if len(ranges) == 0 {
		return nil
	}
	if d.readOnly {
		return fmt.Errorf("raid: %s: erasing signatures: device opened read-only: %w", d.path, syscall.EROFS)
	}
	f, err := d.reopen(os.O_RDWR)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, r := range ranges {
		if _, err := f.WriteAt(make([]byte, r.n), r.off); err != nil {
			return fmt.Errorf("raid: %s: erasing %d bytes at %d: %w", d.path, r.n, r.off, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("raid: %s: flushing erased signatures: %w", d.path, err)
	}
	return nil
}

// reopen opens the file d has open once more, without O_DIRECT: through
// /proc/self/fd, so it is the same file even if its path changed since,
// or by path where /proc is not mounted.
func (d *Device) reopen(flag int) (*os.File, error) {
	if d.f == nil {
		return nil, fmt.Errorf("raid: %s: %w", d.path, errMissing)
	}
	var f *os.File
	var err error
	cerr := d.control(func(fd uintptr) {
		f, err = os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), flag, 0)
	})
	if cerr == nil && errors.Is(err, os.ErrNotExist) {
		f, err = os.OpenFile(d.path, flag, 0)
	}
	if cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("raid: reopening %s: %w", d.path, err)
	}
	return f, nil
}

// superBlank reports whether every superblock copy of d is zero, what
// ReadSuper calls blank, without its warnings.
func (d *Device) superBlank() (bool, error) {
	f, err := d.reopen(os.O_RDONLY)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, SuperInfoSize)
	for _, off := range superOffsets {
		if err := readFull(f, buf, int64(off)); err != nil {
			return false, fmt.Errorf("raid: %s: reading superblock at %d: %w", d.path, off, err)
		}
		if !allZeroBytes(buf) {
			return false, nil
		}
	}
	return true, nil
}

// ErrForeign is what PrepareFormat refuses with: a device to format holds
// a signature.
var ErrForeign = errors.New("refusing to format")

// FormatCheck says what PrepareFormat lets Format overwrite.
type FormatCheck struct {
	// Force is mkfs.btrfs -f: erase the signatures found and format.
	Force bool
	// Reformat is mkfs: every device is formatted, even one holding a
	// btrfsdio volume (which then counts as a signature, as an existing
	// btrfs does for mkfs.btrfs). Without it the devices are formatted
	// only if all are blank (OpenVolume's rule), and are left alone
	// otherwise.
	Reformat bool
}

// PrepareFormat is mkfs.btrfs's test_dev_for_mkfs and check_overwrite
// for devices about to be formatted: probe each one and refuse (ErrForeign,
// naming every signature found on every device) unless c.Force, in which
// case the signatures are erased (btrfs_prepare_device's wipe). It reports
// whether the devices are to be formatted: with c.Reformat always (their
// superblock copies are then zeroed, so OpenVolume formats them),
// otherwise when all are blank.
func PrepareFormat(devs []*Device, c FormatCheck) (bool, error) {
	if !c.Reformat {
		for _, d := range devs {
			blank, err := d.superBlank()
			if err != nil || !blank {
				return false, err
			}
		}
	}
	found := make([][]Signature, len(devs))
	var msgs []string
	for i, d := range devs {
		sigs, err := d.Probe()
		if err != nil {
			return false, err
		}
		found[i] = sigs
		if len(sigs) > 0 {
			msgs = append(msgs, fmt.Sprintf("%s: found %s", d.path, joinSignatures(sigs)))
		}
	}
	if len(msgs) > 0 && !c.Force {
		return false, fmt.Errorf("%s; %w", strings.Join(msgs, "; "), ErrForeign)
	}
	for i, d := range devs {
		ranges := []eraseRange{}
		for _, s := range found[i] {
			ranges = append(ranges, s.erase...)
		}
		if c.Reformat {
			for _, off := range superOffsets {
				ranges = append(ranges, eraseRange{int64(off), SuperInfoSize})
			}
		}
		if err := d.zeroRanges(ranges); err != nil {
			return false, err
		}
		if len(found[i]) > 0 {
			d.log.Warnf("raid: %s: erased %s", d.path, joinSignatures(found[i]))
		}
	}
	return true, nil
}

// joinSignatures lists sigs for a message.
func joinSignatures(sigs []Signature) string {
	s := make([]string, len(sigs))
	for i, sig := range sigs {
		s[i] = sig.String()
	}
	return strings.Join(s, ", ")
}
