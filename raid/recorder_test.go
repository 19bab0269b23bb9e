package raid

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

// opLog is a Recorder that keeps what it saw, as "begin"/"end" lines.
type opLog struct {
	mu    sync.Mutex
	lines []string
	data  [][]byte
}

func (l *opLog) Begin(d *Device, op blk.Op, off uint64, data []byte) func(error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf("begin %s %d", op, off))
	l.data = append(l.data, append([]byte(nil), data...))
	return func(err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, fmt.Sprintf("end %s %d %v", op, off, err))
	}
}

// TestRecorderSeesWritesAndFlushes attaches a recorder to a device:
// WriteSuper's backup copies, their flush, the primary and its flush reach
// it in order, each write with its bytes and ended before the flush begins; a bio write is recorded
// with the bytes of its pages; reads are not recorded.
func TestRecorderSeesWritesAndFlushes(t *testing.T) {
	devs := newDevices(t, 1, 8<<20)
	rec := &opLog{}
	devs[0].SetRecorder(rec)
	sb := &Superblock{Generation: 1, Version: superVersion, NumDevices: 1, Devid: 1, TotalBytes: 8 << 20,
		ChunkDevBytes: 4 << 20, MetaSlotBytes: 64 << 10, MetaCopies: 2}
	if err := devs[0].WriteSuper(sb); err != nil {
		t.Fatal(err)
	}
	if _, err := devs[0].ReadSuper(); err != nil {
		t.Fatal(err)
	}
	var want []string
	order := []uint64{superOffsets[1], superOffsets[2], superOffsets[0]} // backups, then the primary
	for i, off := range order {
		want = append(want, fmt.Sprintf("begin %s %d", blk.OpWrite, off), fmt.Sprintf("end %s %d <nil>", blk.OpWrite, off))
		if i >= 1 {
			want = append(want, fmt.Sprintf("begin %s 0", blk.OpFlush), fmt.Sprintf("end %s 0 <nil>", blk.OpFlush))
		}
	}
	if fmt.Sprint(rec.lines) != fmt.Sprint(want) {
		t.Fatalf("recorded %q\nwant %q", rec.lines, want)
	}
	writes := 0
	for _, b := range rec.data {
		if b == nil {
			continue // a flush
		}
		c := *sb
		c.Bytenr = order[writes]
		if !bytes.Equal(b, c.Encode()) {
			t.Errorf("write %d: the recorder got other bytes than the superblock copy", writes)
		}
		writes++
	}
	if writes != len(order) || len(rec.data) != len(order)+2 {
		t.Errorf("recorded %d writes of %d entries, want %d and %d", writes, len(rec.data), len(order), len(order)+2)
	}

	rec.lines, rec.data = nil, nil
	buf := blk.AlignedBuffer(2 * SectorSize)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	segs := []seg{{page: blk.NewPage(buf[:SectorSize]), n: SectorSize}, {page: blk.NewPage(buf[SectorSize:]), n: SectorSize}}
	if err := devs[0].rwSegs(blk.OpWrite, 2<<20, segs); err != nil {
		t.Fatal(err)
	}
	if len(rec.data) != 1 || !bytes.Equal(rec.data[0], buf) {
		t.Fatalf("bio write recorded as %d entries, want one with the bio's bytes", len(rec.data))
	}
}

// TestCommitBarriersFlushBetweenSlotAndSupers holds the metadata write of
// a commit to its barrier: every copy of the slot is written and flushed
// before any superblock write begins; the nobarrier build (barrier.go)
// drops that flush, and only that one.
func TestCommitBarriersFlushBetweenSlotAndSupers(t *testing.T) {
	devs := newDevices(t, 2, 8<<20)
	v, _, err := OpenVolume(devs, OpenOptions{Profile: Raid1, Volume: VolumeOptions{Logger: testLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenMetaArea(v)
	if err != nil {
		t.Fatal(err)
	}
	recs := []*opLog{{}, {}}
	for i, d := range devs {
		d.SetRecorder(recs[i])
	}
	if err := m.WriteSlot(0, make([]byte, SectorSize)); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteSupers(MetaRoot{Generation: 2, Slot: 0, Bytes: SectorSize}); err != nil {
		t.Fatal(err)
	}
	flush := fmt.Sprintf("begin %s 0", blk.OpFlush)
	for i, rec := range recs {
		flushes := 0
		for _, l := range rec.lines {
			if l == flush {
				flushes++
			}
		}
		barrier := len(rec.lines) > 2 && rec.lines[2] == flush
		switch {
		case barriers && !barrier:
			t.Errorf("device %d: the metadata slot's write is not followed by a flush before the superblocks: %q", i, rec.lines)
		case !barriers && barrier:
			t.Errorf("device %d: a nobarrier build flushes between the slot and the superblocks: %q", i, rec.lines)
		case flushes != 2+btoi(barriers):
			t.Errorf("device %d: %d flushes, want the superblocks' two plus %d barrier: %q", i, flushes, btoi(barriers), rec.lines)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
