package ublk

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// recoveryPatience is how long Recover waits for the kernel to notice that
// the old server is gone (the device turns QUIESCED once every queue's
// io_uring has been torn down).
const recoveryPatience = 10 * time.Second

// Recover takes over device opts.ID, added with UserRecovery by a server that
// died, and serves it with target (ublksrv's `ublk recover`:
// START_USER_RECOVERY, open /dev/ublkcN, fetch every tag again,
// END_USER_RECOVERY with our pid). Queue count, depth, flags and parameters
// stay those the kernel kept; the target must describe the same device (its
// size is checked). Requests that waited while the device was quiesced are
// dispatched to the new server; with Reissue at add time, so are those the
// old server had fetched but not completed.
func Recover(opts Options, target Target) (*Device, error) {
	if opts.ID < 0 {
		return nil, errors.New("ublk: recover needs a device id")
	}
	opts, ctrl, err := prepare(opts, target)
	if err != nil {
		return nil, err
	}
	id := uint32(opts.ID)
	info, err := waitQuiesced(ctrl, id, recoveryPatience)
	if err == nil {
		err = checkRecoverable(ctrl, id, opts.Params)
	}
	if err == nil {
		err = startUserRecovery(ctrl, id, recoveryPatience)
	}
	if err != nil {
		ctrl.Close()
		return nil, err
	}
	opts.Queues, opts.Depth = int(info.NrHWQueues), int(info.QueueDepth)
	d := &Device{
		opts: opts, ctrl: ctrl, target: target, added: info, info: info, cdev: -1,
		log:  opts.Logger.WithField("dev", id),
		done: make(chan struct{}),
	}
	if err := d.setupRecovered(); err != nil {
		// The device stays QUIESCED for another try; only our queues and
		// the control node go.
		d.forceQueues()
		<-d.done
		ctrl.Close()
		return nil, err
	}
	d.ownsTarget.Store(true)
	return d, nil
}

// waitQuiesced waits until device id is QUIESCED, which is the only state
// START_USER_RECOVERY accepts.
func waitQuiesced(ctrl *Control, id uint32, patience time.Duration) (DevInfo, error) {
	deadline := time.Now().Add(patience)
	for {
		info, err := ctrl.GetDevInfo(id)
		if err != nil {
			return info, err
		}
		if info.Flags&FlagUserRecovery == 0 {
			return info, fmt.Errorf("ublk: device %d was added without user recovery (add -r 1): delete it and add it again", id)
		}
		switch info.State {
		case StateQuiesced:
			return info, nil
		case StateDead:
			return info, fmt.Errorf("ublk: device %d is stopped (%s): nothing to recover, delete it", id, StateName(info.State))
		}
		if time.Now().After(deadline) {
			if info.SrvPID > 0 && unix.Kill(int(info.SrvPID), 0) == nil {
				return info, fmt.Errorf("ublk: device %d is %s and still served by pid %d", id, StateName(info.State), info.SrvPID)
			}
			return info, fmt.Errorf("ublk: device %d still %s after %v: its server has not gone", id, StateName(info.State), patience)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkRecoverable refuses a target that does not look like the device the
// kernel kept.
func checkRecoverable(ctrl *Control, id uint32, want TargetParams) error {
	p, err := ctrl.GetParams(id)
	if err != nil {
		return err
	}
	if got := p.Basic.DevSectors << 9; got != want.Size {
		return fmt.Errorf("ublk: device %d is %d bytes, the target %d: not the same device", id, got, want.Size)
	}
	return nil
}

// startUserRecovery sends START_USER_RECOVERY, retrying while the kernel
// still tears down the old server's queues (EBUSY).
func startUserRecovery(ctrl *Control, id uint32, patience time.Duration) error {
	deadline := time.Now().Add(patience)
	for {
		err := ctrl.StartUserRecovery(id)
		if err == nil || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// setupRecovered is setup for Recover: the char device, the queues and their
// fetches, then END_USER_RECOVERY instead of SET_PARAMS + START_DEV.
func (d *Device) setupRecovered() error {
	defer func() { go d.supervise() }()
	var err error
	// The dead server's /dev/ublkcN may still be closing.
	if d.cdev, err = openCharDevRetry(d.ID(), recoveryPatience); err != nil {
		return err
	}
	if err = d.startQueues(); err != nil {
		return err
	}
	if d.params, err = d.ctrl.GetParams(d.ID()); err != nil {
		return err
	}
	if err := d.ctrl.EndUserRecovery(d.ID(), os.Getpid()); err != nil {
		return err
	}
	if err := d.markLive("END_USER_RECOVERY"); err != nil {
		return err
	}
	d.log.Infof("ublk: %s recovered: %d queues x %d tags", d.BlockDevice(), d.added.NrHWQueues, d.added.QueueDepth)
	return nil
}

// openCharDevRetry is openCharDev that also waits out EBUSY.
func openCharDevRetry(id uint32, patience time.Duration) (int, error) {
	deadline := time.Now().Add(patience)
	for {
		fd, err := openCharDev(id, patience, false) // recovery: never an unprivileged device (ublk_ctrl_add_dev drops USER_RECOVERY for it)
		if err == nil || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fd, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
