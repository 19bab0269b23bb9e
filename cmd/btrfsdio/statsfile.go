package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/tgt"
	"github.com/btrfsdio/btrfsdio/ublk"
)

// A server publishes its counters for `btrfsdio stats` in
// $BTRFSDIO_RUN_DIR/ublkN.stats.json, rewritten atomically (a temporary
// file and a rename) every statsInterval and at once on SIGUSR1, which
// `stats` sends so it reads numbers of now. The ublk package counts the
// generic IO (ublk.IOStats); the target adds its own through tgt.Reporter
// (btrfs: read repairs, checksum errors, bounce pool, volatile buffers,
// commits). The same numbers go to a Prometheus text file for
// node_exporter's textfile collector when asked (add --prom-file) or when
// its default directory exists.

const statsInterval = time.Second

// defaultPromDir is node_exporter's textfile collector directory on Debian
// (prometheus-node-exporter's --collector.textfile.directory).
const defaultPromDir = "/var/lib/node_exporter/textfile_collector"

// statsSchemaVersion is the version of statsJSON (docs/json.md, `stats`).
const statsSchemaVersion = 1

// statsJSON is the stats file and `stats --json` (docs/json.md).
type statsJSON struct {
	jsonHeader
	DevID         uint32                `json:"dev_id"`
	PID           int                   `json:"pid"`
	Type          string                `json:"type"`
	Started       string                `json:"started"` // RFC 3339, UTC
	UptimeSeconds float64               `json:"uptime_seconds"`
	Seq           uint64                `json:"seq"` // counts the writes, so stats sees a fresh one
	IO            map[string]opStatJSON `json:"io"`
	Target        map[string]any        `json:"target,omitempty"`
	// Delta is what changed since the previous line (stats -w --json).
	Delta *statsDeltaJSON `json:"delta,omitempty"`
}

// opStatJSON is one operation's counters.
type opStatJSON struct {
	IOs          uint64            `json:"ios"`
	Bytes        uint64            `json:"bytes"`
	Errors       uint64            `json:"errors"`
	LatencyUs    map[string]uint64 `json:"latency_us"` // p50 p90 p99 p99_9 max
	LatencySumUs uint64            `json:"latency_sum_us"`
	// LatencyHist holds the non-empty buckets: [largest µs, requests].
	LatencyHist [][2]uint64 `json:"latency_hist"`
}

// statsDeltaJSON is stats -w --json's change over one interval.
type statsDeltaJSON struct {
	Seconds float64               `json:"seconds"`
	IO      map[string]opStatJSON `json:"io"`
	Rates   map[string]rateJSON   `json:"rates"`
	Target  map[string]float64    `json:"target,omitempty"`
}

type rateJSON struct {
	IOPS        float64 `json:"iops"`
	BytesPerSec float64 `json:"bytes_per_sec"`
}

// percentiles are the latency_us keys.
var percentiles = []struct {
	key string
	p   float64
}{{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}, {"p99_9", 0.999}}

func opJSON(o ublk.OpStats) opStatJSON {
	j := opStatJSON{IOs: o.IOs, Bytes: o.Bytes, Errors: o.Errors, LatencySumUs: o.LatencySumUs,
		LatencyUs: map[string]uint64{"max": o.LatencyMaxUs}, LatencyHist: [][2]uint64{}}
	for _, p := range percentiles {
		j.LatencyUs[p.key] = o.Percentile(p.p)
	}
	for i, c := range o.Latency {
		if c > 0 {
			j.LatencyHist = append(j.LatencyHist, [2]uint64{ublk.LatencyBucketUpper(i), c})
		}
	}
	return j
}

// opStats reads an opStatJSON back, histogram included.
func (j opStatJSON) opStats() ublk.OpStats {
	o := ublk.OpStats{IOs: j.IOs, Bytes: j.Bytes, Errors: j.Errors, LatencySumUs: j.LatencySumUs, LatencyMaxUs: j.LatencyUs["max"]}
	for _, b := range j.LatencyHist {
		o.Latency[ublk.LatencyBucketIndex(b[0])] += b[1]
	}
	return o
}

// newStatsJSON assembles the counters of now.
func newStatsJSON(id uint32, typ string, started time.Time, seq uint64, io ublk.IOSnapshot, st tgt.Status) statsJSON {
	s := statsJSON{jsonHeader: newJSONHeader("stats", exitOK), DevID: id, PID: os.Getpid(), Type: typ,
		Started: started.UTC().Format(time.RFC3339), UptimeSeconds: time.Since(started).Seconds(), Seq: seq,
		IO: map[string]opStatJSON{}}
	s.SchemaVersion = statsSchemaVersion
	for name, o := range io {
		s.IO[name] = opJSON(o)
	}
	if st != nil {
		if b, err := json.Marshal(st); err == nil {
			json.Unmarshal(b, &s.Target)
		}
	}
	return s
}

func statsFilePath(id uint32) string {
	return filepath.Join(runDir(), fmt.Sprintf("ublk%d.stats.json", id))
}

// writeFileAtomic writes b to path through a temporary file in the same
// directory and a rename, so readers see the old file or the new one,
// never half of one; mode is the file's.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// promFilePath is where the Prometheus text goes: --prom-file, else the
// textfile collector's directory when it exists, else nowhere ("").
func promFilePath(flag string, id uint32) string {
	if flag != "" {
		return flag
	}
	if st, err := os.Stat(defaultPromDir); err == nil && st.IsDir() {
		return filepath.Join(defaultPromDir, fmt.Sprintf("btrfsdio_ublk%d.prom", id))
	}
	return ""
}

// promName makes a Prometheus metric name of a JSON key.
func promName(key string) string {
	return "btrfsdio_" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, strings.ToLower(key))
}

// promGauge says whether a target counter is a level rather than a total.
func promGauge(key string) bool {
	for _, w := range []string{"in_use", "limit", "peak", "max", "resync"} {
		if strings.Contains(key, w) {
			return true
		}
	}
	return false
}

// renderProm writes s in Prometheus' text exposition format: per operation
// the requests, bytes and errors (counters) and the latency (a summary:
// quantiles, sum and count, in seconds); then every numeric target
// counter; all labelled with the device.
func renderProm(s statsJSON) []byte {
	var b bytes.Buffer
	dev := fmt.Sprintf("dev=\"%d\"", s.DevID)
	ops := make([]string, 0, len(s.IO))
	for op := range s.IO {
		ops = append(ops, op)
	}
	sort.Slice(ops, func(i, j int) bool { return opOrder(ops[i]) < opOrder(ops[j]) })
	for _, m := range []struct {
		name, help string
		v          func(opStatJSON) uint64
	}{
		{"btrfsdio_io_requests_total", "Requests the device's server answered, by operation.", func(o opStatJSON) uint64 { return o.IOs }},
		{"btrfsdio_io_bytes_total", "Bytes of the requests that succeeded, by operation.", func(o opStatJSON) uint64 { return o.Bytes }},
		{"btrfsdio_io_errors_total", "Requests answered with an error, by operation.", func(o opStatJSON) uint64 { return o.Errors }},
	} {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", m.name, m.help, m.name)
		for _, op := range ops {
			fmt.Fprintf(&b, "%s{%s,op=\"%s\"} %d\n", m.name, dev, op, m.v(s.IO[op]))
		}
	}
	fmt.Fprintf(&b, "# HELP btrfsdio_io_latency_seconds Time the target took on a request (quantiles from 25%%-wide buckets).\n# TYPE btrfsdio_io_latency_seconds summary\n")
	for _, op := range ops {
		o := s.IO[op]
		for _, p := range percentiles {
			fmt.Fprintf(&b, "btrfsdio_io_latency_seconds{%s,op=\"%s\",quantile=\"%g\"} %g\n", dev, op, p.p, float64(o.LatencyUs[p.key])/1e6)
		}
		fmt.Fprintf(&b, "btrfsdio_io_latency_seconds_sum{%s,op=\"%s\"} %g\n", dev, op, float64(o.LatencySumUs)/1e6)
		fmt.Fprintf(&b, "btrfsdio_io_latency_seconds_count{%s,op=\"%s\"} %d\n", dev, op, o.IOs)
	}
	for _, k := range sortedKeys(s.Target) {
		v, ok := s.Target[k].(float64)
		if !ok {
			continue
		}
		name, typ := promName(k), "gauge"
		if !promGauge(k) {
			name, typ = name+"_total", "counter"
		}
		fmt.Fprintf(&b, "# TYPE %s %s\n%s{%s} %s\n", name, typ, name, dev, promFloat(v))
	}
	fmt.Fprintf(&b, "# TYPE btrfsdio_uptime_seconds gauge\nbtrfsdio_uptime_seconds{%s} %g\n", dev, s.UptimeSeconds)
	return b.Bytes()
}

func promFloat(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%g", v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// opOrder puts operations in UAPI order, unknown ones last.
func opOrder(op string) int {
	for i, n := range ublk.StatOpNames() {
		if n == op {
			return i
		}
	}
	return len(ublk.StatOpNames())
}

// statsPublisher writes a device's stats file (and Prometheus file) every
// statsInterval and on SIGUSR1 until stopped.
type statsPublisher struct {
	id       uint32
	typ      string
	started  time.Time
	io       func() ublk.IOSnapshot
	target   tgt.Reporter // nil for a target without a Status
	path     string
	promPath string
	log      logrus.FieldLogger
	seq      uint64
	warned   bool
}

// publish writes both files once; a failure is logged once, not fatal:
// only stats and the Prometheus scrape lose the numbers.
func (p *statsPublisher) publish() {
	p.seq++
	var st tgt.Status
	if p.target != nil {
		st = p.target.Status()
	}
	s := newStatsJSON(p.id, p.typ, p.started, p.seq, p.io(), st)
	b, err := json.MarshalIndent(s, "", "  ")
	if err == nil {
		err = writeFileAtomic(p.path, append(b, '\n'), 0o600)
	}
	if err == nil && p.promPath != "" {
		err = writeFileAtomic(p.promPath, renderProm(s), 0o644)
	}
	if err != nil && !p.warned {
		p.warned = true
		p.log.Warnf("cannot publish counters for 'stats': %v", err)
	}
}

// startStatsPublisher starts publishing; the returned function stops it
// and removes the files (the device is gone: nothing to scrape).
func startStatsPublisher(p *statsPublisher) func() {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	p.publish()
	stop := every(statsInterval, usr1, p.publish)
	return func() {
		signal.Stop(usr1)
		stop()
		os.Remove(p.path)
		if p.promPath != "" {
			os.Remove(p.promPath)
		}
	}
}
