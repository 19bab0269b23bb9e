package powercut

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/raid"
	"github.com/btrfsdio/btrfsdio/tgt/btrfs"
	"github.com/btrfsdio/btrfsdio/ublk"
)

// Config sizes a run.
type Config struct {
	Seed uint64
	// DevSize is each device's size in bytes.
	DevSize int64
	// Requests is how many requests the workload sends.
	Requests int
	// MinCuts is the fewest cut points per scenario (random ones are
	// added to reach it); MaxCuts, when non-zero, samples the flush cuts
	// down to it.
	MinCuts, MaxCuts int
	// Dir holds the images (default: /dev/shm if there is one, else
	// os.TempDir(); only the speed depends on it: flushes are fdatasync on
	// the recorded images, which tmpfs makes free).
	Dir string
	// NoBitmap runs without the RAID layer's write-intent bitmap, to show
	// what it prevents: NOCOW mirrors then keep copies that differ.
	NoBitmap bool
	// NoJournal records the workload without the RAID5/6 journal
	// (raid.VolumeOptions.NoJournal), to show the write hole it closes.
	NoJournal bool
	// MetaLogBudget is btrfsdio.Options.MetaLogBudget: small, the cuts
	// fall in checkpoints as well as in log appends.
	MetaLogBudget uint64
}

// Result is what one scenario's run found.
type Result struct {
	Scenario Scenario
	Seed     uint64
	Cuts     int
	// Failures are the cut points whose images broke a promise other than
	// the copies' agreement (mount refused, metadata or checksums damaged,
	// a block holding what no acknowledged write left), one line each.
	Failures []string
	// Inconsistent are the cut points whose only fault is that the copies
	// or parity of committed data disagree (what ExpectedFailures may
	// excuse).
	Inconsistent []string
	// Err is a failure to run the scenario at all.
	Err error
}

// Failed reports whether anything broke a promise.
func (r *Result) Failed() bool { return r.Err != nil || len(r.Failures) > 0 || len(r.Inconsistent) > 0 }

// quiet is a logger that drops everything (the crash images make the port
// warn about what it repairs or refuses; the harness reports instead).
func quiet() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// Run runs scenario s: record the workload, then for every cut point build
// the crash images, mount them and check them (see checkCut).
func Run(s Scenario, cfg Config) *Result {
	res := &Result{Scenario: s, Seed: cfg.Seed}
	if cfg.Dir == "" {
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			cfg.Dir = "/dev/shm"
		}
	}
	dir, err := os.MkdirTemp(cfg.Dir, "powercut-")
	if err != nil {
		res.Err = fmt.Errorf("powercut: %w", err)
		return res
	}
	defer os.RemoveAll(dir)
	rng := rand.New(rand.NewPCG(s.seed(cfg.Seed), 1))
	lg, m, mounted, err := record(s, cfg, rng, dir)
	if err != nil {
		res.Err = err
		return res
	}
	cuts := chooseCuts(lg, m, mounted, rng, cfg)
	res.Cuts = len(cuts)
	crashDir := filepath.Join(dir, "crash")
	if err := os.Mkdir(crashDir, 0o755); err != nil {
		res.Err = fmt.Errorf("powercut: %w", err)
		return res
	}
	for i, cut := range cuts {
		// Each cut has its own stream, so a cut's images depend only on
		// the seed and the cut, not on the cuts before it.
		crng := rand.New(rand.NewPCG(s.seed(cfg.Seed), uint64(2+i)))
		pol := choosePolicy(crng)
		where := fmt.Sprintf("cut %d (event %d of %d, %s)", i, cut, lg.Len(), pol)
		switch copies, other := checkCut(s, cfg, lg, m, cut, pol, crng, crashDir); {
		case other != "":
			res.Failures = append(res.Failures, fmt.Sprintf("%s: %s", where, strings.TrimPrefix(copies+"; "+other, "; ")))
		case copies != "":
			res.Inconsistent = append(res.Inconsistent, fmt.Sprintf("%s: %s", where, copies))
		}
		if s.Profile.ToleratedFailures() == 0 {
			continue
		}
		// The same images again (the same stream, the same draws), then a
		// device lost before the mount.
		lrng := rand.New(rand.NewPCG(s.seed(cfg.Seed), uint64(2+i)))
		choosePolicy(lrng)
		if msg := checkCutLost(s, lg, m, cut, pol, lrng, crashDir); msg != "" {
			res.Failures = append(res.Failures, fmt.Sprintf("%s, then %s", where, msg))
		}
	}
	return res
}

// checkCutLost builds the images of a power cut at cut, loses one device
// (drawn from rng), mounts the rest degraded and holds every block of the
// device to the model: what the redundancy promises is that losing as many
// devices as the profile tolerates loses no data, right after a crash too
// (a RAID5/6 full stripe whose parity the cut left stale would rebuild
// garbage: the write hole). It returns what broke, or "".
func checkCutLost(s Scenario, lg *Log, m *model, cut int, pol Policy, rng *rand.Rand, dir string) string {
	paths, err := lg.Crash(cut, pol, rng, dir)
	if err != nil {
		return err.Error()
	}
	lost := rng.IntN(len(paths))
	var devs []*raid.Device
	for i, p := range paths {
		if i == lost {
			continue
		}
		d, err := raid.OpenDevice(p, raid.DeviceOptions{Buffered: true, Logger: quiet()})
		if err != nil {
			for _, d := range devs {
				d.Close()
			}
			return fmt.Sprintf("device %d lost: opening the image: %v", lost, err)
		}
		devs = append(devs, d)
	}
	vol, _, err := raid.OpenVolume(devs, raid.OpenOptions{Profile: s.Profile, Degraded: true, Volume: raid.VolumeOptions{Logger: quiet()}})
	if err != nil {
		for _, d := range devs {
			d.Close()
		}
		return fmt.Sprintf("device %d lost: degraded mount refused: %v", lost, err)
	}
	defer vol.Close()
	opts := s.options()
	opts.Log = quiet()
	fs, err := btrfsdio.OpenFsInfo(vol, opts)
	if err != nil {
		return fmt.Sprintf("device %d lost: degraded mount refused: %v", lost, err)
	}
	if msg := compare(&btrfs.Target{FS: fs}, m, cut, s.Kind == NoCow); msg != "" {
		return fmt.Sprintf("device %d lost: %s", lost, msg)
	}
	return ""
}

// record formats a volume on fresh images under the log, mounts it, and
// runs the workload on the target. It returns the log, the model, and the
// position from which cuts are taken: once the mount has returned (a cut
// during mkfs leaves a volume nobody was told exists).
func record(s Scenario, cfg Config, rng *rand.Rand, dir string) (*Log, *model, int, error) {
	var devs []*raid.Device
	for i := range s.devices() {
		d, err := raid.OpenDevice(filepath.Join(dir, fmt.Sprintf("live%d.img", i)),
			raid.DeviceOptions{Create: true, Size: cfg.DevSize, Logger: quiet()})
		if err != nil {
			for _, d := range devs {
				d.Close()
			}
			return nil, nil, 0, fmt.Errorf("powercut: %w", err)
		}
		devs = append(devs, d)
	}
	lg := NewLog(devs)
	vol, _, err := raid.OpenVolume(devs, raid.OpenOptions{Profile: s.Profile,
		Volume: raid.VolumeOptions{Logger: quiet(), NoBitmap: cfg.NoBitmap, NoJournal: cfg.NoJournal}})
	if err != nil {
		for _, d := range devs {
			d.Close()
		}
		return nil, nil, 0, fmt.Errorf("powercut: format: %w", err)
	}
	defer vol.Close() // no commit: the log is what matters now
	opts := s.options()
	opts.Log, opts.MetaLogBudget = quiet(), cfg.MetaLogBudget
	if opts.Size, err = fileSize(vol.Capacity()); err != nil {
		return nil, nil, 0, err
	}
	fs, err := btrfsdio.OpenFsInfo(vol, opts)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("powercut: mount: %w", err)
	}
	mounted := lg.Mark(-1)
	tg := &btrfs.Target{FS: fs}
	size := uint64(fs.Inode().ISize())
	m := newModel(size)
	for id, r := range genRequests(rng, cfg.Requests, size) {
		r.start = lg.Mark(id)
		if err := send(tg, id, r); err != nil {
			return nil, nil, 0, fmt.Errorf("powercut: workload: %w", err)
		}
		r.ack = lg.Mark(id)
		m.add(id, r)
	}
	return lg, m, mounted, nil
}

// maxFile bounds the device the workload writes: every cut reads it all.
const maxFile = 6 << 20

// fileSize is the device's size on a data chunk of capacity bytes: room
// left for a 2 MiB copy-on-write request over a fully mapped file, plus
// what the extents it replaces keep pinned until the next commit.
func fileSize(capacity uint64) (uint64, error) {
	const slack = 3 << 20
	if capacity < slack+1<<20 {
		return 0, fmt.Errorf("powercut: a %d-byte data chunk is too small for 2 MiB copy-on-write requests", capacity)
	}
	return min(capacity-slack, maxFile) &^ (1<<20 - 1), nil
}

// chooseCuts picks the cut points (event counts) after mounted: right after
// every device flush completed, after the last write before it and the
// first write after it, right after every write or discard request was
// acknowledged, plus random points, a quarter of MinCuts or what
// it takes to reach it; MaxCuts samples the flush cuts down.
func chooseCuts(lg *Log, m *model, mounted int, rng *rand.Rand, cfg Config) []int {
	lg.mu.Lock()
	set := map[int]bool{}
	add := func(c int) {
		if c > mounted && c <= len(lg.events) {
			set[c] = true
		}
	}
	for i, io := range lg.ios {
		if !io.flush || io.end < 0 {
			continue
		}
		add(io.end + 1)
		for j := i - 1; j >= 0; j-- { // the last write completed before the flush
			if w := lg.ios[j]; !w.flush && w.dev == io.dev && w.end >= 0 && w.end < io.begin {
				add(w.end + 1)
				break
			}
		}
		for _, w := range lg.ios[i+1:] { // the first write issued after it
			if !w.flush && w.dev == io.dev && w.begin > io.end {
				add(w.begin + 1)
				break
			}
		}
	}
	for _, r := range m.reqs { // right after a write or discard is acknowledged
		if !r.durable() {
			add(r.ack + 1)
		}
	}
	n := len(lg.events)
	lg.mu.Unlock()
	cuts := make([]int, 0, len(set))
	for c := range set {
		cuts = append(cuts, c)
	}
	slices.Sort(cuts)
	// A quarter of the cuts, at least, fall at random events: mostly in
	// the middle of writes, where no flush is near.
	random := max(cfg.MinCuts/4, cfg.MinCuts-len(cuts))
	if cfg.MaxCuts > 0 && len(cuts) > cfg.MaxCuts-random {
		rng.Shuffle(len(cuts), func(i, j int) { cuts[i], cuts[j] = cuts[j], cuts[i] })
		cuts = cuts[:max(0, cfg.MaxCuts-random)]
	}
	for tries := 0; random > 0 && tries < 100*cfg.MinCuts && n > mounted+1; tries++ {
		c := mounted + 1 + rng.IntN(n-mounted)
		if !slices.Contains(cuts, c) {
			cuts = append(cuts, c)
			random--
		}
	}
	slices.Sort(cuts)
	return cuts
}

// choosePolicy draws what a cut keeps of the unflushed writes: all of them
// (a clean prefix, as dm-log-writes' replay), none, or a random share with
// torn blocks.
func choosePolicy(rng *rand.Rand) Policy {
	switch rng.IntN(6) {
	case 0:
		return Policy{Keep: 1}
	case 1:
		return Policy{Keep: 0}
	}
	return Policy{Keep: 0.1 + 0.8*rng.Float64(), Tear: 0.3}
}

// checkCut builds the images of a power cut at cut, and holds them to the
// promises: the volume mounts, check finds no damage, and every block of
// the device holds what the model allows. It returns what broke: copies
// when only the copies or parity of committed data disagree, other for
// everything else.
func checkCut(s Scenario, cfg Config, lg *Log, m *model, cut int, pol Policy, rng *rand.Rand, dir string) (copies, other string) {
	paths, err := lg.Crash(cut, pol, rng, dir)
	if err != nil {
		return "", err.Error()
	}
	var devs []*raid.Device
	for _, p := range paths {
		// Buffered: the images were just written through the page cache.
		d, err := raid.OpenDevice(p, raid.DeviceOptions{Buffered: true, Logger: quiet()})
		if err != nil {
			for _, d := range devs {
				d.Close()
			}
			return "", fmt.Sprintf("opening the image: %v", err)
		}
		devs = append(devs, d)
	}
	vol, _, err := raid.OpenVolume(devs, raid.OpenOptions{Profile: s.Profile, Volume: raid.VolumeOptions{Logger: quiet(), NoBitmap: cfg.NoBitmap}})
	if err != nil {
		for _, d := range devs {
			d.Close()
		}
		return "", fmt.Sprintf("mount refused: %v", err)
	}
	defer vol.Close()
	rep, err := btrfsdio.Check(vol) // before the mount, which may write
	if err != nil {
		return "", fmt.Sprintf("check failed: %v", err)
	}
	// Copies that differ here are what the mount's write-intent bitmap
	// resync repairs (md resyncs at assembly): the copies' agreement is
	// judged by a second check after the mount, everything else by both.
	_, other = damage(rep)
	opts := s.options()
	opts.Log, opts.MetaLogBudget = quiet(), cfg.MetaLogBudget
	fs, err := btrfsdio.OpenFsInfo(vol, opts)
	if err != nil {
		copies, _ = damage(rep)
		return copies, strings.TrimPrefix(other+"; mount refused: "+err.Error(), "; ")
	}
	after, err := btrfsdio.Check(vol)
	if err != nil {
		return "", strings.TrimPrefix(other+"; check after the mount failed: "+err.Error(), "; ")
	}
	copies, otherAfter := damage(after)
	if otherAfter != "" && otherAfter != other {
		other = strings.TrimPrefix(other+"; after the mount: "+otherAfter, "; ")
	}
	if msg := compare(&btrfs.Target{FS: fs}, m, cut, s.Kind == NoCow); msg != "" {
		other = strings.TrimPrefix(other+"; "+msg, "; ")
	}
	return copies, other
}

// damage says what a check report holds against the images: copies of
// committed data or their parity that disagree, and any other damage
// (a bad metadata copy, a checksum that fails, a read error).
func damage(rep *btrfsdio.CheckReport) (copies, other string) {
	var bad []string
	for _, c := range rep.MetaCopies {
		if c.Err != nil {
			bad = append(bad, fmt.Sprintf("metadata copy %s: %v", c.Where, c.Err))
		}
	}
	sc := rep.Scrub
	if len(sc.CsumErrors)+len(sc.ReadErrors) > 0 {
		bad = append(bad, fmt.Sprintf("check: %d csum errors, %d read errors in the committed extents", len(sc.CsumErrors), len(sc.ReadErrors)))
	}
	if len(sc.Differences)+len(sc.ParityMismatches) > 0 {
		copies = fmt.Sprintf("check: %d differing copies, %d parity mismatches in the committed extents",
			len(sc.Differences), len(sc.ParityMismatches))
	}
	return copies, strings.Join(bad, "; ")
}

// compare reads the whole device back through the target and holds every
// block to the model.
func compare(tg *btrfs.Target, m *model, cut int, sectorAtomic bool) string {
	size := uint64(len(m.history)) * blockSize
	if got := uint64(tg.FS.Inode().ISize()); got != size {
		return fmt.Sprintf("the device is %d bytes, not %d", got, size)
	}
	unit := blockSize
	if sectorAtomic {
		unit = tearSector
	}
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	var bad []string
	nbad := 0
	for off := uint64(0); off < size; off += chunk {
		n := min(chunk, size-off)
		req := &ublk.Request{Op: ublk.OpRead, Sector: off >> 9, Sectors: uint32(n >> 9), Data: &memData{buf[:n]}}
		if got := tg.Handle(req); got != int32(n) {
			return fmt.Sprintf("read of [%d,+%d) returned %d", off, n, got)
		}
		for at := uint64(0); at < n; at += blockSize {
			b := (off + at) / blockSize
			vals, last := m.allowed(b, cut)
			if msg := m.verify(buf[at:at+blockSize], b, vals, unit); msg != "" {
				nbad++
				if len(bad) < 3 {
					bad = append(bad, fmt.Sprintf("block at %d holds %s; allowed: %s (last acknowledged flush: request %d)",
						b*blockSize, msg, valNames(vals), last))
				}
			}
		}
	}
	if nbad > 0 {
		return fmt.Sprintf("%d blocks hold what no acknowledged write left there: %v", nbad, bad)
	}
	return ""
}
