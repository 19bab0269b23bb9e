package raid

import (
	"fmt"
	"strings"
)

// Profile is a block group profile: enum btrfs_raid_types, named as
// BTRFS_BLOCK_GROUP_* flags are.
type Profile int

// Profiles, in the order the lead's API fixes (not the kernel's enum order).
const (
	Single Profile = iota
	Dup
	Raid0
	Raid1
	Raid1C3
	Raid1C4
	Raid10
	Raid5
	Raid6
)

// raidAttr is struct btrfs_raid_attr.
type raidAttr struct {
	subStripes        int // sub_stripes: copies inside a RAID10 stripe group
	devStripes        int // dev_stripes: stripes per device (DUP: 2)
	devsMax           int // devs_max: 0 means as many as there are
	devsMin           int // devs_min
	toleratedFailures int // tolerated_failures: btrfs_chunk_max_errors
	devsIncrement     int // devs_increment: device count granularity
	ncopies           int // ncopies: copies of each data byte
	nparity           int // nparity: parity stripes per full stripe
	name              string
}

// raidArray is btrfs_raid_array (values as in 6.x volumes.c, where RAID0 and
// RAID10 accept degenerate 1 and 2 device chunks).
var raidArray = [...]raidAttr{
	Single:  {1, 1, 1, 1, 0, 1, 1, 0, "single"},
	Dup:     {1, 2, 1, 1, 0, 1, 2, 0, "dup"},
	Raid0:   {1, 1, 0, 1, 0, 1, 1, 0, "raid0"},
	Raid1:   {1, 1, 2, 2, 1, 2, 2, 0, "raid1"},
	Raid1C3: {1, 1, 3, 3, 2, 3, 3, 0, "raid1c3"},
	Raid1C4: {1, 1, 4, 4, 3, 4, 4, 0, "raid1c4"},
	Raid10:  {2, 1, 0, 2, 1, 2, 2, 0, "raid10"},
	Raid5:   {1, 1, 0, 2, 1, 1, 1, 1, "raid5"},
	Raid6:   {1, 1, 0, 3, 2, 1, 1, 2, "raid6"},
}

// Profiles lists every row of btrfs_raid_array, in this package's order.
func Profiles() []Profile {
	return []Profile{Single, Dup, Raid0, Raid1, Raid1C3, Raid1C4, Raid10, Raid5, Raid6}
}

func (p Profile) valid() bool { return p >= Single && p <= Raid6 }

// attr is btrfs_raid_array[index]; an invalid profile gets SINGLE's row so
// that no accessor can index out of range.
func (p Profile) attr() raidAttr {
	if !p.valid() {
		return raidArray[Single]
	}
	return raidArray[p]
}

// ParseProfile is btrfs-progs' parse_bg_profile: a profile by its
// raid_name, case-insensitively.
func ParseProfile(s string) (Profile, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	for _, p := range Profiles() {
		if raidArray[p].name == name {
			return p, nil
		}
	}
	return Single, fmt.Errorf("raid: unknown profile %q (want one of single, dup, raid0, raid1, raid1c3, raid1c4, raid10, raid5, raid6)", s)
}

// String is btrfs_bg_type_to_raid_name.
func (p Profile) String() string {
	if !p.valid() {
		return fmt.Sprintf("profile(%d)", int(p))
	}
	return raidArray[p].name
}

// MinDevices is btrfs_raid_array[].devs_min.
func (p Profile) MinDevices() int { return p.attr().devsMin }

// Copies is btrfs_raid_array[].ncopies: how many copies of each data byte
// the profile stores (RAID5/6 store one, plus parity).
func (p Profile) Copies() int { return p.attr().ncopies }

// Parity is btrfs_raid_array[].nparity: parity stripes per full stripe.
func (p Profile) Parity() int { return p.attr().nparity }

// ToleratedFailures is btrfs_raid_array[].tolerated_failures, which
// btrfs_chunk_max_errors returns as a write's max_errors.
func (p Profile) ToleratedFailures() int { return p.attr().toleratedFailures }

// Mirrored reports whether the profile keeps several full copies (DUP,
// RAID1, RAID1C3, RAID1C4, RAID10): ncopies > 1.
func (p Profile) Mirrored() bool { return p.attr().ncopies > 1 }

// Striped is the BTRFS_BLOCK_GROUP_STRIPE_MASK test (RAID0, RAID10,
// RAID5, RAID6): an I/O must not cross a BTRFS_STRIPE_LEN boundary.
func (p Profile) Striped() bool {
	return p == Raid0 || p == Raid10 || p.IsRaid56()
}

// IsRaid56 is the BTRFS_BLOCK_GROUP_RAID56_MASK test.
func (p Profile) IsRaid56() bool { return p == Raid5 || p == Raid6 }

// numCopies is btrfs_num_copies for a chunk of this profile, except RAID6
// (Volume.numCopies: one per stripe); here RAID6 has the three distinct
// views scrub compares (data, rebuild from P, rebuild from Q). RAID5 reads
// have two ways (the data, or a rebuild from P).
func (p Profile) numCopies() int {
	switch {
	case p == Raid5:
		return 2
	case p == Raid6:
		return 3
	}
	return p.attr().ncopies
}
