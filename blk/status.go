package blk

import (
	"errors"
	"syscall"
)

// Status is blk_status_t (include/linux/blk_types.h, 6.12 numbering).
type Status uint8

// Values of blk_status_t.
const (
	StsOK                 Status = 0
	StsNotSupp            Status = 1
	StsTimeout            Status = 2
	StsNoSpc              Status = 3
	StsTransport          Status = 4
	StsTarget             Status = 5
	StsResvConflict       Status = 6
	StsMedium             Status = 7
	StsProtection         Status = 8
	StsResource           Status = 9
	StsIOErr              Status = 10
	StsDMRequeue          Status = 11
	StsAgain              Status = 12
	StsDevResource        Status = 13
	StsZoneOpenResource   Status = 14
	StsZoneActiveResource Status = 15
	StsOffline            Status = 16
	StsDurationLimit      Status = 17
)

// blkErrors is blk_errors[] in block/blk-core.c: the errno and name of each
// status. Anything not listed maps to -EIO, as in the kernel.
var blkErrors = map[Status]struct {
	errno syscall.Errno
	name  string
}{
	StsOK:                 {0, ""},
	StsNotSupp:            {syscall.EOPNOTSUPP, "operation not supported"},
	StsTimeout:            {syscall.ETIMEDOUT, "timeout"},
	StsNoSpc:              {syscall.ENOSPC, "critical space allocation"},
	StsTransport:          {syscall.ENOLINK, "recoverable transport"},
	StsTarget:             {syscall.EREMOTEIO, "critical target"},
	StsResvConflict:       {syscall.EBADE, "reservation conflict"},
	StsMedium:             {syscall.ENODATA, "critical medium"},
	StsProtection:         {syscall.EILSEQ, "protection"},
	StsResource:           {syscall.ENOMEM, "kernel resource"},
	StsDevResource:        {syscall.EBUSY, "device resource"},
	StsAgain:              {syscall.EAGAIN, "nonblocking retry"},
	StsOffline:            {syscall.ENODEV, "device offline"},
	StsDurationLimit:      {syscall.ETIME, "duration limit exceeded"},
	StsZoneOpenResource:   {syscall.ETOOMANYREFS, "open zones exceeded"},
	StsZoneActiveResource: {syscall.EOVERFLOW, "active zones exceeded"},
	StsDMRequeue:          {syscall.EREMCHG, "dm internal retry"},
	StsIOErr:              {syscall.EIO, "I/O"},
}

// StatusToErrno is blk_status_to_errno: 0 for StsOK, else a negative errno.
func StatusToErrno(s Status) int {
	if e, ok := blkErrors[s]; ok {
		return -int(e.errno)
	}
	return -int(syscall.EIO)
}

// ErrnoToStatus is errno_to_blk_status. err is 0 or a negative errno; an
// errno with no status of its own becomes StsIOErr.
func ErrnoToStatus(err int) Status {
	if err == 0 {
		return StsOK
	}
	for s, e := range blkErrors {
		if -int(e.errno) == err && s != StsOK {
			return s
		}
	}
	return StsIOErr
}

// Err is blk_status_to_errno as a Go error (nil for StsOK), carrying the errno so
// errors.Is(err, syscall.EIO) works.
func (s Status) Err() error {
	if s == StsOK {
		return nil
	}
	return &StatusError{Status: s}
}

// String is blk_status's name as blk_op_str/blk_errors print it.
func (s Status) String() string {
	if e, ok := blkErrors[s]; ok {
		if s == StsOK {
			return "OK"
		}
		return e.name
	}
	return "I/O"
}

// StatusError is a non-OK Status as an error.
type StatusError struct{ Status Status }

func (e *StatusError) Error() string { return "blk: " + e.Status.String() + " error" }

// Unwrap returns the errno the status maps to.
func (e *StatusError) Unwrap() error { return syscall.Errno(-StatusToErrno(e.Status)) }

// ErrnoOf is PTR_ERR for Go: a Go error as a negative errno (0 for nil, -EIO for an
// error that carries none).
func ErrnoOf(err error) int {
	if err == nil {
		return 0
	}
	var se *StatusError
	var en syscall.Errno
	switch {
	case errors.As(err, &se):
		return StatusToErrno(se.Status)
	case errors.As(err, &en):
		return -int(en)
	}
	return -int(syscall.EIO)
}
