package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/tgt"
	"github.com/btrfsdio/btrfsdio/tgt/btrfs"
	"github.com/btrfsdio/btrfsdio/ublk"
)

// fakeStats is a target whose volatile write counter the test moves.
type fakeStats struct{ changed, checked atomic.Int64 }

func (f *fakeStats) Status() tgt.Status {
	return btrfs.Status{Stats: btrfsdio.Stats{VolatileWrites: f.changed.Load(), VolatileChecked: f.checked.Load()}}
}

// statusJSON is st as a server records it in its run file.
func statusJSON(t *testing.T, st btrfsdio.Stats) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(btrfs.Status{Stats: st})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRunStatsRefresh: the server's counters reach the run file that `list`
// reads while it runs, atomically (no temporary file left behind), and a
// change in flight is logged.
func TestRunStatsRefresh(t *testing.T) {
	t.Setenv(envRunDir, t.TempDir())
	path := runFilePath(7)
	ri := runInfo{DevID: 7, PID: 99, Type: "btrfsdio"}
	if err := writeRunFile(path, &ri); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logs)
	src := &fakeStats{}
	stop := refreshRunStats(path, ri, src, 5*time.Millisecond, log)
	src.checked.Store(10)
	src.changed.Store(3)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := readRunInfo(7, 99)
		var st btrfsdio.Stats
		if got != nil && json.Unmarshal(got.Stats, &st) == nil && st.VolatileWrites == 3 && got.StatsTime != "" {
			break
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("run file never showed the counters: %+v", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*.tmp"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	for _, want := range []string{"3 write(s) changed their buffer while in flight", "3 of 10 zero-copy writes"} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("log lacks %q:\n%s", want, logs.String())
		}
	}
	var b bytes.Buffer
	printDevice(&b, ublk.Status{}, readRunInfo(7, 99))
	if !strings.Contains(b.String(), "zero-copy writes changed in flight: 3 of 10") {
		t.Fatalf("list does not show the counter:\n%s", b.String())
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("run file: %v %v", st, err)
	}
}

// TestListShowsReadOnly: a device that stopped taking writes after a
// failed flush says so, and why, in `list`, and `recover` refuses it.
func TestListShowsReadOnly(t *testing.T) {
	t.Setenv(envRunDir, t.TempDir())
	why := "transaction aborted while flushing data: raid: /img FLUSH at 0 (+0): input/output error"
	ri := runInfo{DevID: 8, PID: 99, Type: "btrfsdio", Stats: statusJSON(t, btrfsdio.Stats{ReadOnly: why})}
	if err := writeRunFile(runFilePath(8), &ri); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	printDevice(&b, ublk.Status{}, readRunInfo(8, 99))
	if !strings.Contains(b.String(), "READ-ONLY after a failure: "+why) {
		t.Fatalf("list does not show the read-only state:\n%s", b.String())
	}
	// recover does not bring it back writable; a writable one recovers.
	if err := refuseReadOnly(readRunInfo(8, 99)); err == nil || !strings.Contains(err.Error(), "check the images") {
		t.Fatalf("recover of a read-only device: %v", err)
	}
	if err := refuseReadOnly(&runInfo{DevID: 9, Type: "btrfsdio", Stats: statusJSON(t, btrfsdio.Stats{})}); err != nil {
		t.Fatalf("recover of a writable device: %v", err)
	}
}
