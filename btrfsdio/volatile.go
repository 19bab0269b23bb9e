package btrfsdio

import (
	"fmt"
	"hash/crc32"
	"sync"
	"sync/atomic"
	"time"

	"github.com/btrfsdio/btrfsdio/blk"
)

// The volatile write detector has no kernel counterpart. In zero-copy mode a
// direct write's bio points at the caller's pages and every copy of a
// mirrored profile is read from them at its own time (bugzilla 99171). The
// detector takes the crc32c of the source right before the bio is submitted
// and again when it completes, before the caller hears of it: a difference
// means the buffer changed while the write was in flight, so the copies may
// differ. Such bios are counted (Stats.VolatileWrites, out of
// Stats.VolatileChecked) and reported in a rate-limited warning with the file
// offset, so a user learns that the workload is unsafe for zero-copy before
// a read returns one copy or the other.
//
// It sees every change that is still there at completion; a change undone
// before the second checksum escapes it, and a change made after every copy
// was read is reported although the copies agree. Bounce mode needs no
// detector: the data is copied into private pages before submission, and
// nothing the caller does to its buffer afterwards reaches a device.
//
// Cost: two more reads of the data per write. In process memory a pass is a
// crc32c (about 95 us a MiB here, BenchmarkBioCsum); for a ublk request the
// source pages are remote and a pass is also a pread of the request on
// /dev/ublkcN, 256 KiB at a time (about 140 us a MiB). Together 15-20% of
// 1 MiB zero-copy RAID1 write throughput (BenchmarkVolatileDetector);
// Options.NoVolatileDetect (--detect-volatile=false) saves it.

// detectVolatile reports whether zero-copy writes are checked.
func (fs *FsInfo) detectVolatile() bool {
	return fs.Opts.Mode == ZeroCopy && !fs.Opts.NoVolatileDetect
}

// volatileBefore takes the checksum of a zero-copy write's source before
// it is submitted.
func (fs *FsInfo) volatileBefore(bbio *Bio, dip *DioPrivate) {
	sum, err := bioCsum(bbio.Bio, bbio.Bio.Iter)
	if err != nil {
		fs.log.Debugf("volatile write detector: offset %#x: %v", dip.FileOffset, err)
		return
	}
	dip.srcCsum, dip.srcCsummed = sum, true
}

// volatileAfter compares the source with its checksum once the write has
// completed, and reports a change.
func (fs *FsInfo) volatileAfter(bbio *Bio, dip *DioPrivate) {
	if !dip.srcCsummed {
		return
	}
	sum, err := bioCsum(bbio.Bio, bbio.Bio.Iter)
	if err != nil {
		fs.log.Debugf("volatile write detector: offset %#x: %v", dip.FileOffset, err)
		return
	}
	atomic.AddInt64(&fs.stats.VolatileChecked, 1)
	if sum == dip.srcCsum {
		return
	}
	n := atomic.AddInt64(&fs.stats.VolatileWrites, 1)
	if ok, missed := fs.volatileLimit.allow(time.Now()); ok {
		fs.warnf("direct IO buffer modified while in flight: ino 257 offset %#x len %d; "+
			"zero-copy copies may differ, use bounce mode (%d such writes so far, %d warnings suppressed)",
			dip.FileOffset, dip.Bytes, n, missed)
	}
}

// bioCsum is the crc32c of the data of bio under iter. Remote pages that
// follow one another are read together, up to csumChunk bytes a read.
func bioCsum(bio *blk.Bio, iter blk.BvecIter) (uint32, error) {
	var c csummer
	defer c.release()
	err := bio.ForEachBvec(iter, c.add)
	if err == nil {
		err = c.flush()
	}
	return c.crc, err
}

// csumChunk is the largest read of remote memory bioCsum makes.
const csumChunk = 256 << 10

var csumBuffers = sync.Pool{New: func() any { b := make([]byte, csumChunk); return &b }}

// csummer is a running crc32c over bvecs, with a pending run of remote
// bytes [off, off+n) in mem.
type csummer struct {
	crc uint32
	mem blk.RemoteMemory
	off int64
	n   int
	buf *[]byte
}

func (c *csummer) add(bv blk.BioVec) error {
	if mem := bv.Page.Bytes(); mem != nil {
		if err := c.flush(); err != nil {
			return err
		}
		c.crc = crc32.Update(c.crc, castagnoli, mem[bv.Offset:bv.Offset+bv.Len])
		return nil
	}
	rm, base := bv.Page.Remote()
	off := base + int64(bv.Offset)
	for left := int(bv.Len); left > 0; {
		if c.n == csumChunk || !blk.SameRemote(rm, c.mem) || off != c.off+int64(c.n) {
			if err := c.flush(); err != nil {
				return err
			}
			c.mem, c.off = rm, off
		}
		n := min(left, csumChunk-c.n)
		c.n += n
		off += int64(n)
		left -= n
	}
	return nil
}

// flush reads the pending run of remote bytes into the checksum.
func (c *csummer) flush() error {
	if c.n == 0 {
		return nil
	}
	if c.buf == nil {
		c.buf = csumBuffers.Get().(*[]byte)
	}
	buf := (*c.buf)[:c.n]
	c.n = 0
	if n, err := c.mem.ReadAt(buf, c.off); n != len(buf) {
		return fmt.Errorf("reading %d bytes of remote memory at %d: got %d: %w", len(buf), c.off, n, err)
	}
	c.crc = crc32.Update(c.crc, castagnoli, buf)
	return nil
}

func (c *csummer) release() {
	if c.buf != nil {
		csumBuffers.Put(c.buf)
	}
}

// ratelimit is struct ratelimit_state with ___ratelimit: at most burst
// messages per interval; the others are counted and the count handed to
// the next message allowed.
type ratelimit struct {
	mu       sync.Mutex
	interval time.Duration
	burst    int
	begin    time.Time
	printed  int
	missed   int
}

// DEFAULT_RATELIMIT_INTERVAL and DEFAULT_RATELIMIT_BURST.
const (
	defaultRatelimitInterval = 5 * time.Second
	defaultRatelimitBurst    = 10
)

// allow reports whether a message may be printed now, and how many were
// suppressed since the last one printed.
func (rs *ratelimit) allow(now time.Time) (bool, int) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.interval == 0 {
		rs.interval, rs.burst = defaultRatelimitInterval, defaultRatelimitBurst
	}
	if now.Sub(rs.begin) >= rs.interval {
		rs.begin, rs.printed = now, 0
	}
	if rs.printed >= rs.burst {
		rs.missed++
		return false, 0
	}
	rs.printed++
	missed := rs.missed
	rs.missed = 0
	return true, missed
}
