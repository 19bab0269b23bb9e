package ublk

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// IOStats counts what a device's queues served, per operation: requests,
// bytes, errors and a latency histogram (no kernel counterpart in
// ublk_drv; the block layer's /sys/block/ublkbN/stat counts the other
// side of the same requests). The latency is the target's time on a
// request: from the queue handing it to a worker to the worker's answer.
// Counters only grow; every field is updated with atomics by the workers
// and read by Snapshot from any goroutine.
type IOStats struct {
	ops [numStatOps]opCounters
}

// The operations IOStats counts, in the order of statOpNames.
const (
	statRead = iota
	statWrite
	statFlush
	statDiscard
	statWriteZeroes
	numStatOps
)

// statOpNames are the JSON keys of the operations (snake_case UAPI names).
var statOpNames = [numStatOps]string{"read", "write", "flush", "discard", "write_zeroes"}

func statIndex(op Op) (int, bool) {
	switch op {
	case OpRead:
		return statRead, true
	case OpWrite:
		return statWrite, true
	case OpFlush:
		return statFlush, true
	case OpDiscard:
		return statDiscard, true
	case OpWriteZeroes:
		return statWriteZeroes, true
	}
	return 0, false
}

type opCounters struct {
	ios, bytes, errors, latSumUs, latMaxUs atomic.Uint64
	lat                                    [LatencyBuckets]atomic.Uint64
}

// LatencyBuckets is the histogram's size: values below 4 µs have a
// bucket each, then every power of two is cut in four (a bucket is at
// most 25% wide), up to 2^31 µs (36 minutes); slower requests land in the
// last bucket.
const LatencyBuckets = 4 + 30*4

// latencyBucket is the bucket of a latency of us microseconds.
func latencyBucket(us uint64) int {
	if us < 4 {
		return int(us)
	}
	e := bits.Len64(us) - 1 // 2^e <= us < 2^(e+1), e >= 2
	i := 4 + (e-2)*4 + int((us>>(e-2))&3)
	return min(i, LatencyBuckets-1)
}

// LatencyBucketUpper is the largest latency, in microseconds, that bucket
// i holds (the last bucket holds everything slower too).
func LatencyBucketUpper(i int) uint64 {
	if i < 4 {
		return uint64(i)
	}
	e, sub := (i-4)/4+2, uint64((i-4)%4)
	return ((5 + sub) << (e - 2)) - 1
}

// record counts one finished request: its result res (bytes, or 0 for
// FLUSH/DISCARD/WRITE_ZEROES, or -errno) and the time the target took.
func (s *IOStats) record(req *Request, res int32, took time.Duration) {
	i, ok := statIndex(req.Op)
	if s == nil || !ok {
		return
	}
	c := &s.ops[i]
	c.ios.Add(1)
	if res < 0 {
		c.errors.Add(1)
	} else {
		c.bytes.Add(uint64(req.Bytes()))
	}
	us := uint64(max(took, 0) / time.Microsecond)
	c.latSumUs.Add(us)
	for {
		m := c.latMaxUs.Load()
		if us <= m || c.latMaxUs.CompareAndSwap(m, us) {
			break
		}
	}
	c.lat[latencyBucket(us)].Add(1)
}

// OpStats are one operation's counters at a moment.
type OpStats struct {
	IOs    uint64 `json:"ios"`
	Bytes  uint64 `json:"bytes"` // of the requests that succeeded
	Errors uint64 `json:"errors"`
	// LatencySumUs and LatencyMaxUs: the target's time on the requests,
	// in microseconds, summed and the largest.
	LatencySumUs uint64 `json:"latency_sum_us"`
	LatencyMaxUs uint64 `json:"latency_max_us"`
	// Latency is the histogram: Latency[i] requests took at most
	// LatencyBucketUpper(i) µs (and more than bucket i-1's bound).
	Latency [LatencyBuckets]uint64 `json:"-"`
}

// Percentile is the latency, in microseconds, that a fraction p (0.5,
// 0.99) of the requests did not exceed: the upper bound of the histogram
// bucket holding that request, so at most 25% above the true value, and
// never above the slowest request; 0 without requests.
func (o *OpStats) Percentile(p float64) uint64 {
	var n uint64
	for _, c := range o.Latency {
		n += c
	}
	if n == 0 {
		return 0
	}
	rank := uint64(p*float64(n) + 0.999999) // the ceil(p*n)-th request
	rank = max(min(rank, n), 1)
	var seen uint64
	for i, c := range o.Latency {
		if seen += c; seen >= rank {
			return o.clampMax(LatencyBucketUpper(i))
		}
	}
	return o.clampMax(LatencyBucketUpper(LatencyBuckets - 1))
}

// clampMax keeps a bucket's bound from exceeding the slowest request seen.
func (o *OpStats) clampMax(us uint64) uint64 {
	if o.LatencyMaxUs > 0 {
		return min(us, o.LatencyMaxUs)
	}
	return us
}

// Sub is o minus an earlier snapshot prev of the same device: the
// requests between the two (the maximum stays o's, since the start).
func (o OpStats) Sub(prev OpStats) OpStats {
	d := OpStats{IOs: o.IOs - prev.IOs, Bytes: o.Bytes - prev.Bytes, Errors: o.Errors - prev.Errors,
		LatencySumUs: o.LatencySumUs - prev.LatencySumUs, LatencyMaxUs: o.LatencyMaxUs}
	for i := range o.Latency {
		d.Latency[i] = o.Latency[i] - prev.Latency[i]
	}
	return d
}

// IOSnapshot is a device's IOStats at a moment, by operation name (read,
// write, flush, discard, write_zeroes).
type IOSnapshot map[string]OpStats

// Snapshot reads the counters (each one atomically; the set is not one
// instant, which counters that only grow do not need).
func (s *IOStats) Snapshot() IOSnapshot {
	out := make(IOSnapshot, numStatOps)
	for i := range s.ops {
		c := &s.ops[i]
		o := OpStats{IOs: c.ios.Load(), Bytes: c.bytes.Load(), Errors: c.errors.Load(),
			LatencySumUs: c.latSumUs.Load(), LatencyMaxUs: c.latMaxUs.Load()}
		for b := range c.lat {
			o.Latency[b] = c.lat[b].Load()
		}
		out[statOpNames[i]] = o
	}
	return out
}

// StatOpNames lists the operations of an IOSnapshot in UAPI order.
func StatOpNames() []string { return statOpNames[:] }

// LatencyBucketIndex is the bucket that holds a latency of us
// microseconds (the inverse of LatencyBucketUpper for its bounds).
func LatencyBucketIndex(us uint64) int { return latencyBucket(us) }
