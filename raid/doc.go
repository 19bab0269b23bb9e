// Package raid is the device half of btrfs: how a logical address of a chunk
// becomes I/O on devices, and what RAID does on the way.
//
// It ports, for one data chunk laid over a fixed list of devices:
//
//   - fs/btrfs/volumes.c: btrfs_raid_array, btrfs_map_block, btrfs_num_copies
//     (volumes.go, profile.go);
//   - fs/btrfs/bio.c, device side: btrfs_submit_chunk, btrfs_split_bio,
//     btrfs_submit_mirrored_bio, btrfs_orig_write_end_io and
//     btrfs_clone_write_end_io (bio.go);
//   - fs/btrfs/raid56.c: full-stripe writes, read-modify-write and recovery
//     reads (raid56.go), over lib/raid6's P/Q math (raid6.go);
//   - fs/btrfs/scrub.c's idea: compare every copy and parity (scrub.go);
//   - struct btrfs_device over a backing file or block device (device.go);
//   - what mkfs.btrfs asks libblkid before it formats a device, and what
//     wipefs erases: the signatures of partition tables, filesystems, swap,
//     LUKS, LVM and md RAID (probe.go).
//
// The package knows nothing of the layers above: it moves the bytes of
// blk.Bio pages to and from devices. Like the kernel, it reads a write's
// source pages once per device write (and once more for RAID5/6 parity), so
// a buffer changed during the write leaves copies that disagree; that is the
// behaviour this project reproduces, and it must stay.
package raid
