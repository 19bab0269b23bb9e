package btrfsdio

import (
	"fmt"

	"github.com/btrfsdio/btrfsdio/raid"
)

// CheckReport is what Check found (no kernel counterpart: btrfs-progs'
// check and scrub print theirs).
type CheckReport struct {
	Generation uint64
	// Stale lists the devices behind the volume (raid.Volume.StaleDevices):
	// not read here, resynced at the next mount. Not damage: Clean
	// ignores them.
	Stale []raid.StaleDevice
	// Supers is the status of every superblock copy of every present
	// device (raid.Volume.ScrubSupers).
	Supers []raid.SuperCopy
	// MetaCopies is the status of every copy of the committed metadata.
	MetaCopies []MetaCopyStatus
	Extents    int
	// MappedBytes is the file bytes mapped to disk (the allocated space).
	MappedBytes uint64
	CsumSectors uint64
	// Scrub merges the scrubs of every allocated range: copies that differ,
	// parity mismatches, csum errors of any copy, read errors.
	Scrub raid.ScrubReport
}

// Clean reports whether every superblock and metadata copy is valid and
// the data scrubbed clean (no kernel counterpart: btrfs check's and
// scrub's final verdicts).
func (r *CheckReport) Clean() bool {
	for _, c := range r.Supers {
		if c.Err != nil {
			return false
		}
	}
	for _, c := range r.MetaCopies {
		if c.Err != nil {
			return false
		}
	}
	return r.Scrub.Clean()
}

// Check is btrfs check plus an offline scrub (no kernel counterpart:
// btrfs-progs' cmd_check and btrfs scrub): read every superblock copy
// (raid.Volume.ScrubSupers), read every copy of the committed
// metadata and validate it (decodeMeta's tree-checker: mappings in range,
// no overlap in the file or on disk, csums only on allocated sectors; the
// allocator is rebuilt from the mappings, so it cannot disagree), then
// scrub every allocated range, comparing every copy and verifying every
// data checksum against every copy. Unallocated space is not compared:
// writes that never committed may leave its copies different. An error
// means the check could not run (no valid metadata copy, unreadable
// superblocks).
func Check(vol *raid.Volume) (*CheckReport, error) {
	return CheckWithProgress(vol, nil)
}

// checkPiece is how much CheckWithProgress scrubs between two progress
// calls (rounded up to whole full stripes on RAID5/6).
const checkPiece = 4 << 20

// CheckWithProgress is Check calling progress (when not nil) after every
// piece of the data scrub with the bytes of mapped ranges scrubbed so far
// and their total, for a progress line (btrfs-progs' check --progress; no
// kernel counterpart).
func CheckWithProgress(vol *raid.Volume, progress func(done, total uint64)) (*CheckReport, error) {
	meta, err := raid.OpenMetaArea(vol)
	if err != nil {
		return nil, fmt.Errorf("btrfsdio: check: %w", err)
	}
	rep := &CheckReport{Generation: meta.Root().Generation, Stale: vol.StaleDevices()}
	if rep.Supers, err = vol.ScrubSupers(false); err != nil {
		return nil, fmt.Errorf("btrfsdio: check: %w", err)
	}
	if meta.Root().Bytes == 0 {
		return rep, nil
	}
	img, status, err := loadRoot(meta, vol.Capacity()&^(SectorSize-1))
	rep.MetaCopies = status
	if err != nil {
		return rep, err
	}
	rep.Extents = len(img.extents)
	csums := newCsumTree()
	csums.load(img.csums)
	rep.CsumSectors = uint64(len(csums.sums))
	var ranges []span
	gran := uint64(SectorSize)
	if vol.Profile().IsRaid56() {
		gran = vol.FullStripeLen() // parity is checked per full stripe
	}
	for _, e := range img.extents {
		rep.MappedBytes += e.len
		start := e.diskBytenr / gran * gran
		end := min((e.diskBytenr+e.len+gran-1)/gran*gran, img.capacity)
		ranges = append(ranges, span{start, end - start})
	}
	spans := mergeSpans(ranges)
	var total, done uint64
	for _, r := range spans {
		total += r.len
	}
	piece := (checkPiece + gran - 1) / gran * gran
	for _, r := range spans {
		for off := r.start; off < r.start+r.len; off += piece {
			s, err := vol.Scrub(off, min(piece, r.start+r.len-off), csums.lookup)
			if err != nil {
				return rep, fmt.Errorf("btrfsdio: check: %w", err)
			}
			rep.Scrub.SectorsChecked += s.SectorsChecked
			rep.Scrub.Differences = append(rep.Scrub.Differences, s.Differences...)
			rep.Scrub.ParityMismatches = append(rep.Scrub.ParityMismatches, s.ParityMismatches...)
			rep.Scrub.CsumErrors = append(rep.Scrub.CsumErrors, s.CsumErrors...)
			rep.Scrub.ReadErrors = append(rep.Scrub.ReadErrors, s.ReadErrors...)
			done += s.Length
			if progress != nil {
				progress(done, total)
			}
		}
	}
	rep.Scrub.Length = vol.Capacity()
	return rep, nil
}

// ScrubMeta is scrub_verify_one_metadata for every copy of the committed
// root (scrub_simple_mirror's pass over a metadata chunk): every copy is
// read and validated as open_ctree reads it (readRoot); copies of the other
// slot hold an older or uncommitted root and are not looked at. With repair
// every bad copy is rewritten from the first valid one and its device
// flushed (scrub_write_sectors). It returns nil, nil when nothing was
// committed, and the copies with an error when none is valid (nothing is
// then rewritten).
func ScrubMeta(vol *raid.Volume, repair bool) ([]MetaCopyStatus, error) {
	meta, err := raid.OpenMetaArea(vol)
	if err != nil {
		return nil, fmt.Errorf("btrfsdio: scrubbing metadata: %w", err)
	}
	root := meta.Root()
	if root.Bytes == 0 {
		return nil, nil
	}
	_, raw, status := readRootCopies(meta, vol.Capacity()&^(SectorSize-1))
	if raw == nil {
		return status, fmt.Errorf("btrfsdio: scrubbing metadata: %w of generation %d", errNoValidRoot, root.Generation)
	}
	for i := range status {
		if repair && status[i].Err != nil {
			status[i].RepairErr = meta.RewriteCopy(root.Slot, i, raw)
			status[i].Repaired = status[i].RepairErr == nil
		}
	}
	return status, nil
}

// CommittedCsums is scrub_find_csum for an offline scrub: the data
// checksums of the committed metadata of vol (the csum tree as
// btrfs_lookup_csums_list reads it), to tell a good copy from a bad one.
// It returns nil, nil when nothing was committed or the volume has no
// checksums (nodatasum), and an error when no metadata copy is valid.
func CommittedCsums(vol *raid.Volume) (raid.CsumLookup, error) {
	meta, err := raid.OpenMetaArea(vol)
	if err != nil {
		return nil, fmt.Errorf("btrfsdio: %w", err)
	}
	if meta.Root().Bytes == 0 {
		return nil, nil
	}
	img, _, err := loadRoot(meta, vol.Capacity()&^(SectorSize-1))
	if err != nil {
		return nil, err
	}
	csums := newCsumTree()
	csums.load(img.csums)
	if len(csums.sums) == 0 {
		return nil, nil
	}
	return csums.lookup, nil
}
