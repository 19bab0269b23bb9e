package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/btrfsdio/btrfsdio/tgt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/btrfsdio/btrfsdio/ublk"
	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// serveCommand is the hidden subcommand the daemon runs (ublksrv re-execs
// itself the same way to get a clean process for the queues).
const serveCommand = "__serve"

// Environment of the daemon.
const (
	envReadyFD  = "BTRFSDIO_READY_FD"  // fd on which the daemon reports READY or ERROR
	envLogFile  = "BTRFSDIO_LOG_FILE"  // log file the parent opened for it
	envLogDir   = "BTRFSDIO_LOG_DIR"   // default /var/log/btrfsdio
	envRunDir   = "BTRFSDIO_RUN_DIR"   // default /run/btrfsdio
	envLogLevel = "BTRFSDIO_LOG_LEVEL" // logrus level, default info
	envRecover  = "BTRFSDIO_RECOVER"   // the daemon recovers this device id instead of adding one
)

const addUsage = "-t TYPE [-n ID] [-q QUEUES] [-d DEPTH] [-r 0|1] [-i 0|1] [-e 0|1] [--max-io BYTES] [--no-user-copy] [--unprivileged] [--foreground] [--prom-file PATH] [target flags...]"

func init() {
	registerCommand(&command{
		name: "add", usage: addUsage, run: runAdd,
		summary: "add a ublk device; the server daemonizes unless --foreground is given",
		help: `ublksrv's names --user_recovery, --user_recovery_reissue,
--user_recovery_fail_io and --zero_copy are accepted for -r, -i, -e and -z.

-z/--zero_copy exits 2 with the reason: Linux 6.12's ublk driver does not
offer zero copy (UBLK_F_SUPPORT_ZERO_COPY is not in 'btrfsdio features');
where a kernel does, it needs the server to register each request's pages
as io_uring buffers, which btrfsdio does not do: it copies with
UBLK_F_USER_COPY.

--unprivileged (UBLK_F_UNPRIVILEGED_DEV) lets a user without CAP_SYS_ADMIN
add, serve, list and delete a device, as ublksrv's does. The user needs
read-write access to /dev/ublk-control, and the device's /dev/ublkcN and
/dev/ublkbN must be handed to the user as the kernel creates them (udev
rule of ublksrv's README; add waits up to 5s for /dev/ublkcN to become
accessible). Every control command of such a device carries its
/dev/ublkcN path, which the kernel checks against the caller's access
rights. The kernel refuses USER_COPY and drops user recovery (-r) for such
a device, so --unprivileged implies --no-user-copy. From root the kernel
clears the flag: the device is a plain one.

With --foreground under systemd (scripts/btrfsdio@.service, Type=notify) the
server tells the service manager READY=1 once the device is live and
STOPPING=1 when it stops ($NOTIFY_SOCKET), and logs to the journal with
syslog priorities when stderr is the journal's stream ($JOURNAL_STREAM).
While it runs, 'btrfsdio stats -n ID' shows its counters.`,
	})
	registerCommand(&command{name: serveCommand, hidden: true, run: runServe})
}

// errHelp asks for add's usage (-h).
var errHelp = errors.New("help requested")

// addSpec is a parsed `add` command line.
type addSpec struct {
	typ        string
	id         int
	queues     int
	depth      int
	recovery   int
	reissue    int
	failIO     int
	recoverID  int // >= 0: take over this device (recover) instead of adding one
	maxIO      uint
	noUserCopy bool
	foreground bool
	// zeroCopy is ublksrv's -z, accepted so its command lines parse and
	// refused with the reason (refuseUnsupported).
	zeroCopy bool
	// unprivileged is ublksrv's --unprivileged (UBLK_F_UNPRIVILEGED_DEV).
	unprivileged bool
	promFile     string // --prom-file: the Prometheus text file ("" : the default, if any)
	factory      tgt.Factory
	args         []string // as given, handed on to the daemon
	dir          string   // the directory relative paths in args are relative to (recover)
	fs           *pflag.FlagSet
}

// parseAdd parses and validates add's flags and the target type's flags.
func parseAdd(args []string) (*addSpec, error) {
	spec := &addSpec{args: args, recoverID: ublk.AnyID}
	spec.dir, _ = os.Getwd() // "" only if the directory is gone: paths then stay as given
	fs := newFlags("add")
	fs.SetNormalizeFunc(ublksrvNames)
	spec.fs = fs
	fs.StringVarP(&spec.typ, "type", "t", "", "target `TYPE`: "+strings.Join(targetNames(), ", "))
	fs.IntVarP(&spec.id, "number", "n", ublk.AnyID, "device id (-1: the kernel picks one)")
	fs.IntVarP(&spec.queues, "queues", "q", ublk.DefaultQueues, "hardware queues (clamped to the CPU count)")
	fs.IntVarP(&spec.depth, "depth", "d", ublk.DefaultQueueDepth, "queue depth")
	fs.IntVarP(&spec.recovery, "recovery", "r", 0, "1: a new server can take the device over when this one dies (UBLK_F_USER_RECOVERY; see recover)")
	fs.IntVarP(&spec.reissue, "recovery-reissue", "i", 0, "1: with -r 1, reissue the requests a dead server held (UBLK_F_USER_RECOVERY_REISSUE)")
	fs.IntVarP(&spec.failIO, "recovery-fail-io", "e", 0, "1: with -r 1, fail IO while no server runs instead of queueing it (UBLK_F_USER_RECOVERY_FAIL_IO, Linux 6.13+)")
	fs.UintVar(&spec.maxIO, "max-io", 0, "largest request in bytes (default: the target's, 1 MiB)")
	fs.BoolVar(&spec.noUserCopy, "no-user-copy", false, "do not use UBLK_F_USER_COPY (per-tag buffers)")
	fs.BoolVar(&spec.foreground, "foreground", false, "serve in this process, log to stderr")
	fs.StringVar(&spec.promFile, "prom-file", "", "write the counters of 'btrfsdio stats' every second to this `PATH` in Prometheus' text format "+
		"(default: "+defaultPromDir+"/btrfsdio_ublkN.prom when that directory exists)")
	fs.BoolVarP(&spec.zeroCopy, "zero-copy", "z", false, "ublk zero copy (UBLK_F_SUPPORT_ZERO_COPY): refused, see below")
	fs.BoolVar(&spec.unprivileged, "unprivileged", false, "a device a user without CAP_SYS_ADMIN can add and serve (UBLK_F_UNPRIVILEGED_DEV; implies --no-user-copy), see below")

	typ, found := findType(args)
	if wantsHelp(args) {
		if tt, ok := targetTypes[typ]; ok {
			spec.factory = tt.New()
			spec.factory.Flags(fs)
		}
		return spec, errHelp
	}
	if !found || typ == "" {
		return nil, fmt.Errorf("add: missing -t TYPE (known types: %s)", strings.Join(targetNames(), ", "))
	}
	tt, ok := targetTypes[typ]
	if !ok {
		return nil, fmt.Errorf("add: unknown target type %q (known types: %s)", typ, strings.Join(targetNames(), ", "))
	}
	spec.factory = tt.New()
	spec.factory.Flags(fs)
	if err := fs.Parse(compatLong(fs, args)); err != nil {
		return nil, fmt.Errorf("add: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("add: unexpected argument %q", fs.Arg(0))
	}
	if err := spec.check(); err != nil {
		return nil, err
	}
	return spec, spec.factory.Validate()
}

// verb names what the command line does, for messages: add or recover.
func (s *addSpec) verb() string {
	if s.recoverID != ublk.AnyID {
		return "recover"
	}
	return "add"
}

// check validates the common flags with the limits the kernel would enforce.
func (s *addSpec) check() error {
	page := uint(os.Getpagesize())
	switch {
	case s.id < ublk.AnyID:
		return fmt.Errorf("add: -n %d: a device id is a number >= 0", s.id)
	case s.queues < 1 || s.queues > ublk.MaxQueues:
		return fmt.Errorf("add: -q %d: queues must be in [1, %d]", s.queues, ublk.MaxQueues)
	case s.depth < 1 || s.depth > ublk.MaxQueueDepth:
		return fmt.Errorf("add: -d %d: depth must be in [1, %d]", s.depth, ublk.MaxQueueDepth)
	case s.recovery != 0 && s.recovery != 1:
		return fmt.Errorf("add: -r %d: must be 0 or 1", s.recovery)
	case s.reissue != 0 && s.reissue != 1:
		return fmt.Errorf("add: -i %d: must be 0 or 1", s.reissue)
	case s.reissue == 1 && s.recovery != 1:
		return errors.New("add: -i 1 (reissue) needs -r 1 (user recovery)")
	case s.failIO != 0 && s.failIO != 1:
		return fmt.Errorf("add: -e %d: must be 0 or 1", s.failIO)
	case s.failIO == 1 && s.recovery != 1:
		return errors.New("add: -e 1 (fail IO while no server runs) needs -r 1 (user recovery)")
	case s.failIO == 1 && s.reissue == 1:
		return errors.New("add: -e 1 (fail IO while no server runs) and -i 1 (reissue it) exclude each other")
	case s.maxIO != 0 && (s.maxIO%page != 0 || s.maxIO > ublk.MaxUserCopyBytes):
		return fmt.Errorf("add: --max-io %d: must be a multiple of %d up to %d", s.maxIO, page, ublk.MaxUserCopyBytes)
	}
	return nil
}

// ublksrvNames accepts ublksrv's long names of the options add shares with
// its `ublk add`, so command lines written for it carry over.
func ublksrvNames(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	switch name {
	case "user_recovery":
		name = "recovery"
	case "user_recovery_reissue":
		name = "recovery-reissue"
	case "user_recovery_fail_io":
		name = "recovery-fail-io"
	case "zero_copy":
		name = "zero-copy"
	}
	return pflag.NormalizedName(name)
}

// findType pre-scans for -t/--type, whose value decides which flags exist.
func findType(args []string) (string, bool) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		if len(a) > 2 && a[1] == 't' && a[2] != '=' && !strings.HasPrefix(a, "-type") { // -tloop
			return a[2:], true
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "t" && name != "type" {
			continue
		}
		if hasVal {
			return val, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
		return "", true
	}
	return "", false
}

func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "-h" || a == "--help" || a == "-help" {
			return true
		}
	}
	return false
}

func runAdd(e *env, args []string) int {
	spec, err := parseAdd(args)
	if errors.Is(err, errHelp) {
		if e.collect != nil {
			e.collect(spec.fs)
			return exitOK
		}
		printCommandHelp(e.stdout, commands["add"], spec.fs)
		if spec.factory == nil {
			fmt.Fprintln(e.stdout)
			printTargetTypes(e.stdout)
			fmt.Fprintln(e.stdout, "\n'btrfsdio help -t TYPE' (or 'add -t TYPE --help') lists a type's options.")
		}
		return exitOK
	}
	if err != nil {
		return e.failf(exitUsage, "%v", err)
	}
	if err := refuseUnsupported(spec); err != nil {
		return e.failf(exitUsage, "%v", err)
	}
	if err := checkDriver(); err != nil {
		return e.failf(exitFail, "add: %v", err)
	}
	if spec.id != ublk.AnyID {
		if err := checkIDFree(uint32(spec.id)); err != nil {
			return e.failf(exitFail, "add: %v", err)
		}
	}
	if spec.foreground {
		return serve(spec, &printReporter{e: e, verb: spec.verb()}, newLogger(e.stderr), "", false)
	}
	return daemonize(e, spec)
}

// refuseUnsupported explains why ublksrv's -z cannot be honoured (exit 2, a usage error: the same command line never works here).
// For -z it asks the driver (UBLK_U_CMD_GET_FEATURES, as ublksrv's add does)
// so the message names what is missing: the kernel's feature, or, on a
// kernel that has it, this server's support.
func refuseUnsupported(spec *addSpec) error {
	switch {
	case spec.zeroCopy:
		features, err := getFeatures()
		if err == nil && features&ublk.FlagSupportZeroCopy == 0 {
			return fmt.Errorf("add: -z/--zero_copy: this kernel's ublk driver has no zero copy "+
				"(UBLK_F_SUPPORT_ZERO_COPY is not in its features %#x; Linux 6.12 does not offer it); "+
				"btrfsdio copies with UBLK_F_USER_COPY, leave -z out", features)
		}
		return errors.New("add: -z/--zero_copy: not implemented: zero copy needs the server to register each " +
			"request's pages as io_uring buffers, which btrfsdio does not do; it copies with UBLK_F_USER_COPY, leave -z out")
	}
	return nil
}

// checkIDFree fails early, with a clear message, when -n names an existing device.
func checkIDFree(id uint32) error {
	_, err := ublk.List(id)
	switch {
	case err == nil:
		return fmt.Errorf("device id %d is already in use (see 'btrfsdio list -n %d')", id, id)
	case errors.Is(err, unix.ENODEV):
		return nil
	}
	return err
}

// reporter tells whoever started the server how setup went.
type reporter interface {
	// note passes on what setup does that the user should know (images
	// being formatted).
	note(msg string)
	ready(dev *ublk.Device)
	failed(err error)
}

// printReporter is --foreground: the list line on stdout, errors on stderr.
type printReporter struct {
	e    *env
	verb string
}

func (r *printReporter) note(msg string) { fmt.Fprintf(r.e.stderr, "btrfsdio: %s\n", msg) }

func (r *printReporter) ready(dev *ublk.Device) {
	if st, err := ublk.List(dev.ID()); err == nil {
		printDevice(r.e.stdout, st, readRunInfo(dev.ID(), st.Info.SrvPID))
	} else {
		fmt.Fprintf(r.e.stdout, "dev id %d: %s\n", dev.ID(), dev.BlockDevice())
	}
}

func (r *printReporter) failed(err error) { r.e.failf(exitFail, "%s: %v", r.verb, err) }

// pipeReporter is the daemon side of daemonize: one line on the ready pipe.
type pipeReporter struct{ f *os.File }

func (r *pipeReporter) note(msg string) {
	fmt.Fprintf(r.f, "NOTE %s\n", strings.ReplaceAll(msg, "\n", "; "))
}

func (r *pipeReporter) ready(dev *ublk.Device) {
	fmt.Fprintf(r.f, "READY %d\n", dev.ID())
	r.f.Close()
}

func (r *pipeReporter) failed(err error) {
	fmt.Fprintf(r.f, "ERROR %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
	r.f.Close()
}

// serve builds the target, adds the device and serves it until a signal or
// until the device is stopped from outside. SIGINT/SIGTERM/SIGHUP stop it
// cleanly: STOP_DEV, queues drain, DEL_DEV, so no /dev/ublkcN is left behind.
func serve(spec *addSpec, rep reporter, log *logrus.Logger, logPath string, daemon bool) int {
	// Subscribe before the device exists: a signal during setup is then
	// handled after Add instead of killing the process mid-way.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	prof := startProfile(log)

	fail := func(err error) int {
		if daemon { // the terminal sees it through the pipe; the log needs it too
			log.Errorf("%s: %v", spec.verb(), err)
		}
		rep.failed(err)
		return exitFail
	}
	target, params, err := spec.factory.Build(tgt.Env{RunDir: runDir(), Holder: imageHolder, Notice: rep.note})
	if err != nil {
		return fail(err)
	}
	if spec.maxIO != 0 {
		params.MaxIOBytes = uint32(spec.maxIO)
	}
	if daemon {
		// Like daemon(3): do not keep the caller's directory busy. Only
		// now, because the target resolved its relative paths in Build.
		if err := os.Chdir("/"); err != nil {
			log.Warnf("chdir /: %v", err)
		}
	}
	opts := ublk.Options{
		ID: spec.id, Queues: spec.queues, Depth: spec.depth, Params: params,
		UserRecovery: spec.recovery == 1, Reissue: spec.reissue == 1, FailIO: spec.failIO == 1,
		NoUserCopy: spec.noUserCopy, Unprivileged: spec.unprivileged, Logger: log,
	}
	start := ublk.Add
	if spec.recoverID != ublk.AnyID {
		opts.ID, start = spec.recoverID, ublk.Recover
	}
	dev, err := start(opts, target)
	if err != nil {
		if c, ok := target.(io.Closer); ok {
			c.Close()
		}
		return fail(err)
	}
	logPath = finalizeLog(logPath, dev.ID(), log)
	runFile, ri := writeRunInfo(dev, spec, logPath, target, log)
	stopStats, stopPublish := func() {}, func() {}
	if st, ok := target.(tgt.Reporter); ok && runFile != "" {
		stopStats = refreshRunStats(runFile, ri, st, runStatsInterval, log)
	}
	if runFile != "" {
		pub := &statsPublisher{id: dev.ID(), typ: spec.typ, started: time.Now(), io: dev.IOStats,
			path: statsFilePath(dev.ID()), promPath: promFilePath(spec.promFile, dev.ID()), log: log}
		if r, ok := target.(tgt.Reporter); ok {
			pub.target = r
		}
		stopPublish = startStatsPublisher(pub)
	}
	rep.ready(dev)
	notifyService(log, fmt.Sprintf("READY=1\nSTATUS=serving %s\nMAINPID=%d", dev.BlockDevice(), os.Getpid()))
	prof.served()

	select {
	case s := <-sigs:
		log.Infof("%v: stopping %s", s, dev.BlockDevice())
	case <-dev.Done():
		log.Warnf("%s was stopped from outside", dev.BlockDevice())
	}
	notifyService(log, "STOPPING=1\nSTATUS=stopping "+dev.BlockDevice())
	// The counters' files go first: del returns once the kernel has let go
	// of the device, which may be before this process gets past Wait.
	stopPublish()
	code := exitOK
	if err := dev.Stop(); err != nil {
		log.Errorf("stop: %v", err)
		code = exitFail
	}
	if err := dev.Wait(); err != nil {
		log.Errorf("queues: %v", err)
		code = exitFail
	}
	stopStats()
	prof.stop(dev)
	if runFile != "" {
		os.Remove(runFile)
	}
	log.Infof("%s removed", dev.BlockDevice())
	return code
}

// daemonize starts the server in a new session with its output in a log file
// and waits on a pipe until it reports READY or ERROR (ublksrv's
// start_daemon + wait on the device becoming LIVE).
func daemonize(e *env, spec *addSpec) int {
	self, err := os.Executable()
	if err != nil {
		return e.failf(exitFail, "%s: find own executable: %v", spec.verb(), err)
	}
	logPath, logf, err := openDaemonLog(spec.id)
	if err != nil {
		return e.failf(exitFail, "%s: %v", spec.verb(), err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return e.failf(exitFail, "%s: pipe: %v", spec.verb(), err)
	}
	defer r.Close()
	cmd := exec.Command(self, append([]string{serveCommand}, spec.args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w} // fd 3 in the daemon
	cmd.Env = append(os.Environ(), envReadyFD+"=3", envLogFile+"="+logPath)
	if spec.recoverID != ublk.AnyID {
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", envRecover, spec.recoverID))
		cmd.Dir = spec.dir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return e.failf(exitFail, "%s: start server: %v", spec.verb(), err)
	}
	w.Close() // the daemon holds the only write end: EOF means it is done or dead
	line := readReady(e, bufio.NewReader(r))
	switch {
	case strings.HasPrefix(line, "READY "):
		id, err := strconv.ParseUint(strings.TrimPrefix(line, "READY "), 10, 32)
		cmd.Process.Release()
		if err != nil {
			return e.failf(exitFail, "%s: bad answer from server: %q", spec.verb(), line)
		}
		return printList(e, uint32(id))
	case strings.HasPrefix(line, "ERROR "):
		cmd.Wait()
		return e.failf(exitFail, "%s: %s", spec.verb(), strings.TrimPrefix(line, "ERROR "))
	}
	werr := cmd.Wait()
	return e.failf(exitFail, "%s: server exited (%v) before the device was ready; see %s", spec.verb(), werr, logPath)
}

// readReady returns the daemon's READY or ERROR line, printing the NOTE
// lines before it on stderr; "" when the pipe closed without an answer.
func readReady(e *env, r *bufio.Reader) string {
	for {
		line, err := r.ReadString('\n')
		line = strings.TrimSpace(line)
		if msg, ok := strings.CutPrefix(line, "NOTE "); ok {
			fmt.Fprintf(e.stderr, "btrfsdio: %s\n", msg)
			continue
		}
		switch {
		case line != "":
			return line
		case err != nil:
			return ""
		}
	}
}

// printList prints the list line of a device the daemon just made live.
func printList(e *env, id uint32) int {
	st, err := ublk.List(id)
	if err != nil {
		return e.failf(exitFail, "device %d is up but cannot be listed: %v", id, err)
	}
	printDevice(e.stdout, st, readRunInfo(id, st.Info.SrvPID))
	return exitOK
}

// openDaemonLog opens /var/log/btrfsdio/ublkN.log (or $BTRFSDIO_LOG_DIR),
// mode 0600 in a private directory (privateDir). With no -n the id is not
// known yet: the daemon renames ublk-new-PID.log later.
func openDaemonLog(id int) (string, *os.File, error) {
	dir := os.Getenv(envLogDir)
	if dir == "" {
		dir = defaultLogDir
	}
	if err := privateDir(dir, dir == defaultLogDir); err != nil {
		return "", nil, fmt.Errorf("log directory: %w", err)
	}
	name := fmt.Sprintf("ublk-new-%d.log", os.Getpid())
	if id != ublk.AnyID {
		name = fmt.Sprintf("ublk%d.log", id)
	}
	path := filepath.Join(dir, name)
	f, err := openPrivateFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("log file: %w", err)
	}
	return path, f, nil
}

// runServe is the daemon: __serve with the add arguments.
func runServe(e *env, args []string) int {
	fd, err := strconv.Atoi(os.Getenv(envReadyFD))
	if err != nil || fd < 3 {
		return e.failf(exitUsage, "%s is internal to 'btrfsdio add'", serveCommand)
	}
	ready := os.NewFile(uintptr(fd), "ready")
	logPath := os.Getenv(envLogFile)
	recoverID := os.Getenv(envRecover)
	os.Unsetenv(envReadyFD)
	os.Unsetenv(envRecover)
	signal.Ignore(syscall.SIGPIPE)
	spec, err := parseAdd(args)
	if err != nil {
		fmt.Fprintf(ready, "ERROR %v\n", err)
		ready.Close()
		return exitUsage
	}
	log := newLogger(e.stderr)
	verb := "add"
	if recoverID != "" {
		if spec.recoverID, err = strconv.Atoi(recoverID); err != nil {
			return e.failf(exitUsage, "%s=%q: not a device id", envRecover, recoverID)
		}
		verb = fmt.Sprintf("recover -n %d: add", spec.recoverID)
	}
	log.Infof("btrfsdio %s serving: %s %s", version, verb, strings.Join(args, " "))
	return serve(spec, &pipeReporter{f: ready}, log, logPath, true)
}

// finalizeLog gives ublk-new-PID.log its final name ublkN.log once the id is
// known (unless that file exists) and returns the path in use.
func finalizeLog(logPath string, id uint32, log *logrus.Logger) string {
	if !strings.HasPrefix(filepath.Base(logPath), "ublk-new-") {
		return logPath
	}
	final := filepath.Join(filepath.Dir(logPath), fmt.Sprintf("ublk%d.log", id))
	if _, err := os.Stat(final); !errors.Is(err, os.ErrNotExist) {
		log.Infof("%s exists; the log of device %d stays in %s", final, id, logPath)
		return logPath
	}
	if err := os.Rename(logPath, final); err != nil {
		log.Warnf("rename log: %v", err)
		return logPath
	}
	log.Infof("log renamed from %s", logPath)
	return final
}

// newLogger logs to w: timestamped text, or sd-daemon's "<N>message"
// lines when w is the journal's stream (a systemd service's stderr).
func newLogger(w io.Writer) *logrus.Logger {
	log := logrus.New()
	log.SetOutput(w)
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	if underJournal(w) {
		log.SetFormatter(journalFormatter{})
	}
	if lvl, err := logrus.ParseLevel(os.Getenv(envLogLevel)); err == nil {
		log.SetLevel(lvl)
	}
	return log
}

// runInfo is what a server leaves in $BTRFSDIO_RUN_DIR/ublkN.json for `list`
// (ublksrv keeps the same in /run/ublksrvd/N.json).
type runInfo struct {
	DevID     uint32         `json:"dev_id"`
	PID       int            `json:"pid"`
	Type      string         `json:"type"`
	Target    map[string]any `json:"target"`
	QueueTIDs []int          `json:"queue_tids"`
	UserCopy  bool           `json:"user_copy"`
	Log       string         `json:"log,omitempty"`
	// Args and Dir are the add command line and its working directory:
	// what `recover` starts a new server with.
	Args []string `json:"args"`
	Dir  string   `json:"dir"`
	// Stats is the target's tgt.Status as it marshals it, refreshed every
	// runStatsInterval (at StatsTime) while it changes.
	Stats     json.RawMessage `json:"stats,omitempty"`
	StatsTime string          `json:"stats_time,omitempty"`
}

// The default run and log directories, which privateDir may tighten.
const (
	defaultRunDir = "/run/btrfsdio"
	defaultLogDir = "/var/log/btrfsdio"
)

func runDir() string {
	if d := os.Getenv(envRunDir); d != "" {
		return d
	}
	return defaultRunDir
}

func runFilePath(id uint32) string {
	return filepath.Join(runDir(), fmt.Sprintf("ublk%d.json", id))
}
