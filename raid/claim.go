package raid

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// DeviceID is what a path names, whatever the path: st_rdev for a block
// device, (st_dev, st_ino) for an image file. Two paths to one device (a
// symlink, a hard link, "a.img" and "./a.img", two nodes of one disk)
// have the same DeviceID.
type DeviceID struct {
	BlockDev bool
	Dev      uint64 // st_rdev of a block device, st_dev of a file
	Ino      uint64 // st_ino of a file, 0 for a block device
}

// kind names what id is for messages: "file" or "block device".
func (id DeviceID) kind() string {
	if id.BlockDev {
		return "block device"
	}
	return "file"
}

// deviceIDOf is the DeviceID of a stat result.
func deviceIDOf(st *syscall.Stat_t) DeviceID {
	if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
		return DeviceID{BlockDev: true, Dev: uint64(st.Rdev)}
	}
	return DeviceID{Dev: uint64(st.Dev), Ino: st.Ino}
}

// LookupDevice is lookup_bdev, which device_matched uses to tell whether a
// path names a device btrfs already has: it follows the path to what it
// names and returns that thing's identity.
func LookupDevice(path string) (DeviceID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return DeviceID{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return deviceIDOf(&st), nil
}

// SameDeviceError says two paths given for two devices of a volume name one
// device: a "RAID1" on it would hold one copy.
type SameDeviceError struct {
	First, Second string
	ID            DeviceID
}

func (e *SameDeviceError) Error() string {
	return fmt.Sprintf("raid: %s and %s are the same %s: each device of a volume must be a different one",
		e.First, e.Second, e.ID.kind())
}

// ClaimError says a device is held by someone else: a server, a scrub
// --repair, a mount (for a block device).
type ClaimError struct {
	Path   string
	ID     DeviceID
	Holder string // who holds it, as DeviceOptions.Holder named it
}

func (e *ClaimError) Error() string {
	return fmt.Sprintf("raid: device %s is in use by %s", e.Path, e.Holder)
}

// claim takes the device for as long as it is open, as btrfs_open_one_device
// does by opening the bdev with a holder (BLK_OPEN_EXCL): a writer alone,
// readers together, never a reader beside a writer. An image file gets a
// flock (LOCK_EX to write, LOCK_SH to read) on its open file description,
// so a second open in the same process conflicts too; a block device was
// opened O_EXCL, which claims it against other O_EXCL openers and mounts.
func (d *Device) claim(opts DeviceOptions) error {
	if d.blockDev || opts.Unclaimed {
		return nil
	}
	how := unix.LOCK_EX
	if opts.ReadOnly {
		how = unix.LOCK_SH
	}
	var ferr error
	err := d.control(func(fd uintptr) {
		for {
			if ferr = unix.Flock(int(fd), how|unix.LOCK_NB); ferr != unix.EINTR {
				return
			}
		}
	})
	if err == nil {
		err = ferr
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EWOULDBLOCK):
		return d.claimError(opts)
	case errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS):
		// A filesystem without flock (some network and FUSE ones) cannot
		// keep two owners apart: say so, and go on as the user asked.
		d.log.Warnf("raid: %s cannot be locked (%v): nothing stops another process from using it at the same time", d.path, err)
		return nil
	}
	return fmt.Errorf("raid: locking device %s: %w", d.path, err)
}

// claimError names who holds the device.
func (d *Device) claimError(opts DeviceOptions) error {
	holder := ""
	if opts.Holder != nil {
		holder = opts.Holder(d.id)
	}
	if holder == "" {
		holder = "another process"
		if d.blockDev {
			holder = "another process or a mounted filesystem"
		}
	}
	return &ClaimError{Path: d.path, ID: d.id, Holder: holder}
}
