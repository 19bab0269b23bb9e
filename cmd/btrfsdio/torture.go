package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

func init() {
	registerCommand(&command{
		name:    "torture",
		summary: "crash-consistency writer: tagged O_DIRECT block writes with a FLUSH every N, state kept in a file; --verify checks a device against it",
		usage:   "-d DEV --state FILE [--writes N] [--flush-every N] [--blocks N] [--random N] | -d DEV --state FILE --verify",
		run:     runTorture,
	})
}

// tortureBS is the block the writer writes and checks: the device's
// logical block size, so that every write is atomic on its own.
const tortureBS = 4096

// tortureMagic starts every block the writer writes.
var tortureMagic = [8]byte{'b', 't', 'r', 't', 'o', 'r', 't', '1'}

// tortureState is what the writer knows about the device, saved in --state
// between runs. For every block: the sequence number of the write it must
// hold (Flushed: the last write before a FLUSH that completed; 0 = never
// written, zeroes) and the writes since then (Later: complete or in flight
// when the writer stopped), any of which the device may also hold after a
// crash.
type tortureState struct {
	Blocks  int64              `json:"blocks"`
	Seq     uint64             `json:"seq"`
	Flushed map[int64]uint64   `json:"flushed"`
	Later   map[int64][]uint64 `json:"later"`
	Writes  int64              `json:"writes"`
	Flushes int64              `json:"flushes"`
}

func runTorture(e *env, args []string) int {
	fs := newFlags("torture")
	dev := fs.StringP("device", "d", "", "block device (or file)")
	statePath := fs.String("state", "", "state file, created on the first run")
	writes := fs.Int64("writes", 1<<40, "stop after this many writes (default: until an I/O error or a signal)")
	flushEvery := fs.Int("flush-every", 16, "fdatasync (a FLUSH) after this many writes")
	blocks := fs.Int64("blocks", 0, "4 KiB blocks to write over (default: the whole device)")
	seed := fs.Uint64("random", 0, "start of the random sequence of blocks written, to repeat a run (default: derived from the writes so far, so every run differs)")
	// --seed, the name before --random, is kept for scripts that use it.
	fs.Uint64Var(seed, "seed", 0, "same as --random")
	fs.MarkHidden("seed")
	verify := fs.Bool("verify", false, "check the device against the state, then record what it holds")
	asJSON := fs.Bool("json", false, "print the result as one JSON object (docs/json.md)")
	if code, done := parseArgs(e, fs, args); done {
		return code
	}
	switch {
	case *dev == "" || *statePath == "":
		return e.failf(exitUsage, "torture: -d DEV and --state FILE are required")
	case *writes <= 0 || *flushEvery <= 0 || *blocks < 0:
		return e.failf(exitUsage, "torture: --writes and --flush-every must be positive, --blocks not negative")
	}
	if _, err := os.Stat(*statePath); *verify && errors.Is(err, os.ErrNotExist) {
		// Without the writer's state every block it wrote would look corrupt.
		return e.failf(exitFail, "torture: --verify: state file %s does not exist: verify with the --state file a torture run wrote", *statePath)
	}
	f, err := os.OpenFile(*dev, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		return e.failf(exitFail, "torture: %v", err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return e.failf(exitFail, "torture: size of %s: %v", *dev, err)
	}
	st, err := loadTortureState(*statePath)
	if err != nil {
		return e.failf(exitFail, "torture: %v", err)
	}

	if st.Blocks == 0 {
		st.Blocks = size / tortureBS
		if *blocks > 0 {
			st.Blocks = min(st.Blocks, *blocks)
		}
	}
	if st.Blocks*tortureBS > size || st.Blocks == 0 {
		return e.failf(exitFail, "torture: the state covers %d blocks, %s has %d", st.Blocks, *dev, size/tortureBS)
	}
	out := tortureJSON{Device: *dev, State: *statePath, Blocks: st.Blocks}
	if *verify {
		lines := e.stdout
		if *asJSON {
			lines = io.Discard
		}
		bad, err := st.verify(f, lines)
		if err == nil {
			err = st.save(*statePath)
		}
		if err != nil {
			return e.failf(exitFail, "torture: verify: %v", err)
		}
		if *asJSON {
			out.Mode, out.BadBlocks, out.WritesTotal, out.FlushesTotal = "verify", &bad, st.Writes, st.Flushes
			code := exitOK
			if bad > 0 {
				code = exitFail
			}
			return out.print(e, code)
		}
		if bad > 0 {
			return e.failf(exitFail, "torture: verify: %d of %d blocks hold what no acknowledged write left there", bad, st.Blocks)
		}
		fmt.Fprintf(e.stdout, "torture: verify: %d blocks as expected (after %d writes, %d flushes)\n", st.Blocks, st.Writes, st.Flushes)
		return exitOK
	}
	if *seed == 0 {
		*seed = st.Seq + 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	n, werr := st.write(int(f.Fd()), rand.New(rand.NewPCG(*seed, 0x5eed)), *writes, *flushEvery, sigs)
	if err := st.save(*statePath); err != nil {
		return e.failf(exitFail, "torture: %v", err)
	}
	if *asJSON {
		out.Mode, out.WritesThisRun, out.WritesTotal, out.FlushesTotal, out.StoppedBy = "write", &n, st.Writes, st.Flushes, stopReason(werr)
		return out.print(e, exitOK)
	}
	fmt.Fprintf(e.stdout, "torture: %d writes this run, %d writes and %d flushes in all; stopped by: %v\n", n, st.Writes, st.Flushes, stopReason(werr))
	return exitOK
}

// tortureJSON is torture --json (docs/json.md).
type tortureJSON struct {
	jsonHeader
	Mode          string `json:"mode"` // write or verify
	Device        string `json:"device"`
	State         string `json:"state"`
	Blocks        int64  `json:"blocks"`
	WritesThisRun *int64 `json:"writes_this_run,omitempty"` // write
	WritesTotal   int64  `json:"writes_total"`
	FlushesTotal  int64  `json:"flushes_total"`
	StoppedBy     string `json:"stopped_by,omitempty"` // write
	BadBlocks     *int64 `json:"bad_blocks,omitempty"` // verify
}

func (o *tortureJSON) print(e *env, code int) int {
	o.jsonHeader = newJSONHeader("torture", code)
	if err := writeJSON(e.stdout, o); err != nil {
		return e.failf(exitFail, "torture: %v", err)
	}
	return code
}

func stopReason(err error) string {
	if err == nil {
		return "the write count"
	}
	return err.Error()
}

// write runs the writer until max writes, an I/O error or a signal.
func (st *tortureState) write(fd int, rng *rand.Rand, max int64, flushEvery int, sigs <-chan os.Signal) (int64, error) {
	buf, err := unix.Mmap(-1, 0, tortureBS, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return 0, fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(buf)
	var n int64
	for n < max {
		select {
		case s := <-sigs:
			return n, fmt.Errorf("signal %v", s)
		default:
		}
		blk := rng.Int64N(st.Blocks)
		st.Seq++
		fillTortureBlock(buf, st.Seq, blk)
		// Recorded before the write: once issued it may land even if we
		// never see it complete.
		st.Later[blk] = append(st.Later[blk], st.Seq)
		if _, err := unix.Pwrite(fd, buf, blk*tortureBS); err != nil {
			return n, fmt.Errorf("write of block %d: %w", blk, err)
		}
		n++
		st.Writes++
		if n%int64(flushEvery) == 0 {
			if err := unix.Fdatasync(fd); err != nil {
				return n, fmt.Errorf("flush: %w", err)
			}
			st.Flushes++
			for b, seqs := range st.Later {
				st.Flushed[b] = seqs[len(seqs)-1]
				delete(st.Later, b)
			}
		}
	}
	return n, nil
}

// fillTortureBlock writes block blk's content for write seq: magic, seq,
// block number, a body derived from both, and a crc32c of all that, so a
// torn or misplaced block never passes as another.
func fillTortureBlock(b []byte, seq uint64, blk int64) {
	copy(b, tortureMagic[:])
	binary.LittleEndian.PutUint64(b[8:], seq)
	binary.LittleEndian.PutUint64(b[16:], uint64(blk))
	x := seq*0x9e3779b97f4a7c15 ^ uint64(blk)
	for i := 24; i < len(b)-4; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], crc32.MakeTable(crc32.Castagnoli)))
}

// blockSeq returns the write a block holds: 0 for zeroes, ok false for
// anything the writer never wrote there.
func blockSeq(b []byte, blk int64) (seq uint64, ok bool) {
	if !bytes.Equal(b[:8], tortureMagic[:]) {
		for _, c := range b {
			if c != 0 {
				return 0, false
			}
		}
		return 0, true
	}
	seq = binary.LittleEndian.Uint64(b[8:])
	want := make([]byte, tortureBS)
	fillTortureBlock(want, seq, blk)
	return seq, bytes.Equal(b, want)
}

// verify reads every block and checks it holds its flushed write or a later
// one; it then records what each block holds as flushed (the device has been
// restarted: that is what is on disk now). It returns the bad blocks.
func (st *tortureState) verify(f *os.File, w io.Writer) (int64, error) {
	const chunk = 256
	buf, err := unix.Mmap(-1, 0, chunk*tortureBS, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return 0, fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(buf)
	var bad int64
	for first := int64(0); first < st.Blocks; first += chunk {
		n := min(chunk, st.Blocks-first)
		if _, err := unix.Pread(int(f.Fd()), buf[:n*tortureBS], first*tortureBS); err != nil {
			return bad, fmt.Errorf("read of blocks %d-%d: %w", first, first+n-1, err)
		}
		for i := int64(0); i < n; i++ {
			blk := first + i
			seq, ok := blockSeq(buf[i*tortureBS:(i+1)*tortureBS], blk)
			flushed := st.Flushed[blk]
			if !ok || (seq != flushed && !slices.Contains(st.Later[blk], seq)) {
				bad++
				if bad <= 10 {
					fmt.Fprintf(w, "block %d: holds write %d (valid %v), expected write %d or one of %v\n", blk, seq, ok, flushed, st.Later[blk])
				}
				continue
			}
			if seq == 0 {
				delete(st.Flushed, blk)
			} else {
				st.Flushed[blk] = seq
			}
			delete(st.Later, blk)
		}
	}
	return bad, nil
}

func loadTortureState(path string) (*tortureState, error) {
	st := &tortureState{Flushed: map[int64]uint64{}, Later: map[int64][]uint64{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	if st.Flushed == nil {
		st.Flushed = map[int64]uint64{}
	}
	if st.Later == nil {
		st.Later = map[int64][]uint64{}
	}
	return st, nil
}

// save writes the state atomically (a rename), so a crash of the writer
// itself never leaves half a state.
func (st *tortureState) save(path string) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}
