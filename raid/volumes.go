package raid

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/blk"
)

// StripeLen is BTRFS_STRIPE_LEN.
const StripeLen = 64 << 10

// SectorSize is fs_info->sectorsize: the unit of csums, I/O alignment and
// scrub comparison.
const SectorSize = 4096

// RAID5/6 raid_map markers for the parity stripes (BTRFS_RAID5_P_STRIPE,
// BTRFS_RAID6_Q_STRIPE).
const (
	PStripe = ^uint64(0) - 1
	QStripe = ^uint64(0)
)

// VolumeOptions tunes NewVolume.
type VolumeOptions struct {
	// Logger gets layout and I/O error messages (default: logrus' standard
	// logger).
	Logger logrus.FieldLogger
	// MaxDeviceBytes, when non-zero, caps how much of each device the chunk
	// uses (measured from the device start, reserved MiB included).
	MaxDeviceBytes uint64
	// NoBitmap leaves the write-intent bitmap out (bitmap.go): only to
	// measure what it costs; a crash then leaves mirrors that differ.
	NoBitmap bool
	// VerifyData checks one data sector read at logical against its data
	// checksum (the layer above's csum tree): known is false when there is
	// no checksum to judge by. RAID5/6 read-modify-write verifies the data
	// it reads with it (SetVerifyData sets it after the volume is open).
	VerifyData VerifyDataFunc
	// NoJournal leaves RAID5/6 writes unjournaled even when the volume
	// has a journal area (the write hole open, as in btrfs): for measuring
	// what the journal costs and showing what it protects. The journal is
	// still replayed at open.
	NoJournal bool
}

// VerifyDataFunc is the csum lookup and comparison that raid56.c's
// fill_data_csums and verify_bio_data_sectors do against the csum tree,
// supplied by the filesystem so that this package needs no csum tree.
type VerifyDataFunc func(logical uint64, sector []byte) (ok, known bool)

// chunkStripe is struct btrfs_io_stripe in a chunk map: where one stripe
// (dev extent) of the chunk lives.
type chunkStripe struct {
	dev      int    // index into Volume.devs
	physical uint64 // dev extent start
}

// chunkMap is struct btrfs_chunk_map for the volume's one data chunk.
type chunkMap struct {
	start      uint64 // logical start (0)
	length     uint64 // chunk_len: usable logical bytes
	stripeSize uint64 // dev extent length
	stripes    []chunkStripe
	subStripes int
}

func (m *chunkMap) numStripes() int { return len(m.stripes) }

// Volume is the slice of fs_info this package needs: the devices
// (fs_devices) and one data chunk mapped across them.
type Volume struct {
	devs    []*Device
	profile Profile
	attr    raidAttr
	chunk   chunkMap
	log     logrus.FieldLogger

	clones      blk.BioSet      // btrfs_clone_bioset
	readRR      atomic.Uint64   // round-robin read policy cursor
	stripeLocks stripeLockTable // raid56 stripe hash table

	// degradedWrites counts writes that missed copies (noteDegraded).
	degradedWrites atomic.Uint64
	// bitmap is the write-intent bitmap; nil with NoBitmap.
	bitmap *writeIntentBitmap

	// generation is the newest superblock generation at open (markStale);
	// resync is the bringing up to date of stale devices (Resync).
	generation uint64
	resync     resyncState

	// verifyData is the filesystem's csum check for RMW reads (nil: none).
	verifyData atomic.Pointer[VerifyDataFunc]

	// journal is the RAID5/6 journal (nil: the volume has no journal
	// area); noJournal is VolumeOptions.NoJournal; unjournaledOnce warns
	// once that RAID5/6 writes go unprotected.
	journal         *raid56Journal
	noJournal       bool
	unjournaledOnce sync.Once

	mu       sync.RWMutex
	closed   bool
	inflight sync.WaitGroup
}

// IOStripe is struct btrfs_io_stripe of an I/O context: one device range.
type IOStripe struct {
	Dev      *Device
	DevIndex int // index of Dev in the volume's device list
	Physical uint64
}

// IOContext is struct btrfs_io_context: what one mapped piece of I/O
// touches.
type IOContext struct {
	Op      blk.Op
	Logical uint64
	// MirrorNum is the copy a read was mapped to (1-based), the mirror
	// asked for on RAID5/6 recovery, 0 for writes.
	MirrorNum int
	// MaxErrors is how many stripe writes may fail before the write fails.
	MaxErrors int
	Stripes   []IOStripe
	// FullStripeLogical is the full stripe start (RAID5/6 full-stripe
	// mappings: writes and reads with mirror > 1).
	FullStripeLogical uint64
	// RaidMap is the logical start of each stripe of a RAID5/6 full-stripe
	// mapping, data stripes first in logical order then PStripe and
	// QStripe (raid_map after sort_parity_stripes); nil otherwise.
	RaidMap []uint64
}

// NewVolume is btrfs_create_chunk for one data chunk of profile p spanning
// logical [0, Capacity()), over devs in the given order: every device is
// used as if it were as large as the smallest one, the first 1 MiB of each
// is left alone, DUP puts its two stripes one after the other on its single
// device. The layout depends only on (profile, device order, sizes,
// MaxDeviceBytes), so reopening the same images maps the same way. The
// volume owns devs from here on: Close closes them.
func NewVolume(devs []*Device, p Profile, opts VolumeOptions) (*Volume, error) {
	if !p.valid() {
		return nil, fmt.Errorf("raid: invalid profile %d", int(p))
	}
	if err := checkDeviceCount(devs, p); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = logrus.StandardLogger()
	}
	a := p.attr()
	size := devs[0].Size()
	for _, d := range devs[1:] {
		size = min(size, d.Size())
	}
	if opts.MaxDeviceBytes != 0 {
		size = min(size, opts.MaxDeviceBytes)
	}
	stripeSize := uint64(0)
	if size > ReservedBytes {
		stripeSize = (size - ReservedBytes) / uint64(a.devStripes) / StripeLen * StripeLen
	}
	if stripeSize == 0 {
		return nil, fmt.Errorf("raid: devices too small for %s: %d usable bytes each, need %d", p, size,
			ReservedBytes+uint64(a.devStripes)*StripeLen)
	}
	v := &Volume{devs: devs, profile: p, attr: a, log: log, noJournal: opts.NoJournal}
	v.SetVerifyData(opts.VerifyData)
	v.chunk = layoutChunk(len(devs), a, stripeSize)
	v.chunk.length = stripeSize * uint64(dataStripes(p, v.chunk.numStripes()))
	if !opts.NoBitmap {
		v.bitmap = newBitmap(v)
	}
	log.WithFields(logrus.Fields{"profile": p.String(), "devices": len(devs), "stripe_size": stripeSize,
		"capacity": v.chunk.length}).Debug("raid: data chunk laid out")
	return v, nil
}

// checkDeviceCount is the devs_min/devs_max/devs_increment test of
// btrfs_create_chunk, stricter in one way: a volume has a single chunk, so
// devices the chunk would not use are refused instead of left idle.
func checkDeviceCount(devs []*Device, p Profile) error {
	a := p.attr()
	n := len(devs)
	seen := map[string]bool{}
	for i, d := range devs {
		if d == nil {
			return fmt.Errorf("raid: device %d is nil", i)
		}
		if seen[d.path] {
			return fmt.Errorf("raid: device %s given twice", d.path)
		}
		seen[d.path] = true
	}
	switch {
	case n < a.devsMin:
		return fmt.Errorf("raid: %s needs at least %d devices, got %d", p, a.devsMin, n)
	case a.devsMax != 0 && n > a.devsMax:
		return fmt.Errorf("raid: a %s chunk uses exactly %d device(s), got %d (this volume has one chunk)", p, a.devsMax, n)
	case n%a.devsIncrement != 0:
		return fmt.Errorf("raid: %s needs a multiple of %d devices, got %d", p, a.devsIncrement, n)
	}
	return nil
}

// layoutChunk places the chunk's stripes: one per device after the reserved
// range, DUP's second stripe right after its first.
func layoutChunk(ndevs int, a raidAttr, stripeSize uint64) chunkMap {
	m := chunkMap{stripeSize: stripeSize, subStripes: a.subStripes}
	for i := 0; i < ndevs; i++ {
		for s := 0; s < a.devStripes; s++ {
			m.stripes = append(m.stripes, chunkStripe{dev: i, physical: ReservedBytes + uint64(s)*stripeSize})
		}
	}
	return m
}

// dataStripes is how many stripes carry distinct data (calc_data_stripes).
func dataStripes(p Profile, numStripes int) int {
	a := p.attr()
	switch {
	case p.IsRaid56():
		return numStripes - a.nparity
	case p == Raid10:
		return numStripes / a.subStripes
	}
	return numStripes / a.ncopies
}

// SetVerifyData installs the data checksum check RAID5/6 read-modify-write
// runs on the data it reads (nil removes it). No kernel counterpart as a
// call: raid56.c reads the csum tree itself (fill_data_csums); here the
// filesystem mounts after the volume is open and hands its check down.
func (v *Volume) SetVerifyData(f VerifyDataFunc) {
	if f == nil {
		v.verifyData.Store(nil)
		return
	}
	v.verifyData.Store(&f)
}

// Capacity is the chunk length: usable logical bytes, a multiple of
// StripeLen (of the full stripe for RAID5/6).
func (v *Volume) Capacity() uint64 { return v.chunk.length }

// Profile is the chunk's profile (map->type's raid index).
func (v *Volume) Profile() Profile { return v.profile }

// Devices is fs_devices->devices in volume order.
func (v *Volume) Devices() []*Device { return append([]*Device(nil), v.devs...) }

// DataStripes is nr_data_stripes for RAID5/6, and for other profiles the
// number of stripes holding distinct data.
func (v *Volume) DataStripes() int { return dataStripes(v.profile, v.chunk.numStripes()) }

// FullStripeLen is a RAID5/6 full stripe's data length (nr_data_stripes *
// BTRFS_STRIPE_LEN); StripeLen for other profiles.
func (v *Volume) FullStripeLen() uint64 {
	if v.profile.IsRaid56() {
		return uint64(v.DataStripes()) * StripeLen
	}
	return StripeLen
}

// NumCopies is btrfs_num_copies: how many mirrors a read may ask for. RAID5
// has 2 (the data, or a rebuild from P); RAID6, as in the kernel, one per
// stripe: the data, a rebuild from P, and from mirror 3 on rebuilds with Q
// that also drop one other stripe each (raid6ExtraError), so that two bad
// data sectors in one column can be found and rebuilt. Like the kernel, an
// address outside the chunk has 1.
func (v *Volume) NumCopies(logical, length uint64) int {
	if logical >= v.chunk.length || length > v.chunk.length-logical {
		v.log.Warnf("raid: num_copies: no mapping for %d+%d (capacity %d)", logical, length, v.chunk.length)
		return 1
	}
	return v.numCopies()
}

// numCopies is btrfs_num_copies for the volume's chunk.
func (v *Volume) numCopies() int {
	if v.profile == Raid6 {
		return v.chunk.numStripes()
	}
	return v.profile.numCopies()
}

// errMap is the errno btrfs_map_block fails with for a bad request.
var errMap = syscall.EINVAL

// ioGeometry is struct btrfs_io_geometry.
type ioGeometry struct {
	op           blk.Op
	mirror       int
	stripeIndex  int
	numStripes   int
	stripeNr     uint64 // stripe number on the device (after the profile's division)
	stripeOffset uint64
	maxErrors    int
}

// MapBlock is btrfs_map_block: map [logical, logical+length) to the
// stripes to touch. It returns the I/O context and map_length, the bytes
// from logical that this mapping covers (at most length): up to the next
// BTRFS_STRIPE_LEN boundary for striped profiles, up to the full stripe end
// for RAID5/6 writes, up to the chunk end otherwise. Writes map to every
// copy (max_errors = tolerated failures); reads to one copy: mirror N>0
// reads copy N, mirror 0 lets the read policy choose (round-robin here).
// RAID5/6 writes and reads with mirror > 1 map the whole full stripe with
// its raid_map.
func (v *Volume) MapBlock(op blk.Op, logical, length uint64, mirror int) (*IOContext, uint64, error) {
	if err := v.checkMap(op, logical, length, mirror); err != nil {
		return nil, 0, err
	}
	offset := logical - v.chunk.start
	g := ioGeometry{op: op, mirror: mirror, numStripes: 1,
		stripeNr: offset / StripeLen, stripeOffset: offset % StripeLen}
	mapLen := min(length, v.chunk.length-offset, v.maxIOLen(op, offset))
	ioc := &IOContext{Op: op, Logical: logical}
	switch {
	case v.profile.IsRaid56() && (op == blk.OpWrite || mirror > 1):
		v.mapRaid56Full(ioc, &g, offset)
	case v.profile.IsRaid56() && mirror == 0 && v.raid56DataMissing(offset):
		g.mirror = 2 // rebuild from parity rather than ask a missing or stale device
		v.mapRaid56Full(ioc, &g, offset)
	case v.profile.IsRaid56():
		v.mapRaid56Read(&g)
	case v.profile == Raid10:
		v.mapRaid10(&g)
	case v.profile == Raid0:
		g.stripeIndex = int(g.stripeNr % uint64(v.chunk.numStripes()))
		g.stripeNr /= uint64(v.chunk.numStripes())
	case v.profile.Mirrored(): // DUP, RAID1*
		v.mapMirrored(&g)
	default: // SINGLE
		g.stripeNr, g.stripeOffset = 0, offset
	}
	if op == blk.OpWrite {
		g.maxErrors = v.attr.toleratedFailures
	} else if g.mirror == 0 {
		g.mirror = 1 // the only copy
	}
	ioc.MirrorNum, ioc.MaxErrors = g.mirror, g.maxErrors
	if ioc.Stripes == nil {
		for i := 0; i < g.numStripes; i++ {
			cs := v.chunk.stripes[g.stripeIndex+i]
			ioc.Stripes = append(ioc.Stripes, IOStripe{Dev: v.devs[cs.dev], DevIndex: cs.dev,
				Physical: cs.physical + g.stripeNr*StripeLen + g.stripeOffset})
		}
	}
	return ioc, mapLen, nil
}

func (v *Volume) checkMap(op blk.Op, logical, length uint64, mirror int) error {
	switch {
	case op != blk.OpRead && op != blk.OpWrite:
		return fmt.Errorf("raid: map_block: op %s cannot be mapped: %w", op, errMap)
	case length == 0:
		return fmt.Errorf("raid: map_block at %d: zero length: %w", logical, errMap)
	case logical < v.chunk.start || logical-v.chunk.start >= v.chunk.length: // no start+length to wrap
		return fmt.Errorf("raid: map_block: logical %d outside the chunk [%d,%d): %w",
			logical, v.chunk.start, v.chunk.start+v.chunk.length, errMap)
	case mirror < 0 || mirror > v.numCopies():
		return fmt.Errorf("raid: map_block at %d: mirror %d, %s has %d: %w",
			logical, mirror, v.profile, v.numCopies(), errMap)
	case op == blk.OpWrite && mirror != 0:
		return fmt.Errorf("raid: map_block at %d: a write goes to every copy, mirror %d given: %w", logical, mirror, errMap)
	}
	return nil
}

// maxIOLen is btrfs_max_io_len: RAID5/6 writes may run to the end of the
// full stripe; striped profiles otherwise stop at the stripe boundary.
func (v *Volume) maxIOLen(op blk.Op, offset uint64) uint64 {
	if v.profile.IsRaid56() && op == blk.OpWrite {
		full := v.FullStripeLen()
		return full - offset%full
	}
	if v.profile.Striped() {
		return StripeLen - offset%StripeLen
	}
	return ^uint64(0)
}

// readPolicyMirror is find_live_mirror with a round-robin policy instead of
// the kernel's default pid-based one (BTRFS_READ_POLICY_PID): successive
// reads go to successive copies, so that when copies differ, what a read
// returns really depends on which copy answers. Like find_live_mirror it
// skips copies on missing devices, and on stale ones too (chunk stripes
// first..first+copies-1); when all are skipped the policy's pick stands,
// and fails.
func (v *Volume) readPolicyMirror(first, copies int) int {
	m := int((v.readRR.Add(1)-1)%uint64(copies)) + 1
	for i := 0; i < copies; i++ {
		c := (m-1+i)%copies + 1
		if !v.devs[v.chunk.stripes[first+c-1].dev].unreadable() {
			return c
		}
	}
	return m
}

// raid56DataMissing reports whether the data stripe holding chunk offset
// lives on a missing or stale device (the placement of mapRaid56Read).
func (v *Volume) raid56DataMissing(offset uint64) bool {
	nd := uint64(v.DataStripes())
	stripeNr := offset / StripeLen
	full := stripeNr / nd
	idx := (full + stripeNr%nd) % uint64(v.chunk.numStripes())
	return v.devs[v.chunk.stripes[idx].dev].unreadable()
}

// mapMirrored is map_blocks_dup / map_blocks_raid1.
func (v *Volume) mapMirrored(g *ioGeometry) {
	off := g.stripeNr*StripeLen + g.stripeOffset
	g.stripeNr, g.stripeOffset = 0, off
	if g.op == blk.OpWrite {
		g.numStripes = v.chunk.numStripes()
		return
	}
	if g.mirror == 0 {
		g.mirror = v.readPolicyMirror(0, v.chunk.numStripes())
	}
	g.stripeIndex = g.mirror - 1
}

// mapRaid10 is map_blocks_raid10: stripe groups of sub_stripes copies.
func (v *Volume) mapRaid10(g *ioGeometry) {
	sub := v.chunk.subStripes
	factor := uint64(v.chunk.numStripes() / sub)
	g.stripeIndex = int(g.stripeNr%factor) * sub
	g.stripeNr /= factor
	if g.op == blk.OpWrite {
		g.numStripes = sub
		return
	}
	if g.mirror == 0 {
		g.mirror = v.readPolicyMirror(g.stripeIndex, sub)
	}
	g.stripeIndex += g.mirror - 1
}

// mapRaid56Read is map_blocks_raid56_read: the data stripe itself, parity
// rotating one device per full stripe.
func (v *Volume) mapRaid56Read(g *ioGeometry) {
	nd := uint64(v.DataStripes())
	dataIndex := g.stripeNr % nd
	g.stripeNr /= nd // full stripe number = stripe number on every device
	g.stripeIndex = int((g.stripeNr + dataIndex) % uint64(v.chunk.numStripes()))
	g.mirror = 1
}

// mapRaid56Full is map_blocks_raid56_write: every stripe of the full stripe,
// sorted data (in logical order), P, Q, with the raid_map.
func (v *Volume) mapRaid56Full(ioc *IOContext, g *ioGeometry, offset uint64) {
	nd := v.DataStripes()
	n := v.chunk.numStripes()
	full := offset / v.FullStripeLen()
	ioc.FullStripeLogical = v.chunk.start + full*v.FullStripeLen()
	g.maxErrors = v.attr.toleratedFailures
	for i := 0; i < n; i++ {
		// Stripe i of full stripe k sits on device (k + i) % n: data
		// stripes first, then P, then Q, rotating by one per full stripe.
		cs := v.chunk.stripes[(full+uint64(i))%uint64(n)]
		ioc.Stripes = append(ioc.Stripes, IOStripe{Dev: v.devs[cs.dev], DevIndex: cs.dev,
			Physical: cs.physical + full*StripeLen})
		switch {
		case i < nd:
			ioc.RaidMap = append(ioc.RaidMap, ioc.FullStripeLogical+uint64(i)*StripeLen)
		case i == nd:
			ioc.RaidMap = append(ioc.RaidMap, PStripe)
		default:
			ioc.RaidMap = append(ioc.RaidMap, QStripe)
		}
	}
	if g.op == blk.OpWrite {
		g.mirror = 0
	}
}

// Flush is barrier_all_devices, btrfs's barrier flush (REQ_PREFLUSH to
// every device, as write_all_supers sends it): fdatasync of every backing,
// in parallel. Missing devices are skipped but count as failed, and so do
// devices whose flush failed now or ever before (FlushFailed): Linux may
// drop the pages of a failed writeback, so a later flush that succeeds does
// not make them durable. As in check_barrier_error the barrier fails only
// when more devices failed than the profile tolerates
// (btrfs_check_rw_degradable); then all errors are joined.
func (v *Volume) Flush() error {
	epoch := v.bitmap.barrierBegin()
	var retire uint64
	if v.journal != nil {
		retire = v.journal.retirable()
	}
	errs := make([]error, len(v.devs))
	var wg sync.WaitGroup
	for i, d := range v.devs {
		if d.Missing() {
			errs[i] = fmt.Errorf("raid: flush: %s: %w", d.Path(), errMissing)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.flush()
		}()
	}
	wg.Wait()
	failed, presentFailed := 0, false
	for i, d := range v.devs {
		switch {
		case errs[i] != nil && !d.Missing():
			v.log.Warnf("raid: %v", errs[i])
		case errs[i] == nil && d.FlushFailed(): // logged when it failed
			errs[i] = fmt.Errorf("raid: flush: %s: an earlier flush failed: %w", d.Path(), syscall.EIO)
		}
		if errs[i] != nil {
			failed++
			presentFailed = presentFailed || !d.Missing()
		}
	}
	if presentFailed { // what they took since the last barrier may be gone
		v.bitmap.forfeitHistory()
	}
	if failed > v.attr.toleratedFailures {
		return errors.Join(errs...)
	}
	if failed > 0 {
		v.noteDegraded("flush", 0, failed, len(v.devs), v.attr.toleratedFailures)
	} else {
		v.bitmap.barrierDone(epoch)
	}
	if v.journal != nil {
		// The in-place writes of every entry up to retire are durable now.
		return v.journal.retire(retire)
	}
	return nil
}

// Barrier is barrier_all_devices as a commit uses it between the data and
// the metadata that maps it: Flush, or nothing in a nobarrier build (see
// barrier.go).
func (v *Volume) Barrier() error {
	if !barriers {
		return nil
	}
	return v.Flush()
}

// Close is close_ctree's device half: wait for in-flight bios, then close
// every device (btrfs_close_devices). Bios submitted afterwards fail.
func (v *Volume) Close() error {
	v.mu.Lock()
	already := v.closed
	v.closed = true
	v.mu.Unlock()
	if already {
		return nil
	}
	v.StopResync() // a resync in flight ends at its next region; its devices stay stale
	v.inflight.Wait()
	var errs []error
	for _, d := range v.devs {
		errs = append(errs, d.Close())
	}
	return errors.Join(errs...)
}

// BioSet is btrfs_clone_bioset: where SubmitBio's split clones come from;
// InUse()==0 when nothing is in flight proves no clone leaked.
func (v *Volume) BioSet() *blk.BioSet { return &v.clones }
