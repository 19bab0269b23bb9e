package btrfsdio

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/btrfsdio/btrfsdio/raid"
)

// transaction is the running transaction (struct btrfs_transaction and the
// fs_info fields a commit uses). Crash safety rests on two rules:
//
//   - A commit writes the metadata to the slot the committed root does not
//     use and flushes it before any superblock names it, so a crash leaves
//     either the old or the new root whole.
//   - A data extent that stops backing the file (overwritten by COW,
//     punched) is pinned, not freed: the committed root may still map it,
//     so it must not be reallocated and overwritten until a commit that no
//     longer maps it is on disk (btrfs_pin_extent, then
//     btrfs_unpin_extent_range after the commit).
//
// NODATACOW overwrites in place, as btrfs's nodatacow does: a crash may
// leave a mix of old and new data in such an extent, and only the order of
// FLUSH against the writes says what is durable.
//
// Lock order: commitMu, then mu, then pinMu (a leaf). Changes take mu under
// Inode.ilock and the range locks; a commit takes commitMu with at most
// Inode.ilock held (see Inode).
type transaction struct {
	// mu orders metadata changes against a commit's snapshot: changes
	// (ordered extent completion, hole punching) hold it shared, the
	// snapshot holds it exclusive.
	mu sync.RWMutex
	// commitMu lets one commit run at a time.
	commitMu sync.Mutex
	pinMu    sync.Mutex
	pinned   []span // freed since the snapshot of the last commit
	// generation is the last committed (or, after a half-written set of
	// superblocks, possibly committed) generation.
	generation uint64
	// checkpointBytes is the length of the committed root's checkpoint,
	// the log's start (meta_log.go); needCheckpoint asks the next commit
	// for a checkpoint, after a commit that failed lost its delta.
	checkpointBytes uint64
	needCheckpoint  bool
}

// pin is btrfs_pin_extent: keep a freed range from reallocation until
// the next commit is on disk.
func (t *transaction) pin(start, length uint64) {
	t.pinMu.Lock()
	t.pinned = append(t.pinned, span{start, length})
	t.pinMu.Unlock()
}

// takePinned returns the pinned ranges and starts a new list.
func (t *transaction) takePinned() []span {
	t.pinMu.Lock()
	defer t.pinMu.Unlock()
	p := t.pinned
	t.pinned = nil
	return p
}

// repin gives back ranges a failed commit could not unpin.
func (t *transaction) repin(p []span) {
	t.pinMu.Lock()
	t.pinned = append(t.pinned, p...)
	t.pinMu.Unlock()
}

func (t *transaction) hasPinned() bool {
	t.pinMu.Lock()
	defer t.pinMu.Unlock()
	return len(t.pinned) > 0
}

// inodeFlags are the stored inode flags.
func (inode *Inode) inodeFlags() uint32 {
	var f uint32
	if inode.NoDataSum {
		f |= metaFlagNoDataSum
	}
	if inode.NoDataCow {
		f |= metaFlagNoDataCow
	}
	return f
}

// CommitTransaction is btrfs_commit_transaction and btrfs_unpin_extent_range
// and btrfs_sync_log (for its log record): make every metadata change made so far durable, together with the data it
// maps. Order: take the delta of the metadata since the last commit (or,
// for a checkpoint, a snapshot of all of it; see meta_log.go); flush every
// device, so the data of every write that completed before it is stable;
// append the delta's record after the committed root in its slot, or write
// the checkpoint to the other slot, on every copy, and flush; write the
// superblocks naming the longer or new root (each device flushed); then
// unpin what the commit no longer maps (btrfs_finish_extent_commit).
// Without a metadata area (NewFsInfo) it is the device flush alone. A
// device failure on the way aborts the transaction (abortTransaction): from
// then on every commit fails with EIO.
func (fs *FsInfo) CommitTransaction() error {
	if err := fs.FsError(); err != nil {
		return err
	}
	if fs.meta == nil {
		if err := fs.Vol.Flush(); err != nil {
			return fmt.Errorf("btrfsdio: flush: %w", fs.abortTransaction("flushing the devices", err))
		}
		return nil
	}
	start := time.Now()
	t := &fs.trans
	t.commitMu.Lock()
	defer t.commitMu.Unlock()
	t.mu.Lock()
	gen := t.generation + 1
	committed := fs.meta.Root()
	var b []byte
	var root raid.MetaRoot
	var rec []byte
	if fs.canAppend(committed, fs.dirtyEstimate()) {
		delta := fs.takeDelta()
		delta.generation = gen
		rec = encodeMetaDelta(delta)
	}
	if rec != nil && fs.canAppend(committed, uint64(len(rec))) {
		b, root = rec, raid.MetaRoot{Generation: gen, Slot: committed.Slot, Bytes: committed.Bytes + uint64(len(rec))}
	} else {
		fs.trackDirty() // the checkpoint holds every change
		img := fs.snapshotMeta()
		img.generation = gen
		b = encodeMeta(img)
		slot := int(gen % 2)
		if committed.Bytes != 0 {
			slot = 1 - committed.Slot
		}
		root = raid.MetaRoot{Generation: gen, Slot: slot, Bytes: uint64(len(b))}
	}
	pinned := t.takePinned()
	fs.ilog.cut(gen)
	t.mu.Unlock()
	checkpoint := root.Slot != committed.Slot || committed.Bytes == 0
	err := fs.writeRoot(b, root, committed.Bytes)
	if err == nil {
		err = fs.meta.WriteSupers(root)
		if err != nil {
			// Some superblocks may name the new root: never write its
			// slot again, and keep the pins, which it may still need.
			t.generation = root.Generation
			err = fs.abortTransaction("writing the superblocks", err)
		}
	}
	if err != nil {
		t.repin(pinned)
		// The delta taken is lost to the next record: the next commit
		// writes everything (a checkpoint).
		t.needCheckpoint = true
		atomic.AddInt64(&fs.stats.CommitFailures, 1)
		return fmt.Errorf("btrfsdio: commit of generation %d: %w", root.Generation, err)
	}
	t.generation = root.Generation
	if checkpoint {
		t.checkpointBytes, t.needCheckpoint = root.Bytes, false
		atomic.AddInt64(&fs.stats.Checkpoints, 1)
	}
	atomic.AddInt64(&fs.stats.MetaBytesWritten, int64(len(b)))
	fs.ilog.committed(root.Generation)
	for _, s := range pinned {
		fs.space.release(s.start, s.len) // btrfs_unpin_extent_range
	}
	atomic.AddInt64(&fs.stats.Commits, 1)
	fs.countCommitTime(time.Since(start))
	return nil
}

// countCommitTime is update_commit_stats: a successful commit's time is
// added to CommitNs and raises CommitMaxNs (fs_info->commit_stats'
// total_commit_dur and max_commit_dur, /sys/fs/btrfs/UUID/commit_stats).
func (fs *FsInfo) countCommitTime(d time.Duration) {
	atomic.AddInt64(&fs.stats.CommitNs, int64(d))
	for {
		m := atomic.LoadInt64(&fs.stats.CommitMaxNs)
		if int64(d) <= m || atomic.CompareAndSwapInt64(&fs.stats.CommitMaxNs, m, int64(d)) {
			return
		}
	}
}

// canAppend says whether a record of n bytes may follow the committed
// root, rather than a checkpoint: something is committed, no device that
// gets superblocks lacks part of the slot, the slot has room, and the log
// stays within its budget (Options.MetaLogBudget), which bounds what a mount replays and the slot's
// share of stale records.
func (fs *FsInfo) canAppend(committed raid.MetaRoot, n uint64) bool {
	t := &fs.trans
	if committed.Bytes == 0 || t.needCheckpoint || t.checkpointBytes == 0 || fs.meta.Incomplete(committed.Slot) ||
		n > fs.meta.SlotBytes()-committed.Bytes {
		return false
	}
	budget := max(t.checkpointBytes, metaLogMinBudget)
	if fs.Opts.MetaLogBudget != 0 {
		budget = fs.Opts.MetaLogBudget
	}
	return committed.Bytes-t.checkpointBytes+n <= budget
}

// writeRoot is btrfs_write_and_wait_transaction with the barrier before
// it: flush the data, then write and flush b, a checkpoint at the start of
// root's slot or a log record at the committed root's end (off), on every
// copy. A device failure there aborts the transaction (abortTransaction);
// a root too large for its slot does not, since nothing was written.
// Faults.CommitAbort stops it there, before the superblocks, like a crash:
// nothing on the devices was lost, so no abort either.
func (fs *FsInfo) writeRoot(b []byte, root raid.MetaRoot, off uint64) error {
	if root.Bytes == uint64(len(b)) {
		off = 0 // a checkpoint
	}
	if root.Bytes > fs.meta.SlotBytes() {
		return fmt.Errorf("metadata of %d bytes exceeds the %d-byte slot: %w", root.Bytes, fs.meta.SlotBytes(), syscall.ENOSPC)
	}
	if err := fs.Vol.Barrier(); err != nil {
		return fs.abortTransaction("flushing data", err)
	}
	if err := fs.meta.WriteSlotAt(root.Slot, off, b); err != nil {
		return fs.abortTransaction("writing metadata", err)
	}
	if fs.Faults.take(&fs.Faults.CommitAbort) != nil {
		return fmt.Errorf("aborted before the superblocks (fault injected): %w", syscall.EIO)
	}
	return nil
}

// fsError is why the filesystem stopped taking writes.
type fsError struct {
	step string
	err  error
}

// abortTransaction is btrfs_abort_transaction and btrfs_handle_fs_error: a
// commit lost a device write or flush beyond what the profile tolerates
// (raid's max_errors), so data acknowledged since the last commit may be
// gone, and a later flush that succeeds would pretend otherwise (Linux
// reports a writeback error once and may drop the pages). Like
// BTRFS_FS_STATE_ERROR turning the filesystem read-only, every later
// write, punch and flush fails with EIO, reads go on; it is logged once
// and only a fresh mount, after check, clears it. It returns err as the
// caller's EIO.
func (fs *FsInfo) abortTransaction(step string, err error) error {
	if fs.fsErr.CompareAndSwap(nil, &fsError{step: step, err: err}) {
		fs.log.Errorf("BTRFS error: transaction aborted while %s: %v; the device is read-only from now on: "+
			"writes and flushes fail, reads work; delete it, run check on its images, then add it again", step, err)
		if derr := fs.ilog.drop(); derr != nil {
			fs.log.Errorf("BTRFS error: %v: a later mount may replay changes whose data was not flushed", derr)
		}
	}
	return fmt.Errorf("transaction aborted while %s, read-only from now on: %w: %w", step, syscall.EIO, err)
}

// FsError is BTRFS_FS_ERROR: nil, or the EIO every write, punch and flush
// fails with since a commit aborted (abortTransaction), saying why.
func (fs *FsInfo) FsError() error {
	e := fs.fsErr.Load()
	if e == nil {
		return nil
	}
	return fmt.Errorf("btrfsdio: read-only since a transaction aborted while %s (%v): %w", e.step, e.err, syscall.EIO)
}

// snapshotMeta copies the metadata; the caller holds trans.mu exclusive.
func (fs *FsInfo) snapshotMeta() *metaImage {
	return &metaImage{
		fsid: fs.meta.Fsid(), size: fs.inode.size, flags: fs.inode.inodeFlags(),
		capacity: fs.capacity(), extents: fs.inode.extents.snapshot(), csums: fs.csums.runs(),
	}
}

// capacity is the data chunk's length in whole sectors.
func (fs *FsInfo) capacity() uint64 { return fs.Vol.Capacity() &^ (SectorSize - 1) }

// MetaCopyStatus is what reading one copy of the committed metadata found
// (no kernel counterpart: btrfs-progs' check prints the like).
type MetaCopyStatus struct {
	Where string
	// Path, Index (on its device) and Offset name the copy in full.
	Path   string
	Index  int
	Offset uint64
	Err    error // nil: the copy is valid (or Stale)
	// Stale: the copy is on a device behind the volume, not read; the
	// resync at the next mount, then its commit, rewrite it.
	Stale bool
	// Repaired is set when ScrubMeta rewrote the bad copy from a valid
	// one and flushed its device; RepairErr says why it could not.
	Repaired  bool
	RepairErr error
}

// readRoot is btrfs_read_tree_root with read_extent_buffer's mirror loop:
// the first copy of the committed root that decodes, validates, and
// belongs to this volume and generation, and the status of every copy.
func readRoot(meta *raid.MetaArea, capacity uint64) (*metaImage, []MetaCopyStatus) {
	img, _, status := readRootCopies(meta, capacity)
	return img, status
}

// readRootCopies is readRoot that also returns the raw bytes of the valid
// copy it decoded (nil when none is valid), which a repair writes.
func readRootCopies(meta *raid.MetaArea, capacity uint64) (*metaImage, []byte, []MetaCopyStatus) {
	root := meta.Root()
	var good *metaImage
	var raw []byte
	var status []MetaCopyStatus
	for _, c := range meta.ReadSlot(root.Slot, root.Bytes) {
		if c.Stale {
			status = append(status, MetaCopyStatus{Where: c.Where, Path: c.Path, Index: c.Index, Offset: c.Offset, Stale: true})
			continue
		}
		dec, err := checkRootCopy(meta, c, capacity)
		status = append(status, MetaCopyStatus{Where: c.Where, Path: c.Path, Index: c.Index, Offset: c.Offset, Err: err})
		if err == nil && good == nil {
			good, raw = dec, c.Data
		}
	}
	return good, raw, status
}

// checkRootCopy decodes one copy and checks that it is the committed root:
// its generation, this volume's fsid and this chunk's capacity.
func checkRootCopy(meta *raid.MetaArea, c raid.MetaCopy, capacity uint64) (*metaImage, error) {
	if c.Err != nil {
		return nil, c.Err
	}
	dec, _, err := decodeMetaLog(c.Data)
	switch {
	case err != nil:
		return nil, err
	case dec.generation != meta.Root().Generation:
		return nil, fmt.Errorf("%w: generation %d, the superblock commits %d", ErrCorruptMeta, dec.generation, meta.Root().Generation)
	case dec.fsid != meta.Fsid():
		return nil, fmt.Errorf("%w: written for volume %x", ErrCorruptMeta, dec.fsid[:4])
	case dec.capacity != capacity:
		return nil, fmt.Errorf("%w: for a %d-byte chunk, this one has %d", ErrCorruptMeta, dec.capacity, capacity)
	}
	return dec, nil
}

// errNoValidRoot wraps the refusal to open a volume without valid metadata.
var errNoValidRoot = errors.New("no valid copy of the committed metadata")

// loadRoot reads the committed root and refuses when no copy is valid,
// listing why each was refused.
func loadRoot(meta *raid.MetaArea, capacity uint64) (*metaImage, []MetaCopyStatus, error) {
	img, status := readRoot(meta, capacity)
	if img != nil {
		return img, status, nil
	}
	var why []string
	for _, s := range status {
		why = append(why, fmt.Sprintf("%s: %v", s.Where, s.Err))
	}
	return nil, status, fmt.Errorf("btrfsdio: %w of generation %d (%s): refusing to open the volume; the images are left untouched",
		errNoValidRoot, meta.Root().Generation, strings.Join(why, "; "))
}

// OpenFsInfo is open_ctree: mount the filesystem on vol, a volume with
// superblocks (raid.OpenVolume). A volume that never committed starts empty
// with opts' size and flags, committed at once; otherwise the committed
// metadata is loaded, its i_size and inode flags win over opts (a differing
// opts.Size is refused), and the allocator is rebuilt from the file
// extents. Corrupt copies fall back to the others; with none valid the
// open is refused and nothing is written. Devices that came back behind
// the volume are resynced before it returns (resyncStale).
func OpenFsInfo(vol *raid.Volume, opts Options) (*FsInfo, error) {
	if vol == nil {
		return nil, errors.New("btrfsdio: no volume")
	}
	meta, err := raid.OpenMetaArea(vol)
	if err != nil {
		return nil, fmt.Errorf("btrfsdio: open_ctree: %w", err)
	}
	root := meta.Root()
	if root.Bytes == 0 {
		fs, err := NewFsInfo(vol, opts)
		if err != nil {
			return nil, err
		}
		fs.meta, fs.trans.generation = meta, root.Generation
		fs.trackDirty()
		if err := fs.CommitTransaction(); err != nil {
			return nil, fmt.Errorf("btrfsdio: open_ctree: first commit: %w", err)
		}
		if err := fs.openIntents(); err != nil {
			return nil, err
		}
		if err := fs.resyncBitmap(); err != nil {
			return nil, err
		}
		if err := fs.resyncStale(); err != nil {
			return nil, err
		}
		return fs, nil
	}
	img, status, err := loadRoot(meta, vol.Capacity()&^(SectorSize-1))
	if err != nil {
		return nil, err
	}
	if opts.Size != 0 && opts.Size != img.size {
		return nil, fmt.Errorf("btrfsdio: the volume's file is %d bytes, not %d", img.size, opts.Size)
	}
	opts.Size = img.size
	fs, err := NewFsInfo(vol, opts)
	if err != nil {
		return nil, err
	}
	for _, s := range status {
		if s.Err != nil {
			fs.warnf("metadata copy %s: %v (using another copy)", s.Where, s.Err)
		}
	}
	if want := fs.inode.inodeFlags(); want != img.flags {
		fs.warnf("inode flags %#x recorded at creation override the options' %#x", img.flags, want)
	}
	fs.inode.NoDataSum = img.flags&metaFlagNoDataSum != 0
	fs.inode.NoDataCow = img.flags&metaFlagNoDataCow != 0
	fs.inode.extents.extents = img.extents
	fs.csums.load(img.csums)
	used := make([]span, len(img.extents))
	for i, e := range img.extents {
		used[i] = span{e.diskBytenr, e.len}
	}
	fs.space = newFreeSpaceExcept(fs.capacity(), used)
	if len(used) > 0 {
		last := slices.MaxFunc(used, func(a, b span) int { return cmpU64(a.start, b.start) })
		fs.allocHint.Store(last.start + last.len)
	}
	fs.meta, fs.trans.generation = meta, img.generation
	fs.trans.checkpointBytes = img.checkpointBytes
	fs.trackDirty()
	if err := fs.openIntents(); err != nil {
		return nil, err
	}
	if err := fs.resyncBitmap(); err != nil {
		return nil, err
	}
	if err := fs.resyncStale(); err != nil {
		return nil, err
	}
	return fs, nil
}

// resyncStale brings the devices that came back behind the volume up to
// date (raid.Volume.Resync), before the filesystem serves or, with
// Options.ResyncInBackground, beside it, then commits, so that their
// superblocks name the current generation and their metadata slot holds
// the current root. A resync that fails leaves them stale: the volume runs
// on the others, as degraded, and the open goes on.
func (fs *FsInfo) resyncStale() error {
	fs.staleAtOpen = fs.Vol.StaleDevices()
	if len(fs.staleAtOpen) == 0 {
		return nil
	}
	if fs.Opts.ResyncInBackground {
		fs.resyncDone = make(chan struct{})
		go func() {
			defer close(fs.resyncDone)
			if err := fs.resync(); err != nil {
				fs.log.Errorf("BTRFS error: %v", err)
			}
		}()
		return nil
	}
	return fs.resync()
}

// resync is resyncStale's work: the resync, then the commit that makes the
// resynced devices current.
func (fs *FsInfo) resync() error {
	if err := fs.Vol.Resync(); err != nil {
		fs.warnf("%v: running on the current devices only", err)
		return nil
	}
	if err := fs.CommitTransaction(); err != nil {
		return fmt.Errorf("btrfsdio: commit after the resync: %w", err)
	}
	return nil
}

// resyncBitmap runs the RAID layer's write-intent bitmap resync at the end
// of open_ctree, once the csums are loaded and the intent log replayed and
// before anything is served (no btrfs counterpart: btrfs has no bitmap; md
// resyncs the dirty regions at assembly). The csum tree tells a good copy
// from a bad one where the data has checksums.
func (fs *FsInfo) resyncBitmap() error {
	n, err := fs.Vol.ResyncBitmap(func(logical uint64, data []byte) (ok, known bool) {
		sum, found := fs.csums.lookup(logical)
		if !found {
			return false, false
		}
		return csumData(data) == sum, true
	})
	if err != nil {
		return fmt.Errorf("btrfsdio: open_ctree: write-intent bitmap resync: %w", err)
	}
	if n > 0 {
		fs.log.Infof("BTRFS info: write-intent bitmap: resynced %d dirty regions after an unclean shutdown", n)
	}
	return nil
}

// WaitResync waits for a background resync to end (Options.
// ResyncInBackground; no kernel counterpart: md's sync_action idle) and
// returns at once when none runs.
func (fs *FsInfo) WaitResync() {
	if fs.resyncDone != nil {
		<-fs.resyncDone
	}
}

// resyncReport is Stats.Resync: for every device stale at the mount, its
// generation against the volume's and how its resync went.
func (fs *FsInfo) resyncReport() string {
	if len(fs.staleAtOpen) == 0 {
		return ""
	}
	pr := fs.Vol.ResyncProgress()
	var out []string
	for _, d := range fs.staleAtOpen {
		what := fmt.Sprintf("%s came back behind the volume (generation %d, the volume at %d)", d.Path, d.Generation, fs.Vol.Generation())
		switch still := slices.ContainsFunc(fs.Vol.StaleDevices(), func(s raid.StaleDevice) bool { return s.Devid == d.Devid }); {
		case !still:
			what += fmt.Sprintf(": resynced (%d bytes)", pr.Total)
		case pr.Err != nil:
			what += fmt.Sprintf(": not read; its resync stopped at %d of %d bytes (%v); it is tried again at the next add", pr.Done, pr.Total, pr.Err)
		default:
			what += fmt.Sprintf(": not read; resyncing, %d of %d bytes done", pr.Done, pr.Total)
		}
		out = append(out, what)
	}
	return strings.Join(out, "; ")
}

// Generation is the last committed generation (fs_info->last_trans_committed).
func (fs *FsInfo) Generation() uint64 {
	fs.trans.commitMu.Lock()
	defer fs.trans.commitMu.Unlock()
	return fs.trans.generation
}

// Close is close_ctree: stop a background resync, commit, then close the
// volume. The intent log goes with a successful commit and stays for the
// next mount otherwise.
func (fs *FsInfo) Close() error {
	if fs.resyncDone != nil { // stop a background resync first: its commit must not follow the close
		fs.Vol.StopResync()
		<-fs.resyncDone
	}
	cerr := fs.CommitTransaction()
	cerr = errors.Join(cerr, fs.ilog.close(cerr == nil))
	if err := fs.Vol.Close(); err != nil {
		return errors.Join(cerr, fmt.Errorf("btrfsdio: close: %w", err))
	}
	return cerr
}
