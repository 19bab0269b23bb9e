package ublk

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Every latency lands in a bucket whose bounds hold it, at most 25% wide.
func TestLatencyBuckets(t *testing.T) {
	prev := -1
	for _, us := range []uint64{0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 100, 1000, 12345, 1 << 20, 1<<31 - 1} {
		i := latencyBucket(us)
		if i < prev || us > LatencyBucketUpper(i) || (i > 0 && us <= LatencyBucketUpper(i-1)) {
			t.Errorf("%d µs in bucket %d (%d..%d]", us, i, LatencyBucketUpper(max(i-1, 0)), LatencyBucketUpper(i))
		}
		if lo := LatencyBucketUpper(max(i-1, 0)) + 1; us >= 4 && float64(LatencyBucketUpper(i)-lo+1) > 0.25*float64(lo)+1 {
			t.Errorf("bucket %d of %d µs is %d..%d: wider than 25%%", i, us, lo, LatencyBucketUpper(i))
		}
		prev = i
	}
	if i := latencyBucket(1 << 40); i != LatencyBuckets-1 {
		t.Errorf("2^40 µs in bucket %d, want the last", i)
	}
}

// The queues count requests, bytes and errors per operation, and the
// percentiles come from the latencies recorded.
func TestQueueCountsIO(t *testing.T) {
	fq := startFakeQueue(t, 2, 8192, funcTarget(func(r *Request) int32 {
		if r.Sector == 99 {
			return -int32(unix.EIO)
		}
		return int32(r.Bytes())
	}))
	var st IOStats
	fq.q.stats = &st
	for _, d := range []IODesc{rw(OpWrite, 0, 8, 0), rw(OpWrite, 8, 16, 0), rw(OpRead, 0, 8, 0), rw(OpFlush, 0, 0, 0), rw(OpRead, 99, 8, 0)} {
		fq.k.request(1, d)
		fq.k.nextCommit(t)
	}
	fq.stop(t, nil)
	snap := st.Snapshot()
	w, r, f := snap["write"], snap["read"], snap["flush"]
	if w.IOs != 2 || w.Bytes != 24*512 || w.Errors != 0 {
		t.Errorf("write: %+v", w)
	}
	if r.IOs != 2 || r.Bytes != 4096 || r.Errors != 1 {
		t.Errorf("read: %+v (the failed read counts as an error, not bytes)", r)
	}
	if f.IOs != 1 || snap["discard"].IOs != 0 || len(snap) != 5 {
		t.Errorf("flush %+v, snapshot %v", f, snap)
	}
	var n uint64
	for _, c := range w.Latency {
		n += c
	}
	if n != 2 || w.Percentile(0.5) > w.LatencyMaxUs+w.LatencyMaxUs/4+1 {
		t.Errorf("write latency: %d in the histogram, p50 %d µs, max %d µs", n, w.Percentile(0.5), w.LatencyMaxUs)
	}
}

func TestPercentileAndSub(t *testing.T) {
	var st IOStats
	req := &Request{Op: OpRead, Sectors: 8}
	for i := 0; i < 98; i++ {
		st.record(req, 4096, 10*time.Microsecond)
	}
	st.record(req, 4096, 5*time.Millisecond)
	st.record(req, 4096, 80*time.Millisecond)
	first := st.Snapshot()["read"]
	if p := first.Percentile(0.5); p < 10 || p > 12 {
		t.Errorf("p50 %d µs, want 10..12", p)
	}
	if p := first.Percentile(0.99); p < 5000 || p > 6250 {
		t.Errorf("p99 %d µs, want 5000..6250", p)
	}
	if p := first.Percentile(1); p != 80000 || first.LatencyMaxUs != 80000 {
		t.Errorf("p100 %d µs, max %d", p, first.LatencyMaxUs)
	}
	st.record(req, 4096, time.Second)
	d := st.Snapshot()["read"].Sub(first)
	if d.IOs != 1 || d.Bytes != 4096 || d.Percentile(0.5) < 1000000 {
		t.Errorf("delta %+v p50 %d", d, d.Percentile(0.5))
	}
	var empty OpStats
	if empty.Percentile(0.99) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}
