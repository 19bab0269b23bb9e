package btrfsdio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/raid"
)

// intentFS is a persistent filesystem with an intent log in its own
// directory, and the model of what every completed write left.
type intentFS struct {
	*persistFS
	model []byte
	rng   *rand.Rand
}

func newIntentFS(t *testing.T, p raid.Profile, opts Options, seed uint64) *intentFS {
	t.Helper()
	opts.IntentLogDir = testDir(t)
	pf := newPersistFS(t, p, 8<<20, opts)
	return &intentFS{persistFS: pf, model: make([]byte, pf.Inode().ISize()), rng: rand.New(rand.NewPCG(seed, 13))}
}

// die is the server's death: no commit, the images closed as they are, the
// log's mapping dropped without a word written, its file left behind.
func (f *intentFS) die() {
	f.ilog.close(false)
	f.Vol.Close()
}

// randomWrite writes up to 64 sectors of a new pattern somewhere.
func (f *intentFS) randomWrite(t *testing.T) {
	t.Helper()
	size := int64(len(f.model))
	off := f.rng.Int64N(size/SectorSize) * SectorSize
	l := min(size-off, (1+f.rng.Int64N(64))*SectorSize)
	f.writeAt(t, off, l)
}

func (f *intentFS) writeAt(t *testing.T, off, l int64) {
	t.Helper()
	b := mmapBuf(t, int(l))
	fillPattern(b, f.rng.Uint64())
	if n, err := f.write(off, b, 0); err != nil || n != int(l) {
		t.Fatalf("write [%d, +%d): %d, %v", off, l, n, err)
	}
	copy(f.model[off:], b)
}

func (f *intentFS) punch(t *testing.T, off, l int64) {
	t.Helper()
	if err := f.Inode().PunchHole(uint64(off), uint64(l)); err != nil {
		t.Fatal(err)
	}
	clear(f.model[off : off+l])
}

// mustMatch reads the whole file back against the model.
func (f *intentFS) mustMatch(t *testing.T, what string) {
	t.Helper()
	got := f.readAll(t)
	if i := firstDiff(got, f.model); i >= 0 {
		t.Fatalf("%s: byte %d (sector %d) differs from what was written", what, i, i/SectorSize)
	}
	if n := f.Stats().CsumErrors; n != 0 {
		t.Fatalf("%s: %d checksum errors", what, n)
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestIntentLogKeepsAckedWrites: every write and punch that returned
// survives the process's death without a FLUSH: the next mount replays
// the log on the last commit, on every kind of inode.
func TestIntentLogKeepsAckedWrites(t *testing.T) {
	for i, c := range []struct {
		p    raid.Profile
		opts Options
	}{
		{raid.Raid1, Options{Mode: Bounce}},
		{raid.Raid1, Options{Mode: Bounce, DataSum: true}},
		{raid.Single, Options{Mode: ZeroCopy}},
		{raid.Raid5, Options{Mode: Bounce, NoCow: true}},
		{raid.Raid10, Options{Mode: ZeroCopy, DataSum: true}},
	} {
		t.Run(fmt.Sprintf("%s/%s/datasum=%v/nocow=%v", c.p, c.opts.Mode, c.opts.DataSum, c.opts.NoCow), func(t *testing.T) {
			f := newIntentFS(t, c.p, c.opts, uint64(i))
			for n := 0; n < 10; n++ {
				f.randomWrite(t)
			}
			if err := f.Flush(); err != nil {
				t.Fatal(err)
			}
			for n := 0; n < 20; n++ {
				f.randomWrite(t)
				if n%7 == 3 {
					f.punch(t, f.rng.Int64N(int64(len(f.model))/SectorSize-16)*SectorSize, 16*SectorSize)
				}
			}
			gen := f.Generation()
			f.die()
			f.reopen(t)
			if f.Generation() != gen+1 {
				t.Fatalf("generation %d after the replay, want the replay's commit %d", f.Generation(), gen+1)
			}
			f.mustMatch(t, "after the replay")
			f.mustCheckClean(t)
			// The replay committed: a second death without writes
			// finds an empty log and the same data.
			f.die()
			f.reopen(t)
			if f.Generation() != gen+1 {
				t.Fatalf("generation %d: the second mount replayed again", f.Generation())
			}
			f.mustMatch(t, "after a second death")
			// And the log keeps working after a replay.
			f.randomWrite(t)
			f.die()
			f.reopen(t)
			f.mustMatch(t, "after a write since the replay")
			f.mustCheckClean(t)
		})
	}
}

// TestIntentLogDatasumReplayed: the replayed extents carry their data
// checksums, so a corrupted copy is found and repaired from the other.
func TestIntentLogDatasumReplayed(t *testing.T) {
	f := newIntentFS(t, raid.Raid1, Options{Mode: Bounce, DataSum: true}, 5)
	f.writeAt(t, 0, 64<<10)
	f.die()
	f.reopen(t)
	ext := f.Inode().extents.snapshot()
	if len(ext) != 1 {
		t.Fatalf("%d extents after the replay, want 1", len(ext))
	}
	for off := uint64(0); off < ext[0].len; off += SectorSize {
		want := csumData(f.model[off : off+SectorSize])
		if got, ok := f.Csum(ext[0].diskBytenr + off); !ok || got != want {
			t.Fatalf("sector %d: csum %#x (present %v), want %#x", off/SectorSize, got, ok, want)
		}
	}
	// Sector 2 is bad on the first copy, sector 5 on the second.
	corruptCopy(t, f.testFS, ext[0].diskBytenr+2*SectorSize, 1)
	corruptCopy(t, f.testFS, ext[0].diskBytenr+5*SectorSize, 2)
	if got := f.readAll(t); !bytes.Equal(got, f.model) {
		t.Fatal("data differs with a sector corrupted on each copy")
	}
	if f.Stats().ReadRepairs == 0 {
		t.Fatal("the corrupted copy was not detected by its replayed checksum")
	}
}

// TestIntentLogReplayCrash: a crash at any step of the replay leaves
// everything as it was; the next mount replays again, and again after a
// crash between the replay's commit and the log's trim.
func TestIntentLogReplayCrash(t *testing.T) {
	f := newIntentFS(t, raid.Raid1, Options{Mode: Bounce, DataSum: true}, 9)
	for n := 0; n < 6; n++ {
		f.randomWrite(t)
	}
	f.punch(t, 0, 8*SectorSize)
	f.randomWrite(t)
	gen := f.Generation()
	changes := len(f.ilog.live)
	f.die()
	injected := errors.New("crash injected")
	for step := 0; step < changes; step++ {
		opts := f.opts
		opts.ReplayStep = func(n int) error {
			if n == step {
				return injected
			}
			return nil
		}
		_, err := openPaths(t, f.paths, 0, raid.AnyProfile, opts)
		if !errors.Is(err, injected) {
			t.Fatalf("step %d: mount: %v, want the injected crash", step, err)
		}
	}
	// A crash after the replay's commit is on disk, before the trim: the
	// same log, with the commit in flight recorded.
	saved, err := os.ReadFile(intentLogPath(f.opts.IntentLogDir, f.meta.Fsid()))
	if err != nil {
		t.Fatal(err)
	}
	f.reopen(t)
	f.mustMatch(t, "after the replay")
	f.die()
	l := &intentLog{m: saved}
	s, ok := l.readSlots()
	if !ok {
		t.Fatal("saved log has no valid slot")
	}
	l.slot = s
	l.slot.cut = gen + 1
	l.writeSlot()
	if err := os.WriteFile(intentLogPath(f.opts.IntentLogDir, f.meta.Fsid()), saved, 0o600); err != nil {
		t.Fatal(err)
	}
	f.reopen(t)
	if f.Generation() != gen+2 {
		t.Fatalf("generation %d: the log was not replayed again on the replay's commit %d", f.Generation(), gen+1)
	}
	f.mustMatch(t, "after replaying a log the root already holds")
	f.mustCheckClean(t)
}

// TestIntentLogTornEntry: a last entry cut short by the death (its crc
// word not yet stored, or its body half written) is not replayed; the ones
// before are.
func TestIntentLogTornEntry(t *testing.T) {
	for _, tear := range []string{"crc word zero", "body half written"} {
		t.Run(tear, func(t *testing.T) {
			f := newIntentFS(t, raid.Single, Options{Mode: Bounce, DataSum: true}, 3)
			f.writeAt(t, 0, 16*SectorSize)
			if err := f.Flush(); err != nil {
				t.Fatal(err)
			}
			committed := bytes.Clone(f.model)
			f.writeAt(t, 16*SectorSize, 8*SectorSize)
			f.writeAt(t, 4*SectorSize, 4*SectorSize)
			last := f.ilog.live[len(f.ilog.live)-1]
			e := f.ilog.ring[last.pos%uint64(len(f.ilog.ring)):]
			if tear == "crc word zero" {
				binary.LittleEndian.PutUint32(e, 0)
			} else {
				n := binary.LittleEndian.Uint32(e[4:])
				clear(e[n/2 : n])
			}
			f.die()
			copy(f.model[4*SectorSize:8*SectorSize], committed[4*SectorSize:])
			f.reopen(t)
			f.mustMatch(t, "after a torn last entry")
			f.mustCheckClean(t)
		})
	}
}

// TestIntentLogStaleIgnored: a log left at an older generation (the volume
// was committed since without it) is never replayed: its extents may have
// been reused. A log of another volume or format is ignored as well.
func TestIntentLogStaleIgnored(t *testing.T) {
	var warnings strings.Builder
	log := logrus.New()
	log.SetOutput(&warnings)
	f := newIntentFS(t, raid.Raid1, Options{Mode: Bounce, Log: log}, 4)
	f.writeAt(t, 0, 32*SectorSize)
	path := intentLogPath(f.opts.IntentLogDir, f.meta.Fsid())
	f.die()
	stale, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f.reopen(t)
	f.writeAt(t, 0, 32*SectorSize) // reuses the first extent's space
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the log survived a clean close: %v", err)
	}
	if err := os.WriteFile(path, stale, 0o600); err != nil {
		t.Fatal(err)
	}
	gen := f.Generation()
	f.reopen(t)
	if f.Generation() != gen {
		t.Fatalf("generation %d after mounting with a stale log, want %d (no replay)", f.Generation(), gen)
	}
	if !strings.Contains(warnings.String(), "ignored and started afresh") {
		t.Fatalf("no warning about the stale log: %q", warnings.String())
	}
	f.mustMatch(t, "with a stale log")
	f.mustCheckClean(t)
	// Another volume's log under this name: ignored too.
	f.die()
	other := bytes.Clone(stale)
	other[16] ^= 0xff
	if err := os.WriteFile(path, other, 0o600); err != nil {
		t.Fatal(err)
	}
	warnings.Reset()
	f.reopen(t)
	if !strings.Contains(warnings.String(), "written for volume") {
		t.Fatalf("no warning about another volume's log: %q", warnings.String())
	}
	f.mustMatch(t, "with another volume's log")
}

// TestIntentLogFullCommits: with a ring too small for the changes between
// two FLUSHes, writes commit instead of leaving a change unlogged, and
// entries wrap around the ring; nothing acknowledged is lost.
func TestIntentLogFullCommits(t *testing.T) {
	opts := Options{Mode: Bounce, DataSum: true, intentRingSize: 2 * SectorSize}
	f := newIntentFS(t, raid.Raid1, opts, 6)
	commits := f.Stats().Commits
	for n := 0; n < 60; n++ {
		f.randomWrite(t)
	}
	if f.Stats().Commits == commits {
		t.Fatal("no commit although the log cannot hold 60 changes")
	}
	// update_commit_stats: the commits' time is summed and the longest kept.
	if st := f.Stats(); st.CommitNs <= 0 || st.CommitMaxNs <= 0 || st.CommitMaxNs > st.CommitNs {
		t.Fatalf("commit time: total %d ns, max %d ns over %d commits", st.CommitNs, st.CommitMaxNs, st.Commits)
	}
	if f.ilog.head <= uint64(len(f.ilog.ring)) {
		t.Fatalf("the log never wrapped (head at %d of a %d-byte ring)", f.ilog.head, len(f.ilog.ring))
	}
	f.die()
	f.reopen(t)
	f.mustMatch(t, "after a death with a small log")
	f.mustCheckClean(t)
}

func TestSubtractSpans(t *testing.T) {
	got := subtractSpans(mergeSpans([]span{{0, 10}, {20, 10}, {5, 10}}), mergeSpans([]span{{2, 2}, {12, 10}, {28, 5}}))
	want := []span{{0, 2}, {4, 8}, {22, 6}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestIntentLogCommitRacesWrites: writes and punches complete while
// commits run, so changes land between a commit's snapshot and its end;
// the trim after each commit drops only what the snapshot holds, and after
// the death every completed change is back.
func TestIntentLogCommitRacesWrites(t *testing.T) {
	f := newIntentFS(t, raid.Raid1, Options{Mode: Bounce, DataSum: true}, 8)
	const writers = 4
	region := int64(len(f.model)) / writers &^ (SectorSize - 1)
	stopFlushing := flushLoop(f.Flush)
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			base := int64(w) * region
			model := f.model[base : base+region]
			buf := mmapBuf(t, 128<<10)
			for i := 0; i < 40; i++ {
				off := rng.Int64N(region/SectorSize-32) * SectorSize
				l := (1 + rng.Int64N(32)) * SectorSize
				if i%7 == 6 {
					if err := f.Inode().PunchHole(uint64(base+off), uint64(l)); err != nil {
						errs <- err
						return
					}
					clear(model[off : off+l])
					continue
				}
				fillPattern(buf[:l], rng.Uint64())
				if _, err := f.write(base+off, buf[:l], 0); err != nil {
					errs <- err
					return
				}
				copy(model[off:], buf[:l])
			}
			errs <- nil
		}()
	}
	for w := 0; w < writers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := stopFlushing(); err != nil {
		t.Fatal(err)
	}
	// The last changes may be after the last commit: write some more.
	for n := 0; n < 4; n++ {
		f.randomWrite(t)
	}
	f.die()
	f.reopen(t)
	f.mustMatch(t, "after writes that raced commits")
	f.mustCheckClean(t)
}

// TestIntentLogGoneAfterPowerLoss: a power loss takes the tmpfs and the
// log with it; the next mount finds the last commit, as for any disk with
// a volatile cache, and starts a new log.
func TestIntentLogGoneAfterPowerLoss(t *testing.T) {
	f := newIntentFS(t, raid.Raid1, Options{Mode: Bounce}, 12)
	f.writeAt(t, 0, 16*SectorSize)
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	committed := bytes.Clone(f.model)
	gen := f.Generation()
	f.writeAt(t, 0, 8*SectorSize)
	path := intentLogPath(f.opts.IntentLogDir, f.meta.Fsid())
	f.die()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	f.reopen(t)
	if f.Generation() != gen {
		t.Fatalf("generation %d, want the last commit's %d", f.Generation(), gen)
	}
	f.model = committed
	f.mustMatch(t, "after the log was lost")
	f.mustCheckClean(t)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no new log: %v", err)
	}
}

// TestIntentLogDroppedOnAbort: a commit that aborts (a failed flush) drops
// the log at once, so a later mount, even after the server died without
// closing, gets the last good commit and never maps extents whose data may
// have gone with the failed flush.
func TestIntentLogDroppedOnAbort(t *testing.T) {
	f := newIntentFS(t, raid.Single, Options{Mode: Bounce}, 14)
	f.writeAt(t, 0, 16*SectorSize)
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	committed := bytes.Clone(f.model)
	gen := f.Generation()
	f.writeAt(t, 32*SectorSize, 8*SectorSize)
	path := intentLogPath(f.opts.IntentLogDir, f.meta.Fsid())
	f.Vol.Devices()[0].InjectFault(blk.OpFlush, 1)
	if err := f.Flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("FLUSH with a failing device flush: %v, want EIO", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the intent log outlived the aborted transaction: %v", err)
	}
	f.die()
	f.reopen(t)
	if f.Generation() != gen {
		t.Fatalf("generation %d, want the last good commit's %d", f.Generation(), gen)
	}
	f.model = committed
	f.mustMatch(t, "after the abort")
	f.mustCheckClean(t)
}
