package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/raid"
	"github.com/btrfsdio/btrfsdio/tgt"
	"github.com/btrfsdio/btrfsdio/tgt/btrfs"
)

const mkfsUsage = "--profile P [--datasum] [--nocow] [--size S] [--force] [-q] -f IMG [-f IMG...]"

func init() {
	registerCommand(&command{
		name: "mkfs", usage: mkfsUsage, run: runMkfs,
		summary: "offline: make a btrfsdio volume on images or block devices (no ublk needed); add then serves it",
		help: `Formats the images as one volume of profile P and commits its empty
metadata, with the inode flags, as mkfs.btrfs does. 'btrfsdio add -t btrfsdio
-f IMG...' then serves it with those flags, and 'btrfsdio check -f IMG...'
checks it. Images that hold something (a partition table, a filesystem,
swap, LUKS, LVM, md RAID or a btrfsdio volume) are refused, naming what
was found, unless --force is given: then the signatures are erased.
On a terminal a progress line names the step in progress (creating the
images, probing and formatting them, writing the first commit); none
when stderr is not a terminal, or with -q.`,
		exits: `  0  the volume is made
  1  it could not be made, or the images hold something and --force was not given
  2  bad command line`,
	})
}

// runMkfs is mkfs.btrfs for a btrfsdio volume: create the missing images,
// probe and format them (btrfs.AssembleVolume), commit the empty metadata with the
// inode flags (btrfsdio.OpenFsInfo's first commit) and close.
func runMkfs(e *env, args []string) int {
	fl := newFlags("mkfs")
	var files tgt.FileList
	fl.VarP(&files, "file", "f", "image or block device (repeat, in device order)")
	profile := fl.String("profile", "", "data profile `P`: single dup raid0 raid1 raid1c3 raid1c4 raid10 raid5 raid6")
	datasum := fl.Bool("datasum", false, "data checksums (direct writes fall back to stable buffered writes)")
	nocow := fl.Bool("nocow", false, "NODATACOW: overwrite extents in place")
	size := fl.String("size", "", "create the images that do not exist, sparse, of this `SIZE` (e.g. 256M, 1.5G, 1GiB)")
	force := fl.Bool("force", false, btrfs.ForceUsage)
	quiet := fl.BoolP("quiet", "q", false, "no progress line (there is none when stderr is not a terminal)")
	if code, done := parseArgs(e, fl, args); done {
		return code
	}
	p, create, err := checkMkfs(files, *profile, *size, *datasum && *nocow)
	if err != nil {
		return e.failf(exitUsage, "mkfs: %v", err)
	}
	log := logrus.New()
	log.SetOutput(e.stderr)
	log.SetLevel(logrus.WarnLevel)
	prog := newProgress(e, *quiet, "mkfs", 0)
	err = mkfsSteps(e, files, create, p, btrfsdio.Options{DataSum: *datasum, NoCow: *nocow}, *force, log, prog)
	if err != nil {
		return e.failf(exitFail, "mkfs: %v", err)
	}
	return exitOK
}

// mkfsSteps creates the missing images, formats them and makes the first
// commit, naming each step on prog's line; when a step fails it removes
// the images it created.
func mkfsSteps(e *env, files []string, create int64, p raid.Profile, opts btrfsdio.Options, force bool,
	log logrus.FieldLogger, prog *progress) error {
	defer prog.done()
	if create > 0 {
		prog.note(fmt.Sprintf("creating the missing images of %s", humanBytes(float64(create))))
	}
	created, err := createImages(files, create, log)
	if err != nil {
		removeAll(created)
		return err
	}
	if err = makeVolume(e, files, p, opts, force, log, prog); err != nil {
		removeAll(created)
	}
	return err
}

func removeAll(paths []string) {
	for _, path := range paths {
		os.Remove(path)
	}
}

// checkMkfs validates mkfs's command line: the profile, the size of the
// images to create, and images that exist or can be created.
func checkMkfs(files []string, profile, size string, bothFlags bool) (raid.Profile, int64, error) {
	if profile == "" {
		return 0, 0, errors.New("--profile P is required (single dup raid0 raid1 raid1c3 raid1c4 raid10 raid5 raid6)")
	}
	p, err := raid.ParseProfile(profile)
	if err != nil {
		return 0, 0, fmt.Errorf("--profile: %w", err)
	}
	var create int64
	if size != "" {
		if create, err = tgt.ParseSize(size); err != nil {
			return 0, 0, fmt.Errorf("--size: %w", err)
		}
	}
	switch {
	case bothFlags:
		return 0, 0, errors.New("--datasum and --nocow exclude each other (NODATACOW implies NODATASUM)")
	case len(files) == 0:
		return 0, 0, errors.New("at least one -f IMG is required")
	case len(files) < p.MinDevices():
		return 0, 0, fmt.Errorf("profile %s needs at least %d devices, got %d", p, p.MinDevices(), len(files))
	}
	for _, path := range files {
		if err := btrfs.CheckImagePath(path, create > 0); err != nil {
			return 0, 0, err
		}
	}
	return p, create, nil
}

// createImages creates the files that do not exist, sparse, of size
// bytes, and returns their paths (mkfs removes them if it fails).
func createImages(files []string, size int64, log logrus.FieldLogger) ([]string, error) {
	var created []string
	for _, path := range files {
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		d, err := raid.OpenDevice(path, raid.DeviceOptions{Create: true, Size: size, Logger: log})
		if err != nil {
			return created, err
		}
		created = append(created, path)
		if err := d.Close(); err != nil {
			return created, err
		}
	}
	return created, nil
}

// makeVolume formats the images (refusing ones that hold something unless
// force) and makes the first commit, which records the inode flags of
// opts, then closes the volume: what mkfs.btrfs's make_btrfs writes.
func makeVolume(e *env, files []string, p raid.Profile, opts btrfsdio.Options, force bool, log logrus.FieldLogger, prog *progress) error {
	prog.note(fmt.Sprintf("probing and formatting %s as %s", tgt.Plural(len(files), "device"), p))
	vol, _, err := btrfs.AssembleVolume(files, p, 0, false, btrfs.FormatOptions{Force: force, Mkfs: true, Holder: imageHolder}, log)
	if err != nil {
		return err
	}
	opts.Log, opts.NoVolatileDetect = log, true
	prog.note("writing the first commit")
	fsi, err := btrfsdio.OpenFsInfo(vol, opts)
	if err != nil {
		vol.Close()
		return err
	}
	inode := fsi.Inode()
	size, datasum, nocow := inode.ISize(), !inode.NoDataSum, inode.NoDataCow
	if err := fsi.Close(); err != nil {
		return err
	}
	prog.done()
	fmt.Fprintf(e.stdout, "made a %s volume on %s: %d bytes to serve, datasum %s, nocow %s\n",
		p, tgt.Plural(len(files), "device"), size, onOff(datasum), onOff(nocow))
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
