package logwrites

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"
)

// logBuilder writes a log in dm-log-writes' format, and keeps a model of the
// logged device (what each prefix of the log leaves on it) to compare a
// replay with.
type logBuilder struct {
	ss      int64
	log     []byte
	entries uint64
	dev     []byte            // the device after every entry so far
	at      map[string][]byte // the device at each mark
}

func newLogBuilder(ss, devSize int64) *logBuilder {
	return &logBuilder{ss: ss, log: make([]byte, ss), dev: make([]byte, devSize), at: map[string][]byte{}}
}

func (b *logBuilder) entry(sector, nr, flags uint64, label string, data []byte) {
	hdr := make([]byte, b.ss)
	binary.LittleEndian.PutUint64(hdr[0:], sector)
	binary.LittleEndian.PutUint64(hdr[8:], nr)
	binary.LittleEndian.PutUint64(hdr[16:], flags)
	binary.LittleEndian.PutUint64(hdr[24:], uint64(len(label)))
	copy(hdr[32:], label)
	b.log = append(b.log, hdr...)
	b.log = append(b.log, data...)
	b.entries++
}

// write logs a write of nr sectors at sector, each sector filled with fill.
func (b *logBuilder) write(sector, nr uint64, flags uint64, fill byte) {
	data := bytes.Repeat([]byte{fill}, int(int64(nr)*b.ss))
	b.entry(sector, nr, flags, "", data)
	copy(b.dev[int64(sector)*b.ss:], data)
}

func (b *logBuilder) discard(sector, nr uint64) {
	b.entry(sector, nr, FlagDiscard, "", nil)
	clear(b.dev[int64(sector)*b.ss : int64(sector+nr)*b.ss])
}

func (b *logBuilder) mark(label string) {
	b.entry(0, 0, FlagMark, label, nil)
	b.at[label] = slices.Clone(b.dev)
}

// bytes returns the log with a super block that counts n entries.
func (b *logBuilder) bytes(n uint64) []byte {
	out := slices.Clone(b.log)
	binary.LittleEndian.PutUint64(out[0:], Magic)
	binary.LittleEndian.PutUint64(out[8:], Version)
	binary.LittleEndian.PutUint64(out[16:], n)
	binary.LittleEndian.PutUint32(out[24:], uint32(b.ss))
	return out
}

// memDev is a device in memory that fails writes past its end.
type memDev []byte

func (d memDev) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > int64(len(d)) {
		return 0, io.ErrShortWrite
	}
	return copy(d[off:], p), nil
}

// A replay up to a mark leaves exactly what the device held when the mark
// was logged: writes (one larger than the replay's chunk), FUA and FLUSH
// writes, discards as zeroes, overwrites in log order, for both sector
// sizes the kernel uses.
func TestReplayToMark(t *testing.T) {
	for _, ss := range []int64{512, 4096} {
		b := newLogBuilder(ss, 8<<20)
		b.write(0, 8, 0, 'a')
		b.write(100, 1, FlagFUA, 'b')
		b.entry(0, 0, FlagFlush, "", nil)
		b.mark("one")
		b.write(4, 2, FlagMetadata, 'c') // over part of the first write
		b.write(200, uint64((maxChunk+3*ss)/ss), 0, 'd')
		b.discard(0, 2)
		b.entry(0, 0, FlagFlush, "", nil)
		b.mark("two")
		b.write(100, 1, 0, 'e')
		log := b.bytes(b.entries)

		for _, mark := range []string{"one", "two"} {
			dev := make(memDev, len(b.dev))
			st, err := Replay(bytes.NewReader(log), dev, int64(len(dev)), mark)
			if err != nil {
				t.Fatalf("ss %d: replay to %s: %v", ss, mark, err)
			}
			if !bytes.Equal(dev, b.at[mark]) {
				t.Errorf("ss %d: replay to %s: the device differs from the model", ss, mark)
			}
			if mark == "two" && (st.Writes != 4 || st.Discards != 1 || st.Flushes != 2 || st.Marks != 2 || st.Entries != 9) {
				t.Errorf("ss %d: stats to two: %+v", ss, st)
			}
		}
		dev := make(memDev, len(b.dev))
		if _, err := Replay(bytes.NewReader(log), dev, int64(len(dev)), ""); err != nil || !bytes.Equal(dev, b.dev) {
			t.Errorf("ss %d: replay of the whole log: %v, equal %v", ss, err, bytes.Equal(dev, b.dev))
		}
		if marks, err := Marks(bytes.NewReader(log)); err != nil || !slices.Equal(marks, []string{"one", "two"}) {
			t.Errorf("ss %d: marks %q, %v", ss, marks, err)
		}
	}
}

// Entries past the count in the super block were never committed to the
// log: a replay ignores them, and a mark among them is not there.
func TestReplayStopsAtSuperCount(t *testing.T) {
	b := newLogBuilder(512, 1<<20)
	b.write(0, 1, 0, 'a')
	b.mark("one")
	want := slices.Clone(b.dev)
	b.write(0, 1, 0, 'b')
	b.mark("two")
	log := b.bytes(2)
	dev := make(memDev, len(b.dev))
	if _, err := Replay(bytes.NewReader(log), dev, int64(len(dev)), ""); err != nil || !bytes.Equal(dev, want) {
		t.Errorf("whole log: %v, equal %v", err, bytes.Equal(dev, want))
	}
	if _, err := Replay(bytes.NewReader(log), dev, int64(len(dev)), "two"); !errors.Is(err, ErrMarkNotFound) {
		t.Errorf("mark past the count: %v, want ErrMarkNotFound", err)
	}
}

// Bad input changes nothing on the target: a missing mark, a truncated
// log, an entry past the target's end, a foreign or corrupt super block.
func TestReplayBadLog(t *testing.T) {
	b := newLogBuilder(512, 1<<20)
	b.write(0, 4, 0, 'a')
	b.mark("one")
	b.write(8, 4, 0, 'b')
	b.mark("two")
	good := b.bytes(b.entries)
	badMagic := slices.Clone(good)
	badMagic[0] ^= 1
	badVersion := slices.Clone(good)
	badVersion[8] = 2
	badSS := slices.Clone(good)
	binary.LittleEndian.PutUint32(badSS[24:], 1000)
	longMark := slices.Clone(good)
	binary.LittleEndian.PutUint64(longMark[6*512+24:], 500) // the mark "one": after the super block and a write of 4
	for _, c := range []struct {
		name string
		log  []byte
		size int64
		mark string
	}{
		{"missing mark", good, 1 << 20, "three"},
		{"truncated data", good[:len(good)-512-100], 1 << 20, "two"},
		{"truncated header", good[:len(good)-300], 1 << 20, "two"},
		{"past the end", good, 8 * 512, "two"},
		{"bad magic", badMagic, 1 << 20, ""},
		{"bad version", badVersion, 1 << 20, ""},
		{"bad sector size", badSS, 1 << 20, ""},
		{"mark too long", longMark, 1 << 20, "two"},
		{"empty", nil, 1 << 20, ""},
	} {
		dev := make(memDev, 1<<20)
		if _, err := Replay(bytes.NewReader(c.log), dev, c.size, c.mark); err == nil {
			t.Errorf("%s: replay succeeded", c.name)
		}
		if !bytes.Equal(dev, make([]byte, 1<<20)) {
			t.Errorf("%s: the failed replay wrote to the target", c.name)
		}
	}
}
