package raid

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"
)

// AssembleOptions says how Assemble makes a volume of image paths.
type AssembleOptions struct {
	// Profile formats blank images; formatted ones must hold it
	// (AnyProfile: whatever their superblocks say, and blank images are
	// refused).
	Profile Profile
	// Create is the size of the image made for each path that does not
	// exist when the volume is new (0: none is made).
	Create int64
	// Degraded is mount -o degraded: paths that do not exist, or devices
	// the superblocks list but that were not given, are missing devices,
	// as many as the profile tolerates.
	Degraded bool
	// ReadOnly, Unclaimed and Holder are DeviceOptions' for every image.
	ReadOnly  bool
	Unclaimed bool
	Holder    func(DeviceID) string
	Logger    logrus.FieldLogger
	// Prepare, if set, runs on the opened devices just before the format
	// step: the caller's signature check (PrepareFormat) and notice.
	Prepare func(devs []*Device) error
}

// Assemble is btrfs_open_devices for the paths a mount is given, followed
// by open_ctree's device half (OpenVolume): each device opened and claimed
// (see OpenDevice), two paths to one device refused (CheckDistinct), the
// superblocks read and matched. Paths that do not exist are
// created (opts.Create bytes) for a new volume; when the others hold a
// volume they are its missing devices instead, which only Degraded accepts.
// Blank images are formatted with opts.Profile.
func Assemble(paths []string, opts AssembleOptions) (*Volume, *Superblock, error) {
	a, err := newAssembly(paths, DeviceOptions{ReadOnly: opts.ReadOnly, Unclaimed: opts.Unclaimed,
		Holder: opts.Holder, Logger: opts.Logger})
	if err != nil {
		return nil, nil, err
	}
	absent, err := a.openExisting()
	if err == nil && len(absent) > 0 && !holdsVolume(a.devices()) {
		absent, err = nil, a.createAbsent(opts.Create)
	}
	if err != nil {
		a.closeAll()
		return nil, nil, err
	}
	// Blank images are formatted: OpenVolume does it when every image is
	// blank and a profile is given, after the caller's check of them.
	if err := a.prepare(opts.Prepare); err != nil {
		a.closeAll()
		return nil, nil, err
	}
	vol, sb, err := OpenVolume(a.devices(), OpenOptions{Profile: opts.Profile, Degraded: opts.Degraded,
		Volume: VolumeOptions{Logger: opts.Logger}})
	if err != nil {
		a.closeAll()
		if len(absent) > 0 {
			return nil, nil, fmt.Errorf("%w (not found: %s)", err, strings.Join(absent, ", "))
		}
		return nil, nil, err
	}
	return vol, sb, nil
}

// AbsentError is a device path that does not exist and is not to be
// created (no image size given).
type AbsentError struct{ Path string }

func (e *AbsentError) Error() string { return e.Path + " does not exist" }

// Unwrap makes errors.Is(err, fs.ErrNotExist) hold.
func (e *AbsentError) Unwrap() error { return fs.ErrNotExist }

// OpenDevices is btrfs_open_devices for paths that all exist: every one
// opened and claimed (see OpenDevice), two paths to one device refused.
func OpenDevices(paths []string, opts DeviceOptions) ([]*Device, error) {
	a, err := newAssembly(paths, opts)
	if err != nil {
		return nil, err
	}
	for i := range paths {
		if err := a.open(i, 0); err != nil {
			a.closeAll()
			return nil, err
		}
	}
	return a.devices(), nil
}

// assembly is the devices of paths being opened: slots[i] is paths[i]'s.
type assembly struct {
	paths []string
	slots []*Device
	opts  DeviceOptions
}

// newAssembly refuses two paths that name one device before any is opened
// (the claim of the second would otherwise fail, naming no culprit).
func newAssembly(paths []string, opts DeviceOptions) (*assembly, error) {
	if len(paths) == 0 {
		return nil, errors.New("raid: no devices to open")
	}
	if err := CheckDistinct(paths); err != nil {
		return nil, err
	}
	return &assembly{paths: paths, slots: make([]*Device, len(paths)), opts: opts}, nil
}

// CheckDistinct is device_matched over the paths given for one volume: it
// refuses two that name one device (a SameDeviceError). What exists is
// compared by DeviceID, what does not (an image to create) by its absolute
// path.
func CheckDistinct(paths []string) error {
	type key struct {
		id  DeviceID
		abs string
	}
	seen := make(map[key]string, len(paths))
	for _, path := range paths {
		var k key
		id, err := LookupDevice(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if k.abs, err = filepath.Abs(path); err != nil {
				return fmt.Errorf("raid: device %s: %w", path, err)
			}
		case err != nil:
			return fmt.Errorf("raid: device %s: %w", path, err)
		default:
			k.id = id
		}
		if first, ok := seen[k]; ok {
			return &SameDeviceError{First: first, Second: path, ID: k.id}
		}
		seen[k] = path
	}
	return nil
}

// openExisting opens every path that exists and returns those that do not.
func (a *assembly) openExisting() ([]string, error) {
	var absent []string
	for i, path := range a.paths {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			absent = append(absent, path)
			continue
		}
		if err := a.open(i, 0); err != nil {
			return nil, err
		}
	}
	return absent, nil
}

// createAbsent opens the paths not opened yet, creating images of size
// bytes (size 0: they must exist by now).
func (a *assembly) createAbsent(size int64) error {
	for i, path := range a.paths {
		if a.slots[i] == nil && size == 0 {
			return &AbsentError{Path: path}
		}
		if a.slots[i] == nil {
			if err := a.open(i, size); err != nil {
				return err
			}
		}
	}
	return nil
}

// open opens paths[i] (creating an image of create bytes if it is absent
// and create > 0) and checks it is none of the devices already open: a
// path that changed since CheckDistinct, or two absent paths that turned
// out to be one file once created.
func (a *assembly) open(i int, create int64) error {
	opts := a.opts
	opts.Create, opts.Size = create > 0, create
	d, err := OpenDevice(a.paths[i], opts)
	var ce *ClaimError
	if errors.As(err, &ce) {
		if j := a.find(ce.ID); j >= 0 {
			return &SameDeviceError{First: a.paths[j], Second: a.paths[i], ID: ce.ID}
		}
	}
	if err != nil {
		return err
	}
	if j := a.find(d.ID()); j >= 0 {
		d.Close()
		return &SameDeviceError{First: a.paths[j], Second: a.paths[i], ID: d.ID()}
	}
	a.slots[i] = d
	return nil
}

// find is the index of the open device that is id, or -1.
func (a *assembly) find(id DeviceID) int {
	return slices.IndexFunc(a.slots, func(d *Device) bool { return d != nil && d.ID() == id })
}

// prepare runs fn, if any, on the open devices.
func (a *assembly) prepare(fn func([]*Device) error) error {
	if fn == nil {
		return nil
	}
	return fn(a.devices())
}

// devices are the open devices in path order.
func (a *assembly) devices() []*Device {
	return slices.DeleteFunc(slices.Clone(a.slots), func(d *Device) bool { return d == nil })
}

func (a *assembly) closeAll() {
	for _, d := range a.slots {
		if d != nil {
			d.Close()
		}
	}
}

// holdsVolume reports whether any of devs has a superblock: then images
// that do not exist are the volume's missing devices, not new ones.
func holdsVolume(devs []*Device) bool {
	for _, d := range devs {
		if _, err := d.ReadSuper(); err == nil {
			return true
		}
	}
	return false
}
