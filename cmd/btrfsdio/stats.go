package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/btrfsdio/btrfsdio/ublk"
)

func init() {
	registerCommand(&command{
		name: "stats", usage: "-n ID [--json] [-w SECONDS [-c COUNT]]", run: runStats,
		summary: "show a running device's counters: IO by operation, latency percentiles, the target's counters",
		help: `Per operation (read, write, flush, discard, write_zeroes): requests, bytes,
errors, and the latency percentiles p50 p90 p99 p99.9 and the maximum -- the
target's time on a request, from histogram buckets at most 25% wide. Then the
target's counters (btrfsdio: read repairs, checksum errors, bounce pool in
use, its limit, peak and waits, zero-copy writes whose buffer changed in
flight, commits and their time). The server publishes them in
/run/btrfsdio/ublkN.stats.json every second and when stats asks (SIGUSR1);
with add --prom-file (or node_exporter's textfile directory present) also in
Prometheus' text format. -w repeats every SECONDS with the rates and
latencies of the interval and the counters that changed.`,
	})
}

func runStats(e *env, args []string) int {
	fl := newFlags("stats")
	id := fl.IntP("number", "n", ublk.AnyID, "the device (required, no default)")
	asJSON := fl.Bool("json", false, "the counters as JSON (docs/json.md); with -w one object a line, with the interval's changes")
	watch := fl.Float64P("watch", "w", 0, "repeat every `SECONDS`, with the changes and rates since the last report")
	count := fl.IntP("count", "c", 0, "with -w: stop after N reports (default: until interrupted)")
	if code, done := parseArgs(e, fl, args); done {
		return code
	}
	switch {
	case *id < 0:
		return e.failf(exitUsage, "stats: missing -n ID (a device id >= 0)")
	case *watch < 0 || *watch > 86400:
		return e.failf(exitUsage, "stats: -w %g: seconds between reports, more than 0 and at most a day", *watch)
	case *count < 0:
		return e.failf(exitUsage, "stats: -c %d: a number of reports >= 1", *count)
	case *count > 0 && *watch == 0:
		return e.failf(exitUsage, "stats: -c needs -w SECONDS")
	}
	prev, err := readStats(uint32(*id), 0)
	if err != nil {
		return e.failf(exitFail, "stats: %v", err)
	}
	if err := printStats(e.stdout, prev, nil, *asJSON, *watch > 0); err != nil {
		return e.failf(exitFail, "stats: %v", err)
	}
	if *watch == 0 {
		return exitOK
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	every := time.Duration(*watch * float64(time.Second))
	for n := 1; *count == 0 || n < *count; n++ {
		select {
		case <-sigs:
			return exitOK
		case <-time.After(every):
		}
		cur, err := readStats(uint32(*id), prev.Seq)
		if err != nil {
			return e.failf(exitFail, "stats: %v", err)
		}
		if err := printStats(e.stdout, cur, &prev, *asJSON, true); err != nil {
			return e.failf(exitFail, "stats: %v", err)
		}
		prev = cur
	}
	return exitOK
}

// readStats reads the device's stats file. When the server that wrote it
// is the device's (GET_DEV_INFO's pid), it is asked for fresh numbers
// first (SIGUSR1) and given up to a second to write a file newer than
// both the one on disk and seq.
func readStats(id uint32, seq uint64) (statsJSON, error) {
	s, err := loadStats(id)
	if err != nil {
		return s, err
	}
	if !processAlive(s.PID) {
		return s, fmt.Errorf("device %d: the server that wrote %s (pid %d) is gone", id, statsFilePath(id), s.PID)
	}
	if serverPID(id) != s.PID {
		return s, nil // not the device's server as far as we can tell: never signal a stranger
	}
	seq = max(seq, s.Seq)
	if unix.Kill(s.PID, unix.SIGUSR1) != nil {
		return s, nil
	}
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if fresh, err := loadStats(id); err == nil && fresh.Seq > seq {
			return fresh, nil
		}
	}
	return s, nil
}

// serverPID is the pid the driver records as device id's server, 0 when
// it cannot be asked.
func serverPID(id uint32) int {
	if checkDriver() != nil {
		return 0
	}
	st, err := ublk.List(id)
	if err != nil {
		return 0
	}
	return int(st.Info.SrvPID)
}

func loadStats(id uint32) (statsJSON, error) {
	var s statsJSON
	path := statsFilePath(id)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, fmt.Errorf("device %d: no counters in %s: no btrfsdio server of this version serves it (see 'btrfsdio list -n %d')", id, path, id)
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	if s.SchemaVersion != statsSchemaVersion || s.DevID != id {
		return s, fmt.Errorf("%s: schema %d for device %d, want schema %d for device %d", path, s.SchemaVersion, s.DevID, statsSchemaVersion, id)
	}
	return s, nil
}

// delta is cur minus prev: the interval's requests and the target
// counters that changed.
func delta(cur, prev statsJSON) *statsDeltaJSON {
	d := &statsDeltaJSON{Seconds: cur.UptimeSeconds - prev.UptimeSeconds, IO: map[string]opStatJSON{}, Rates: map[string]rateJSON{}}
	for op, o := range cur.IO {
		dio := o.opStats().Sub(prev.IO[op].opStats())
		j := opJSON(dio)
		delete(j.LatencyUs, "max") // the interval's maximum is not kept
		d.IO[op] = j
		if d.Seconds > 0 {
			d.Rates[op] = rateJSON{IOPS: float64(dio.IOs) / d.Seconds, BytesPerSec: float64(dio.Bytes) / d.Seconds}
		}
	}
	for k, v := range cur.Target {
		f, ok := v.(float64)
		p, pok := prev.Target[k].(float64)
		if ok && pok && f != p {
			if d.Target == nil {
				d.Target = map[string]float64{}
			}
			d.Target[k] = f - p
		}
	}
	return d
}

func printStats(w io.Writer, cur statsJSON, prev *statsJSON, asJSON, lines bool) error {
	if prev != nil {
		cur.Delta = delta(cur, *prev)
	}
	if asJSON {
		if !lines {
			return writeJSON(w, cur)
		}
		b, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	renderStats(w, cur)
	return nil
}

// renderStats prints the counters as a table; with a Delta, the
// interval's rates and latencies and the target counters that changed.
func renderStats(w io.Writer, s statsJSON) {
	ops := make([]string, 0, len(s.IO))
	for op := range s.IO {
		ops = append(ops, op)
	}
	sort.Slice(ops, func(i, j int) bool { return opOrder(ops[i]) < opOrder(ops[j]) })
	d := s.Delta
	if d == nil {
		fmt.Fprintf(w, "device %d: %s, pid %d, up %s\n", s.DevID, s.Type, s.PID, time.Duration(s.UptimeSeconds*float64(time.Second)).Round(time.Second))
		fmt.Fprintf(w, "%-13s %10s %11s %7s %8s %8s %8s %8s %8s\n", "op", "requests", "bytes", "errors", "p50", "p90", "p99", "p99.9", "max")
		for _, op := range ops {
			o := s.IO[op]
			fmt.Fprintf(w, "%-13s %10d %11s %7d %8s %8s %8s %8s %8s\n", op, o.IOs, humanBytes(float64(o.Bytes)), o.Errors,
				fmtUs(o.LatencyUs["p50"]), fmtUs(o.LatencyUs["p90"]), fmtUs(o.LatencyUs["p99"]), fmtUs(o.LatencyUs["p99_9"]), fmtUs(o.LatencyUs["max"]))
		}
		if len(s.Target) > 0 {
			fmt.Fprintf(w, "%s:\n", s.Type)
			for _, k := range sortedKeys(s.Target) {
				fmt.Fprintf(w, "  %-24s %s\n", k, fmtCounter(k, s.Target[k]))
			}
		}
		return
	}
	fmt.Fprintf(w, "device %d: last %.1fs\n", s.DevID, d.Seconds)
	fmt.Fprintf(w, "%-13s %10s %11s %7s %8s %8s %8s %8s\n", "op", "req/s", "bytes/s", "errors", "p50", "p90", "p99", "p99.9")
	for _, op := range ops {
		o, r := d.IO[op], d.Rates[op]
		fmt.Fprintf(w, "%-13s %10.1f %11s %7d %8s %8s %8s %8s\n", op, r.IOPS, humanBytes(r.BytesPerSec), o.Errors,
			fmtUs(o.LatencyUs["p50"]), fmtUs(o.LatencyUs["p90"]), fmtUs(o.LatencyUs["p99"]), fmtUs(o.LatencyUs["p99_9"]))
	}
	keys := make([]string, 0, len(d.Target))
	for k := range d.Target {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-24s %+g (now %s)\n", k, d.Target[k], fmtCounter(k, s.Target[k]))
	}
}

// fmtUs prints a latency in µs with a unit that keeps it short; "-" for
// no requests.
func fmtUs(us uint64) string {
	switch {
	case us == 0:
		return "-"
	case us < 1000:
		return fmt.Sprintf("%dus", us)
	case us < 1000000:
		return fmt.Sprintf("%.1fms", float64(us)/1e3)
	}
	return fmt.Sprintf("%.2fs", float64(us)/1e6)
}

// fmtCounter prints a target counter: durations (_ns) as time, pool and
// byte counters in binary units, the rest as is.
func fmtCounter(key string, v any) string {
	f, ok := v.(float64)
	switch {
	case !ok:
		return fmt.Sprint(v)
	case strings.HasSuffix(key, "_ns"):
		return time.Duration(f).String()
	case strings.HasPrefix(key, "bounce_pool_") && key != "bounce_pool_waits", strings.HasSuffix(key, "_bytes"):
		return humanBytes(f)
	}
	return promFloat(f)
}
