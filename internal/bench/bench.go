// Package bench measures the btrfs direct IO port the way the seed patch's
// benchmark table does: sequential direct reads and writes of one block size
// over a file, zero-copy against bounce (pooled, and the seed's page-by-page
// allocation with --faithful) and upstream's later fallback and generic
// bounce, without and with data checksums, all measured
// side by side in one run, next to the raw backing file. A second part runs
// each mode under a QD32 load of 1 MiB requests and reports the process's
// peak RSS and the allocations per request.
package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/raid"
)

// Config says what to measure.
type Config struct {
	Dir     string       // where the backing images go
	Profile raid.Profile // data profile
	Devices int          // backing devices (0: the profile's minimum, at least 2 for RAID1)
	Bytes   int64        // bytes per measurement
	BS      int          // IO size
	Rounds  int          // repetitions of the whole matrix
	// BouncePool is the pooled bounce mode's pool size (btrfsdio.Options).
	BouncePool int64
	// QD is how many submitters the memory load runs (0: no memory load);
	// QDBytes how many bytes each mode writes and reads under it.
	QD      int
	QDBytes int64
}

// Modes are the direct IO paths measured: zero-copy (before the patch),
// bounce with the pool, the seed's bounce exactly (--faithful), and
// upstream's later answers: the buffered fallback of duplicated profiles
// (7c2830f00c3e) and the generic bounce (IOMAP_DIO_BOUNCE).
var Modes = []string{"zerocopy", "bounce", "faithful", "fallback", "iomap-bounce"}

// Cell is one configuration of the matrix.
type Cell struct {
	Op      string `json:"op"`   // "read" or "write"
	Mode    string `json:"mode"` // one of Modes, or "raw"
	DataSum bool   `json:"datasum"`
	// MiBs holds one throughput per round.
	MiBs []float64 `json:"mib_s"`
	// CPU holds, per round, the CPU time (user + system, the whole
	// process, so the backing files' kernel work too) per MiB moved, in µs.
	CPU []float64 `json:"cpu_us_per_mib"`
}

// CPUMedian is the median of the rounds' CPU per MiB.
func (c *Cell) CPUMedian() float64 { return (&Cell{MiBs: c.CPU}).Median() }

// Min, Median and Max summarise the rounds.
func (c *Cell) Min() float64    { return c.sorted()[0] }
func (c *Cell) Max() float64    { s := c.sorted(); return s[len(s)-1] }
func (c *Cell) Median() float64 { s := c.sorted(); return s[len(s)/2] }

func (c *Cell) sorted() []float64 {
	s := append([]float64(nil), c.MiBs...)
	if len(s) == 0 {
		return []float64{0}
	}
	sort.Float64s(s)
	return s
}

// Result is a whole run.
type Result struct {
	Config Config  `json:"config"`
	Cells  []*Cell `json:"cells"`
	// RawDirect says the raw reference used O_DIRECT (the backing
	// filesystem allowed it); else it is buffered IO.
	RawDirect bool `json:"raw_direct"`
	// Load holds the QD load per mode, nodatasum.
	Load []*Load `json:"load,omitempty"`
	// Memcpy is the cost of the copy a bounce request adds: Bytes copied
	// BS at a time between two buffers of process memory, every round.
	Memcpy *Cell `json:"memcpy"`
	// Resolution is the widest paired diff, in percent, between
	// configurations that run the same code (see resolution): what the
	// run's diffs can be trusted to.
	Resolution float64 `json:"resolution_pct"`
	// LoadResolution is the same for the QD load (see loadResolution).
	LoadResolution float64 `json:"load_resolution_pct"`
}

// Cell finds a cell of the result.
func (r *Result) Cell(op, mode string, datasum bool) *Cell {
	for _, c := range r.Cells {
		if c.Op == op && c.Mode == mode && c.DataSum == datasum {
			return c
		}
	}
	return nil
}

// Progress is told what is being measured.
type Progress func(round, rounds int, what string)

// Run measures the matrix Rounds times. The configurations of one checksum
// setting run interleaved, a slice at a time (interleave), on images
// filled together (fill), so all of them see the same machine state and
// the same kind of memory.
func Run(cfg Config, progress Progress) (*Result, error) {
	if cfg.BS <= 0 || cfg.BS%btrfsdio.SectorSize != 0 || cfg.Bytes < int64(cfg.BS) || cfg.Rounds <= 0 {
		return nil, fmt.Errorf("bench: need bs a multiple of %d, bytes >= bs, rounds > 0", btrfsdio.SectorSize)
	}
	if cfg.QD < 0 || (cfg.QD > 0 && cfg.QDBytes < int64(cfg.QD)<<20) {
		return nil, fmt.Errorf("bench: the QD load needs at least one 1 MiB request per submitter")
	}
	if err := checkRoom(cfg); err != nil {
		return nil, err
	}
	res := &Result{Config: cfg, Memcpy: &Cell{Op: "copy", Mode: "memcpy"}}
	for _, op := range []string{"read", "write"} {
		res.Cells = append(res.Cells, &Cell{Op: op, Mode: "raw"})
		for _, sum := range []bool{false, true} {
			for _, mode := range Modes {
				res.Cells = append(res.Cells, &Cell{Op: op, Mode: mode, DataSum: sum})
			}
		}
	}
	for _, sum := range []bool{false, true} {
		if err := res.runGroup(cfg, sum, progress); err != nil {
			return nil, err
		}
	}
	res.Resolution = res.resolution()
	if cfg.QD > 0 {
		load, err := runLoads(cfg, Modes, progress, runLoad)
		if err != nil {
			return nil, err
		}
		res.Load = load
		res.LoadResolution = res.loadResolution()
	}
	return res, nil
}

// checkRoom refuses a run whose images cannot fit in cfg.Dir: a group
// holds the raw file and a filesystem per mode (layout) at once, all
// filled; the QD load one filesystem at a time.
func checkRoom(cfg Config) error {
	var st unix.Statfs_t
	if err := unix.Statfs(cfg.Dir, &st); err != nil {
		return fmt.Errorf("bench: --dir %s: %w", cfg.Dir, err)
	}
	n, size := layout(cfg, cfg.Bytes)
	need := cfg.Bytes + int64(len(Modes)*n)*size
	if cfg.QD > 0 {
		_, qdSize := layout(cfg, cfg.QDBytes)
		need = max(need, int64(n)*qdSize)
	}
	if free := int64(st.Bavail) * st.Bsize; free < need {
		return fmt.Errorf("bench: %s has %d MiB free; the raw file and the %d filesystems measured side by side need %d MiB: lower --size or pick another --dir",
			cfg.Dir, free>>20, len(Modes), need>>20)
	}
	return nil
}

// target is where one configuration's IO goes: the raw backing file or a
// filesystem in one direct IO mode, with the cells its figures go to.
type target struct {
	write, read *Cell
	io          func(isWrite bool, off int64) error
	close       func()
}

// cell is where the target's figures for one direction go.
func (t *target) cell(isWrite bool) *Cell {
	if isWrite {
		return t.write
	}
	return t.read
}

// runGroup measures, for one checksum setting, every mode (and, without
// checksums, the raw file) on images of their own, filled once, together
// (fill), with a fresh filesystem every round: all of them write the
// file, interleaved, then all read it back. The memcpy reference is taken
// once per round of the group without checksums.
func (r *Result) runGroup(cfg Config, datasum bool, progress Progress) error {
	dir, err := os.MkdirTemp(cfg.Dir, "bench-")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	sum := sumName(datasum)
	if progress != nil {
		progress(1, cfg.Rounds, sum+": filling the images")
	}
	var raw string
	var files []image
	if !datasum {
		raw = filepath.Join(dir, "raw.img")
		files = append(files, image{raw, cfg.Bytes})
	}
	images := map[string][]image{}
	for _, mode := range Modes {
		images[mode] = planImages(cfg, filepath.Join(dir, mode), cfg.Bytes)
		files = append(files, images[mode]...)
	}
	if err := fill(files); err != nil {
		return err
	}
	for round := 1; round <= cfg.Rounds; round++ {
		if !datasum {
			runMemcpy(cfg, r.Memcpy)
		}
		if err := r.runRound(cfg, datasum, raw, images, func(what string) {
			if progress != nil {
				progress(round, cfg.Rounds, sum+": "+what)
			}
		}); err != nil {
			return err
		}
	}
	return nil
}

// runRound is one round of a group: open the targets, write, read.
func (r *Result) runRound(cfg Config, datasum bool, raw string, images map[string][]image, progress func(string)) error {
	var targets []*target
	defer func() {
		for _, t := range targets {
			t.close()
		}
	}()
	if raw != "" {
		t, direct, err := openRaw(cfg, raw, r.Cell("read", "raw", false), r.Cell("write", "raw", false))
		if err != nil {
			return err
		}
		r.RawDirect = direct
		targets = append(targets, t)
	}
	for _, mode := range Modes {
		t, err := openPort(cfg, images[mode], r.Cell("read", mode, datasum), r.Cell("write", mode, datasum))
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	for _, isWrite := range []bool{true, false} {
		op := "read"
		if isWrite {
			op = "write"
		}
		progress(fmt.Sprintf("%s, %d interleaved", op, len(targets)))
		if err := interleave(cfg, targets, isWrite); err != nil {
			return err
		}
	}
	return nil
}

// sliceBytes is how much one target moves before the next one's turn:
// a few milliseconds, short against the drifts of a shared machine (other
// tenants, frequency, the garbage collector), long against the two clock
// and rusage reads around it.
const sliceBytes = 16 << 20

// interleave moves cfg.Bytes, BS at a time in file order, through every
// target: a slice through each in turn, the turns ordered by a balanced
// design (williamsOrders), so over the pass every target goes first, last
// and after every other target equally often: whatever a turn leaves
// behind (the garbage of the seed's page-by-page allocation, a colder
// cache) falls on all targets alike. A target's wall and CPU time over all
// its slices make its round's figures.
func interleave(cfg Config, targets []*target, isWrite bool) error {
	step := int64(cfg.BS)
	total := cfg.Bytes / step * step
	slice := max(sliceBytes/step, 1) * step
	wall := make([]time.Duration, len(targets))
	cpu := make([]time.Duration, len(targets))
	orders := williamsOrders(len(targets))
	for n, s := int64(0), 0; n < total; n, s = n+slice, s+1 {
		for _, k := range orders[s%len(orders)] {
			c0, t0 := cpuTime(), time.Now()
			for off := n; off < min(n+slice, total); off += step {
				if err := targets[k].io(isWrite, off); err != nil {
					c := targets[k].cell(isWrite)
					return fmt.Errorf("bench: %s: %s at %d: %w", describe(c), c.Op, off, err)
				}
			}
			wall[k] += time.Since(t0)
			cpu[k] += cpuTime() - c0
		}
	}
	for k, t := range targets {
		t.cell(isWrite).record(total, wall[k], cpu[k])
	}
	return nil
}

func describe(c *Cell) string {
	if c.Mode == "raw" {
		return "raw backing file"
	}
	mode := c.Mode
	if mode == "faithful" {
		mode = "bounce --faithful"
	}
	return fmt.Sprintf("%s %s", mode, sumName(c.DataSum))
}

// sumName is how the bench names a checksum setting.
func sumName(datasum bool) string {
	if datasum {
		return "datasum"
	}
	return "nodatasum"
}

func mibs(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }

// cpuTime is the process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// williamsOrders is a Williams design for n treatments: orders of 0..n-1
// in which each value takes every position equally often and each ordered
// pair of different values is adjacent equally often (n orders for even n,
// 2n for odd n, the second half the first reversed).
func williamsOrders(n int) [][]int {
	var orders [][]int
	for r := 0; r < n; r++ {
		o := make([]int, n)
		for j := range o {
			if j%2 == 0 {
				o[j] = (r + j/2) % n
			} else {
				o[j] = (r + n - (j+1)/2) % n
			}
		}
		orders = append(orders, o)
	}
	if n%2 == 1 {
		for r := 0; r < n; r++ {
			o := slices.Clone(orders[r])
			slices.Reverse(o)
			orders = append(orders, o)
		}
	}
	return orders
}

// record adds a round's throughput and CPU per MiB for n bytes.
func (c *Cell) record(n int64, wall, cpu time.Duration) {
	c.MiBs = append(c.MiBs, mibs(n, wall))
	c.CPU = append(c.CPU, float64(cpu.Microseconds())/(float64(n)/(1<<20)))
}

// runMemcpy copies cfg.Bytes from one buffer to another, cfg.BS at a time,
// as a bounce request copies its data once more than zero-copy does.
func runMemcpy(cfg Config, c *Cell) {
	src, dst := blk.AlignedBuffer(cfg.BS), blk.AlignedBuffer(cfg.BS)
	n := cfg.Bytes / int64(cfg.BS) * int64(cfg.BS)
	c0, t0 := cpuTime(), time.Now()
	for off := int64(0); off < n; off += int64(cfg.BS) {
		copy(dst, src)
	}
	c.record(n, time.Since(t0), cpuTime()-c0)
}

// openPort makes a filesystem in write's mode and checksum setting on
// images, its IO one direct read or write of a patterned buffer.
func openPort(cfg Config, images []image, read, write *Cell) (*target, error) {
	fs, err := newFS(cfg, images, write.Mode, write.DataSum)
	if err != nil {
		return nil, fmt.Errorf("bench: %s: %w", describe(write), err)
	}
	buf := blk.AlignedBuffer(cfg.BS)
	for i := range buf {
		buf[i] = byte(i * 31)
	}
	inode := fs.Inode()
	return &target{write: write, read: read, close: func() { fs.Vol.Close() },
		io: func(isWrite bool, off int64) error {
			it := iomap.NewIovIter(buf, 0)
			iocb := &iomap.Kiocb{Pos: off}
			var err error
			if isWrite {
				_, err = inode.DirectWrite(iocb, it)
			} else {
				_, err = inode.DirectRead(iocb, it)
			}
			return err
		}}, nil
}

// layout is the backing of one filesystem of the bench: n devices of size
// bytes each, room for every copy of a file of fileBytes written once,
// plus an eighth and 64 MiB for metadata and allocation slack.
func layout(cfg Config, fileBytes int64) (n int, size int64) {
	n = cfg.Devices
	if n == 0 {
		n = max(cfg.Profile.MinDevices(), 2)
		if cfg.Profile == raid.Single || cfg.Profile == raid.Dup {
			n = 1
		}
	}
	stored := fileBytes * int64(cfg.Profile.Copies()+cfg.Profile.Parity())
	return n, (stored*9/8/int64(n) + 64<<20) &^ (1<<20 - 1)
}

// image is a backing file to make: its path and size.
type image struct {
	path string
	size int64
}

// planImages names, in directory dir, the backing images of one
// filesystem for a file of fileBytes (layout).
func planImages(cfg Config, dir string, fileBytes int64) []image {
	n, size := layout(cfg, fileBytes)
	var imgs []image
	for i := 0; i < n; i++ {
		imgs = append(imgs, image{filepath.Join(dir, fmt.Sprintf("d%d.img", i)), size})
	}
	return imgs
}

// fillChunk is the step by which fill takes turns between its files.
const fillChunk = 1 << 20

// fill makes the files with every block written, as a disk's blocks exist
// before anything is written to them, so the timed IO never allocates
// backing memory; fallocate is not enough on tmpfs, which reserves pages
// without touching them. It writes the files a chunk each in turn, so
// every file gets memory from every part of the fill: on a guest whose
// memory the host backs at first touch, or in pieces of its own choosing,
// the same code ran up to 25% faster on memory allocated later, and when
// each mode's images were filled one after the other that difference was
// measured as the modes'.
func fill(imgs []image) (err error) {
	zeros := make([]byte, fillChunk)
	var files []*os.File
	defer func() {
		for i, f := range files {
			if cerr := f.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("bench: filling %s: %w", imgs[i].path, cerr)
			}
		}
	}()
	var longest int64
	for _, img := range imgs {
		if err := os.MkdirAll(filepath.Dir(img.path), 0o700); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		f, err := os.OpenFile(img.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		files = append(files, f)
		longest = max(longest, img.size)
	}
	for off := int64(0); off < longest; off += fillChunk {
		for i, img := range imgs {
			if off >= img.size {
				continue
			}
			if _, err := files[i].WriteAt(zeros[:min(fillChunk, img.size-off)], off); err != nil {
				return fmt.Errorf("bench: filling %s (%d MiB): %w", img.path, img.size>>20, err)
			}
		}
	}
	return nil
}

// newFS opens images as a volume of cfg.Profile and makes a fresh
// filesystem on it in mode.
func newFS(cfg Config, images []image, mode string, datasum bool) (*btrfsdio.FsInfo, error) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	paths := make([]string, len(images))
	for i, img := range images {
		paths[i] = img.path
	}
	devs, err := raid.OpenDevices(paths, raid.DeviceOptions{Logger: log})
	if err != nil {
		return nil, err
	}
	vol, err := raid.NewVolume(devs, cfg.Profile, raid.VolumeOptions{Logger: log})
	if err != nil {
		for _, d := range devs {
			d.Close()
		}
		return nil, err
	}
	opts := btrfsdio.Options{Mode: btrfsdio.Bounce, DataSum: datasum, BouncePool: cfg.BouncePool, NoVolatileDetect: true, Log: log}
	switch mode {
	case "zerocopy":
		opts.Mode = btrfsdio.ZeroCopy
	case "faithful":
		opts.Faithful = true
	case "fallback":
		opts.Mode = btrfsdio.Fallback
	case "iomap-bounce":
		opts.Mode = btrfsdio.IomapBounce
	}
	fs, err := btrfsdio.NewFsInfo(vol, opts)
	if err != nil {
		vol.Close()
		return nil, err
	}
	return fs, nil
}

// openRaw is the reference: the same IO straight to the raw file at path,
// with O_DIRECT when the filesystem under it allows (reported).
func openRaw(cfg Config, path string, read, write *Cell) (*target, bool, error) {
	direct := true
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		direct = false
		if f, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
			return nil, false, fmt.Errorf("bench: raw file: %w", err)
		}
	}
	buf := blk.AlignedBuffer(cfg.BS)
	return &target{write: write, read: read, close: func() { f.Close() },
		io: func(isWrite bool, off int64) error {
			var err error
			if isWrite {
				_, err = f.WriteAt(buf, off)
			} else {
				_, err = f.ReadAt(buf, off)
			}
			return err
		}}, direct, nil
}
