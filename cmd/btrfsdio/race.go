package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	registerCommand(&command{
		name:    "race",
		summary: "write (or read) 1 MiB O_DIRECT blocks to a device while other threads keep modifying the buffer (bugzilla 99171)",
		usage:   "-d DEV [--writes N] [--span MiB] [--threads T] [--bs BYTES] [--read]",
		run:     runRace,
	})
}

func runRace(e *env, args []string) int {
	fs := newFlags("race")
	dev := fs.StringP("device", "d", "", "block device, e.g. /dev/ublkb0")
	writes := fs.Int("writes", 2000, "number of IOs")
	span := fs.Int("span", 64, "MiB of the device to cycle over")
	threads := fs.Int("threads", 2, "threads modifying the buffer")
	bs := fs.Int("bs", 1<<20, "IO size in bytes (multiple of 4096)")
	read := fs.Bool("read", false, "race O_DIRECT reads instead of writes")
	asJSON := fs.Bool("json", false, "print the result as one JSON object (docs/json.md)")
	if code, done := parseArgs(e, fs, args); done {
		return code
	}
	switch {
	case *dev == "":
		return e.failf(exitUsage, "race: -d DEV is required")
	case *writes <= 0 || *span <= 0 || *threads < 0:
		return e.failf(exitUsage, "race: --writes and --span must be positive, --threads not negative")
	case *bs <= 0 || *bs%4096 != 0 || *bs > *span<<20:
		return e.failf(exitUsage, "race: --bs must be a positive multiple of 4096 no larger than --span")
	}
	f, err := os.OpenFile(*dev, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		return e.failf(exitFail, "race: %v", err)
	}
	defer f.Close()
	// The buffer is mmapped: page aligned for O_DIRECT, and outside the Go
	// heap, which the scribblers race on deliberately.
	buf, err := unix.Mmap(-1, 0, *bs, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return e.failf(exitFail, "race: mmap: %v", err)
	}
	defer unix.Munmap(buf)
	for i := range buf {
		buf[i] = byte(i * 13)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for t := 0; t < *threads; t++ {
		wg.Add(1)
		go func(t int) {
			defer wg.Done()
			v := byte(t)
			for !stop.Load() {
				for i := t * 64; i < len(buf); i += 509 {
					buf[i] = v
					v++
				}
			}
		}(t)
	}
	blocks := int64(*span<<20) / int64(*bs)
	start := time.Now()
	var ioErr error
	for i := 0; i < *writes && ioErr == nil; i++ {
		off := (int64(i) % blocks) * int64(*bs)
		if *read {
			_, ioErr = unix.Pread(int(f.Fd()), buf, off)
		} else {
			_, ioErr = unix.Pwrite(int(f.Fd()), buf, off)
		}
	}
	stop.Store(true)
	wg.Wait()
	if ioErr != nil {
		return e.failf(exitFail, "race: IO error: %v", ioErr)
	}
	if err := f.Sync(); err != nil {
		return e.failf(exitFail, "race: fsync: %v", err)
	}
	el := time.Since(start).Seconds()
	op := "writes"
	if *read {
		op = "reads"
	}
	rate := float64(*writes) * float64(*bs) / (1 << 20) / el
	if *asJSON {
		if err := writeJSON(e.stdout, raceJSON{jsonHeader: newJSONHeader("race", exitOK), Device: *dev, Op: strings.TrimSuffix(op, "s"),
			IOs: *writes, BytesPerIO: *bs, Scribblers: *threads, Seconds: el, MiBPerSecond: rate}); err != nil {
			return e.failf(exitFail, "race: %v", err)
		}
		return exitOK
	}
	fmt.Fprintf(e.stdout, "race: %d %s of %d bytes with %d scribblers in %.1fs (%.1f MiB/s)\n",
		*writes, op, *bs, *threads, el, rate)
	return exitOK
}

// raceJSON is race --json (docs/json.md).
type raceJSON struct {
	jsonHeader
	Device       string  `json:"device"`
	Op           string  `json:"op"` // write or read
	IOs          int     `json:"ios"`
	BytesPerIO   int     `json:"bytes_per_io"`
	Scribblers   int     `json:"scribblers"`
	Seconds      float64 `json:"seconds"`
	MiBPerSecond float64 `json:"mib_per_second"`
}
