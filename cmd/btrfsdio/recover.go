package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/btrfsdio/btrfsdio/ublk"
)

const recoverUsage = "-n ID [--foreground]"

func init() {
	registerCommand(&command{
		name: "recover", usage: recoverUsage, run: runRecover,
		summary: "start a new server for a device added with -r 1 whose server died",
	})
}

// runRecover is ublksrv's `ublk recover -n ID`: the add command line the dead
// server recorded in its run file starts a new server, which takes the
// device over (START_USER_RECOVERY ... END_USER_RECOVERY).
func runRecover(e *env, args []string) int {
	fs := newFlags("recover")
	id := fs.IntP("number", "n", ublk.AnyID, "the device whose server died (required, no default)")
	foreground := fs.Bool("foreground", false, "serve in this process, log to stderr")
	if code, done := parseArgs(e, fs, args); done {
		return code
	}
	if *id < 0 {
		return e.failf(exitUsage, "recover: missing -n ID (a device id >= 0)")
	}
	if err := checkDriver(); err != nil {
		return e.failf(exitFail, "recover: %v", err)
	}
	ri, err := loadRunInfo(uint32(*id))
	if err != nil {
		return e.failf(exitFail, "recover: %v", err)
	}
	if ri.PID > 0 && processAlive(ri.PID) {
		return e.failf(exitFail, "recover: device %d is still served by pid %d", *id, ri.PID)
	}
	if err := refuseReadOnly(ri); err != nil {
		return e.failf(exitFail, "recover: %v", err)
	}
	spec, err := parseAdd(ri.Args)
	if err != nil {
		return e.failf(exitFail, "recover: the recorded add command line no longer parses: %v", err)
	}
	spec.recoverID, spec.dir = *id, ri.Dir
	if *foreground {
		if err := os.Chdir(ri.Dir); err != nil {
			return e.failf(exitFail, "recover: %v", err)
		}
		return serve(spec, &printReporter{e: e, verb: spec.verb()}, newLogger(e.stderr), "", false)
	}
	return daemonize(e, spec)
}

// refuseReadOnly keeps a device that turned read-only after a failure
// (its tgt.Status.ReadOnly) from coming back writable through a new
// server: what the failure lost must be looked at first, so only a fresh
// add, after check, serves those images again.
func refuseReadOnly(ri *runInfo) error {
	st := ri.status()
	if st == nil || st.ReadOnly() == "" {
		return nil
	}
	return fmt.Errorf("device %d turned read-only after a failure (%s): delete it, check the images, then add them again",
		ri.DevID, st.ReadOnly())
}

// loadRunInfo reads the run file of device id, which recover runs the
// add command line of: only one we own and nobody else can write
// (trustedRunFile).
func loadRunInfo(id uint32) (*runInfo, error) {
	path := runFilePath(id)
	b, err := trustedRunFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no record of device %d (%s): was it added by btrfsdio on this host?", id, path)
	}
	if err != nil {
		return nil, err
	}
	var ri runInfo
	if err := json.Unmarshal(b, &ri); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if ri.DevID != id || len(ri.Args) == 0 {
		return nil, fmt.Errorf("%s: not the record of device %d's add command", path, id)
	}
	return &ri, nil
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	if unix.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' && i+2 < len(b) {
			return b[i+2] != 'Z' && b[i+2] != 'X'
		}
	}
	return true
}
