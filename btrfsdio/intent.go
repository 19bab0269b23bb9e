package btrfsdio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The intent log keeps every mapping change made since the last commit
// (a COW write's new extent with its checksums, a punched hole) in memory
// that outlives the server process: a file on a tmpfs (the run directory),
// mapped MAP_SHARED. A change is appended before the write that made it is
// reported complete, so when the process dies (kill -9, a crash) the
// acknowledged writes are still described there, while their data is
// already in the backing devices' page cache. The next mount of the volume
// replays the log on top of the last commit and commits. A power loss takes
// the tmpfs with it: then, as for any block device with a volatile cache,
// only what was flushed survives.
//
// It follows btrfs's tree-log (fs/btrfs/tree-log.c: btrfs_log_inode for
// fsync, replayed by btrfs_recover_log_trees at every mount) with md's
// write-intent bitmap for where it lives (a small record that makes a
// restart cheap) and ublksrv's user recovery for when it is read (a new
// server takes over the device before END_USER_RECOVERY).
//
// File layout, little-endian:
//
//	[0:8]     magic "BDIOILOG", [8:12] version (1), [12:16] zero
//	[16:32]   fsid of the volume, [32:40] ring size in bytes
//	[64:128], [128:192]  two header slots (see intentSlot), the valid one
//	          with the larger counter wins, so a torn update of one leaves
//	          the other
//	[4096:]   the ring of entries
//
// An entry, 8-byte aligned, never wrapping around the ring's end:
//
//	[0:4]   crc32c of [4:length], stored last: a torn entry fails it
//	[4:8]   length in bytes, [8:16] sequence number (consecutive)
//	[16:24] generation of the commit the change follows
//	[24:32] file offset, [32:40] length, [40:48] disk bytenr (all ones: a hole)
//	[48:52] number of checksum runs, [52:56] zero
//	runs:   logical u64, count u32, zero u32, count crc32c u32, padded to 8
//
// The reader starts at the slot's tail position and sequence number and
// follows consecutive sequence numbers; where the next one is not found
// (torn, old, never written) it tries the ring's start once, since the
// writer skips to the start when an entry does not fit before the end.
const (
	intentMagic       = "BDIOILOG"
	intentVersion     = 1
	intentHeaderSize  = 4096
	intentSlot0       = 64
	intentSlotSize    = 64
	intentEntryHeader = 56
	// intentRingSize holds about 150000 plain entries (or 8000 of 1 MiB
	// with checksums) between two commits; when full, writes commit.
	intentRingSize = 8 << 20
)

// intentEntry is one logged mapping change: [start, start+len) of the file
// now maps to disk (holeAddr: punched), with the checksums of its sectors.
type intentEntry struct {
	seq, gen         uint64
	start, len, disk uint64
	sums             []csumRun
}

// intentSlot is the log's header state: base is the committed generation
// the live entries follow, cut the largest generation a commit in flight
// may have written (base <= cut), tail where the live entries start.
type intentSlot struct {
	counter, base, cut, tailPos, tailSeq uint64
}

// livePos places a live entry in the ring (positions grow forever; the
// ring offset is pos % ring size).
type livePos struct{ pos, seq uint64 }

// intentLog is an open intent log.
type intentLog struct {
	mu   sync.Mutex
	path string
	file *os.File
	m    []byte // the whole file, MAP_SHARED
	ring []byte
	slot intentSlot
	live []livePos
	head uint64 // position of the next entry
	next uint64 // its sequence number
	// cutSeq is the first sequence number the commit in flight does not
	// include (set by cut, under the transaction's exclusive lock).
	cutSeq uint64
	// lost is set when a change found no room; pendingLost when such a
	// change is in the snapshot of the commit in flight. Either asks the
	// writer to commit before it reports completion (commitUnlogged).
	lost, pendingLost bool
}

// intentLogPath names the log of the volume with this fsid in dir.
func intentLogPath(dir string, fsid [16]byte) string {
	return filepath.Join(dir, fmt.Sprintf("btrfsdio-%x.intent", fsid))
}

// openIntentLog opens (or creates) the log of volume fsid, committed at
// generation gen, in dir. It returns the entries to replay: those of a log
// left for this volume at a generation it may follow. A log that does not
// fit (another format, a generation the volume is not at) is reported by
// warn and started afresh.
func openIntentLog(dir string, fsid [16]byte, gen uint64, ringSize int, warn func(string, ...any)) (*intentLog, []intentEntry, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("intent log directory: %w", err)
	}
	path := intentLogPath(dir, fsid)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("intent log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("intent log: %w", err)
	}
	fresh := st.Size() == 0
	if !fresh && st.Size() != int64(intentHeaderSize+ringSize) {
		warn("intent log %s has %d bytes, not %d: ignored and started afresh", path, st.Size(), intentHeaderSize+ringSize)
		fresh = true
	}
	if fresh {
		// Zeroes: no entry of an earlier log can look valid.
		if err := f.Truncate(0); err == nil {
			err = f.Truncate(int64(intentHeaderSize + ringSize))
		}
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("intent log: %w", err)
		}
	}
	m, err := unix.Mmap(int(f.Fd()), 0, intentHeaderSize+ringSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("intent log: mmap %s: %w", path, err)
	}
	l := &intentLog{path: path, file: f, m: m, ring: m[intentHeaderSize:]}
	var entries []intentEntry
	if !fresh {
		var why error
		entries, why = l.load(fsid, gen)
		if why != nil {
			warn("intent log %s: %v: ignored and started afresh", path, why)
			clear(m)
			fresh = true
		}
	}
	if fresh {
		le := binary.LittleEndian
		copy(m, intentMagic)
		le.PutUint32(m[8:], intentVersion)
		copy(m[16:32], fsid[:])
		le.PutUint64(m[32:], uint64(ringSize))
		l.slot = intentSlot{base: gen, cut: gen, tailSeq: 1}
		l.next = 1
		l.writeSlot()
	}
	l.cutSeq = l.next
	return l, entries, nil
}

// errStaleIntentLog wraps the reasons a log is not replayed.
var errStaleIntentLog = errors.New("not a log of this volume's last commit")

// load validates the header and reads the live entries; the caller holds
// the only reference.
func (l *intentLog) load(fsid [16]byte, gen uint64) ([]intentEntry, error) {
	le := binary.LittleEndian
	m := l.m
	switch {
	case string(m[:8]) != intentMagic || le.Uint32(m[8:]) != intentVersion:
		return nil, fmt.Errorf("%w: unknown format", errStaleIntentLog)
	case [16]byte(m[16:32]) != fsid:
		return nil, fmt.Errorf("%w: written for volume %x", errStaleIntentLog, m[16:20])
	case le.Uint64(m[32:]) != uint64(len(l.ring)):
		return nil, fmt.Errorf("%w: ring of %d bytes", errStaleIntentLog, le.Uint64(m[32:]))
	}
	s, ok := l.readSlots()
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: no valid header slot", errStaleIntentLog)
	case gen < s.base || gen > s.cut:
		return nil, fmt.Errorf("%w: it follows generation %d (a commit up to %d was under way), the volume is at %d",
			errStaleIntentLog, s.base, s.cut, gen)
	}
	l.slot = s
	pos, seq := s.tailPos, s.tailSeq
	var out []intentEntry
	for {
		e, n, at, ok := l.find(pos, seq, s.base)
		if !ok {
			break
		}
		out = append(out, e)
		l.live = append(l.live, livePos{at, seq})
		pos, seq = at+n, seq+1
	}
	l.head, l.next = pos, seq
	return out, nil
}

// readSlots returns the valid header slot with the larger counter.
func (l *intentLog) readSlots() (intentSlot, bool) {
	le := binary.LittleEndian
	var best intentSlot
	found := false
	for i := 0; i < 2; i++ {
		b := l.m[intentSlot0+i*intentSlotSize:][:intentSlotSize]
		if le.Uint32(b) != csumData(b[4:]) {
			continue
		}
		s := intentSlot{le.Uint64(b[8:]), le.Uint64(b[16:]), le.Uint64(b[24:]), le.Uint64(b[32:]), le.Uint64(b[40:])}
		if s.base > s.cut || s.tailSeq == 0 {
			continue
		}
		if !found || s.counter > best.counter {
			best, found = s, true
		}
	}
	return best, found
}

// writeSlot stores l.slot with the next counter in the slot not holding
// the current one.
func (l *intentLog) writeSlot() {
	le := binary.LittleEndian
	l.slot.counter++
	var b [intentSlotSize]byte
	le.PutUint64(b[8:], l.slot.counter)
	le.PutUint64(b[16:], l.slot.base)
	le.PutUint64(b[24:], l.slot.cut)
	le.PutUint64(b[32:], l.slot.tailPos)
	le.PutUint64(b[40:], l.slot.tailSeq)
	le.PutUint32(b[:], csumData(b[4:]))
	copy(l.m[intentSlot0+int(l.slot.counter%2)*intentSlotSize:], b[:])
}

// find reads the entry with sequence number seq at position pos, or at the
// start of the next lap; it returns the entry, its length and position.
func (l *intentLog) find(pos, seq, base uint64) (intentEntry, uint64, uint64, bool) {
	size := uint64(len(l.ring))
	if e, n, ok := l.decodeAt(pos%size, seq, base); ok {
		return e, n, pos, true
	}
	if pos%size == 0 {
		return intentEntry{}, 0, 0, false
	}
	lap := pos + size - pos%size
	if e, n, ok := l.decodeAt(0, seq, base); ok {
		return e, n, lap, true
	}
	return intentEntry{}, 0, 0, false
}

// decodeAt validates and decodes the entry at ring offset off.
func (l *intentLog) decodeAt(off, seq, base uint64) (intentEntry, uint64, bool) {
	le := binary.LittleEndian
	r := l.ring[off:]
	if len(r) < intentEntryHeader {
		return intentEntry{}, 0, false
	}
	n := uint64(le.Uint32(r[4:]))
	if n < intentEntryHeader || n%8 != 0 || n > uint64(len(r)) || le.Uint32(r) != csumData(r[4:n]) {
		return intentEntry{}, 0, false
	}
	e := intentEntry{seq: le.Uint64(r[8:]), gen: le.Uint64(r[16:]),
		start: le.Uint64(r[24:]), len: le.Uint64(r[32:]), disk: le.Uint64(r[40:])}
	if e.seq != seq || e.gen < base {
		return intentEntry{}, 0, false
	}
	p := r[intentEntryHeader:n]
	for i := le.Uint32(r[48:]); i > 0; i-- {
		if len(p) < 20 {
			return intentEntry{}, 0, false
		}
		run := csumRun{logical: le.Uint64(p)}
		cnt := uint64(le.Uint32(p[8:]))
		if cnt == 0 || cnt > uint64(len(p)-20)/4 || le.Uint32(p[16:]) != uint32(cnt) {
			return intentEntry{}, 0, false
		}
		for j := uint64(0); j < cnt; j++ {
			run.sums = append(run.sums, le.Uint32(p[20+4*j:]))
		}
		e.sums = append(e.sums, run)
		p = p[(20+4*cnt+7)&^7:]
	}
	return e, n, true
}

// entrySize is the ring space entry e takes.
func entrySize(sums []csumRun) uint64 {
	n := uint64(intentEntryHeader)
	for _, r := range sums {
		n += (20 + 4*uint64(len(r.sums)) + 7) &^ 7
	}
	return n
}

// tailPos is where the oldest live entry starts.
func (l *intentLog) tailPos() uint64 {
	if len(l.live) > 0 {
		return l.live[0].pos
	}
	return l.head
}

// record is btrfs_log_inode for one change: append it before the write
// that made it is reported complete. The caller holds trans.mu shared, so
// the entry falls on one side of a commit's snapshot. A change that finds
// no room is left to the next commit (see commitUnlogged), as btrfs falls
// back to a full commit when it cannot log.
func (l *intentLog) record(start, length, disk uint64, sums []orderedSum) {
	if l == nil {
		return
	}
	runs := make([]csumRun, len(sums))
	for i, s := range sums {
		runs[i] = csumRun{logical: s.logical, sums: s.sums}
	}
	need := entrySize(runs)
	size := uint64(len(l.ring))
	l.mu.Lock()
	defer l.mu.Unlock()
	pos := l.head
	if size-pos%size < need {
		pos += size - pos%size
	}
	if pos+need-l.tailPos() > size {
		l.lost = true
		return
	}
	b := l.ring[pos%size:][:need]
	le := binary.LittleEndian
	// The crc word goes last: zero it first, so no step of the copy can
	// leave a valid entry that is not this one.
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&b[0])), 0)
	clear(b[4:])
	le.PutUint32(b[4:], uint32(need))
	le.PutUint64(b[8:], l.next)
	le.PutUint64(b[16:], l.slot.cut)
	le.PutUint64(b[24:], start)
	le.PutUint64(b[32:], length)
	le.PutUint64(b[40:], disk)
	le.PutUint32(b[48:], uint32(len(runs)))
	p := b[intentEntryHeader:]
	for _, r := range runs {
		le.PutUint64(p, r.logical)
		le.PutUint32(p[8:], uint32(len(r.sums)))
		le.PutUint32(p[16:], uint32(len(r.sums)))
		for j, s := range r.sums {
			le.PutUint32(p[20+4*j:], s)
		}
		p = p[(20+4*len(r.sums)+7)&^7:]
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&b[0])), csumData(b[4:]))
	l.live = append(l.live, livePos{pos, l.next})
	l.head, l.next = pos+need, l.next+1
}

// cut marks the snapshot of a commit of generation gen: the entries so far
// are in it. The caller holds trans.mu exclusive.
func (l *intentLog) cut(gen uint64) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cutSeq = l.next
	l.pendingLost = l.pendingLost || l.lost
	l.lost = false
	l.slot.cut = max(l.slot.cut, gen)
	l.writeSlot()
}

// committed is btrfs_free_log at the end of btrfs_commit_transaction (the
// tree-log goes with the transaction that made it useless): a commit of
// generation gen is on disk, so the entries of its snapshot go.
func (l *intentLog) committed(gen uint64) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	i := 0
	for i < len(l.live) && l.live[i].seq < l.cutSeq {
		i++
	}
	l.live = l.live[i:]
	l.pendingLost = false
	l.slot.base, l.slot.cut = gen, max(l.slot.cut, gen)
	l.slot.tailPos, l.slot.tailSeq = l.tailPos(), l.cutSeq
	l.writeSlot()
}

// needsCommit reports whether a change found no room in the log and no
// commit has made it durable yet.
func (l *intentLog) needsCommit() bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost || l.pendingLost
}

// drop unlinks the log file while its mapping stays in use: after an
// aborted transaction the data its entries map may be gone with the failed
// flush (the page cache drops pages whose writeback failed), so no later
// mount may replay them; the next one gets the last good commit, as
// btrfs, which never writes a log tree root after an abort, does.
func (l *intentLog) drop() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("intent log %s: %w", l.path, err)
	}
	return nil
}

// close unmaps the log; remove deletes it (a clean unmount: everything is
// committed).
func (l *intentLog) close(remove bool) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	if l.m != nil {
		errs = append(errs, unix.Munmap(l.m))
		l.m, l.ring = nil, nil
	}
	if l.file != nil {
		errs = append(errs, l.file.Close())
		l.file = nil
	}
	if remove {
		if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("intent log %s: %w", l.path, err)
	}
	return nil
}

// openIntents is btrfs_recover_log_trees, called by open_ctree once the
// committed metadata is loaded: open the volume's log in
// Options.IntentLogDir and, when a dead server left changes there, replay
// them and commit. Like btrfs, which replays a log tree at every mount that
// finds one, it does so whoever mounts: a log left by a crash is never
// ignored.
func (fs *FsInfo) openIntents() error {
	if fs.Opts.IntentLogDir == "" {
		return nil
	}
	l, entries, err := openIntentLog(fs.Opts.IntentLogDir, fs.meta.Fsid(), fs.trans.generation, fs.intentRingSize(), fs.warnf)
	if err != nil {
		return fmt.Errorf("btrfsdio: %w", err)
	}
	if len(entries) == 0 {
		fs.ilog = l
		return nil
	}
	if err := fs.replayIntents(entries); err != nil {
		l.close(false)
		return fmt.Errorf("btrfsdio: replaying %s (left in place, the images are untouched): %w", l.path, err)
	}
	fs.ilog = l
	if err := fs.CommitTransaction(); err != nil {
		fs.ilog = nil
		l.close(false)
		kept := "left in place"
		if fs.FsError() != nil {
			kept = "dropped with the aborted transaction"
		}
		return fmt.Errorf("btrfsdio: commit after replaying %s (%s): %w", l.path, kept, err)
	}
	fs.log.Infof("BTRFS info: replayed %d changes of the intent log %s on generation %d, committed as %d",
		len(entries), l.path, entries[0].gen, fs.trans.generation)
	return nil
}

func (fs *FsInfo) intentRingSize() int {
	if fs.Opts.intentRingSize != 0 {
		return fs.Opts.intentRingSize
	}
	return intentRingSize
}

// errBadIntent wraps the refusal of an entry that cannot belong to this
// volume although its checksum is right.
var errBadIntent = errors.New("intent log entry does not fit the volume")

// replayIntents is replay_one_extent for every logged change, in order, on
// top of the committed mapping, in memory only: a crash in the middle
// leaves the log and the images as they were, and the replay starts again.
// Replaying a change the committed root already has is harmless: the log
// holds every change after it too, and the mapping of each file byte is
// that of the last change to it. The allocator and the pins are derived
// from the result: what the committed root maps and the replay no longer
// does is pinned until the replay's commit is on disk.
func (fs *FsInfo) replayIntents(entries []intentEntry) error {
	inode := fs.inode
	before := inode.extents.snapshot()
	touched := make([]span, 0, len(before)+len(entries))
	for _, e := range before {
		touched = append(touched, span{e.diskBytenr, e.len})
	}
	capacity := fs.capacity()
	for i, e := range entries {
		if fs.Opts.ReplayStep != nil {
			if err := fs.Opts.ReplayStep(i); err != nil {
				return fmt.Errorf("stopped before change %d of %d: %w", i, len(entries), err)
			}
		}
		if err := fs.checkIntent(e, capacity); err != nil {
			return fmt.Errorf("change %d (sequence %d): %w", i, e.seq, err)
		}
		inode.extents.replace(e.start, e.len, e.disk)
		if e.disk != holeAddr {
			touched = append(touched, span{e.disk, e.len})
		}
		for _, r := range e.sums {
			fs.csums.insert(r.logical, r.sums)
		}
	}
	after := inode.extents.snapshot()
	used := make([]span, len(after))
	for i, e := range after {
		used[i] = span{e.diskBytenr, e.len}
	}
	used = mergeSpans(used)
	for _, s := range subtractSpans(mergeSpans(touched), used) {
		fs.csums.delete(s.start, s.len)
	}
	img := fs.snapshotMeta()
	img.generation = fs.trans.generation + 1
	if err := img.validate(); err != nil {
		return fmt.Errorf("the replayed mapping is inconsistent: %w", err)
	}
	old := make([]span, len(before))
	for i, e := range before {
		old[i] = span{e.diskBytenr, e.len}
	}
	fs.space = newFreeSpaceExcept(capacity, mergeSpans(append(old, used...)))
	for _, s := range subtractSpans(mergeSpans(old), used) {
		fs.trans.pin(s.start, s.len)
	}
	return nil
}

// checkIntent is the tree-checker for one logged change.
func (fs *FsInfo) checkIntent(e intentEntry, capacity uint64) error {
	aligned := func(v uint64) bool { return v%SectorSize == 0 }
	switch {
	case e.len == 0 || !aligned(e.start) || !aligned(e.len) || e.start+e.len > fs.inode.size || e.start+e.len < e.start:
		return fmt.Errorf("%w: file range [%d, +%d)", errBadIntent, e.start, e.len)
	case e.disk != holeAddr && (!aligned(e.disk) || e.disk+e.len > capacity || e.disk+e.len < e.disk):
		return fmt.Errorf("%w: disk range [%d, +%d)", errBadIntent, e.disk, e.len)
	case len(e.sums) > 0 && (fs.inode.NoDataSum || e.disk == holeAddr):
		return fmt.Errorf("%w: checksums for a change without them", errBadIntent)
	}
	for _, r := range e.sums {
		n := uint64(len(r.sums)) * SectorSize
		if !aligned(r.logical) || r.logical < e.disk || r.logical+n > e.disk+e.len {
			return fmt.Errorf("%w: checksums of [%d, +%d) outside the extent", errBadIntent, r.logical, n)
		}
	}
	return nil
}

// commitUnlogged commits when a change found no room in the intent log, so
// that the write which made it is durable before it is reported complete.
func (fs *FsInfo) commitUnlogged() error {
	if !fs.ilog.needsCommit() {
		return nil
	}
	if err := fs.CommitTransaction(); err != nil {
		return fmt.Errorf("btrfsdio: commit for a change the full intent log could not hold: %w", err)
	}
	return nil
}

// mergeSpans sorts spans and merges the overlapping and adjacent ones.
func mergeSpans(s []span) []span {
	s = slices.Clone(s)
	slices.SortFunc(s, func(a, b span) int { return cmpU64(a.start, b.start) })
	var out []span
	for _, x := range s {
		if n := len(out); n > 0 && out[n-1].start+out[n-1].len >= x.start {
			out[n-1].len = max(out[n-1].len, x.start+x.len-out[n-1].start)
			continue
		}
		out = append(out, x)
	}
	return out
}

// subtractSpans is a minus b, both merged.
func subtractSpans(a, b []span) []span {
	var out []span
	j := 0
	for _, x := range a {
		start, end := x.start, x.start+x.len
		for j < len(b) && b[j].start+b[j].len <= start {
			j++
		}
		for k := j; k < len(b) && b[k].start < end; k++ {
			if b[k].start > start {
				out = append(out, span{start, b[k].start - start})
			}
			start = max(start, b[k].start+b[k].len)
		}
		if start < end {
			out = append(out, span{start, end - start})
		}
	}
	return out
}
