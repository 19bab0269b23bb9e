package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/iomap"
)

// loadBS is the request size of the QD load.
const loadBS = 1 << 20

// Load is one mode, nodatasum, under Config.QD submitters of 1 MiB direct
// IO each: first every block is written, then read. A round's Load is one
// such run on a fresh filesystem; a mode's Load in Result.Load holds the
// medians of its rounds, and the rounds themselves.
type Load struct {
	Mode      string  `json:"mode"`
	QD        int     `json:"qd"`
	WriteMiBs float64 `json:"write_mib_s"`
	ReadMiBs  float64 `json:"read_mib_s"`
	// BaseRSS is VmRSS just before the load, PeakRSS VmHWM right after it,
	// in bytes. With PeakReset the kernel's peak was reset (clear_refs 5)
	// after the previous mode's filesystem was collected and freed memory
	// returned to the OS, so PeakRSS is this mode's peak; without it,
	// PeakRSS is the process's peak since it started.
	BaseRSS   int64 `json:"base_rss"`
	PeakRSS   int64 `json:"peak_rss"`
	PeakReset bool  `json:"peak_reset"`
	// AllocsPerReq and BytesPerReq are Go heap allocations of the whole
	// process (device goroutines included) during the load, per request.
	AllocsPerReq float64 `json:"allocs_per_req"`
	BytesPerReq  float64 `json:"bytes_per_req"`
	// PoolPeak and PoolWaits are the bounce pool's peak bytes out and the
	// allocations that waited for room (pooled bounce only).
	PoolPeak  int64 `json:"pool_peak,omitempty"`
	PoolWaits int64 `json:"pool_waits,omitempty"`
	// Rounds are the mode's runs, in round order (a mode's summary only).
	Rounds []*Load `json:"rounds,omitempty"`
}

// runLoads runs the QD load cfg.Rounds times, every mode once a round,
// each round in the next order of the QD1 table's balanced design
// (williamsOrders): every mode goes first, and after every other mode,
// equally often, so what one mode leaves behind (freed memory the next one
// reuses, a warmer page cache) and the machine's drift fall on all of
// them alike. It returns one summary per mode, in modes' order (summarize).
func runLoads(cfg Config, modes []string, progress Progress, run func(Config, string) (*Load, error)) ([]*Load, error) {
	rounds := make([][]*Load, len(modes))
	orders := williamsOrders(len(modes))
	for round := 1; round <= cfg.Rounds; round++ {
		for _, k := range orders[(round-1)%len(orders)] {
			if progress != nil {
				progress(round, cfg.Rounds, fmt.Sprintf("QD%d %s", cfg.QD, modes[k]))
			}
			l, err := run(cfg, modes[k])
			if err != nil {
				return nil, err
			}
			rounds[k] = append(rounds[k], l)
		}
	}
	var out []*Load
	for _, ls := range rounds {
		out = append(out, summarize(ls))
	}
	return out, nil
}

// summarize is a mode's Load over its rounds: the median of every figure
// (the bounce pool's peak: the largest), peak RSS reset only if every round
// reset it.
func summarize(ls []*Load) *Load {
	med := func(f func(*Load) float64) float64 {
		c := &Cell{}
		for _, l := range ls {
			c.MiBs = append(c.MiBs, f(l))
		}
		return c.Median()
	}
	s := &Load{Mode: ls[0].Mode, QD: ls[0].QD, Rounds: ls, PeakReset: true,
		WriteMiBs:    med(func(l *Load) float64 { return l.WriteMiBs }),
		ReadMiBs:     med(func(l *Load) float64 { return l.ReadMiBs }),
		BaseRSS:      int64(med(func(l *Load) float64 { return float64(l.BaseRSS) })),
		PeakRSS:      int64(med(func(l *Load) float64 { return float64(l.PeakRSS) })),
		AllocsPerReq: med(func(l *Load) float64 { return l.AllocsPerReq }),
		BytesPerReq:  med(func(l *Load) float64 { return l.BytesPerReq }),
		PoolWaits:    int64(med(func(l *Load) float64 { return float64(l.PoolWaits) })),
	}
	for _, l := range ls {
		s.PeakReset = s.PeakReset && l.PeakReset
		s.PoolPeak = max(s.PoolPeak, l.PoolPeak)
	}
	return s
}

// roundCell is one figure of a mode's rounds as a Cell, for the QD1
// table's summaries (Median, pairedDiff).
func (l *Load) roundCell(write bool) *Cell {
	c := &Cell{}
	for _, r := range l.Rounds {
		if write {
			c.MiBs = append(c.MiBs, r.WriteMiBs)
		} else {
			c.MiBs = append(c.MiBs, r.ReadMiBs)
		}
	}
	return c
}

// runLoad runs the QD load for one mode on a fresh filesystem.
func runLoad(cfg Config, mode string) (*Load, error) {
	dir, err := os.MkdirTemp(cfg.Dir, "bench-load-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	images := planImages(cfg, filepath.Join(dir, mode), cfg.QDBytes)
	if err := fill(images); err != nil {
		return nil, err
	}
	fs, err := newFS(cfg, images, mode, false)
	if err != nil {
		return nil, err
	}
	defer fs.Vol.Close()
	bufs := make([][]byte, cfg.QD)
	for i := range bufs {
		bufs[i] = blk.AlignedBuffer(loadBS)
		for j := range bufs[i] {
			bufs[i][j] = byte(i + j)
		}
	}
	l := &Load{Mode: mode, QD: cfg.QD}
	runtime.GC()
	debug.FreeOSMemory()
	l.PeakReset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	if l.BaseRSS, err = procStatus("VmRSS"); err != nil {
		return nil, err
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	reqs := cfg.QDBytes / loadBS
	for _, write := range []bool{true, false} {
		d, err := qdPass(fs.Inode(), bufs, reqs, write)
		if err != nil {
			return nil, fmt.Errorf("bench: QD%d %s: %w", cfg.QD, mode, err)
		}
		if write {
			l.WriteMiBs = mibs(reqs*loadBS, d)
		} else {
			l.ReadMiBs = mibs(reqs*loadBS, d)
		}
	}
	runtime.ReadMemStats(&after)
	if l.PeakRSS, err = procStatus("VmHWM"); err != nil {
		return nil, err
	}
	l.AllocsPerReq = float64(after.Mallocs-before.Mallocs) / float64(2*reqs)
	l.BytesPerReq = float64(after.TotalAlloc-before.TotalAlloc) / float64(2*reqs)
	if fs.BouncePool != nil {
		st := fs.BouncePool.Stats()
		l.PoolPeak, l.PoolWaits = st.Peak, st.Waits
	}
	return l, nil
}

// qdPass issues reqs 1 MiB requests over the file from len(bufs)
// submitters, each with its own buffer, and returns how long it took.
func qdPass(inode *btrfsdio.Inode, bufs [][]byte, reqs int64, write bool) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, len(bufs))
	start := time.Now()
	for i, buf := range bufs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1) - 1
				if n >= reqs {
					return
				}
				iocb := &iomap.Kiocb{Pos: n * loadBS}
				var err error
				if write {
					_, err = inode.DirectWrite(iocb, iomap.NewIovIter(buf, 0))
				} else {
					_, err = inode.DirectRead(iocb, iomap.NewIovIter(buf, 0))
				}
				if err != nil {
					errs[i] = fmt.Errorf("at %d: %w", n*loadBS, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return d, nil
}

// procStatus reads a "kB" field of /proc/self/status, in bytes.
func procStatus(field string) (int64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, rest, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok || string(name) != field {
			continue
		}
		kb, err := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(rest), []byte(" kB"))), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc/self/status %s: %w", field, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("bench: /proc/self/status has no %s", field)
}
