// Package bench measures the btrfs direct IO port the way the seed patch's
// benchmark table does: sequential direct reads and writes of one block size
// over a file, zero-copy against bounce (pooled, and the seed's page-by-page
// allocation with --faithful), without and with data checksums, all measured
// side by side in one run, next to the raw backing file. A second part runs
// each mode under a QD32 load of 1 MiB requests and reports the process's
// peak RSS and the allocations per request.
package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
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
// bounce with the pool, and the seed's bounce exactly (--faithful).
var Modes = []string{"zerocopy", "bounce", "faithful"}

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

// Run measures the matrix Rounds times, interleaving the configurations in
// every round so all of them see the same machine state.
func Run(cfg Config, progress Progress) (*Result, error) {
	if cfg.BS <= 0 || cfg.BS%btrfsdio.SectorSize != 0 || cfg.Bytes < int64(cfg.BS) || cfg.Rounds <= 0 {
		return nil, fmt.Errorf("bench: need bs a multiple of %d, bytes >= bs, rounds > 0", btrfsdio.SectorSize)
	}
	if cfg.QD < 0 || (cfg.QD > 0 && cfg.QDBytes < int64(cfg.QD)<<20) {
		return nil, fmt.Errorf("bench: the QD load needs at least one 1 MiB request per submitter")
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
	for round := 1; round <= cfg.Rounds; round++ {
		runMemcpy(cfg, res.Memcpy)
		// Each job writes then reads, filling both cells of its kind.
		for _, c := range res.Cells {
			if c.Op != "write" {
				continue
			}
			if progress != nil {
				progress(round, cfg.Rounds, describe(c))
			}
			var err error
			if c.Mode == "raw" {
				res.RawDirect, err = runRaw(cfg, res.Cell("read", c.Mode, c.DataSum), c)
			} else {
				err = runPort(cfg, res.Cell("read", c.Mode, c.DataSum), c)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	if cfg.QD > 0 {
		for _, mode := range Modes {
			if progress != nil {
				progress(cfg.Rounds, cfg.Rounds, fmt.Sprintf("QD%d %s", cfg.QD, mode))
			}
			l, err := runLoad(cfg, mode)
			if err != nil {
				return nil, err
			}
			res.Load = append(res.Load, l)
		}
	}
	return res, nil
}

func describe(c *Cell) string {
	if c.Mode == "raw" {
		return "raw backing file"
	}
	mode := c.Mode
	if mode == "faithful" {
		mode = "bounce --faithful"
	}
	sum := "nodatasum"
	if c.DataSum {
		sum = "datasum"
	}
	return fmt.Sprintf("%s %s", mode, sum)
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

// measure runs io and records its throughput and CPU per MiB in c.
func measure(c *Cell, n int64, io func() error) error {
	cpu, start := cpuTime(), time.Now()
	if err := io(); err != nil {
		return err
	}
	wall, used := time.Since(start), cpuTime()-cpu
	c.MiBs = append(c.MiBs, mibs(n, wall))
	c.CPU = append(c.CPU, float64(used.Microseconds())/(float64(n)/(1<<20)))
	return nil
}

// runMemcpy copies cfg.Bytes from one buffer to another, cfg.BS at a time,
// as a bounce request copies its data once more than zero-copy does.
func runMemcpy(cfg Config, c *Cell) {
	src, dst := blk.AlignedBuffer(cfg.BS), blk.AlignedBuffer(cfg.BS)
	_ = measure(c, cfg.Bytes, func() error {
		return sequential(cfg, func(int64) error {
			copy(dst, src)
			return nil
		})
	})
}

// sequential calls fn for every BS-sized step of cfg.Bytes, in order.
func sequential(cfg Config, fn func(off int64) error) error {
	for off := int64(0); off+int64(cfg.BS) <= cfg.Bytes; off += int64(cfg.BS) {
		if err := fn(off); err != nil {
			return err
		}
	}
	return nil
}

// measureSequential writes cfg.Bytes with io, BS at a time, into write's
// figures, then reads them back into read's.
func measureSequential(cfg Config, write, read *Cell, io func(isWrite bool, off int64) error) error {
	for _, c := range []*Cell{write, read} {
		err := measure(c, cfg.Bytes, func() error {
			return sequential(cfg, func(off int64) error {
				if err := io(c == write, off); err != nil {
					return fmt.Errorf("%s at %d: %w", c.Op, off, err)
				}
				return nil
			})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// runPort writes cfg.Bytes through the port, then reads them back.
func runPort(cfg Config, read, write *Cell) error {
	dir, err := os.MkdirTemp(cfg.Dir, "bench-")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	fs, err := newFS(cfg, dir, cfg.Bytes, write.Mode, write.DataSum)
	if err != nil {
		return err
	}
	defer fs.Vol.Close()
	buf := blk.AlignedBuffer(cfg.BS)
	for i := range buf {
		buf[i] = byte(i * 31)
	}
	inode := fs.Inode()
	err = measureSequential(cfg, write, read, func(isWrite bool, off int64) error {
		it := iomap.NewIovIter(buf, 0)
		iocb := &iomap.Kiocb{Pos: off}
		if isWrite {
			_, err := inode.DirectWrite(iocb, it)
			return err
		}
		_, err := inode.DirectRead(iocb, it)
		return err
	})
	if err != nil {
		return fmt.Errorf("bench: %s: %w", describe(write), err)
	}
	return nil
}

func newFS(cfg Config, dir string, fileBytes int64, mode string, datasum bool) (*btrfsdio.FsInfo, error) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	n := cfg.Devices
	if n == 0 {
		n = max(cfg.Profile.MinDevices(), 2)
		if cfg.Profile == raid.Single || cfg.Profile == raid.Dup {
			n = 1
		}
	}
	// Room for the file plus copy-on-write headroom on every profile.
	devSize := (fileBytes*int64(cfg.Profile.Copies())*2/int64(n) + 64<<20) &^ (1<<20 - 1)
	var devs []*raid.Device
	for i := 0; i < n; i++ {
		d, err := raid.OpenDevice(filepath.Join(dir, fmt.Sprintf("d%d.img", i)), raid.DeviceOptions{Create: true, Size: devSize, Logger: log})
		if err != nil {
			return nil, err
		}
		devs = append(devs, d)
	}
	vol, err := raid.NewVolume(devs, cfg.Profile, raid.VolumeOptions{Logger: log})
	if err != nil {
		return nil, err
	}
	opts := btrfsdio.Options{Mode: btrfsdio.Bounce, DataSum: datasum, BouncePool: cfg.BouncePool, NoVolatileDetect: true, Log: log}
	switch mode {
	case "zerocopy":
		opts.Mode = btrfsdio.ZeroCopy
	case "faithful":
		opts.Faithful = true
	}
	fs, err := btrfsdio.NewFsInfo(vol, opts)
	if err != nil {
		vol.Close()
		return nil, err
	}
	return fs, nil
}

// runRaw is the reference: the same IO straight to one backing file, with
// O_DIRECT when the filesystem under it allows (reported).
func runRaw(cfg Config, read, write *Cell) (bool, error) {
	path := filepath.Join(cfg.Dir, "bench-raw.img")
	defer os.Remove(path)
	direct := true
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC|unix.O_DIRECT, 0o600)
	if err != nil {
		direct = false
		if f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
			return false, fmt.Errorf("bench: raw file: %w", err)
		}
	}
	defer f.Close()
	buf := blk.AlignedBuffer(cfg.BS)
	err = measureSequential(cfg, write, read, func(isWrite bool, off int64) error {
		if isWrite {
			_, err := f.WriteAt(buf, off)
			return err
		}
		_, err := f.ReadAt(buf, off)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("bench: raw file: %w", err)
	}
	return direct, nil
}
