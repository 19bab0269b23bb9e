package ublk

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrNoDriver means /dev/ublk-control is missing: the ublk_drv module is not
// loaded (or the kernel lacks CONFIG_BLK_DEV_UBLK).
var ErrNoDriver = errors.New("ublk_drv not loaded (no " + ControlPath + "; try: modprobe ublk_drv)")

// CmdError is a control command the kernel answered with a negative errno,
// e.g. "ublk: ADD_DEV: file exists (device id 3 is already in use)".
type CmdError struct {
	Cmd   string     // ADD_DEV, START_DEV, ...
	DevID uint32     // the dev_id of the command (0xFFFFFFFF: any)
	Errno unix.Errno // what the kernel returned, positive
}

// Error formats "ublk: CMD: errno text (hint)".
func (e *CmdError) Error() string {
	return fmt.Sprintf("ublk: %s: %s%s", e.Cmd, e.Errno.Error(), e.hint())
}

// Unwrap lets errors.Is(err, unix.EEXIST) and friends work.
func (e *CmdError) Unwrap() error { return e.Errno }

// hint explains the errnos users actually meet.
func (e *CmdError) hint() string {
	switch {
	case e.Errno == unix.EEXIST && e.Cmd == "ADD_DEV":
		return fmt.Sprintf(" (device id %d is already in use)", e.DevID)
	case e.Errno == unix.ENODEV && e.Cmd == "ADD_DEV":
		return " (is ublk_drv loaded?)"
	case e.Errno == unix.ENODEV:
		return fmt.Sprintf(" (no ublk device %d)", e.DevID)
	case e.Errno == unix.EPERM || e.Errno == unix.EACCES:
		return " (needs CAP_SYS_ADMIN)"
	case e.Errno == unix.EOPNOTSUPP && e.Cmd == "GET_FEATURES":
		return " (kernel too old for GET_FEATURES)"
	case e.Errno == unix.EBUSY:
		return " (device busy)"
	}
	return ""
}
