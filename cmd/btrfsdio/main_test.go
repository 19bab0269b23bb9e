package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/btrfsdio/btrfsdio/raid"
	"github.com/btrfsdio/btrfsdio/tgt"
	"github.com/btrfsdio/btrfsdio/tgt/loop"
	"github.com/btrfsdio/btrfsdio/ublk"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// TestMain lets the test binary stand in for btrfsdio when daemonize re-execs
// "itself" with __serve.
func TestMain(m *testing.M) {
	if os.Getenv(envReadyFD) != "" {
		os.Exit(run(&env{stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:]))
	}
	// Targets built by the tests keep their intent logs and run files
	// here, not in the host's /run/btrfsdio.
	if os.Getenv(envRunDir) == "" {
		dir, err := os.MkdirTemp("", "btrfsdio-run-")
		if err != nil {
			panic(err)
		}
		os.Setenv(envRunDir, dir)
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// runCLI runs the command line with a stubbed driver check.
func runCLI(t *testing.T, driver error, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	saved := checkDriver
	checkDriver = func() error { return driver }
	defer func() { checkDriver = saved }()
	var out, errb bytes.Buffer
	code = run(&env{stdout: &out, stderr: &errb}, args)
	return code, out.String(), errb.String()
}

func backingFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadCommandLines(t *testing.T) {
	file := backingFile(t)
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{nil, exitUsage, "usage: btrfsdio COMMAND"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"add"}, exitUsage, "add: missing -t TYPE (known types: btrfsdio, loop)"},
		{[]string{"add", "-t"}, exitUsage, "add: missing -t TYPE"},
		{[]string{"add", "-t", "nbd"}, exitUsage, `add: unknown target type "nbd" (known types: btrfsdio, loop)`},
		{[]string{"add", "--type=nbd"}, exitUsage, `unknown target type "nbd"`},
		{[]string{"add", "-t", "loop"}, exitUsage, "loop: -f FILE is required"},
		{[]string{"add", "-t", "loop", "-f", "/nonexistent/x"}, exitUsage, "no such file or directory"},
		{[]string{"add", "-t", "loop", "-f", filepath.Dir(file)}, exitUsage, "is a directory"},
		{[]string{"add", "-t", "loop", "-f", file, "-q", "abc"}, exitUsage, `invalid argument "abc" for "-q, --queues" flag`},
		{[]string{"add", "-t", "loop", "-f", file, "-q", "0"}, exitUsage, "-q 0: queues must be in [1, 4096]"},
		{[]string{"add", "-t", "loop", "-f", file, "-d", "5000"}, exitUsage, "-d 5000: depth must be in [1, 4096]"},
		{[]string{"add", "-t", "loop", "-f", file, "-n", "-7"}, exitUsage, "-n -7: a device id is a number >= 0"},
		{[]string{"add", "-t", "loop", "-f", file, "-r", "2"}, exitUsage, "-r 2: must be 0 or 1"},
		{[]string{"add", "-t", "loop", "-f", file, "--max-io", "1000"}, exitUsage, "--max-io 1000"},
		{[]string{"add", "-t", "loop", "-f", file, "-i", "2"}, exitUsage, "-i 2: must be 0 or 1"},
		{[]string{"add", "-t", "loop", "-f", file, "-i", "1"}, exitUsage, "-i 1 (reissue) needs -r 1"},
		{[]string{"add", "-t", "loop", "-f", file, "-e", "2"}, exitUsage, "-e 2: must be 0 or 1"},
		{[]string{"add", "-t", "loop", "-f", file, "-e", "1"}, exitUsage, "-e 1 (fail IO while no server runs) needs -r 1"},
		{[]string{"add", "-t", "loop", "-f", file, "-r", "1", "-i", "1", "-e", "1"}, exitUsage, "exclude each other"},
		{[]string{"recover"}, exitUsage, "recover: missing -n ID"},
		{[]string{"recover", "-n", "-2"}, exitUsage, "recover: missing -n ID"},
		{[]string{"recover", "-n", "1", "x"}, exitUsage, `unexpected argument "x"`},
		{[]string{"add", "-t", "loop", "-f", file, "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"add", "-t", "loop", "-f", file, "extra"}, exitUsage, `unexpected argument "extra"`},
		{[]string{"add", "-t", "btrfsdio"}, exitUsage, "at least one -f IMG is required"},
		{[]string{"add", "-t", "btrfsdio", "--profile", "raid7", "-f", file}, exitUsage, `unknown profile`},
		{[]string{"add", "-t", "btrfsdio", "--dio", "fast", "-f", file}, exitUsage, `unknown dio mode "fast"`},
		{[]string{"add", "-t", "btrfsdio", "--profile", "raid1", "-f", file}, exitUsage, "profile raid1 needs at least 2 devices, got 1"},
		{[]string{"add", "-t", "btrfsdio", "--datasum", "--nocow", "-f", file, "-f", file}, exitUsage, "exclude each other"},
		{[]string{"add", "-t", "btrfsdio", "-f", "/nonexistent/a", "-f", "/nonexistent/b"}, exitUsage, "give --size to create it"},
		{[]string{"add", "-t", "btrfsdio", "--size", "12Q", "-f", file, "-f", file}, exitUsage, "--size: bad size"},
		{[]string{"add", "-t", "btrfsdio", "--profile", "single", "-f", "/dev/null"}, exitUsage, "/dev/null is a character device, not a regular file or block device"},
		{[]string{"add", "-t", "btrfsdio", "--bounce-pool", "100K", "-f", file, "-f", file}, exitUsage, `--bounce-pool "100K"`},
		{[]string{"add", "-t", "btrfsdio", "--bounce-pool", "", "-f", file, "-f", file}, exitUsage, `bad size ""`},
		{[]string{"bench", "--bounce-pool", "lots"}, exitUsage, `bench: --bounce-pool "lots"`},
		{[]string{"bench", "--bounce-pool", "off"}, exitUsage, `bench: --bounce-pool "off"`},
		{[]string{"scrub", "--profile", "raid9", "-f", file}, exitUsage, "scrub: --profile"},
		{[]string{"scrub", "-f", file}, exitFail, "is too small"},
		{[]string{"scrub", "--profile", "raid1"}, exitUsage, "at least one -f IMG"},
		{[]string{"scrub", "--profile", "raid1", "-f", "/nonexistent/a", "-f", "/nonexistent/b"}, exitFail, "scrub: /nonexistent/a does not exist\n"},
		{[]string{"race"}, exitUsage, "race: -d DEV is required"},
		{[]string{"race", "-d", file, "--bs", "1000"}, exitUsage, "--bs must be a positive multiple of 4096"},
		{[]string{"del"}, exitUsage, "del: missing -n ID or -a"},
		{[]string{"del", "-n", "1", "-a"}, exitUsage, "not both"},
		{[]string{"del", "-n", "x"}, exitUsage, `invalid argument "x" for "-n, --number" flag`},
		{[]string{"list", "-n", "-3"}, exitUsage, "a device id is a number >= 0"},
		{[]string{"list", "foo"}, exitUsage, `unexpected argument "foo"`},
		{[]string{"features", "-x"}, exitUsage, "unknown shorthand flag: 'x' in -x"},
		{[]string{"version", "x"}, exitUsage, `version: unexpected argument "x"`},
		{[]string{"help", "nope"}, exitUsage, `no help for unknown command "nope"`},
		{[]string{serveCommand}, exitUsage, "internal to 'btrfsdio add'"},
	}
	for _, c := range cases {
		code, _, stderr := runCLI(t, nil, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("btrfsdio %q: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr, c.code, c.msg)
		}
	}
}

// Without the module every command that talks to the kernel says so and
// fails; nothing is started.
// recover finds what to start in the dead server's run file: without one,
// or with one that is not a record of the device, it says so.
func TestRecoverNeedsRunFile(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(envRunDir, dir)
	code, _, stderr := runCLI(t, nil, "recover", "-n", "7")
	if code != exitFail || !strings.Contains(stderr, "no record of device 7") {
		t.Errorf("no run file: exit %d, %q", code, stderr)
	}
	if err := os.WriteFile(filepath.Join(dir, "ublk7.json"), []byte(`{"dev_id": 7}`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, nil, "recover", "-n", "7")
	if code != exitFail || !strings.Contains(stderr, "not the record of device 7's add command") {
		t.Errorf("run file without args: exit %d, %q", code, stderr)
	}
	ri := runInfo{DevID: 7, PID: 1, Args: []string{"-t", "loop", "-f", "x"}}
	b, _ := json.Marshal(ri)
	if err := os.WriteFile(filepath.Join(dir, "ublk7.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, nil, "recover", "-n", "7")
	if code != exitFail || !strings.Contains(stderr, "device 7 is still served by pid 1") {
		t.Errorf("live server: exit %d, %q", code, stderr)
	}
}

func TestProcessAlive(t *testing.T) {
	if !processAlive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	if processAlive(1 << 30) {
		t.Error("pid 2^30 is alive")
	}
}

func TestDriverNotLoaded(t *testing.T) {
	file := backingFile(t)
	for _, args := range [][]string{
		{"add", "-t", "loop", "-f", file},
		{"add", "-t", "loop", "-f", file, "--foreground"},
		{"list"},
		{"list", "-n", "0", "-v"},
		{"del", "-n", "0"},
		{"del", "-a"},
		{"features"},
	} {
		code, stdout, stderr := runCLI(t, ublk.ErrNoDriver, args...)
		if code != exitFail || !strings.Contains(stderr, "ublk_drv not loaded") || stdout != "" {
			t.Errorf("btrfsdio %q: exit %d stdout %q stderr %q", args, code, stdout, stderr)
		}
	}
}

// The real check, on whatever this host has.
func TestRealDriverCheck(t *testing.T) {
	if _, err := os.Stat(ublk.ControlPath); err == nil {
		t.Skip("ublk_drv is loaded here")
	}
	var out, errb bytes.Buffer
	code := run(&env{stdout: &out, stderr: &errb}, []string{"features"})
	if code != exitFail || !strings.Contains(errb.String(), "ublk_drv not loaded") {
		t.Errorf("features without ublk_drv: exit %d, %q", code, errb.String())
	}
}

func TestParseAdd(t *testing.T) {
	file := backingFile(t)
	spec, err := parseAdd([]string{"--type", "loop", "--file=" + file, "-n", "3", "--queues", "2", "-d", "64",
		"-r", "1", "--max-io", "262144", "--no-user-copy", "--foreground", "--read-only"})
	if err != nil {
		t.Fatal(err)
	}
	if spec.typ != "loop" || spec.id != 3 || spec.queues != 2 || spec.depth != 64 || spec.recovery != 1 ||
		spec.maxIO != 256<<10 || !spec.noUserCopy || !spec.foreground {
		t.Errorf("spec %+v", spec)
	}
	if _, ok := spec.factory.(*loop.Factory); !ok {
		t.Errorf("factory %T, want *loop.Factory", spec.factory)
	}
	if got := spec.factory.Info(); got["file"] != file || got["read_only"] != true {
		t.Errorf("loop flags: info %v", got)
	}
	target, params, err := spec.factory.Build(testEnv())
	if err != nil {
		t.Fatal(err)
	}
	defer target.(io.Closer).Close()
	if params.Size != 1<<20 || !params.ReadOnly {
		t.Errorf("params %+v", params)
	}
	def, err := parseAdd([]string{"-t", "loop", "-f", file})
	if err != nil {
		t.Fatal(err)
	}
	if def.id != ublk.AnyID || def.queues != 1 || def.depth != 128 || def.foreground || def.unprivileged {
		t.Errorf("defaults %+v", def)
	}
	// ublksrv's --unprivileged parses and is no longer refused.
	up, err := parseAdd([]string{"-t", "loop", "-f", file, "--unprivileged"})
	if err != nil || !up.unprivileged || refuseUnsupported(up) != nil {
		t.Errorf("--unprivileged: err %v spec %+v", err, up)
	}
}

func TestFindType(t *testing.T) {
	cases := map[string][]string{
		"loop": {"-n", "1", "-t", "loop"},
		"a":    {"--type=a"},
		"b":    {"-t=b", "-t", "c"},
		"":     {"-f", "x", "--", "-t", "loop"},
	}
	for want, args := range cases {
		if got, _ := findType(args); got != want {
			t.Errorf("findType(%q) = %q, want %q", args, got, want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	code, out, _ := runCLI(t, nil, "help")
	for _, want := range []string{"add", "del", "list", "features", "version", "loop"} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if strings.Contains(out, serveCommand) {
		t.Error("help shows the internal command")
	}
	code, out, _ = runCLI(t, nil, "add", "-t", "loop", "-h")
	if code != exitOK || !strings.Contains(out, "-read-only") || !strings.Contains(out, "-foreground") {
		t.Errorf("add -h: %d %q", code, out)
	}
	code, out, _ = runCLI(t, nil, "--version")
	if code != exitOK || !strings.HasPrefix(out, "btrfsdio ") {
		t.Errorf("version: %d %q", code, out)
	}
}

// Another file (targets.go, scrub.go) adds types and commands the same way
// loop and list do; the tables must accept that and refuse clashes.
func TestRegistriesExtend(t *testing.T) {
	registerTarget(tgt.Type{Name: "zz-test", Usage: "-x", New: func() tgt.Factory { return &loop.Factory{} }})
	defer delete(targetTypes, "zz-test")
	registerCommand(&command{name: "zz-cmd", summary: "test", run: func(e *env, _ []string) int { return 42 }})
	defer delete(commands, "zz-cmd")
	if code, _, _ := runCLI(t, nil, "zz-cmd"); code != 42 {
		t.Errorf("registered command not dispatched: %d", code)
	}
	if _, err := parseAdd([]string{"-t", "zz-test", "-f", backingFile(t)}); err != nil {
		t.Errorf("registered type not usable: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("duplicate target type accepted")
		}
	}()
	registerTarget(tgt.Type{Name: "loop"})
}

func TestPrintDevice(t *testing.T) {
	st := ublk.Status{
		Info: ublk.DevInfo{DevID: 3, NrHWQueues: 2, QueueDepth: 128, State: ublk.StateLive,
			MaxIOBufBytes: 1 << 20, SrvPID: 4242, Flags: 0xc2},
		Params: ublk.Params{Basic: ublk.ParamBasic{LogicalBSShift: 9, DevSectors: 2048},
			Devt: ublk.ParamDevt{CharMajor: 511, CharMinor: 3, DiskMajor: 259, DiskMinor: 7}},
	}
	// Queue 0 is this thread, whose affinity list prints; queue 1's thread
	// is gone (a tid above any pid_max), so it has no affinity.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	cpus := ""
	for cpu := 0; cpu < 1024; cpu++ {
		if set.IsSet(cpu) {
			cpus += strconv.Itoa(cpu) + " "
		}
	}
	var b bytes.Buffer
	printDevice(&b, st, &runInfo{DevID: 3, PID: 4242, Type: "loop", Target: map[string]any{"file": "/x"}, QueueTIDs: []int{tid, 1 << 30}})
	want := "dev id 3: nr_hw_queues 2 queue_depth 128 block size 512 dev_capacity 2048\n" +
		"\tmax rq size 1048576 daemon pid 4242 flags 0xc2 state LIVE\n" +
		"\tublkc: 511:3 ublkb: 259:7 owner: 0:0\n" +
		fmt.Sprintf("\tqueue 0: tid %d affinity(%s)\n\tqueue 1: tid %d\n", tid, cpus, 1<<30) +
		"\ttarget {\"info\":{\"file\":\"/x\"},\"type\":\"loop\",\"user_copy\":false}\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestRunInfoAndLogRename(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(envRunDir, dir)
	ri := runInfo{DevID: 5, PID: 77, Type: "loop"}
	b, _ := json.Marshal(ri)
	os.WriteFile(runFilePath(5), b, 0o644)
	if got := readRunInfo(5, 77); got == nil || got.Type != "loop" {
		t.Errorf("readRunInfo = %+v", got)
	}
	if readRunInfo(5, 78) != nil {
		t.Error("stale run info (other pid) accepted")
	}
	if readRunInfo(6, 77) != nil {
		t.Error("run info of another id accepted")
	}

	log := logrus.New()
	log.SetOutput(io.Discard)
	tmp := filepath.Join(dir, "ublk-new-99.log")
	os.WriteFile(tmp, []byte("x"), 0o644)
	if got := finalizeLog(tmp, 4, log); got != filepath.Join(dir, "ublk4.log") {
		t.Errorf("finalizeLog = %s", got)
	}
	tmp2 := filepath.Join(dir, "ublk-new-100.log")
	os.WriteFile(tmp2, []byte("y"), 0o644)
	if got := finalizeLog(tmp2, 4, log); got != tmp2 {
		t.Errorf("finalizeLog over an existing log = %s", got)
	}
	if got := finalizeLog(filepath.Join(dir, "ublk9.log"), 9, log); got != filepath.Join(dir, "ublk9.log") {
		t.Errorf("finalizeLog of a named log = %s", got)
	}
}

func TestHelpRequestedIsNotAnError(t *testing.T) {
	_, err := parseAdd([]string{"-h"})
	if !errors.Is(err, errHelp) {
		t.Errorf("parseAdd(-h) = %v", err)
	}
}

// TestDaemonizeReportsServerError runs the real re-exec: the daemon starts in
// its own session, logs to the log directory, fails to add the device (no
// ublk_drv here) and the parent prints the daemon's error and exits 1.
func TestDaemonizeReportsServerError(t *testing.T) {
	if _, err := os.Stat(ublk.ControlPath); err == nil {
		t.Skip("ublk_drv is loaded here: the daemon would really add a device")
	}
	logDir := t.TempDir()
	t.Setenv(envLogDir, logDir)
	file := backingFile(t)
	code, stdout, stderr := runCLI(t, nil, "add", "-t", "loop", "-f", file, "-q", "1")
	if code != exitFail || stdout != "" || !strings.Contains(stderr, "add: ublk_drv not loaded") {
		t.Fatalf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	// No -n: the id is unknown, so the log keeps its provisional name.
	logs, _ := filepath.Glob(filepath.Join(logDir, "ublk-new-*.log"))
	if len(logs) != 1 {
		t.Fatalf("log files %v", logs)
	}
	log, err := os.ReadFile(logs[0])
	if err != nil || !strings.Contains(string(log), "serving: add -t loop") {
		t.Errorf("daemon log: %v %q", err, log)
	}
}

// TestScrubImages formats a RAID1 pair through the btrfsdio target's open
// path, then scrubs it offline: clean, then a differing copy is found.
func TestScrubImages(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	log := logrus.New()
	log.SetOutput(io.Discard)
	vol, _, err := raid.Assemble([]string{a, b}, raid.AssembleOptions{Profile: raid.Raid1, Create: 8 << 20, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	vol.Close()
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb}
	if code := run(e, []string{"scrub", "-f", a, "-f", b}); code != exitOK || !strings.Contains(out.String(), "0 differing") {
		t.Fatalf("clean scrub: %d %q %q", code, out.String(), errb.String())
	}
	if code := run(e, []string{"scrub", "--profile", "raid0", "-f", a, "-f", b}); code != exitFail {
		t.Fatalf("wrong profile accepted: %d", code)
	}
	f, _ := os.OpenFile(b, os.O_RDWR, 0)
	f.WriteAt([]byte("differs"), 3<<20)
	f.Close()
	out.Reset()
	if code := run(e, []string{"scrub", "-f", b, "-f", a}); code != 3 || !strings.Contains(out.String(), "1 differing") {
		t.Fatalf("damaged scrub: %d %q %q", code, out.String(), errb.String())
	}
}

// features prints ublksrv's layout: the mask, then "\tNAME<pad to 20>: 0xBIT"
// per bit with ublksrv's short names (6.12 answers 0x1fe); bits it does not
// name print as "unknown", as in ublksrv.
func TestFeaturesLayout(t *testing.T) {
	saved := getFeatures
	defer func() { getFeatures = saved }()
	getFeatures = func() (uint64, error) { return 0x1fe | 1<<40, nil }
	code, stdout, stderr := runCLI(t, nil, "features")
	want := "ublk_drv features: 0x100000001fe\n" +
		"\tCOMP_IN_TASK        : 0x2\n" +
		"\tGET_DATA            : 0x4\n" +
		"\tUSER_RECOVERY       : 0x8\n" +
		"\tRECOVERY_REISSUE    : 0x10\n" +
		"\tUNPRIVILEGED_DEV    : 0x20\n" +
		"\tCMD_IOCTL_ENCODE    : 0x40\n" +
		"\tUSER_COPY           : 0x80\n" +
		"\tZONED               : 0x100\n" +
		"\tunknown             : 0x10000000000\n"
	if code != exitOK || stdout != want || stderr != "" {
		t.Errorf("features: exit %d\nstdout:\n%s\nwant:\n%s\nstderr %q", code, stdout, want, stderr)
	}
	getFeatures = func() (uint64, error) { return 1 | 1<<9 | 1<<18, nil }
	_, stdout, _ = runCLI(t, nil, "features")
	for _, w := range []string{"\tZERO_COPY           : 0x1\n", "\tRECOVERY_FAIL_IO    : 0x200\n", "\tNO_AUTO_PART_SCAN   : 0x40000\n"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("features 0x40201: no %q in\n%s", w, stdout)
		}
	}
}

// -z is refused with exit 2 and the reason; it names
// the kernel's missing feature when the driver lacks it (6.12) and says
// the server does not implement it when the driver has it.
func TestAddRefusesZeroCopy(t *testing.T) {
	file := backingFile(t)
	saved := getFeatures
	defer func() { getFeatures = saved }()
	for _, c := range []struct {
		features uint64
		args     []string
		want     string
	}{
		{0x1fe, []string{"-z"}, "this kernel's ublk driver has no zero copy (UBLK_F_SUPPORT_ZERO_COPY is not in its features 0x1fe"},
		{0x1fe, []string{"--zero_copy"}, "UBLK_F_SUPPORT_ZERO_COPY is not in its features"},
		{0x1ff, []string{"--zero-copy"}, "-z/--zero_copy: not implemented: zero copy needs the server to register"},
	} {
		getFeatures = func() (uint64, error) { return c.features, nil }
		args := append([]string{"add", "-t", "loop", "-f", file}, c.args...)
		code, stdout, stderr := runCLI(t, nil, args...)
		if code != exitUsage || !strings.Contains(stderr, c.want) || stdout != "" {
			t.Errorf("%q with features %#x: exit %d stdout %q stderr %q, want exit 2 and %q", args, c.features, code, stdout, stderr, c.want)
		}
	}
}
