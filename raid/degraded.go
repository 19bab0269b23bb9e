package raid

import (
	"fmt"
	"sort"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
)

// placeMembers is read_one_dev + btrfs_check_rw_degradable, the devid half
// of open_ctree's device checks (btrfs_read_chunk_tree): it puts the devices in devid order, refuses a devid seen twice or more
// devices than the volume has, and for each devid nobody brought either
// refuses the open (naming the devid) or, when degraded, puts a missing
// device in its place (add_missing_dev), as long as the profile tolerates
// that many failures.
func placeMembers(devs []*Device, sbs []*Superblock, degraded bool, log logrus.FieldLogger) ([]*Device, error) {
	first := sbs[0]
	if uint64(len(devs)) > first.NumDevices {
		return nil, fmt.Errorf("raid: the volume has %d devices, %d given", first.NumDevices, len(devs))
	}
	idx := make([]int, len(devs))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return sbs[idx[a]].Devid < sbs[idx[b]].Devid })
	ordered := make([]*Device, first.NumDevices)
	for _, i := range idx {
		pos := sbs[i].Devid - 1
		if ordered[pos] != nil {
			return nil, fmt.Errorf("raid: devid %d appears twice (%s): copied images?", sbs[i].Devid, devs[i].Path())
		}
		ordered[pos] = devs[i]
	}
	var missing []string
	for pos, d := range ordered {
		if d == nil {
			missing = append(missing, fmt.Sprint(pos+1))
		}
	}
	if len(missing) == 0 {
		return ordered, nil
	}
	if err := checkRWDegradable(first.Profile, len(missing), len(ordered), degraded); err != nil {
		return nil, fmt.Errorf("raid: the volume has %d devices, %d given: devid %s missing: %w",
			first.NumDevices, len(devs), strings.Join(missing, ", "), err)
	}
	if log == nil {
		log = logrus.StandardLogger()
	}
	for pos, d := range ordered {
		if d == nil {
			ordered[pos] = NewMissingDevice(uint64(pos+1), first.ChunkDevBytes, log)
		}
	}
	log.Warnf("raid: %s volume opened degraded: devid %s missing, %d of %d failures the profile tolerates used",
		first.Profile, strings.Join(missing, ", "), len(missing), first.Profile.ToleratedFailures())
	return ordered, nil
}

// checkRWDegradable is btrfs_check_rw_degradable for the one chunk, with
// the degraded mount option's check in front: n of total devices missing
// are allowed only with degraded and only up to the profile's tolerated
// failures (btrfs_chunk_max_errors).
func checkRWDegradable(p Profile, n, total int, degraded bool) error {
	switch tol := p.ToleratedFailures(); {
	case n > tol:
		return fmt.Errorf("%s tolerates %d missing device(s), even degraded: %w", p, tol, syscall.ENODEV)
	case !degraded:
		return fmt.Errorf("refusing to open without it (%d of %d devices missing; open degraded, e.g. --degraded, to run on the others): %w",
			n, total, syscall.ENODEV)
	}
	return nil
}

// MissingDevices lists the devids (1-based positions) of the volume's
// missing devices: the fs_devices->missing_devices count, by name.
func (v *Volume) MissingDevices() []uint64 {
	var ids []uint64
	for i, d := range v.devs {
		if d.Missing() {
			ids = append(ids, uint64(i+1))
		}
	}
	return ids
}

// DegradedWrites counts write pieces (and barriers) that succeeded with
// some copies failed, within max_errors. The kernel has no such counter:
// it only bumps the failed devices' write_io_errs (DeviceStats here).
func (v *Volume) DegradedWrites() uint64 { return v.degradedWrites.Load() }

// noteDegraded counts a write that succeeded on fewer copies than the
// profile keeps, and says so once per volume: with a device missing every
// write is degraded, and per-write warnings would drown the log.
func (v *Volume) noteDegraded(what string, logical uint64, failed, stripes, maxErrors int) {
	if v.degradedWrites.Add(1) != 1 {
		return
	}
	v.log.Warnf("raid: %s volume writing degraded: %s at %d reached %d of %d stripes (max_errors %d); further degraded writes are counted, not logged",
		v.profile, what, logical, stripes-failed, stripes, maxErrors)
}
