// Package logwrites reads the log Linux's dm-log-writes target keeps of
// every write to a device (drivers/md/dm-log-writes.c) and replays a prefix
// of it onto a copy of that device, as fstests' replay-log does: the copy
// then holds what a power cut at that point would have left on the disk.
//
// The kernel logs a write only once a FLUSH that covers it has completed
// (FUA writes when they complete), so every prefix of the log is a state
// the disk may be in after a power loss. Marks are entries userspace
// inserts with `dmsetup message DEV 0 mark LABEL`.
package logwrites

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Entry flags (LOG_*_FLAG in dm-log-writes.c).
const (
	FlagFlush    = 1 << 0 // a FLUSH; the writes before it in the log are durable
	FlagFUA      = 1 << 1 // a write that bypassed the cache
	FlagDiscard  = 1 << 2 // a discard of the range (no data)
	FlagMark     = 1 << 3 // a mark from userspace (its label in the entry's sector)
	FlagMetadata = 1 << 4 // the write was tagged REQ_META
)

// Magic and Version are WRITE_LOG_MAGIC and WRITE_LOG_VERSION.
const (
	Magic   = 0x6a736677736872
	Version = 1
)

const (
	superLen = 28 // struct log_write_super: magic, version, nr_entries (le64), sectorsize (le32)
	entryLen = 32 // struct log_write_entry: sector, nr_sectors, flags, data_len (le64)
	// maxChunk bounds the memory one write or discard of the replay uses.
	maxChunk = 1 << 20
)

// ErrMarkNotFound is returned when the log has no mark of the label asked for.
var ErrMarkNotFound = errors.New("no such mark in the log")

// Log is an open log device: its super block and a cursor over its entries.
type Log struct {
	r io.ReaderAt
	// SectorSize is the logical block size of the logged device: the unit
	// of every entry's Sector and NrSectors and of the log's own layout.
	SectorSize int64
	// NrEntries is how many entries the kernel last recorded in the super
	// block (it rewrites it after FUA writes and marks, and on removal).
	NrEntries uint64
	next      int64  // byte offset of the next entry's header
	read      uint64 // entries returned so far
}

// Entry is one logged event (struct log_write_entry).
type Entry struct {
	Index     uint64 // 0 for the first entry
	Sector    uint64 // first sector written, in SectorSize units
	NrSectors uint64 // sectors written or discarded
	Flags     uint64
	Mark      string // the label, for FlagMark
	dataOff   int64  // byte offset of the written data in the log
}

// Open reads and checks the log's super block (log_super in
// dm-log-writes.c; fstests' log_open).
func Open(r io.ReaderAt) (*Log, error) {
	b := make([]byte, superLen)
	if _, err := r.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("log super block: %w", err)
	}
	if m := binary.LittleEndian.Uint64(b[0:]); m != Magic {
		return nil, fmt.Errorf("not a dm-log-writes log: magic %#x, want %#x", m, uint64(Magic))
	}
	if v := binary.LittleEndian.Uint64(b[8:]); v != Version {
		return nil, fmt.Errorf("dm-log-writes log version %d, only %d is known", v, Version)
	}
	ss := int64(binary.LittleEndian.Uint32(b[24:]))
	if ss < 512 || ss > 65536 || ss&(ss-1) != 0 {
		return nil, fmt.Errorf("dm-log-writes log: bad sector size %d", ss)
	}
	return &Log{r: r, SectorSize: ss, NrEntries: binary.LittleEndian.Uint64(b[16:]), next: ss}, nil
}

// Next returns the next entry, io.EOF after the last one the super block
// counts (fstests' log_replay_next_entry reads them so; log_one_block in
// dm-log-writes.c wrote it: a sector holding the header, a mark's label
// after it, then the data unless it is a discard).
func (l *Log) Next() (Entry, error) {
	if l.read >= l.NrEntries {
		return Entry{}, io.EOF
	}
	b := make([]byte, l.SectorSize)
	if _, err := l.r.ReadAt(b, l.next); err != nil {
		return Entry{}, fmt.Errorf("log entry %d at byte %d: %w", l.read, l.next, truncated(err))
	}
	e := Entry{
		Index:     l.read,
		Sector:    binary.LittleEndian.Uint64(b[0:]),
		NrSectors: binary.LittleEndian.Uint64(b[8:]),
		Flags:     binary.LittleEndian.Uint64(b[16:]),
		dataOff:   l.next + l.SectorSize,
	}
	dataLen := binary.LittleEndian.Uint64(b[24:])
	if e.Flags&FlagMark != 0 {
		if dataLen > uint64(l.SectorSize-entryLen) {
			return Entry{}, fmt.Errorf("log entry %d: mark of %d bytes does not fit its sector", e.Index, dataLen)
		}
		e.Mark = string(b[entryLen : entryLen+dataLen])
	}
	// Sizes a 64-bit byte offset holds; anything larger is a corrupt log.
	if e.NrSectors > 1<<40/uint64(l.SectorSize) || e.Sector > 1<<50/uint64(l.SectorSize) {
		return Entry{}, fmt.Errorf("log entry %d: impossible range: sector %d, %d sectors", e.Index, e.Sector, e.NrSectors)
	}
	l.next += l.SectorSize
	if e.Flags&FlagDiscard == 0 {
		l.next += int64(e.NrSectors) * l.SectorSize
	}
	l.read++
	return e, nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("the log ends early: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// Marks lists the labels of the log's marks in order, as `dmsetup message
// DEV 0 mark LABEL` inserted them (log_mark in dm-log-writes.c).
func Marks(r io.ReaderAt) ([]string, error) {
	l, err := Open(r)
	if err != nil {
		return nil, err
	}
	var marks []string
	for {
		e, err := l.Next()
		if err == io.EOF {
			return marks, nil
		}
		if err != nil {
			return marks, err
		}
		if e.Flags&FlagMark != 0 {
			marks = append(marks, e.Mark)
		}
	}
}

// Stats counts what a replay applied.
type Stats struct {
	Entries  uint64 // entries read, the end mark included
	Writes   uint64
	Discards uint64
	Flushes  uint64
	Marks    uint64
	Bytes    int64 // bytes written, discards' zeroes included
}

// Replay applies the log's entries in order to target, the device the log
// was taken of (or a copy of it as it was when logging started), up to and
// including the first mark labelled endMark, or to the end of the log when
// endMark is empty (fstests' replay-log --replay DEV --end-mark LABEL).
// Discards are written as zeroes, so the result does not depend on what the
// target's discard leaves. size is the target's size in bytes: an entry
// past it is an error. The log is checked in full before target is
// touched: a bad log or a missing mark changes nothing.
func Replay(log io.ReaderAt, target io.WriterAt, size int64, endMark string) (Stats, error) {
	n, err := replayLength(log, size, endMark)
	if err != nil {
		return Stats{}, err
	}
	l, err := Open(log)
	if err != nil {
		return Stats{}, err
	}
	var st Stats
	buf := make([]byte, maxChunk)
	zero := make([]byte, maxChunk)
	for st.Entries < n {
		e, err := l.Next()
		if err != nil {
			return st, err
		}
		st.Entries++
		switch {
		case e.Flags&FlagMark != 0:
			st.Marks++
		case e.Flags&FlagDiscard != 0:
			st.Discards++
			if err := l.apply(e, target, buf, zero, &st); err != nil {
				return st, err
			}
		case e.NrSectors > 0:
			st.Writes++
			if err := l.apply(e, target, buf, nil, &st); err != nil {
				return st, err
			}
		}
		if e.Flags&FlagFlush != 0 {
			st.Flushes++
		}
	}
	return st, nil
}

// replayLength checks every entry Replay will apply and returns how many
// there are.
func replayLength(log io.ReaderAt, size int64, endMark string) (uint64, error) {
	l, err := Open(log)
	if err != nil {
		return 0, err
	}
	for {
		e, err := l.Next()
		if err == io.EOF {
			if endMark != "" {
				return 0, fmt.Errorf("mark %q: %w", endMark, ErrMarkNotFound)
			}
			return l.read, nil
		}
		if err != nil {
			return 0, err
		}
		if e.Flags&FlagMark != 0 {
			if endMark != "" && e.Mark == endMark {
				return l.read, nil
			}
			continue
		}
		n := int64(e.NrSectors) * l.SectorSize
		if end := int64(e.Sector)*l.SectorSize + n; size > 0 && end > size {
			return 0, fmt.Errorf("log entry %d ends at byte %d, past the end of the target (%d bytes)", e.Index, end, size)
		}
		// The data's last byte is there: a truncated log fails here, not
		// half-way through the replay.
		if e.Flags&FlagDiscard == 0 && n > 0 {
			if _, err := log.ReadAt(make([]byte, 1), e.dataOff+n-1); err != nil {
				return 0, fmt.Errorf("data of log entry %d: %w", e.Index, truncated(err))
			}
		}
	}
}

// apply writes one entry's range: its data from the log, or zeroes when
// zero is set (a discard), at most len(buf) bytes at a time.
func (l *Log) apply(e Entry, target io.WriterAt, buf, zero []byte, st *Stats) error {
	off := int64(e.Sector) * l.SectorSize
	left := int64(e.NrSectors) * l.SectorSize
	src := e.dataOff
	for left > 0 {
		n := min(left, int64(len(buf)))
		var p []byte
		if zero != nil {
			p = zero[:n]
		} else {
			p = buf[:n]
			if _, err := l.r.ReadAt(p, src); err != nil {
				return fmt.Errorf("data of log entry %d: %w", e.Index, truncated(err))
			}
		}
		if _, err := target.WriteAt(p, off); err != nil {
			return fmt.Errorf("replay of log entry %d at byte %d: %w", e.Index, off, err)
		}
		off += n
		src += n
		left -= n
		st.Bytes += n
	}
	return nil
}
