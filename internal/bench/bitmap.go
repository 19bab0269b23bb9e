package bench

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/raid"
)

// BitmapConfig sizes the write-intent bitmap's bench: random 4 KiB
// overwrites of a NODATACOW file (every one an in-place overwrite of every
// mirror), with and without the bitmap, side by side.
type BitmapConfig struct {
	Dir     string
	Profile raid.Profile
	File    int64 // file size: the random writes' range
	Writes  int   // timed 4 KiB writes per measurement
	QD      int   // submitters
	// FlushEvery sends a FLUSH (a commit, whose barrier lets the bitmap
	// clear its bits) after that many writes per submitter; 0: never.
	FlushEvery int
	Rounds     int
}

// BitmapRow is one measurement: IOPS per round, with and without the
// bitmap, and the durable bitmap updates the bitmap runs wrote.
type BitmapRow struct {
	FlushEvery    int
	With          []float64
	Without       []float64
	Updates       []uint64
	TotalWrites   int
	WithMedian    float64
	WithoutMedian float64
}

// RunBitmap measures, round after round and alternating which goes first,
// cfg.Writes random 4 KiB writes over a NODATACOW file with the bitmap
// and without it (raid.VolumeOptions.NoBitmap), once without FLUSH and
// once with cfg.FlushEvery.
func RunBitmap(cfg BitmapConfig, progress Progress) ([]BitmapRow, error) {
	if cfg.Writes < 1 || cfg.QD < 1 || cfg.Rounds < 1 || cfg.File < 1<<20 {
		return nil, fmt.Errorf("bench: bitmap: bad config %+v", cfg)
	}
	rows := []BitmapRow{{FlushEvery: 0}}
	if cfg.FlushEvery > 0 {
		rows = append(rows, BitmapRow{FlushEvery: cfg.FlushEvery})
	}
	dir, err := os.MkdirTemp(cfg.Dir, "btrfsdio-bitmap-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	for round := 0; round < cfg.Rounds; round++ {
		for ri := range rows {
			row := &rows[ri]
			for k := 0; k < 2; k++ {
				noBitmap := (k+round)%2 == 1
				if progress != nil {
					progress(round+1, cfg.Rounds, fmt.Sprintf("bitmap=%v flush-every=%d", !noBitmap, row.FlushEvery))
				}
				iops, updates, err := bitmapPass(cfg, filepath.Join(dir, fmt.Sprintf("r%d-%d-%d", round, ri, k)), noBitmap, row.FlushEvery)
				if err != nil {
					return nil, err
				}
				if noBitmap {
					row.Without = append(row.Without, iops)
				} else {
					row.With = append(row.With, iops)
					row.Updates = append(row.Updates, updates)
				}
			}
		}
	}
	for i := range rows {
		rows[i].TotalWrites = cfg.Writes
		rows[i].WithMedian = (&Cell{MiBs: rows[i].With}).Median()
		rows[i].WithoutMedian = (&Cell{MiBs: rows[i].Without}).Median()
	}
	return rows, nil
}

// bitmapPass makes a fresh NODATACOW filesystem in dir, writes its file
// once (allocating every extent), then times the random overwrites.
func bitmapPass(cfg BitmapConfig, dir string, noBitmap bool, flushEvery int) (float64, uint64, error) {
	bc := Config{Profile: cfg.Profile}
	imgs := planImages(bc, dir, cfg.File)
	if err := fill(imgs); err != nil {
		return 0, 0, err
	}
	defer func() {
		for _, img := range imgs {
			os.Remove(img.path)
		}
	}()
	log := logrus.New()
	log.SetOutput(io.Discard)
	paths := make([]string, len(imgs))
	for i, img := range imgs {
		paths[i] = img.path
	}
	devs, err := raid.OpenDevices(paths, raid.DeviceOptions{Logger: log})
	if err != nil {
		return 0, 0, err
	}
	vol, err := raid.NewVolume(devs, cfg.Profile, raid.VolumeOptions{Logger: log, NoBitmap: noBitmap})
	if err != nil {
		for _, d := range devs {
			d.Close()
		}
		return 0, 0, err
	}
	defer vol.Close()
	fs, err := btrfsdio.NewFsInfo(vol, btrfsdio.Options{Mode: btrfsdio.Bounce, NoCow: true, Size: uint64(cfg.File),
		NoVolatileDetect: true, Log: log})
	if err != nil {
		return 0, 0, fmt.Errorf("bench: bitmap: %w", err)
	}
	inode := fs.Inode()
	big := blk.AlignedBuffer(1 << 20)
	for off := int64(0); off < cfg.File; off += 1 << 20 {
		if _, err := inode.DirectWrite(&iomap.Kiocb{Pos: off}, iomap.NewIovIter(big, 0)); err != nil {
			return 0, 0, fmt.Errorf("bench: bitmap: preparing the file: %w", err)
		}
	}
	if err := fs.Flush(); err != nil {
		return 0, 0, fmt.Errorf("bench: bitmap: %w", err)
	}
	before := vol.BitmapUpdates()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, cfg.QD)
	start := time.Now()
	for q := 0; q < cfg.QD; q++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(q), 42))
			buf := blk.AlignedBuffer(4096)
			for n := 1; next.Add(1) <= int64(cfg.Writes); n++ {
				off := rng.Int64N(cfg.File/4096) * 4096
				if _, err := inode.DirectWrite(&iomap.Kiocb{Pos: off}, iomap.NewIovIter(buf, 0)); err != nil {
					errs[q] = fmt.Errorf("bench: bitmap: write at %d: %w", off, err)
					return
				}
				if flushEvery > 0 && n%flushEvery == 0 {
					if err := fs.Flush(); err != nil {
						errs[q] = fmt.Errorf("bench: bitmap: flush: %w", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return 0, 0, err
		}
	}
	return float64(cfg.Writes) / d.Seconds(), vol.BitmapUpdates() - before, nil
}

// WriteBitmapTable prints the rows: median IOPS with and without the
// bitmap, the cost in percent, and the durable bitmap updates per 1000
// writes.
func WriteBitmapTable(w io.Writer, cfg BitmapConfig, rows []BitmapRow) {
	fmt.Fprintf(w, "write-intent bitmap: %s, NODATACOW file of %d MiB, %d random 4 KiB overwrites per pass, QD %d, %d rounds (median IOPS)\n",
		cfg.Profile, cfg.File>>20, cfg.Writes, cfg.QD, cfg.Rounds)
	fmt.Fprintf(w, "%-26s %12s %12s %8s %22s\n", "workload", "no bitmap", "bitmap", "cost", "bitmap updates/1000 w")
	for _, r := range rows {
		name := "no FLUSH"
		if r.FlushEvery > 0 {
			name = fmt.Sprintf("FLUSH every %d/submitter", r.FlushEvery)
		}
		cost := 0.0
		if r.WithoutMedian > 0 {
			cost = 100 * (r.WithoutMedian - r.WithMedian) / r.WithoutMedian
		}
		upd := (&Cell{MiBs: u64s(r.Updates)}).Median()
		fmt.Fprintf(w, "%-26s %12.0f %12.0f %7.1f%% %22.1f\n", name, r.WithoutMedian, r.WithMedian, cost, 1000*upd/float64(r.TotalWrites))
	}
}

func u64s(v []uint64) []float64 {
	f := make([]float64, len(v))
	for i, x := range v {
		f[i] = float64(x)
	}
	return f
}
