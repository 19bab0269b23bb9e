package main

import (
	"fmt"
	"io"
	"os"

	"github.com/btrfsdio/btrfsdio/internal/logwrites"
)

func init() {
	registerCommand(&command{
		name:    "replay-log",
		summary: "replay a dm-log-writes log onto a copy of the logged device, up to a mark (fstests' replay-log): what a power cut there leaves",
		usage:   "--log LOGDEV --replay DEV [--end-mark LABEL] | --log LOGDEV --list",
		help: `The target must hold what the logged device held when logging started
(zeroes, usually). Discards are replayed as zeroes. Without --end-mark the
whole log is replayed. The log is checked before the target is touched: a
missing mark or a damaged log changes nothing.`,
		exits: `  0  replayed (or listed)
  1  failed
  2  bad command line`,
		run: runReplayLog,
	})
}

func runReplayLog(e *env, args []string) int {
	fs := newFlags("replay-log")
	logPath := fs.String("log", "", "the log device (or file) of the dm-log-writes target")
	target := fs.String("replay", "", "device (or file) to replay onto")
	endMark := fs.String("end-mark", "", "stop after the first mark with this label")
	list := fs.Bool("list", false, "list the log's marks, replay nothing")
	if code, done := parseArgs(e, fs, args); done {
		return code
	}
	switch {
	case *logPath == "":
		return e.failf(exitUsage, "replay-log: --log LOGDEV is required")
	case *list && (*target != "" || *endMark != ""):
		return e.failf(exitUsage, "replay-log: --list takes no --replay or --end-mark")
	case !*list && *target == "":
		return e.failf(exitUsage, "replay-log: --replay DEV or --list is required")
	}
	lf, err := os.Open(*logPath)
	if err != nil {
		return e.failf(exitFail, "replay-log: %v", err)
	}
	defer lf.Close()
	if *list {
		marks, err := logwrites.Marks(lf)
		for _, m := range marks {
			fmt.Fprintln(e.stdout, m)
		}
		if err != nil {
			return e.failf(exitFail, "replay-log: %s: %v", *logPath, err)
		}
		return exitOK
	}
	tf, err := os.OpenFile(*target, os.O_RDWR, 0)
	if err != nil {
		return e.failf(exitFail, "replay-log: %v", err)
	}
	defer tf.Close()
	size, err := tf.Seek(0, io.SeekEnd)
	if err != nil {
		return e.failf(exitFail, "replay-log: size of %s: %v", *target, err)
	}
	st, err := logwrites.Replay(lf, tf, size, *endMark)
	if err == nil {
		// What was replayed is on the target before anything mounts it.
		err = tf.Sync()
	}
	if err != nil {
		return e.failf(exitFail, "replay-log: %s onto %s: %v", *logPath, *target, err)
	}
	upTo := "the end of the log"
	if *endMark != "" {
		upTo = fmt.Sprintf("mark %q", *endMark)
	}
	fmt.Fprintf(e.stdout, "replay-log: %d entries up to %s: %d writes, %d discards, %d flushes, %d marks, %d bytes\n",
		st.Entries, upTo, st.Writes, st.Discards, st.Flushes, st.Marks, st.Bytes)
	return exitOK
}
