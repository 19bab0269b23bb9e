package main

import (
	"errors"
	"fmt"
	"github.com/btrfsdio/btrfsdio/tgt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/internal/bench"
	"github.com/btrfsdio/btrfsdio/raid"
)

func init() {
	registerCommand(&command{
		name:    "bench",
		summary: "in-process benchmark: the bounce patch's table (zero-copy, pooled bounce, page-by-page bounce as posted; nodatasum vs datasum) next to the raw backing file, then peak RSS and allocations under a QD32 load",
		usage:   "[--profile P] [--size BYTES] [--bs BYTES] [--rounds N] [--bounce-pool SIZE] [--qd N] [--qd-size BYTES] [--dir DIR] [--json FILE] [--svg FILE] | --bitmap [--profile P] [--rounds N] [--qd N] [--bitmap-file BYTES] [--bitmap-writes N] [--bitmap-flush-every N] | --journal-writes N [--profile raid5|raid6] [--rounds N] [--dir DIR] | --flush-scale [--flush-scale-sizes LIST] [--dir DIR]",
		exits: defaultExits + `
  130  SIGINT or SIGTERM stopped it (its images are removed)`,
		run: runBench,
	})
}

func runBench(e *env, args []string) int {
	fs := newFlags("bench")
	profile := fs.String("profile", "raid1", "data profile")
	size := fs.String("size", "256M", "bytes written and read per measurement")
	bs := fs.String("bs", "1M", "IO size")
	rounds := fs.Int("rounds", 3, "repetitions of the whole matrix, and of the QD load (each round in another mode order)")
	dir := fs.String("dir", defaultBenchDir(), "directory for the backing images (in a scratch directory removed at the end, or on SIGINT/SIGTERM)")
	quiet := fs.BoolP("quiet", "q", false, "no progress line (there is none when stderr is not a terminal)")
	jsonOut := fs.String("json", "", "write the result as JSON to FILE (docs/json.md)")
	svgOut := fs.String("svg", "", "write a bar chart to FILE")
	pool := fs.String("bounce-pool", "32M", "pooled bounce mode: bytes of bounce memory held at once (at least 1M)")
	qd := fs.Int("qd", 32, "submitters of the memory load (0: skip it)")
	qdSize := fs.String("qd-size", "256M", "bytes written and read per mode under the memory load")
	bitmap := fs.Bool("bitmap", false, "instead of the matrix: the write-intent bitmap's cost, random 4 KiB NODATACOW overwrites with and without it")
	bitmapFile := fs.String("bitmap-file", "64M", "--bitmap: file size")
	bitmapWrites := fs.Int("bitmap-writes", 20000, "--bitmap: timed writes per pass")
	bitmapFlush := fs.Int("bitmap-flush-every", 32, "--bitmap: a second row with a FLUSH after this many writes per submitter (0: none)")
	journalWrites := fs.Int("journal-writes", 0, "instead of the table: the RAID5/6 journal's cost, N random 4 KiB NODATACOW overwrites with and without it (--profile raid5 or raid6)")
	flushScale := fs.Bool("flush-scale", false, "instead of the table: a FLUSH's bytes and latency against the mapping's size (datasum volumes of --flush-scale-sizes)")
	flushScaleSizes := fs.String("flush-scale-sizes", "64M,1G,16G", "--flush-scale: the sparse volume sizes")
	if code, done := parseArgs(e, fs, args); done {
		return code
	}
	p, err := raid.ParseProfile(*profile)
	if err != nil {
		return e.failf(exitUsage, "bench: --profile: %v", err)
	}
	switch {
	case *rounds < 1:
		return e.failf(exitUsage, "bench: --rounds %d: at least 1", *rounds)
	case *qd < 0:
		return e.failf(exitUsage, "bench: --qd %d: not negative", *qd)
	case (*bitmap || *journalWrites > 0) && (*jsonOut != "" || *svgOut != ""):
		return e.failf(exitUsage, "bench: --json and --svg write the table's results, not those of --bitmap or --journal-writes")
	case *flushScale && (*bitmap || *journalWrites > 0 || *jsonOut != "" || *svgOut != ""):
		return e.failf(exitUsage, "bench: --flush-scale is a run of its own: no --bitmap, --journal-writes, --json or --svg")
	case *bitmap && *journalWrites > 0:
		return e.failf(exitUsage, "bench: --bitmap and --journal-writes are two different runs: give one")
	case *journalWrites < 0:
		return e.failf(exitUsage, "bench: --journal-writes %d: not negative", *journalWrites)
	}
	scratch, cleanup, err := benchScratch(e, *dir)
	if err != nil {
		return e.failf(exitFail, "bench: --dir: %v", err)
	}
	defer cleanup()
	*dir = scratch
	prog := newProgress(e, *quiet, "bench", 0)
	if *bitmap {
		return runBitmapBench(prog, e, p, *dir, *bitmapFile, *bitmapWrites, *qd, *bitmapFlush, *rounds)
	}
	if *flushScale {
		return runFlushScaleBench(e, *flushScaleSizes, *dir)
	}
	if *journalWrites > 0 {
		return runJournalBench(e, p, *journalWrites, *rounds, *dir)
	}
	n, err := tgt.ParseSize(*size)
	if err != nil {
		return e.failf(exitUsage, "bench: --size: %v", err)
	}
	b, err := tgt.ParseSize(*bs)
	if err == nil && (b%btrfsdio.SectorSize != 0 || b > n) {
		err = fmt.Errorf("%q: a multiple of %d, at most --size (%s)", *bs, btrfsdio.SectorSize, *size)
	}
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
	if err == nil && *qd > 0 && qdBytes < int64(*qd)<<20 {
		err = fmt.Errorf("%q: the load needs at least 1M per submitter (--qd %d)", *qdSize, *qd)
	}
	if err != nil {
		return e.failf(exitUsage, "bench: --qd-size: %v", err)
	}
	// The output files are opened before minutes of measuring, so a path
	// that cannot be written fails now.
	var outs []*outputFile
	defer func() {
		for _, o := range outs {
			o.abandon()
		}
	}()
	for _, path := range []string{*jsonOut, *svgOut} {
		var o *outputFile
		if path != "" {
			if o, err = openOutput(path); err != nil {
				return e.failf(exitFail, "bench: %v", err)
			}
		}
		outs = append(outs, o)
	}
	cfg := bench.Config{Dir: *dir, Profile: p, Bytes: n, BS: int(b), Rounds: *rounds,
		BouncePool: poolBytes, QD: *qd, QDBytes: qdBytes}
	res, err := bench.Run(cfg, func(round, rounds int, what string) {
		prog.note(fmt.Sprintf("round %d/%d: %s", round, rounds, what))
	})
	prog.done()
	if err != nil {
		return e.failf(exitFail, "%v", err)
	}
	res.WriteTable(e.stdout)
	// The header first, then the result's keys (bench.Result.WriteJSON).
	writeJSONResult := func(w io.Writer) error {
		return writeJSON(w, benchJSON{jsonHeader: newJSONHeader("bench", exitOK), Result: res})
	}
	for i, write := range []func(io.Writer) error{writeJSONResult, res.WriteSVG} {
		if outs[i] == nil {
			continue
		}
		err := outs[i].write(write)
		outs[i] = nil
		if err != nil {
			return e.failf(exitFail, "bench: %v", err)
		}
	}
	return exitOK
}

// benchJSON is bench --json FILE (docs/json.md): the header, then the
// result.
type benchJSON struct {
	jsonHeader
	*bench.Result
}

// outputFile is a --json or --svg file, opened before the run.
type outputFile struct {
	f       *os.File
	path    string
	created bool // abandon removes it
}

// openOutput opens path for writing without truncating what it holds:
// that happens only when the results are there (write).
func openOutput(path string) (*outputFile, error) {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &outputFile{f: f, path: path, created: errors.Is(statErr, os.ErrNotExist)}, nil
}

// write replaces the file's content with what fn writes and closes it.
func (o *outputFile) write(fn func(io.Writer) error) error {
	err := o.f.Truncate(0)
	if err == nil {
		err = fn(o.f)
	}
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", o.path, err)
	}
	return nil
}

// abandon closes a file the run did not get to write, removing it if the
// run created it; nil does nothing.
func (o *outputFile) abandon() {
	if o == nil {
		return
	}
	o.f.Close()
	if o.created {
		os.Remove(o.path)
	}
}

// runBitmapBench is bench --bitmap: the write-intent bitmap's cost.
func runBitmapBench(prog *progress, e *env, p raid.Profile, dir, file string, writes, qd, flushEvery, rounds int) int {
	n, err := tgt.ParseSize(file)
	if err == nil && n < 1<<20 {
		err = fmt.Errorf("%q: at least 1M", file)
	}
	switch {
	case err != nil:
		return e.failf(exitUsage, "bench: --bitmap-file: %v", err)
	case writes < 1:
		return e.failf(exitUsage, "bench: --bitmap-writes %d: at least 1", writes)
	case flushEvery < 0:
		return e.failf(exitUsage, "bench: --bitmap-flush-every %d: not negative", flushEvery)
	}
	cfg := bench.BitmapConfig{Dir: dir, Profile: p, File: n, Writes: writes, QD: max(qd, 1), FlushEvery: flushEvery, Rounds: rounds}
	rows, err := bench.RunBitmap(cfg, func(round, rounds int, what string) {
		prog.note(fmt.Sprintf("round %d/%d: %s", round, rounds, what))
	})
	prog.done()
	if err != nil {
		return e.failf(exitFail, "%v", err)
	}
	bench.WriteBitmapTable(e.stdout, cfg, rows)
	return exitOK
}

// benchScratch makes the directory the run's images go in, below dir,
// and removes it when the run ends or when SIGINT or SIGTERM stops it
// (then bench exits 130): gigabytes of images must not stay in /dev/shm.
func benchScratch(e *env, dir string) (string, func(), error) {
	scratch, err := os.MkdirTemp(dir, "btrfsdio-bench-")
	if err != nil {
		return "", nil, err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			os.RemoveAll(scratch)
			fmt.Fprintf(e.stderr, "\nbtrfsdio: bench: stopped by %v; %s removed\n", s, scratch)
			os.Exit(exitInterrupted)
		case <-done:
		}
	}()
	return scratch, func() {
		signal.Stop(sigs)
		close(done)
		os.RemoveAll(scratch)
	}, nil
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

// runFlushScaleBench is bench --flush-scale (issue 17 point 3).
func runFlushScaleBench(e *env, sizes, dir string) int {
	cfg := bench.FlushScaleConfig{Dir: dir, Stride: 64 << 10, Writes: 1000, FlushEvery: 16}
	for _, s := range strings.Split(sizes, ",") {
		n, err := tgt.ParseSize(s)
		if err == nil && n < 64<<20 {
			err = fmt.Errorf("at least 64M")
		}
		if err != nil {
			return e.failf(exitUsage, "bench: --flush-scale-sizes %q: %v", s, err)
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	rows, err := bench.FlushScale(cfg)
	if err != nil {
		return e.failf(exitFail, "%v", err)
	}
	bench.WriteFlushScale(e.stdout, cfg, rows)
	return exitOK
}
