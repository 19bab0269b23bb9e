package bench

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/raid"
)

// JournalConfig says how to measure the RAID5/6 journal's cost.
type JournalConfig struct {
	Dir     string
	Profile raid.Profile // raid5 or raid6
	Devices int
	DevSize int64 // bytes per device image
	File    int64 // file size, filled first so that every write overwrites in place
	Writes  int   // random 4 KiB NODATACOW overwrites per measurement
	Rounds  int
}

// JournalCell is one measurement: the same random 4 KiB NODATACOW
// overwrites with or without the journal.
type JournalCell struct {
	Journal bool
	IOPS    []float64 // one per round, the final commit included
}

// Journal measures what the RAID5/6 journal costs (no kernel counterpart:
// btrfs has no journal): random 4 KiB NODATACOW overwrites, each a
// read-modify-write of its full stripe, on a freshly formatted volume with
// the journal and with raid.VolumeOptions.NoJournal, side by side in one
// run, rounds alternating.
func Journal(cfg JournalConfig) ([]*JournalCell, error) {
	cells := []*JournalCell{{Journal: false}, {Journal: true}}
	for round := 0; round < max(cfg.Rounds, 1); round++ {
		for _, c := range cells {
			iops, err := journalRound(cfg, c.Journal, uint64(round))
			if err != nil {
				return nil, err
			}
			c.IOPS = append(c.IOPS, iops)
		}
	}
	return cells, nil
}

func journalRound(cfg JournalConfig, journal bool, seed uint64) (float64, error) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	dir, err := os.MkdirTemp(cfg.Dir, "bench-journal-")
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	var devs []*raid.Device
	for i := 0; i < cfg.Devices; i++ {
		d, err := raid.OpenDevice(filepath.Join(dir, fmt.Sprintf("dev%d.img", i)),
			raid.DeviceOptions{Create: true, Size: cfg.DevSize, Logger: log})
		if err != nil {
			for _, d := range devs {
				d.Close()
			}
			return 0, fmt.Errorf("bench: %w", err)
		}
		devs = append(devs, d)
	}
	vol, _, err := raid.OpenVolume(devs, raid.OpenOptions{Profile: cfg.Profile, Volume: raid.VolumeOptions{Logger: log, NoJournal: !journal}})
	if err != nil {
		for _, d := range devs {
			d.Close()
		}
		return 0, fmt.Errorf("bench: %w", err)
	}
	defer vol.Close()
	fs, err := btrfsdio.OpenFsInfo(vol, btrfsdio.Options{Mode: btrfsdio.Bounce, NoCow: true, Size: uint64(cfg.File),
		NoVolatileDetect: true, Log: log})
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	inode := fs.Inode()
	fill := blk.AlignedBuffer(1 << 20)
	for off := int64(0); off < cfg.File; off += int64(len(fill)) {
		if _, err := inode.DirectWrite(&iomap.Kiocb{Pos: off}, iomap.NewIovIter(fill, 0)); err != nil {
			return 0, fmt.Errorf("bench: filling the file: %w", err)
		}
	}
	if err := fs.Flush(); err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	rng := rand.New(rand.NewPCG(seed, 14))
	buf := blk.AlignedBuffer(btrfsdio.SectorSize)
	start := time.Now()
	for i := 0; i < cfg.Writes; i++ {
		off := rng.Int64N(cfg.File/btrfsdio.SectorSize) * btrfsdio.SectorSize
		buf[0] = byte(i)
		if _, err := inode.DirectWrite(&iomap.Kiocb{Pos: off}, iomap.NewIovIter(buf, 0)); err != nil {
			return 0, fmt.Errorf("bench: write %d: %w", i, err)
		}
	}
	if err := fs.Flush(); err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	return float64(cfg.Writes) / time.Since(start).Seconds(), nil
}

// WriteJournalTable prints the journal measurement (no kernel counterpart:
// a benchmark report).
func WriteJournalTable(w io.Writer, cfg JournalConfig, cells []*JournalCell) {
	fmt.Fprintf(w, "RAID5/6 journal cost: %s over %d devices, %d random 4 KiB NODATACOW overwrites of a %d MiB file, %d rounds (median [min..max])\n",
		cfg.Profile, cfg.Devices, cfg.Writes, cfg.File>>20, max(cfg.Rounds, 1))
	var base float64
	for _, c := range cells {
		med := (&Cell{MiBs: c.IOPS})
		name := "without journal"
		if c.Journal {
			name = "with journal"
		}
		fmt.Fprintf(w, "  %-16s %8.0f IOPS [%.0f..%.0f]", name, med.Median(), med.Min(), med.Max())
		if !c.Journal {
			base = med.Median()
		} else if base > 0 {
			fmt.Fprintf(w, "  (%.2fx the unjournaled rate)", med.Median()/base)
		}
		fmt.Fprintln(w)
	}
}
