package main

import (
	"fmt"
	"github.com/btrfsdio/btrfsdio/tgt"
	"os"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/internal/bench"
	"github.com/btrfsdio/btrfsdio/raid"
)

func init() {
	registerCommand(&command{
		name:    "bench",
		summary: "in-process benchmark: the seed's table (zero-copy, pooled bounce, the seed's bounce; nodatasum vs datasum) next to the raw backing file, then peak RSS and allocations under a QD32 load",
		usage:   "[--profile P] [--size BYTES] [--bs BYTES] [--rounds N] [--bounce-pool SIZE] [--qd N] [--qd-size BYTES] [--dir DIR] [--json FILE] [--svg FILE] | --bitmap [--profile P] [--rounds N] [--qd N] [--bitmap-file BYTES] [--bitmap-writes N] [--bitmap-flush-every N] | --journal-writes N [--profile raid5|raid6] [--rounds N] [--dir DIR]",
		run:     runBench,
	})
}

func runBench(e *env, args []string) int {
	fs := newFlags("bench")
	profile := fs.String("profile", "raid1", "data profile")
	size := fs.String("size", "256M", "bytes written and read per measurement")
	bs := fs.String("bs", "1M", "IO size")
	rounds := fs.Int("rounds", 3, "repetitions of the whole matrix")
	dir := fs.String("dir", defaultBenchDir(), "directory for the backing images")
	jsonOut := fs.String("json", "", "write the result as JSON to FILE")
	svgOut := fs.String("svg", "", "write a bar chart to FILE")
	pool := fs.String("bounce-pool", "32M", "pooled bounce mode: bytes of bounce memory held at once (at least 1M)")
	qd := fs.Int("qd", 32, "submitters of the memory load (0: skip it)")
	qdSize := fs.String("qd-size", "256M", "bytes written and read per mode under the memory load")
	bitmap := fs.Bool("bitmap", false, "instead of the matrix: the write-intent bitmap's cost, random 4 KiB NODATACOW overwrites with and without it")
	bitmapFile := fs.String("bitmap-file", "64M", "--bitmap: file size")
	bitmapWrites := fs.Int("bitmap-writes", 20000, "--bitmap: timed writes per pass")
	bitmapFlush := fs.Int("bitmap-flush-every", 32, "--bitmap: a second row with a FLUSH after this many writes per submitter (0: none)")
	journalWrites := fs.Int("journal-writes", 0, "instead of the table: the RAID5/6 journal's cost, N random 4 KiB NODATACOW overwrites with and without it (--profile raid5 or raid6)")
	if code, done := parseArgs(e, fs, args); done {
		return code
	}
	p, err := raid.ParseProfile(*profile)
	if err != nil {
		return e.failf(exitUsage, "bench: --profile: %v", err)
	}
	if *bitmap {
		return runBitmapBench(e, p, *dir, *bitmapFile, *bitmapWrites, *qd, *bitmapFlush, *rounds)
	}
	if *journalWrites > 0 {
		return runJournalBench(e, p, *journalWrites, *rounds, *dir)
	}
	n, err := tgt.ParseSize(*size)
	if err != nil {
		return e.failf(exitUsage, "bench: --size: %v", err)
	}
	b, err := tgt.ParseSize(*bs)
	if err != nil {
		return e.failf(exitUsage, "bench: --bs: %v", err)
	}
	poolBytes, err := tgt.ParseSize(*pool)
	if err == nil {
		err = btrfsdio.CheckBouncePool(poolBytes)
	}
	if err != nil {
		return e.failf(exitUsage, "bench: --bounce-pool %q: %v (want a size such as 32M, at least 1M)", *pool, err)
	}
	qdBytes, err := tgt.ParseSize(*qdSize)
	if err != nil {
		return e.failf(exitUsage, "bench: --qd-size: %v", err)
	}
	cfg := bench.Config{Dir: *dir, Profile: p, Bytes: n, BS: int(b), Rounds: *rounds,
		BouncePool: poolBytes, QD: *qd, QDBytes: qdBytes}
	res, err := bench.Run(cfg, func(round, rounds int, what string) {
		fmt.Fprintf(e.stderr, "\rbench: round %d/%d: %-36s", round, rounds, what)
	})
	fmt.Fprintln(e.stderr)
	if err != nil {
		return e.failf(exitFail, "%v", err)
	}
	res.WriteTable(e.stdout)
	for _, out := range []struct {
		path  string
		write func(f *os.File) error
	}{
		{*jsonOut, func(f *os.File) error { return res.WriteJSON(f) }},
		{*svgOut, func(f *os.File) error { return res.WriteSVG(f) }},
	} {
		if out.path == "" {
			continue
		}
		if err := writeFile(out.path, out.write); err != nil {
			return e.failf(exitFail, "bench: %v", err)
		}
	}
	return exitOK
}

// runBitmapBench is bench --bitmap: the write-intent bitmap's cost.
func runBitmapBench(e *env, p raid.Profile, dir, file string, writes, qd, flushEvery, rounds int) int {
	n, err := tgt.ParseSize(file)
	if err != nil {
		return e.failf(exitUsage, "bench: --bitmap-file: %v", err)
	}
	cfg := bench.BitmapConfig{Dir: dir, Profile: p, File: n, Writes: writes, QD: max(qd, 1), FlushEvery: flushEvery, Rounds: rounds}
	rows, err := bench.RunBitmap(cfg, func(round, rounds int, what string) {
		fmt.Fprintf(e.stderr, "\rbench: round %d/%d: %-36s", round, rounds, what)
	})
	fmt.Fprintln(e.stderr)
	if err != nil {
		return e.failf(exitFail, "%v", err)
	}
	bench.WriteBitmapTable(e.stdout, cfg, rows)
	return exitOK
}

func writeFile(path string, write func(f *os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// defaultBenchDir prefers tmpfs, so the figures measure the port rather
// than a disk.
func defaultBenchDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

// runJournalBench is bench --journal-writes: what the RAID5/6 journal costs.
func runJournalBench(e *env, p raid.Profile, writes, rounds int, dir string) int {
	if !p.IsRaid56() {
		return e.failf(exitUsage, "bench: --journal-writes measures the RAID5/6 journal: --profile raid5 or raid6, not %s", p)
	}
	cfg := bench.JournalConfig{Dir: dir, Profile: p, Devices: p.MinDevices() + 1, DevSize: 256 << 20,
		File: 64 << 20, Writes: writes, Rounds: rounds}
	cells, err := bench.Journal(cfg)
	if err != nil {
		return e.failf(exitFail, "%v", err)
	}
	bench.WriteJournalTable(e.stdout, cfg, cells)
	return exitOK
}
