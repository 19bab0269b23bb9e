package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/tgt"
	"github.com/btrfsdio/btrfsdio/tgt/btrfs"
	"github.com/btrfsdio/btrfsdio/ublk"
)

type fakeReporter struct{ st btrfsdio.Stats }

func (f *fakeReporter) Status() tgt.Status { return btrfs.Status{Stats: f.st} }

// fakeIO is a device that served writes of 4 KiB taking 100 µs and reads
// of 8 KiB taking 1 ms, n of each.
func fakeIO(n uint64) ublk.IOSnapshot {
	snap := ublk.IOSnapshot{}
	for _, op := range ublk.StatOpNames() {
		snap[op] = ublk.OpStats{}
	}
	w := ublk.OpStats{IOs: n, Bytes: n * 4096, LatencySumUs: n * 100, LatencyMaxUs: 100}
	w.Latency[ublk.LatencyBucketIndex(100)] = n
	r := ublk.OpStats{IOs: n, Bytes: n * 8192, Errors: 0, LatencySumUs: n * 1000, LatencyMaxUs: 1000}
	r.Latency[ublk.LatencyBucketIndex(1000)] = n
	snap["write"], snap["read"] = w, r
	return snap
}

// A publisher writing for device 7 into a private run directory, with a
// Prometheus file; n is how many requests of each kind it reports.
func testPublisher(t *testing.T, n *uint64) *statsPublisher {
	dir := t.TempDir()
	t.Setenv(envRunDir, dir)
	log := logrus.New()
	log.SetOutput(os.Stderr)
	return &statsPublisher{id: 7, typ: "btrfsdio", started: time.Now().Add(-time.Minute), io: func() ublk.IOSnapshot { return fakeIO(*n) },
		target: &fakeReporter{btrfsdio.Stats{ReadRepairs: 2, CsumErrors: 3, Commits: 5, CommitNs: 5e6, CommitMaxNs: 2e6,
			BouncePoolLimit: 32 << 20, BouncePoolInUse: 1 << 20, BouncePoolWaits: 4, VolatileWrites: 1, VolatileChecked: 9}},
		path: statsFilePath(7), promPath: filepath.Join(dir, "btrfsdio_ublk7.prom"), log: log}
}

// The stats file has the documented schema (docs/json.md, stats).
func TestStatsFileSchema(t *testing.T) {
	n := uint64(10)
	p := testPublisher(t, &n)
	p.publish()
	b, err := os.ReadFile(p.path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema_version", "command", "version", "kernel", "time", "exit_status", "dev_id", "pid",
		"type", "started", "uptime_seconds", "seq", "io", "target"} {
		if _, ok := m[k]; !ok {
			t.Errorf("stats file: no %q", k)
		}
	}
	if m["command"] != "stats" || m["dev_id"] != 7.0 || m["pid"] != float64(os.Getpid()) || m["seq"] != 1.0 {
		t.Errorf("stats file header: %v %v %v %v", m["command"], m["dev_id"], m["pid"], m["seq"])
	}
	io := m["io"].(map[string]any)
	if len(io) != 5 {
		t.Errorf("io has %d operations: %v", len(io), io)
	}
	w := io["write"].(map[string]any)
	for _, k := range []string{"ios", "bytes", "errors", "latency_us", "latency_sum_us", "latency_hist"} {
		if _, ok := w[k]; !ok {
			t.Errorf("io.write: no %q", k)
		}
	}
	lat := w["latency_us"].(map[string]any)
	if w["ios"] != 10.0 || w["bytes"] != 40960.0 || lat["p50"].(float64) < 100 || lat["p50"].(float64) > 125 || lat["max"] != 100.0 {
		t.Errorf("io.write: %v", w)
	}
	target := m["target"].(map[string]any)
	for k, want := range map[string]float64{"read_repairs": 2, "csum_errors": 3, "commits": 5, "commit_ns": 5e6, "commit_max_ns": 2e6,
		"bounce_pool_in_use": 1 << 20, "bounce_pool_limit": 32 << 20, "bounce_pool_waits": 4, "volatile_writes": 1, "volatile_checked": 9} {
		if target[k] != want {
			t.Errorf("target.%s = %v, want %v", k, target[k], want)
		}
	}
	if fi, err := os.Stat(p.path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("stats file mode: %v %v", fi.Mode(), err)
	}
}

// stats prints the table, --json the file's object, and -w the interval's
// rates and the target counters that changed; a file whose server is
// gone is an error.
func TestStatsCommand(t *testing.T) {
	n := uint64(10)
	p := testPublisher(t, &n)
	p.publish()
	code, out, stderr := runCLI(t, nil, "stats", "-n", "7")
	if code != exitOK || stderr != "" {
		t.Fatalf("stats: exit %d %q", code, stderr)
	}
	for _, re := range []string{`(?m)^device 7: btrfsdio, pid \d+, up 1m\d+s$`,
		`(?m)^read +10 +80\.0 KiB +0 +1\.0ms +1\.0ms +1\.0ms +1\.0ms +1\.0ms$`,
		`(?m)^write +10 +40\.0 KiB +0 +1\d\dus +1\d\dus +1\d\dus +1\d\dus +100us$`,
		`(?m)^flush +0 +0 B +0 +- +- +- +- +-$`,
		`(?m)^  read_repairs +2$`, `(?m)^  commit_ns +5ms$`, `(?m)^  bounce_pool_limit +32\.0 MiB$`, `(?m)^  bounce_pool_waits +4$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("stats output lacks %s:\n%s", re, out)
		}
	}
	code, out, _ = runCLI(t, nil, "stats", "-n", "7", "--json")
	var s statsJSON
	if err := json.Unmarshal([]byte(out), &s); code != exitOK || err != nil || s.IO["read"].Bytes != 81920 {
		t.Errorf("stats --json: exit %d %v %+v", code, err, s.IO["read"])
	}

	// -w: between the two reports the device serves 20 more of each.
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(100 * time.Millisecond)
		n2 := uint64(30)
		p.io = func() ublk.IOSnapshot { return fakeIO(n2) }
		p.target.(*fakeReporter).st.ReadRepairs = 5
		p.publish()
	}()
	code, out, stderr = runCLI(t, nil, "stats", "-n", "7", "-w", "0.3", "-c", "2", "--json")
	<-done
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 2 {
		t.Fatalf("stats -w 0.3 -c 2 --json: exit %d, %d lines %q %q", code, len(lines), out, stderr)
	}
	var second statsJSON
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil || second.Delta == nil {
		t.Fatalf("second line: %v %q", err, lines[1])
	}
	if d := second.Delta; d.IO["write"].IOs != 20 || d.IO["read"].Bytes != 20*8192 || d.Target["read_repairs"] != 3 || d.Target["commits"] != 0 {
		t.Errorf("delta: %+v", d)
	}
}

// The publisher writes at once, again on SIGUSR1 (what stats sends), and
// removes both files when stopped; the Prometheus file is in the text
// exposition format.
func TestStatsPublisherAndProm(t *testing.T) {
	n := uint64(10)
	p := testPublisher(t, &n)
	stop := startStatsPublisher(p)
	s, err := loadStats(7)
	if err != nil || s.Seq != 1 {
		t.Fatalf("first write: %v seq %d", err, s.Seq)
	}
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	deadline := time.Now().Add(5 * time.Second)
	for s.Seq == 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		s, _ = loadStats(7)
	}
	if s.Seq < 2 {
		t.Error("SIGUSR1 did not make the server publish")
	}
	prom, err := os.ReadFile(p.promPath)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	for _, path := range []string{p.path, p.promPath} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s left after stop: %v", path, err)
		}
	}
	sample := regexp.MustCompile(`^btrfsdio_[a-z0-9_]+\{dev="7"(,op="[a-z_]+")?(,quantile="[0-9.]+")?\} [-+0-9.e]+$`)
	for _, l := range strings.Split(strings.TrimSpace(string(prom)), "\n") {
		if !strings.HasPrefix(l, "# HELP ") && !strings.HasPrefix(l, "# TYPE ") && !sample.MatchString(l) {
			t.Errorf("not a Prometheus sample: %q", l)
		}
	}
	for _, want := range []string{
		`btrfsdio_io_requests_total{dev="7",op="write"} 10`,
		`btrfsdio_io_bytes_total{dev="7",op="read"} 81920`,
		`btrfsdio_io_latency_seconds{dev="7",op="read",quantile="0.99"} 0.001`,
		`btrfsdio_io_latency_seconds_count{dev="7",op="write"} 10`,
		"# TYPE btrfsdio_read_repairs_total counter\nbtrfsdio_read_repairs_total{dev=\"7\"} 2",
		"# TYPE btrfsdio_bounce_pool_in_use gauge\nbtrfsdio_bounce_pool_in_use{dev=\"7\"} 1048576",
		`btrfsdio_commit_ns_total{dev="7"} 5000000`,
	} {
		if !strings.Contains(string(prom), want) {
			t.Errorf("prom file lacks %q:\n%s", want, prom)
		}
	}
}

func TestStatsErrors(t *testing.T) {
	t.Setenv(envRunDir, t.TempDir())
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"stats"}, exitUsage, "missing -n ID"},
		{[]string{"stats", "-n", "3", "-c", "2"}, exitUsage, "-c needs -w SECONDS"},
		{[]string{"stats", "-n", "3", "-w", "-1"}, exitUsage, "-w -1: seconds between reports"},
		{[]string{"stats", "-n", "3"}, exitFail, "device 3: no counters in "},
	} {
		code, _, stderr := runCLI(t, nil, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("%q: exit %d %q, want %d and %q", c.args, code, stderr, c.code, c.msg)
		}
	}
	// A file left by a server that is gone.
	s := statsJSON{jsonHeader: jsonHeader{SchemaVersion: statsSchemaVersion}, DevID: 4, PID: 1 << 30}
	b, _ := json.Marshal(s)
	os.WriteFile(statsFilePath(4), b, 0o600)
	if code, _, stderr := runCLI(t, nil, "stats", "-n", "4"); code != exitFail || !strings.Contains(stderr, "is gone") {
		t.Errorf("stale file: exit %d %q", code, stderr)
	}
}
