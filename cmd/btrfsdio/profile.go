package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"

	"github.com/btrfsdio/btrfsdio/ublk"
	"github.com/sirupsen/logrus"
)

// envProfileDir names a directory where the server writes its per-request
// counters (ublk-PID.txt) and a CPU profile of its whole run
// (cpu-PID.pprof), for `make bench-vm-loop` and anyone profiling the data
// plane. envProfileCPU=0 leaves the CPU profile out: its SIGPROF ticks
// interrupt the queue's io_uring_enter, which a throughput figure should
// not pay.
const (
	envProfileDir = "BTRFSDIO_PROFILE_DIR"
	envProfileCPU = "BTRFSDIO_PROFILE_CPU"
)

// profiler is the state of one profiled run.
type profiler struct {
	dir     string
	cpu     *os.File
	mallocs uint64
	log     logrus.FieldLogger
}

// startProfile starts profiling when envProfileDir is set; nil otherwise.
func startProfile(log logrus.FieldLogger) *profiler {
	dir := os.Getenv(envProfileDir)
	if dir == "" {
		return nil
	}
	p := &profiler{dir: dir, log: log}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Warnf("profile: %v", err)
		return nil
	}
	if os.Getenv(envProfileCPU) == "0" {
		return p
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("cpu-%d.pprof", os.Getpid())))
	if err != nil {
		log.Warnf("profile: %v", err)
		return nil
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Warnf("profile: %v", err)
		f.Close()
		return nil
	}
	p.cpu = f
	return p
}

// served marks the start of the serving phase: allocations are counted from here.
func (p *profiler) served() {
	if p == nil {
		return
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p.mallocs = ms.Mallocs
}

// stop ends the CPU profile and writes the counters per request.
func (p *profiler) stop(dev *ublk.Device) {
	if p == nil {
		return
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if p.cpu != nil {
		pprof.StopCPUProfile()
		p.cpu.Close()
	}
	st := dev.QueueStats()
	per := func(v uint64) float64 {
		if st.Requests == 0 {
			return 0
		}
		return float64(v) / float64(st.Requests)
	}
	mallocs := ms.Mallocs - p.mallocs
	text := fmt.Sprintf("requests %d\nio_uring_enter %d (%.3f/req)\nhandoffs %d (%.3f/req)\n"+
		"ring_io %d (%.3f/req)\nfallbacks %d\nwakeups %d (%.3f/req)\nnotifies %d (%.3f/req)\nyields %d (%.3f/req)\nmallocs %d (%.3f/req)\n",
		st.Requests, st.Enters, per(st.Enters), st.Handoffs, per(st.Handoffs), st.RingIO, per(st.RingIO),
		st.Fallbacks, st.Wakeups, per(st.Wakeups), st.Notifies, per(st.Notifies), st.Yields, per(st.Yields), mallocs, per(mallocs))
	name := filepath.Join(p.dir, fmt.Sprintf("ublk-%d.txt", os.Getpid()))
	if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
		p.log.Warnf("profile: %v", err)
	}
}
