package btrfs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/raid"
	"github.com/btrfsdio/btrfsdio/tgt"
	"github.com/btrfsdio/btrfsdio/ublk"
)

// Type is the btrfsdio target of `add -t btrfsdio`.
var Type = tgt.Type{
	Name:         "btrfsdio",
	Usage:        "--profile P --dio bounce|zerocopy|fallback|iomap-bounce [--datasum] [--nocow] [--faithful] [--bounce-pool SIZE|off] [--detect-volatile=false] [--size S] [--force] [--degraded] -f IMG [-f IMG...]",
	New:          func() tgt.Factory { return &Factory{} },
	DecodeStatus: decodeStatus,
}

// Factory builds the btrfsdio target: the btrfs direct IO port over a
// raid volume of image files or block devices.
type Factory struct {
	files    tgt.FileList
	profile  string
	dio      string
	datasum  bool
	nocow    bool
	faithful bool
	size     string
	degraded bool
	// force formats blank images over the signatures of something else.
	force bool
	// bouncePool is --bounce-pool as given; pool is its value in bytes.
	bouncePool string
	pool       int64
	// detectVolatile counts zero-copy writes whose buffer changes in flight.
	detectVolatile bool

	p    raid.Profile
	mode btrfsdio.DioMode
	imgs int64
}

var _ tgt.Factory = (*Factory)(nil)

// Flags registers the target's flags next to add's common ones (ublksrv's
// per-target option parsing; no kernel counterpart).
func (f *Factory) Flags(fs *pflag.FlagSet) {
	fs.VarP(&f.files, "file", "f", "backing image or block device (repeat, in device order)")
	fs.StringVar(&f.profile, "profile", "raid1", "data profile `P`: single dup raid0 raid1 raid1c3 raid1c4 raid10 raid5 raid6")
	fs.StringVar(&f.dio, "dio", "bounce", "direct IO `MODE`: bounce (the patch), zerocopy (before it), fallback (7c2830f00c3e: buffered on duplicated profiles) or iomap-bounce (IOMAP_DIO_BOUNCE, the generic bounce)")
	fs.BoolVar(&f.datasum, "datasum", false, "data checksums (direct writes fall back to stable buffered writes)")
	fs.BoolVar(&f.nocow, "nocow", false, "NODATACOW: overwrite extents in place")
	fs.BoolVar(&f.faithful, "faithful", false, "behave exactly as the posted bounce patch does, bugs included: when a page allocation fails mid-request, leak the page that did not fit, submit an empty bio and finish the unsubmitted tail twice (for comparison only, never for data you keep)")
	fs.StringVar(&f.bouncePool, "bounce-pool", "32M", bouncePoolUsage)
	fs.StringVar(&f.size, "size", "", "create missing images of this `SIZE` (e.g. 256M, 1.5G, 1GiB)")
	fs.BoolVar(&f.force, "force", false, ForceUsage)
	fs.BoolVar(&f.degraded, "degraded", false,
		"run with devices missing (images absent or too few given), as many as the profile tolerates; writes go to the others")
	fs.BoolVar(&f.detectVolatile, "detect-volatile", true,
		"zerocopy: count and log writes whose buffer changes while in flight (reads each write's data twice more)")
}

// Validate checks the parsed flags and the image paths without side
// effects (no kernel counterpart: add runs it before daemonizing).
func (f *Factory) Validate() error {
	var err error
	if f.p, err = raid.ParseProfile(f.profile); err != nil {
		return fmt.Errorf("btrfsdio: --profile: %w", err)
	}
	if f.mode, err = btrfsdio.ParseDioMode(f.dio); err != nil {
		return fmt.Errorf("btrfsdio: --dio: %w", err)
	}
	if len(f.files) == 0 {
		return errors.New("btrfsdio: at least one -f IMG is required")
	}
	if f.pool, err = parseBouncePool(f.bouncePool); err != nil {
		return fmt.Errorf("btrfsdio: %w", err)
	}
	if f.size != "" {
		if f.imgs, err = tgt.ParseSize(f.size); err != nil {
			return fmt.Errorf("btrfsdio: --size: %w", err)
		}
	}
	if f.datasum && f.nocow {
		return errors.New("btrfsdio: --datasum and --nocow exclude each other (NODATACOW implies NODATASUM)")
	}
	someExist := false
	for _, p := range f.files {
		if _, err := os.Stat(p); err == nil {
			someExist = true
		}
	}
	for _, p := range f.files {
		// Absent images are created with --size, or are the missing
		// devices of the volume the others hold (raid.Assemble decides).
		if err := CheckImagePath(p, f.imgs > 0 || f.degraded || someExist); err != nil {
			return fmt.Errorf("btrfsdio: %w", err)
		}
	}
	if err := raid.CheckDistinct(f.files); err != nil {
		return err
	}
	if min := f.p.MinDevices(); len(f.files) < min {
		return fmt.Errorf("btrfsdio: profile %s needs at least %d devices, got %d", f.p, min, len(f.files))
	}
	return nil
}

// Build assembles the volume, mounts it (OpenFsInfo, open_ctree) and
// returns the target serving its one inode.
func (f *Factory) Build(env tgt.Env) (ublk.Target, ublk.TargetParams, error) {
	log := logrus.StandardLogger()
	vol, sb, err := AssembleVolume(f.files, f.p, f.imgs, f.degraded, FormatOptions{Force: f.force, Notice: env.Notice, Holder: env.Holder}, log)
	if err != nil {
		return nil, ublk.TargetParams{}, err
	}
	log.Infof("volume %x: %s, %d devices, generation %d", sb.Fsid[:4], sb.Profile, sb.NumDevices, sb.Generation)
	// Existing images are mounted with their data; a volume whose
	// metadata has no valid copy is refused, never reformatted.
	// The intent log in the run directory (a tmpfs) makes every completed
	// write survive the server's death: the next server on these images,
	// `recover` or a new `add`, replays it before it serves anything.
	fs, err := btrfsdio.OpenFsInfo(vol, btrfsdio.Options{
		Mode: f.mode, Faithful: f.faithful, DataSum: f.datasum, NoCow: f.nocow, Log: log,
		NoVolatileDetect: !f.detectVolatile, BouncePool: f.pool,
		IntentLogDir: env.RunDir, ReplayStep: replayFault(log),
		// Images that came back behind the volume are resynced while the
		// device serves (list shows how far); reads never use them before.
		ResyncInBackground: true,
	})
	if err != nil {
		vol.Close()
		return nil, ublk.TargetParams{}, err
	}
	t := &Target{FS: fs}
	inode := fs.Inode()
	// The inode's flags were fixed when the images were made: they win
	// over the command line, and list shows what is in force.
	if f.datasum != !inode.NoDataSum || f.nocow != inode.NoDataCow {
		log.Warnf("btrfsdio: the volume was made with datasum %v, nocow %v: --datasum/--nocow of this add ignored",
			!inode.NoDataSum, inode.NoDataCow)
	}
	f.datasum, f.nocow = !inode.NoDataSum, inode.NoDataCow
	log.Infof("btrfsdio: profile %s, dio %s, datasum %v, nocow %v, %d devices, %d bytes, generation %d",
		vol.Profile(), f.mode, !inode.NoDataSum, inode.NoDataCow, len(f.files), inode.ISize(), fs.Generation())
	return t, t.Params(), nil
}

// Info describes the target for `list`, with the inode flags in force.
func (f *Factory) Info() map[string]any {
	return map[string]any{
		"profile": f.p.String(), "dio": f.mode.String(), "datasum": f.datasum,
		"nocow": f.nocow, "faithful": f.faithful, "files": []string(f.files), "degraded": f.degraded,
		"bounce_pool":     f.bouncePool,
		"detect_volatile": f.mode == btrfsdio.ZeroCopy && f.detectVolatile,
	}
}

// envReplayKill names the test hook that kills the server (SIGKILL) just
// before it replays change N of an intent log: a crash in the middle of the
// replay, for tests/recovery/008.
const envReplayKill = "BTRFSDIO_TEST_REPLAY_KILL"

// replayFault is the ReplayStep of envReplayKill, nil when it is not set.
func replayFault(log logrus.FieldLogger) func(int) error {
	at, err := strconv.Atoi(os.Getenv(envReplayKill))
	if err != nil {
		return nil
	}
	return func(n int) error {
		if n == at {
			log.Warnf("%s=%d: killing the server before change %d of the replay", envReplayKill, at, n)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		return nil
	}
}

const bouncePoolUsage = "bounce mode: `SIZE` of bounce memory held at once (default 32M, at least 1M), " +
	"or off to allocate page by page as the posted patch does (--faithful always does)"

// parseBouncePool reads --bounce-pool: a size of at least 1 MiB in whole
// pages, or off.
func parseBouncePool(s string) (int64, error) {
	if s == "off" {
		return btrfsdio.NoBouncePool, nil
	}
	n, err := tgt.ParseSize(s)
	if err == nil {
		err = btrfsdio.CheckBouncePool(n)
	}
	if err != nil {
		return 0, fmt.Errorf("--bounce-pool %q: %w (want a size such as 32M, at least 1M, or off)", s, err)
	}
	return n, nil
}
