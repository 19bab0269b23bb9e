package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/btrfsdio/btrfsdio/tgt"
	"github.com/btrfsdio/btrfsdio/ublk"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

func init() {
	registerCommand(&command{name: "list", usage: "[-n ID] [-v]", run: runList,
		summary: "show ublk devices (-v: JSON with dev_info, params and target)"})
	registerCommand(&command{name: "del", usage: "-n ID | -a", run: runDel,
		summary: "stop and delete a device (-a: all devices)"})
	registerCommand(&command{name: "features", usage: "", run: runFeatures,
		summary: "show the UBLK_F_* features of the loaded ublk_drv",
		help: "Prints ublksrv's layout: 'ublk_drv features: 0xMASK', then one line per feature: a tab,\n" +
			"ublksrv's short name padded to 20 columns, ': ' and the bit (USER_COPY ... : 0x80)."})
}

func runList(e *env, args []string) int {
	fs := newFlags("list")
	id := fs.IntP("number", "n", ublk.AnyID, "only this device (default: all)")
	verbose := fs.BoolP("verbose", "v", false, "JSON output as ublksrv's list -v: dev_info, flags, state, params and target")
	asJSON := fs.Bool("json", false, "one JSON object with the --json header and the devices (docs/json.md)")
	if code, done := parseArgs(e, fs, args); done {
		return code
	}
	if *id < ublk.AnyID {
		return e.failf(exitUsage, "list: -n %d: a device id is a number >= 0", *id)
	}
	if err := checkDriver(); err != nil {
		return e.failf(exitFail, "list: %v", err)
	}
	var sts []ublk.Status
	if *id != ublk.AnyID {
		st, err := ublk.List(uint32(*id))
		if err != nil {
			return e.failf(exitFail, "list: %v", err)
		}
		sts = append(sts, st)
	} else {
		var err error
		if sts, err = ublk.ListAll(); err != nil {
			return e.failf(exitFail, "list: %v", err)
		}
	}
	if *asJSON {
		if err := writeJSON(e.stdout, listJSON{jsonHeader: newJSONHeader("list", exitOK), Devices: devicesJSON(sts)}); err != nil {
			return e.failf(exitFail, "list: %v", err)
		}
		return exitOK
	}
	if *verbose {
		return printJSON(e, sts, *id != ublk.AnyID)
	}
	for _, st := range sts {
		printDevice(e.stdout, st, readRunInfo(st.Info.DevID, st.Info.SrvPID))
	}
	return exitOK
}

// deviceJSON is one device in `list -v`.
type deviceJSON struct {
	DevInfo ublk.DevInfo `json:"dev_info"`
	Flags   []string     `json:"flags"`
	State   string       `json:"state"`
	Params  ublk.Params  `json:"params"`
	Target  *runInfo     `json:"target,omitempty"`
}

// listJSON is list --json (docs/json.md).
type listJSON struct {
	jsonHeader
	Devices []deviceJSON `json:"devices"`
}

func devicesJSON(sts []ublk.Status) []deviceJSON {
	devs := make([]deviceJSON, 0, len(sts))
	for _, st := range sts {
		devs = append(devs, deviceJSON{
			DevInfo: st.Info, Flags: ublk.FlagNames(st.Info.Flags), State: ublk.StateName(st.Info.State),
			Params: st.Params, Target: readRunInfo(st.Info.DevID, st.Info.SrvPID),
		})
	}
	return devs
}

// printJSON prints one object for -n, an array otherwise.
func printJSON(e *env, sts []ublk.Status, single bool) int {
	devs := devicesJSON(sts)
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	var err error
	if single && len(devs) == 1 {
		err = enc.Encode(devs[0])
	} else {
		err = enc.Encode(devs)
	}
	if err != nil {
		return e.failf(exitFail, "list: %v", err)
	}
	return exitOK
}

// printDevice prints a device the way ublksrv's `ublk list` does.
func printDevice(w io.Writer, st ublk.Status, run *runInfo) {
	info, p := st.Info, st.Params
	fmt.Fprintf(w, "dev id %d: nr_hw_queues %d queue_depth %d block size %d dev_capacity %d\n",
		info.DevID, info.NrHWQueues, info.QueueDepth, 1<<p.Basic.LogicalBSShift, p.Basic.DevSectors)
	fmt.Fprintf(w, "\tmax rq size %d daemon pid %d flags 0x%x state %s\n",
		info.MaxIOBufBytes, info.SrvPID, info.Flags, ublk.StateName(info.State))
	fmt.Fprintf(w, "\tublkc: %d:%d ublkb: %d:%d owner: %d:%d\n",
		p.Devt.CharMajor, p.Devt.CharMinor, p.Devt.DiskMajor, p.Devt.DiskMinor, info.OwnerUID, info.OwnerGID)
	if run == nil {
		return
	}
	for q, tid := range run.QueueTIDs {
		fmt.Fprintf(w, "\tqueue %d: tid %d%s\n", q, tid, threadAffinity(tid))
	}
	target, _ := json.Marshal(map[string]any{"type": run.Type, "info": run.Target, "user_copy": run.UserCopy})
	fmt.Fprintf(w, "\ttarget %s\n", target)
	if st := run.status(); st != nil {
		for _, l := range st.Lines() {
			fmt.Fprintf(w, "\t%s\n", l)
		}
	}
}

// threadAffinity is " affinity(0 1 )", the CPUs thread tid may run on, in
// ublksrv's format; empty when they cannot be read (the thread is gone).
func threadAffinity(tid int) string {
	var set unix.CPUSet
	if tid <= 0 || unix.SchedGetaffinity(tid, &set) != nil {
		return ""
	}
	var b strings.Builder
	for cpu := 0; cpu < 1024; cpu++ {
		if set.IsSet(cpu) {
			fmt.Fprintf(&b, "%d ", cpu)
		}
	}
	return " affinity(" + b.String() + ")"
}

// status decodes the target's Status from the run file with its type's
// DecodeStatus; nil when there is none (or it does not decode).
func (ri *runInfo) status() tgt.Status {
	tt, ok := targetTypes[ri.Type]
	if len(ri.Stats) == 0 || !ok || tt.DecodeStatus == nil {
		return nil
	}
	st, err := tt.DecodeStatus(ri.Stats)
	if err != nil {
		return nil
	}
	return st
}

// readRunInfo loads what the serving process recorded, if it is that process's.
func readRunInfo(id uint32, pid int32) *runInfo {
	b, err := os.ReadFile(runFilePath(id))
	if err != nil {
		return nil
	}
	var ri runInfo
	if json.Unmarshal(b, &ri) != nil || ri.DevID != id || ri.PID != int(pid) {
		return nil // stale: another server once had this id
	}
	return &ri
}

// writeRunInfo records the target for `list`; failure only costs the target
// line there, so it is logged, not fatal. It returns the file written ("" on
// failure) and what it holds.
func writeRunInfo(dev *ublk.Device, spec *addSpec, logPath string, target ublk.Target, log *logrus.Logger) (string, runInfo) {
	ri := runInfo{DevID: dev.ID(), PID: os.Getpid(), Type: spec.typ, Target: spec.factory.Info(),
		QueueTIDs: dev.QueueTIDs(), UserCopy: dev.UserCopy(), Log: logPath, Args: spec.args, Dir: spec.dir}
	if r, ok := target.(tgt.Reporter); ok {
		ri.Stats = marshalStatus(r.Status(), log)
	}
	path := runFilePath(dev.ID())
	err := privateDir(runDir(), runDir() == defaultRunDir)
	if err == nil {
		err = writeRunFile(path, &ri)
	}
	if err != nil {
		log.Warnf("cannot record target info for 'list': %v", err)
		return "", ri
	}
	return path, ri
}

func runDel(e *env, args []string) int {
	fs := newFlags("del")
	id := fs.IntP("number", "n", ublk.AnyID, "the device to delete (required unless -a; no default)")
	all := fs.BoolP("all", "a", false, "delete all devices")
	if code, done := parseArgs(e, fs, args); done {
		return code
	}
	switch {
	case *all && *id != ublk.AnyID:
		return e.failf(exitUsage, "del: give -n ID or -a, not both")
	case !*all && *id == ublk.AnyID:
		return e.failf(exitUsage, "del: missing -n ID or -a")
	case *id < ublk.AnyID:
		return e.failf(exitUsage, "del: -n %d: a device id is a number >= 0", *id)
	}
	if err := checkDriver(); err != nil {
		return e.failf(exitFail, "del: %v", err)
	}
	ids := []uint32{uint32(*id)}
	if *all {
		var err error
		if ids, err = ublk.ListIDs(); err != nil {
			return e.failf(exitFail, "del: %v", err)
		}
	}
	var failed []string
	for _, i := range ids {
		if err := ublk.Delete(i); err != nil {
			e.failf(exitFail, "del: %v", err)
			failed = append(failed, fmt.Sprint(i))
		}
	}
	if len(failed) > 0 {
		if len(ids) > 1 {
			return e.failf(exitFail, "del: failed for device(s) %s", strings.Join(failed, ", "))
		}
		return exitFail
	}
	return exitOK
}

func runFeatures(e *env, args []string) int {
	if code, done := parseArgs(e, newFlags("features"), args); done {
		return code
	}
	if err := checkDriver(); err != nil {
		return e.failf(exitFail, "features: %v", err)
	}
	f, err := getFeatures()
	if err != nil {
		return e.failf(exitFail, "features: %v", err)
	}
	printFeatures(e.stdout, f)
	return exitOK
}

// getFeatures is ublk.GetFeatures; tests replace it to print a given mask.
var getFeatures = ublk.GetFeatures

// printFeatures prints the driver's UBLK_F_* mask in ublksrv's `ublk
// features` layout: the mask in hex, then one line per bit set with
// ublksrv's short name and the bit's value, so scripts written for it work
// on ours.
func printFeatures(w io.Writer, mask uint64) {
	fmt.Fprintf(w, "ublk_drv features: 0x%x\n", mask)
	for bit := 0; bit < 64; bit++ {
		if mask&(1<<bit) != 0 {
			fmt.Fprintf(w, "\t%-20s: 0x%x\n", ublk.FeatureShortName(bit), uint64(1)<<bit)
		}
	}
}
