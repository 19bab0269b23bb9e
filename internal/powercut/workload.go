package powercut

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	"github.com/btrfsdio/btrfsdio/tgt/btrfs"
	"github.com/btrfsdio/btrfsdio/ublk"
)

// reqKind is a request of the workload.
type reqKind int

const (
	reqWrite reqKind = iota
	reqWriteFUA
	reqDiscard
	reqFlush
)

var reqNames = [...]string{"write", "write+FUA", "discard", "flush"}

// request is one request the workload sends the target, with where it sits
// in the log: issued at start, acknowledged at ack (event positions).
type request struct {
	kind       reqKind
	off, len   uint64
	start, ack int
}

func (r request) String() string {
	if r.kind == reqFlush {
		return reqNames[r.kind]
	}
	return fmt.Sprintf("%s [%d,+%d)", reqNames[r.kind], r.off, r.len)
}

// durable reports whether the request's acknowledgement makes everything
// acknowledged so far durable (FLUSH, or a FUA write: the target commits).
func (r request) durable() bool { return r.kind == reqFlush || r.kind == reqWriteFUA }

// genRequests draws n requests on a file of size bytes: writes of 4 KiB to
// 2 MiB (sizes spread evenly on a log scale), some with FUA, discards, and
// FLUSHes. Half of them start where an earlier one did, so that blocks are
// overwritten after a commit made them durable, not only filled.
func genRequests(rng *rand.Rand, n int, size uint64) []request {
	out := make([]request, 0, n)
	blocks := size / blockSize
	for range n {
		var r request
		switch x := rng.IntN(20); {
		case x < 12:
			r.kind = reqWrite
		case x < 14:
			r.kind = reqWriteFUA
		case x < 16:
			r.kind = reqDiscard
		default:
			r.kind = reqFlush
		}
		if r.kind != reqFlush {
			nb := uint64(1) << rng.IntN(10) // 1..512 blocks: 4 KiB..2 MiB
			nb = min(blocks, nb+rng.Uint64N(nb))
			if r.kind == reqDiscard {
				nb = min(nb, 64)
			}
			r.len = min(nb, 512) * blockSize
			r.off = rng.Uint64N(blocks-r.len/blockSize+1) * blockSize
			if len(out) > 0 && rng.IntN(2) == 0 {
				r.off = min(out[rng.IntN(len(out))].off, size-r.len)
			}
		}
		out = append(out, r)
	}
	return out
}

// fill stamps the data request id writes at file offset off: every
// 512-byte sector names the request and its file block, then carries bytes
// derived from both, so a block read back says exactly which write it
// holds, and a torn one shows.
func fill(b []byte, id int, off uint64) {
	for s := 0; s < len(b); s += tearSector {
		sec := b[s : s+tearSector]
		pos := off + uint64(s)
		binary.LittleEndian.PutUint64(sec, uint64(id)+1)
		binary.LittleEndian.PutUint64(sec[8:], pos)
		x := uint64(id)*0x9e3779b97f4a7c15 ^ pos*0xbf58476d1ce4e5b9
		for i := 16; i < len(sec); i += 8 {
			x ^= x >> 31
			x *= 0x94d049bb133111eb
			x ^= x >> 29
			binary.LittleEndian.PutUint64(sec[i:], x)
		}
	}
}

// memData is a request's pages in process memory (ublk.RequestData).
type memData struct{ b []byte }

func (m *memData) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m.b[off:]), nil }
func (m *memData) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }

// send serves request id r on the target as the ublk server would.
func send(t *btrfs.Target, id int, r request) error {
	req := &ublk.Request{Sector: r.off >> 9, Sectors: uint32(r.len >> 9)}
	switch r.kind {
	case reqWrite, reqWriteFUA:
		b := make([]byte, r.len)
		fill(b, id, r.off)
		req.Op, req.Data = ublk.OpWrite, &memData{b}
		if r.kind == reqWriteFUA {
			req.Flags = ublk.ReqFUA
		}
	case reqDiscard:
		req.Op = ublk.OpDiscard
	case reqFlush:
		req.Op = ublk.OpFlush
	}
	want := int32(r.len)
	if r.kind == reqDiscard {
		want = 0
	}
	if got := t.Handle(req); got != want {
		return fmt.Errorf("request %d (%v) returned %d, want %d", id, r, got, want)
	}
	return nil
}
