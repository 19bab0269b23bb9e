package btrfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/raid"
	"github.com/btrfsdio/btrfsdio/tgt"
)

// ForceUsage is --force for add and mkfs.
const ForceUsage = "format images that hold a partition table, filesystem, swap, LUKS, LVM or md signature (erasing it)"

// CheckImagePath accepts an existing regular file or block device, or
// (canCreate) a path that does not exist yet.
func CheckImagePath(path string, canCreate bool) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && canCreate:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist (give --size to create it)", path)
	case err != nil:
		return err
	case st.IsDir():
		return fmt.Errorf("%s is a directory", path)
	case !st.Mode().IsRegular() && (st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0):
		return fmt.Errorf("%s is %s, not a regular file or block device", path, fileKind(st.Mode()))
	}
	return nil
}

// fileKind names what a non-regular file is.
func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "a special file"
}

// FormatOptions is what AssembleVolume may format over: add formats blank
// images, mkfs every image.
type FormatOptions struct {
	// Force formats over the signatures found (--force).
	Force bool
	// Mkfs formats images holding a volume too (raid.FormatCheck.Reformat).
	Mkfs bool
	// Notice is told that images are being formatted (add's stderr).
	Notice func(string)
	// Holder names the server holding an image whose claim failed
	// (raid.AssembleOptions.Holder).
	Holder func(raid.DeviceID) string
}

// AssembleVolume is raid.Assemble for add and mkfs: images that hold
// something else are refused unless fo.Force (prepareFormat), and an image
// that does not exist says how to create it.
func AssembleVolume(files []string, p raid.Profile, create int64, degraded bool, fo FormatOptions, log logrus.FieldLogger) (*raid.Volume, *raid.Superblock, error) {
	vol, sb, err := raid.Assemble(files, raid.AssembleOptions{
		Profile: p, Create: create, Degraded: degraded, Holder: fo.Holder, Logger: log,
		Prepare: func(devs []*raid.Device) error { return prepareFormat(devs, p, false, fo, log) },
	})
	if errors.Is(err, fs.ErrNotExist) && create == 0 {
		err = fmt.Errorf("%w (give --size to create it)", err)
	}
	return vol, sb, err
}

// prepareFormat runs just before raid.Assemble's format step (raid.OpenVolume
// formats blank devices): it refuses images that hold something else,
// naming what, unless fo.Force (raid.PrepareFormat), and says when images
// are being formatted. Read-only opens and raid.AnyProfile (check, scrub)
// never format.
func prepareFormat(devs []*raid.Device, p raid.Profile, readOnly bool, fo FormatOptions, log logrus.FieldLogger) error {
	if readOnly || p == raid.AnyProfile {
		return nil
	}
	formatting, err := raid.PrepareFormat(devs, raid.FormatCheck{Force: fo.Force, Reformat: fo.Mkfs})
	switch {
	case errors.Is(err, raid.ErrForeign):
		return fmt.Errorf("%w (use --force)", err)
	case err != nil || !formatting || fo.Mkfs:
		return err
	}
	msg := fmt.Sprintf("formatting %s as %s", tgt.Plural(len(devs), "blank image"), p)
	log.Info(msg)
	if fo.Notice != nil {
		fo.Notice(msg)
	}
	return nil
}
