// Package btrfsdio ports btrfs's direct IO path (fs/btrfs/direct-io.c) before
// and after the patch "btrfs: allocate bounce pages for direct IO", together
// with the pieces of btrfs it stands on: ordered extents (ordered-data.c),
// extent range locks (extent-io-tree.c), data checksums (file-item.c) and
// btrfs_bio submission with read repair (bio.c). Devices are reached only
// through package raid.
package btrfsdio

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/raid"
)

// SectorSize is fs_info->sectorsize: the data block, checksum and direct IO
// alignment unit. The volume defines it (raid.SectorSize), since scrub and
// RAID5/6 compare and checksum in the same unit.
const SectorSize = raid.SectorSize

// MaxBioSectors is BTRFS_MAX_BIO_SECTORS: direct reads are capped at
// this many sectors per mapping.
const MaxBioSectors = 256

// DioMode selects which answer to bugzilla 99171 the direct IO path runs.
type DioMode int

const (
	// ZeroCopy is the kernel before the patch: bios point at the caller's
	// pages and every mirror reads them at its own time.
	ZeroCopy DioMode = iota
	// Bounce is the patch: data is copied into private pages first.
	Bounce
	// Fallback is "btrfs: fallback to buffered IO if the data profile has
	// duplication" (7c2830f00c3e): direct writes on DUP, RAID1*, RAID10
	// and RAID5/6 take the buffered path; SINGLE and RAID0 stay zero-copy.
	Fallback
	// IomapBounce is "btrfs: use IOMAP_DIO_BOUNCE flag instead of falling
	// back to buffered IO" on the generic bounce of the block and iomap
	// layers: writes that need stable pages are bounced by iomap; reads
	// stay zero-copy.
	IomapBounce
)

// DioModes lists every mode, in the order tables show them (no kernel
// counterpart).
func DioModes() []DioMode { return []DioMode{ZeroCopy, Bounce, Fallback, IomapBounce} }

func (m DioMode) String() string {
	switch m {
	case Bounce:
		return "bounce"
	case Fallback:
		return "fallback"
	case IomapBounce:
		return "iomap-bounce"
	}
	return "zerocopy"
}

// ZeroCopyReads reports whether direct reads land in the caller's pages
// (every mode but the seed's bounce; no kernel counterpart).
func (m DioMode) ZeroCopyReads() bool { return m != Bounce }

// ParseDioMode parses a DioMode's name (no kernel counterpart: the kernel
// has one body of the direct IO path at a time).
func ParseDioMode(s string) (DioMode, error) {
	switch s {
	case "bounce":
		return Bounce, nil
	case "zerocopy", "zero-copy":
		return ZeroCopy, nil
	case "fallback":
		return Fallback, nil
	case "iomap-bounce":
		return IomapBounce, nil
	}
	return 0, fmt.Errorf("unknown dio mode %q (want zerocopy, bounce, fallback or iomap-bounce)", s)
}

// FirstError selects how a bounce_ctl records the first error of its
// bounce bbios (no kernel counterpart: the seed has the spinlock, the
// review asked for cmpxchg).
type FirstError int

const (
	// FirstErrorDefault is FirstErrorSpinlock with Options.Faithful,
	// FirstErrorCmpxchg without.
	FirstErrorDefault FirstError = iota
	// FirstErrorSpinlock is the seed: a lock around "if (!ret) ret = err".
	FirstErrorSpinlock
	// FirstErrorCmpxchg is the review's request: cmpxchg(&ret, 0, err).
	FirstErrorCmpxchg
)

// Options configures a filesystem instance.
type Options struct {
	Mode DioMode
	// MetaLogBudget bounds, in bytes, the metadata log a checkpoint
	// allows before the next one (meta_log.go); 0 picks as many bytes as
	// the checkpoint, at least 1 MiB. Small values cycle checkpoints, for
	// the power-cut harness and tests.
	MetaLogBudget uint64
	// Faithful reproduces the seed patch's flaws exactly (leaked page when
	// bio_add_page fails, empty bbio after a failed alloc_page, the ENOMEM
	// tail finished twice) and its spinlock; off, the port fixes them.
	Faithful bool
	// FirstError overrides how bounce_ctl records its first error.
	FirstError FirstError
	// BouncePool bounds, in bytes, the bounce memory bounce mode holds at
	// once (a mempool of folios; see submitIOBouncePooled): 0 picks
	// DefaultBouncePool, NoBouncePool allocates page by page with
	// alloc_page as the seed does. Faithful always allocates page by page.
	BouncePool int64
	// NoVolatileDetect turns off the detector of zero-copy write buffers
	// changed in flight (see volatile.go), on by default in zero-copy mode.
	NoVolatileDetect bool
	// DataSum gives the inode data checksums (no NODATASUM flag).
	DataSum bool
	// NoCow sets NODATACOW (which implies NODATASUM, as in btrfs).
	NoCow bool
	// Size is the inode's i_size; 0 picks the largest size that leaves
	// room for copy-on-write (see DefaultSize). Size, DataSum and NoCow
	// are recorded by the first commit: OpenFsInfo takes them from there.
	Size uint64
	// IntentLogDir keeps the volume's intent log (see intent.go) in this
	// directory, which must be a tmpfs such as /run/btrfsdio: every write
	// reported complete then survives the death of the process, and
	// OpenFsInfo replays the log a dead server left. Empty: no log; a
	// crash loses what the last commit does not hold.
	IntentLogDir string
	// ReplayStep, when set, is called before each change of the intent log
	// is replayed; an error stops the mount there (fault injection: a
	// crash in the middle of the replay).
	ReplayStep func(n int) error
	// ResyncInBackground lets OpenFsInfo return before the devices that
	// came back behind the volume are resynced: the resync runs beside
	// the I/O (raid.Volume.Resync), Stats shows its progress, WaitResync
	// waits for it and Close stops it (the devices stay stale until the
	// next mount). Off: the mount resyncs before it returns.
	ResyncInBackground bool
	Log                logrus.FieldLogger
	// intentRingSize overrides the intent log's ring size (tests).
	intentRingSize int
}

// DefaultBouncePool is the bounce pool's default size: one 1 MiB bounce
// folio for each of 32 requests in flight.
const DefaultBouncePool = 32 << 20

// NoBouncePool as Options.BouncePool turns the pool off: bounce pages come
// from alloc_page one at a time, the seed's way.
const NoBouncePool = -1

// CheckBouncePool validates an Options.BouncePool value (no kernel
// counterpart: the seed has no pool).
func CheckBouncePool(n int64) error {
	if n == 0 || n == NoBouncePool {
		return nil
	}
	if n < blk.MinMempoolBytes || n%blk.PageSize != 0 {
		return fmt.Errorf("a bounce pool of %d bytes is not a multiple of %d of at least %d (one 1 MiB bounce folio)",
			n, blk.PageSize, blk.MinMempoolBytes)
	}
	return nil
}

// cmpxchgFirstError reports whether bounce_ctl records its first error with
// cmpxchg (see FirstError).
func (o Options) cmpxchgFirstError() bool {
	switch o.FirstError {
	case FirstErrorSpinlock:
		return false
	case FirstErrorCmpxchg:
		return true
	}
	return !o.Faithful
}

// DefaultSize is the file size offered on a volume (no kernel counterpart):
// 7/8 of the data chunk,
// so that copy-on-write always finds room for new extents before the old
// ones are freed.
func DefaultSize(capacity uint64) uint64 {
	return (capacity / 8 * 7) &^ (1<<20 - 1)
}

// Faults holds fault-injection counters: each positive counter makes that
// many of the next operations of its kind fail with ENOMEM.
type Faults struct {
	// BounceCtlAlloc fails kzalloc(bounce_ctl).
	BounceCtlAlloc atomic.Int64
	// OrderedAlloc fails btrfs_alloc_ordered_extent.
	OrderedAlloc atomic.Int64
	// OrderedSplit fails btrfs_split_ordered_extent.
	OrderedSplit atomic.Int64
	// CommitAbort aborts transaction commits after their metadata write,
	// before the superblocks (with EIO): a crash in mid-commit.
	CommitAbort atomic.Int64
}

func (f *Faults) take(c *atomic.Int64) error {
	for {
		n := c.Load()
		if n <= 0 {
			return nil
		}
		if c.CompareAndSwap(n, n-1) {
			return syscall.ENOMEM
		}
	}
}

// Stats are counters a user or test can read (`btrfsdio list -v` shows
// them under these JSON names).
type Stats struct {
	OrderedCreated       int64 `json:"ordered_created"`
	OrderedCompleted     int64 `json:"ordered_completed"`
	OrderedFailed        int64 `json:"ordered_failed"`
	OrderedBytesFinished int64 `json:"ordered_bytes_finished"`
	// AccountingBugs counts "bad ordered extent accounting" warnings and
	// over-puts: always 0 unless the faithful flaws are on.
	AccountingBugs int64 `json:"accounting_bugs"`
	// DoubleFinishes counts ordered extents finished a second time,
	// DoubleRemovals removals of an ordered extent no longer in the
	// inode's ordered tree, and OrderedRefUnderflows puts that took an
	// ordered extent's refcount below zero. They model what the kernel
	// suffers from the seed's double finish; always 0 unless Faithful.
	DoubleFinishes       int64 `json:"double_finishes"`
	DoubleRemovals       int64 `json:"double_removals"`
	OrderedRefUnderflows int64 `json:"ordered_ref_underflows"`
	// BounceCtls counts bounce_ctl structures made; BounceCtlsDone those
	// whose pending count reached zero (each must, exactly once).
	BounceCtls     int64 `json:"bounce_ctls"`
	BounceCtlsDone int64 `json:"bounce_ctls_done"`
	BounceBbios    int64 `json:"bounce_bbios"`
	EmptyBbios     int64 `json:"empty_bbios"`
	LeakedPages    int64 `json:"leaked_pages"`
	ReadRepairs    int64 `json:"read_repairs"`
	CsumErrors     int64 `json:"csum_errors"`
	BufferedWrites int64 `json:"buffered_writes"`
	// VolatileWrites counts zero-copy write bios whose source changed while
	// in flight, out of VolatileChecked checked (see volatile.go).
	VolatileWrites  int64 `json:"volatile_writes"`
	VolatileChecked int64 `json:"volatile_checked"`
	// Commits and CommitFailures count transaction commits; CommitNs and
	// CommitMaxNs are the time the successful ones took, summed and the
	// longest, in nanoseconds.
	Commits        int64 `json:"commits"`
	CommitFailures int64 `json:"commit_failures"`
	CommitNs       int64 `json:"commit_ns"`
	CommitMaxNs    int64 `json:"commit_max_ns"`
	// BouncePool* are the bounce mempool's bytes handed out now, its
	// limit, the most handed out at once and the allocations that waited
	// for room (zero without a pool: zero-copy, page-by-page bounce).
	BouncePoolInUse int64 `json:"bounce_pool_in_use"`
	BouncePoolLimit int64 `json:"bounce_pool_limit"`
	BouncePoolPeak  int64 `json:"bounce_pool_peak"`
	BouncePoolWaits int64 `json:"bounce_pool_waits"`
	// Checkpoints counts the commits that wrote the whole metadata rather
	// than a log record (meta_log.go); MetaBytesWritten the metadata bytes
	// commits wrote, per copy, superblocks not included.
	Checkpoints      int64 `json:"checkpoints"`
	MetaBytesWritten int64 `json:"meta_bytes_written"`
	// ReadOnly says why the device stopped taking writes after a failed
	// flush or commit (FsError); empty while it is writable.
	ReadOnly string `json:"read_only,omitempty"`
	// Resync says, in words, which devices came back behind the volume
	// at the mount and whether the resync brought them up to date;
	// ResyncDone and ResyncTotal are its bytes (raid.Volume.Resync).
	// Empty and zero when every device was current.
	Resync      string `json:"resync,omitempty"`
	ResyncDone  uint64 `json:"resync_done_bytes,omitempty"`
	ResyncTotal uint64 `json:"resync_total_bytes,omitempty"`
}

// counters is the live Stats. Its int64 fields are only touched with
// sync/atomic (the counting sites, Stats), so the counters are declared once.
type counters struct {
	_ [0]atomic.Int64 // 64-bit alignment for the atomic int64 fields
	Stats
}

// FsInfo is struct btrfs_fs_info, reduced to one data chunk and one inode.
type FsInfo struct {
	Vol   *raid.Volume
	Opts  Options
	Pages *blk.PageAllocator
	// BouncePool is the bounce mempool over Pages, nil when bounce pages
	// are allocated page by page (zero-copy mode, Faithful, NoBouncePool).
	BouncePool *blk.Mempool
	Faults     Faults
	// submitted, when set (tests), sees every write bbio as SubmitBbio
	// takes it, before the devices do: the volatile-writer tests change the
	// caller's buffer there, the moment a bounce copy must already be done.
	submitted func(bbio *Bio)
	// DioBioset is btrfs_dio_bioset.
	DioBioset blk.BioSet
	// BioBioset is btrfs_bioset (buffered writeback, repair).
	BioBioset blk.BioSet
	// dioOps is btrfs_dio_ops, built once for the mode (newDioOps).
	dioOps *iomap.DioOps

	space *freeSpace
	// allocHint is where the next data extent is looked for (the end of
	// the last one), so sequential writes get contiguous extents.
	allocHint atomic.Uint64
	csums     *csumTree
	stats     counters
	log       logrus.FieldLogger
	inode     *Inode
	// volatileLimit rate-limits the volatile write detector's warnings.
	volatileLimit ratelimit
	// meta is where commits go; nil for an in-memory filesystem.
	meta  *raid.MetaArea
	trans transaction
	// fsErr is BTRFS_FS_STATE_ERROR, set once by abortTransaction.
	fsErr atomic.Pointer[fsError]
	// ilog is the intent log, nil without Options.IntentLogDir.
	ilog *intentLog
	// staleAtOpen are the devices the mount found behind the volume
	// (resyncStale), for Stats.Resync.
	staleAtOpen []raid.StaleDevice
	// resyncDone is closed when a background resync ended (nil: none).
	resyncDone chan struct{}
}

// Inode is struct btrfs_inode for the one file the device exposes.
//
// Lock order, outermost first (each lock's owner says more):
//
//	Inode.ilock                   shared for direct IO, exclusive to punch a hole
//	  IOTree range locks          EXTENT_DIO_LOCKED, then EXTENT_LOCKED (lock_extent_direct)
//	    Inode.orderedMu           ordered_tree_lock: held briefly, never across a wait
//	  transaction.commitMu        one commit at a time (commitUnlogged, under ilock)
//	    transaction.mu            shared to change metadata, exclusive to snapshot it
//	      OrderedExtent.mu, the extent, csum and free space trees, the intent log, pinMu
//
// Waiting for an ordered extent (StartOrderedExtent) must not hold orderedMu
// nor transaction.mu: its completion takes them.
type Inode struct {
	fs        *FsInfo
	NoDataSum bool // BTRFS_INODE_NODATASUM
	NoDataCow bool // BTRFS_INODE_NODATACOW
	size      uint64
	IOTree    *ExtentIOTree
	extents   fileExtentTree

	orderedMu sync.Mutex // ordered_tree_lock
	ordered   []*OrderedExtent
	// ilock is the inode lock (BTRFS_ILOCK_SHARED for direct IO).
	ilock sync.RWMutex
}

var _ iomap.Inode = (*Inode)(nil)

// NewFsInfo is open_ctree, reduced: mount vol as an empty filesystem holding
// one inode, kept in memory only (OpenFsInfo is the persistent mount): a
// commit is a device flush and freed extents are reusable at once.
func NewFsInfo(vol *raid.Volume, opts Options) (*FsInfo, error) {
	if vol == nil {
		return nil, errors.New("btrfsdio: no volume")
	}
	capacity := vol.Capacity()
	size := opts.Size
	if size == 0 {
		size = DefaultSize(capacity)
	}
	if size == 0 || size%SectorSize != 0 || size > capacity {
		return nil, fmt.Errorf("btrfsdio: file size %d does not fit a %d-byte data chunk in whole sectors", size, capacity)
	}
	if err := CheckBouncePool(opts.BouncePool); err != nil {
		return nil, fmt.Errorf("btrfsdio: %w", err)
	}
	log := opts.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	fs := &FsInfo{
		Vol: vol, Opts: opts, Pages: &blk.PageAllocator{},
		space: newFreeSpace(0, capacity&^(SectorSize-1)),
		csums: newCsumTree(), log: log,
	}
	if opts.Mode == Bounce && !opts.Faithful && opts.BouncePool != NoBouncePool {
		limit := opts.BouncePool
		if limit == 0 {
			limit = DefaultBouncePool
		}
		pool, err := blk.NewMempool(fs.Pages, limit)
		if err != nil {
			return nil, fmt.Errorf("btrfsdio: bounce pool: %w", err)
		}
		fs.BouncePool = pool
	}
	fs.inode = &Inode{
		fs: fs, size: size, IOTree: NewExtentIOTree(),
		NoDataSum: !opts.DataSum || opts.NoCow, NoDataCow: opts.NoCow,
	}
	fs.dioOps = fs.newDioOps()
	vol.SetVerifyData(fs.verifyDataSector)
	return fs, nil
}

// verifyDataSector is what raid56.c's fill_data_csums and
// verify_bio_data_sectors do for one sector a RAID5/6 read-modify-write
// read: compare it with the csum tree's checksum, if it has one.
func (fs *FsInfo) verifyDataSector(logical uint64, sector []byte) (ok, known bool) {
	want, has := fs.csums.lookup(logical)
	if !has {
		return true, false
	}
	if csumData(sector) != want {
		atomic.AddInt64(&fs.stats.CsumErrors, 1)
		return false, true
	}
	return true, true
}

// Inode is btrfs_iget for the filesystem's one inode.
func (fs *FsInfo) Inode() *Inode { return fs.inode }

// Stats returns a snapshot of the counters (no kernel counterpart).
func (fs *FsInfo) Stats() Stats {
	var st Stats
	live := reflect.ValueOf(&fs.stats.Stats).Elem()
	snap := reflect.ValueOf(&st).Elem()
	for i := range live.NumField() {
		if f := live.Field(i); f.Kind() == reflect.Int64 {
			snap.Field(i).SetInt(atomic.LoadInt64(f.Addr().Interface().(*int64)))
		}
	}
	st.ReadOnly = fs.readOnlyReason()
	st.Resync = fs.resyncReport()
	pr := fs.Vol.ResyncProgress()
	st.ResyncDone, st.ResyncTotal = pr.Done, pr.Total
	if fs.BouncePool != nil {
		ps := fs.BouncePool.Stats()
		st.BouncePoolInUse, st.BouncePoolPeak, st.BouncePoolWaits = ps.InUse, ps.Peak, ps.Waits
		st.BouncePoolLimit = fs.BouncePool.Limit()
	}
	return st
}

// readOnlyReason is FsError's cause for Stats, "" while writable.
func (fs *FsInfo) readOnlyReason() string {
	if e := fs.fsErr.Load(); e != nil {
		return fmt.Sprintf("transaction aborted while %s: %v", e.step, e.err)
	}
	return ""
}

// UsedBytes is the data space_info's bytes_used + bytes_pinned +
// bytes_reserved.
func (fs *FsInfo) UsedBytes() uint64 { return fs.space.usedBytes() }

// Csum is btrfs_lookup_csum: the stored checksum of the data sector at
// logical (tests read what completion stored).
func (fs *FsInfo) Csum(logical uint64) (uint32, bool) { return fs.csums.lookup(logical) }

// AllocatedExtents lists the disk ranges that hold file data (what
// scrub_simple_mirror finds walking the extent tree), for tests that damage
// or inspect them.
func (fs *FsInfo) AllocatedExtents() [][2]uint64 {
	var out [][2]uint64
	for _, e := range fs.inode.extents.snapshot() {
		out = append(out, [2]uint64{e.diskBytenr, e.len})
	}
	return out
}

func (fs *FsInfo) warnf(format string, args ...any) { fs.log.Warnf("BTRFS warning: "+format, args...) }

// reserveData is btrfs_reserve_extent for data. When space runs out while
// extents are pinned it commits the transaction, which unpins them, and
// tries again (flush_space's COMMIT_TRANS).
func (fs *FsInfo) reserveData(length, hint uint64) (uint64, uint64, error) {
	start, got, err := fs.space.reserve(length, SectorSize, hint)
	if !errors.Is(err, syscall.ENOSPC) || !fs.trans.hasPinned() {
		return start, got, err
	}
	if cerr := fs.CommitTransaction(); cerr != nil {
		return 0, 0, fmt.Errorf("btrfsdio: committing to unpin space: %w", errors.Join(err, cerr))
	}
	return fs.space.reserve(length, SectorSize, hint)
}

// freeData is btrfs_free_extent and btrfs_del_csums: drop a data extent that
// no longer backs the file, and its checksums. With a metadata area the
// extent is pinned until the next commit; in memory it is free at once.
func (fs *FsInfo) freeData(start, length uint64) {
	fs.csums.delete(start, length)
	if fs.meta == nil {
		fs.space.release(start, length)
		return
	}
	fs.trans.pin(start, length)
}

// ISize is i_size_read.
func (inode *Inode) ISize() int64 { return int64(inode.size) }

// FsInfo is inode_to_fs_info.
func (inode *Inode) FsInfo() *FsInfo { return inode.fs }
