package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btrfsdio/btrfsdio/ublk"
	"github.com/sirupsen/logrus/hooks/test"
)

// TestProfileCPUOff: BTRFSDIO_PROFILE_CPU=0 keeps the per-request counters
// and leaves the CPU profile out; without it both are written.
func TestProfileCPUOff(t *testing.T) {
	for _, cpu := range []string{"", "0"} {
		dir := t.TempDir()
		t.Setenv(envProfileDir, dir)
		t.Setenv(envProfileCPU, cpu)
		log, _ := test.NewNullLogger()
		p := startProfile(log)
		if p == nil {
			t.Fatalf("%s=%q: no profiler", envProfileCPU, cpu)
		}
		p.served()
		p.stop(&ublk.Device{})
		pid := os.Getpid()
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("ublk-%d.txt", pid)))
		if err != nil || !strings.HasPrefix(string(b), "requests 0\n") {
			t.Errorf("%s=%q: counters %q, %v", envProfileCPU, cpu, b, err)
		}
		_, err = os.Stat(filepath.Join(dir, fmt.Sprintf("cpu-%d.pprof", pid)))
		if want := cpu != "0"; (err == nil) != want {
			t.Errorf("%s=%q: CPU profile written = %v, want %v", envProfileCPU, cpu, err == nil, want)
		}
	}
}
