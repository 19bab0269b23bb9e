package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// The run and log directories hold what only root should read (the add
// command lines, the image paths) and what recover trusts: private, like
// ublksrv's /run/ublksrvd.
const privateDirMode = 0o700

// privateDir creates dir (and its parents) with mode 0700 when it does not
// exist. An existing one must be a directory we (the effective user) own
// that nobody else can write to: otherwise it is refused. One of our
// default directories (ours is set) that others can read or enter is
// tightened to 0700; a directory the user named is not chmodded, as it may
// be shared (the files we create in it are 0600 anyway).
func privateDir(dir string, ours bool) error {
	if err := os.MkdirAll(dir, privateDirMode); err != nil {
		return err
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	switch {
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory (mode %v)", dir, st.Mode())
	case !ok:
		return fmt.Errorf("%s: no owner information", dir)
	case int(sys.Uid) != os.Geteuid():
		return fmt.Errorf("%s is owned by uid %d, not by us (uid %d): refusing to keep private files there", dir, sys.Uid, os.Geteuid())
	case st.Mode().Perm()&0o077 == 0:
		return nil
	case ours:
		if err := os.Chmod(dir, privateDirMode); err != nil {
			return fmt.Errorf("making %s private: %w", dir, err)
		}
		return nil
	case st.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s can be written by group or others (mode %v): refusing to keep private files there; use a directory only we can write", dir, st.Mode().Perm())
	}
	return nil
}

// openPrivateFile opens path for appending (creating it 0600), refusing a
// symbolic link or a non-regular file at that name; an existing file that
// others could read is made 0600.
func openPrivateFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link: refusing to write through it", path)
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (mode %v)", path, st.Mode())
	}
	if err == nil && st.Mode().Perm()&0o077 != 0 {
		err = f.Chmod(0o600)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// trustedRunFile reads a run file recover will act on: a regular file (no
// symbolic link) owned by us that nobody else can write, since its add
// command line is run as root.
func trustedRunFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, syscall.ELOOP):
		return nil, fmt.Errorf("%s is a symbolic link: refusing to trust it", path)
	case err != nil:
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	switch {
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("%s is not a regular file (mode %v): refusing to trust it", path, st.Mode())
	case !ok || int(sys.Uid) != os.Geteuid():
		return nil, fmt.Errorf("%s is not owned by us (uid %d): refusing to run the command line it records", path, os.Geteuid())
	case st.Mode().Perm()&0o022 != 0:
		return nil, fmt.Errorf("%s can be written by group or others (mode %v): refusing to run the command line it records", path, st.Mode().Perm())
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return b, nil
}
