package bench

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/raid"
)

// FlushScaleConfig says how to measure what a FLUSH costs as the mapping
// grows (issue 17 point 3).
type FlushScaleConfig struct {
	Dir        string
	Sizes      []int64 // volume sizes, sparse single-device images
	Stride     int64   // the mapping: one 4 KiB write every Stride bytes
	Writes     int     // random 4 KiB writes measured
	FlushEvery int     // a FLUSH after this many of them
}

// FlushScaleRow is one volume size's result.
type FlushScaleRow struct {
	Size     int64
	Extents  int     // file extent items mapped before the measurement
	Bytes    float64 // device bytes written per FLUSH (metadata and superblocks)
	P50, P99 time.Duration
	PeakRSS  int64 // VmHWM after clear_refs 5 before this size (PeakReset)
	// PeakReset is false where /proc/self/clear_refs could not be written:
	// then PeakRSS is the process's peak since it started.
	PeakReset bool
}

// FlushScale measures btrfs_sync_file's cost against the size of the
// mapping (no kernel counterpart: a benchmark): for every size, a datasum
// volume on a sparse image is given one 4 KiB write every Stride bytes and
// a FLUSH, then Writes random 4 KiB writes with a FLUSH every FlushEvery;
// only the FLUSHes of that second phase are measured.
func FlushScale(cfg FlushScaleConfig) ([]FlushScaleRow, error) {
	var rows []FlushScaleRow
	for _, size := range cfg.Sizes {
		r, err := flushScaleOne(cfg, size)
		if err != nil {
			return nil, fmt.Errorf("bench: flush-scale %d MiB: %w", size>>20, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func flushScaleOne(cfg FlushScaleConfig, size int64) (FlushScaleRow, error) {
	row := FlushScaleRow{Size: size}
	log := logrus.New()
	log.SetOutput(io.Discard)
	dir, err := os.MkdirTemp(cfg.Dir, "bench-flush-scale-")
	if err != nil {
		return row, err
	}
	defer os.RemoveAll(dir)
	runtime.GC()
	debug.FreeOSMemory()
	row.PeakReset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	d, err := raid.OpenDevice(filepath.Join(dir, "dev.img"), raid.DeviceOptions{Create: true, Size: size, Logger: log})
	if err != nil {
		return row, err
	}
	vol, _, err := raid.OpenVolume([]*raid.Device{d}, raid.OpenOptions{Profile: raid.Single, Volume: raid.VolumeOptions{Logger: log}})
	if err != nil {
		d.Close()
		return row, err
	}
	defer vol.Close()
	file := int64(vol.Capacity()) &^ (btrfsdio.SectorSize - 1)
	fs, err := btrfsdio.OpenFsInfo(vol, btrfsdio.Options{Mode: btrfsdio.Bounce, Size: uint64(file), NoVolatileDetect: true, Log: log})
	if err != nil {
		return row, err
	}
	inode := fs.Inode()
	buf := blk.AlignedBuffer(btrfsdio.SectorSize)
	for off := int64(0); off+btrfsdio.SectorSize <= file; off += cfg.Stride {
		buf[0]++
		if _, err := inode.DirectWrite(&iomap.Kiocb{Pos: off}, iomap.NewIovIter(buf, 0)); err != nil {
			return row, fmt.Errorf("mapping write at %d: %w", off, err)
		}
	}
	if err := fs.Flush(); err != nil {
		return row, err
	}
	row.Extents = len(fs.AllocatedExtents())
	written := func() (n uint64) {
		for _, d := range vol.Devices() {
			n += d.Stats().BytesWritten
		}
		return n
	}
	rng := rand.New(rand.NewPCG(uint64(size), 17))
	var lat []time.Duration
	var flushBytes uint64
	for i := 1; i <= cfg.Writes; i++ {
		off := rng.Int64N(file/btrfsdio.SectorSize) * btrfsdio.SectorSize
		buf[0]++
		if _, err := inode.DirectWrite(&iomap.Kiocb{Pos: off}, iomap.NewIovIter(buf, 0)); err != nil {
			return row, fmt.Errorf("write %d: %w", i, err)
		}
		if i%cfg.FlushEvery != 0 {
			continue
		}
		before := written()
		start := time.Now()
		if err := fs.Flush(); err != nil {
			return row, err
		}
		lat = append(lat, time.Since(start))
		flushBytes += written() - before
	}
	if len(lat) == 0 {
		return row, fmt.Errorf("no FLUSH in %d writes with one every %d", cfg.Writes, cfg.FlushEvery)
	}
	slices.Sort(lat)
	row.Bytes = float64(flushBytes) / float64(len(lat))
	row.P50, row.P99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	row.PeakRSS, err = procStatus("VmHWM")
	return row, err
}

// WriteFlushScale prints one line per size: flush-scale SIZE
// BYTES_PER_FLUSH P50_US P99_US PEAK_RSS (no kernel counterpart: a
// benchmark report).
func WriteFlushScale(w io.Writer, cfg FlushScaleConfig, rows []FlushScaleRow) {
	fmt.Fprintf(w, "# datasum single volume, one 4 KiB write every %d KiB, then %d random 4 KiB writes with a FLUSH every %d\n",
		cfg.Stride>>10, cfg.Writes, cfg.FlushEvery)
	fmt.Fprintf(w, "# flush-scale SIZE BYTES_PER_FLUSH P50_US P99_US PEAK_RSS (extents mapped)\n")
	for _, r := range rows {
		reset := ""
		if !r.PeakReset {
			reset = ", peak since start"
		}
		fmt.Fprintf(w, "flush-scale %dM %.0f %d %d %d (%d extents%s)\n", r.Size>>20, r.Bytes,
			r.P50.Microseconds(), r.P99.Microseconds(), r.PeakRSS, r.Extents, reset)
	}
}
