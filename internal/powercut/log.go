// Package powercut is a power-loss replay harness in the style of
// dm-log-writes, CrashMonkey and fstests' replay-log (generic/482): it
// records every write and flush that reaches the devices of a volume while
// a workload runs on the btrfsdio target (Log, a raid.Recorder), and for
// each cut point builds the device images a power cut would leave (Crash),
// mounts them, and holds every block of the device against a model of
// what block-device semantics promise (Run).
//
// What a power cut may keep, per device: a write that completed before the
// device's last completed flush was issued is on the media; any other write
// that reached the device (completed or still in flight) may be there or
// not, independently per 4 KiB block, with no order kept across devices or
// within one, and a 4 KiB block may be torn at 512-byte granularity.
//
// What the mounted images must show, per 4 KiB block of the device: the
// value it had when the last FLUSH (or FUA write, which commits) acknowledged
// before the cut was issued, or the value of any later request issued
// before the cut; a NODATACOW block, overwritten in place, may mix those
// per 512-byte sector (it is as atomic as the device under it, no more).
// The volume must mount, and check must find no damage.
//
// A seed fixes the workload, the cut points and every random choice of the
// images; the order of the device operations of one request (the copies and
// stripes go out on goroutines) may differ from run to run, so a replay
// reproduces the scenario and the kind of cut, not always the very bytes.
package powercut

import (
	"sync"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/raid"
)

// eventKind says what one entry of the log records.
type eventKind uint8

const (
	evBegin eventKind = iota // a device write or flush is issued
	evEnd                    // it completed (with its result)
	evMark                   // a workload mark (request issued or acknowledged)
)

// event is one entry of the log, in the order things happened.
type event struct {
	kind eventKind
	io   int // index into Log.ios (evBegin, evEnd)
	mark int // workload mark id (evMark)
}

// devIO is one device write or flush as the log saw it.
type devIO struct {
	dev   int
	flush bool
	off   uint64
	data  []byte // a write's bytes, copied at issue
	begin int    // event index of its evBegin
	end   int    // event index of its evEnd; -1 while in flight
	err   bool   // it completed with an error
}

// Log is dm-log-writes' log, kept in memory: every device write (with a
// copy of its data) and flush of the volume's devices, with the order in
// which they were issued and completed, interleaved with the workload's
// marks. It implements raid.Recorder.
type Log struct {
	mu     sync.Mutex
	devs   map[*raid.Device]int
	sizes  []uint64
	events []event
	ios    []devIO
}

// Log records the writes under every device of a volume.
var _ raid.Recorder = (*Log)(nil)

// NewLog is a log for devs, which it attaches itself to (Device.SetRecorder):
// device i of the crash images is devs[i]. Attach it before the devices are
// formatted, so the log holds every byte the images ever got.
func NewLog(devs []*raid.Device) *Log {
	l := &Log{devs: map[*raid.Device]int{}}
	for i, d := range devs {
		l.devs[d] = i
		l.sizes = append(l.sizes, d.Size())
		d.SetRecorder(l)
	}
	return l
}

// Begin is the recorder hook (raid.Recorder): log the operation as issued,
// and return what logs its completion.
func (l *Log) Begin(d *raid.Device, op blk.Op, off uint64, data []byte) func(error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	io := devIO{dev: l.devs[d], flush: op == blk.OpFlush, off: off, begin: len(l.events), end: -1}
	if !io.flush {
		io.data = append([]byte(nil), data...)
	}
	id := len(l.ios)
	l.ios = append(l.ios, io)
	l.events = append(l.events, event{kind: evBegin, io: id})
	return func(err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.ios[id].end = len(l.events)
		l.ios[id].err = err != nil
		l.events = append(l.events, event{kind: evEnd, io: id})
	}
}

// Mark logs a workload mark (dm-log-writes' mark, fstests' --mark) and
// returns its position: the number of events before it.
func (l *Log) Mark(id int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, event{kind: evMark, mark: id})
	return len(l.events) - 1
}

// Len is the number of events logged.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events)
}

// Stats counts the device writes and flushes logged.
func (l *Log) Stats() (writes, flushes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, io := range l.ios {
		if io.flush {
			flushes++
		} else {
			writes++
		}
	}
	return writes, flushes
}
