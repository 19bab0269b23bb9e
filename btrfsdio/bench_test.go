package btrfsdio

import (
	"fmt"
	"testing"
	"time"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/raid"
)

// BenchmarkDio1MiB measures 1 MiB direct reads and writes on RAID1
// nodatasum, zero-copy and bounce interleaved in the same run so both see
// the same machine, and reports MiB/s of each and their ratio.
func BenchmarkDio1MiB(b *testing.B) {
	const perRound = 32 // 1 MiB IOs per mode per iteration
	for _, write := range []bool{true, false} {
		name := "read"
		if write {
			name = "write"
		}
		b.Run(name, func(b *testing.B) {
			fss := map[DioMode]*testFS{}
			for _, m := range []DioMode{ZeroCopy, Bounce} {
				// The zero-copy baseline is the kernel before the patch: no detector.
				fss[m] = newTestFS(b, raid.Raid1, 128*mib, Options{Mode: m, NoVolatileDetect: true})
			}
			buf := blk.AlignedBuffer(mib)
			fillPattern(buf, 3)
			for _, fs := range fss {
				for i := 0; i < perRound; i++ {
					if _, err := fs.write(int64(i)*mib, buf, 0); err != nil {
						b.Fatal(err)
					}
				}
			}
			spent := map[DioMode]time.Duration{}
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				for _, m := range []DioMode{ZeroCopy, Bounce} {
					fs := fss[m]
					start := time.Now()
					for i := 0; i < perRound; i++ {
						var err error
						if write {
							_, err = fs.write(int64(i)*mib, buf, 0)
						} else {
							_, err = fs.read(int64(i)*mib, buf, 0)
						}
						if err != nil {
							b.Fatal(err)
						}
					}
					spent[m] += time.Since(start)
				}
			}
			mibs := func(m DioMode) float64 { return float64(b.N*perRound) / spent[m].Seconds() }
			b.ReportMetric(mibs(ZeroCopy), "zerocopy-MiB/s")
			b.ReportMetric(mibs(Bounce), "bounce-MiB/s")
			b.ReportMetric(mibs(Bounce)/mibs(ZeroCopy), "bounce/zerocopy")
			b.Log(fmt.Sprintf("%s: zerocopy %.0f MiB/s, bounce %.0f MiB/s, ratio %.3f",
				name, mibs(ZeroCopy), mibs(Bounce), mibs(Bounce)/mibs(ZeroCopy)))
		})
	}
}

// BenchmarkRequest is one direct IO per iteration, so -benchmem's allocs/op
// and B/op are per request; profile it with -cpuprofile/-memprofile. The
// modes are dioModes'.
func BenchmarkRequest(b *testing.B) {
	for _, size := range []int{4096, mib} {
		for _, mode := range dioModes {
			for _, sum := range []bool{false, true} {
				for _, write := range []bool{true, false} {
					op := "read"
					if write {
						op = "write"
					}
					benchRequest(b, fmt.Sprintf("%dK/%s/%s/%s", size>>10, mode.name, sumName(sum), op), mode.opts, sum, size, write)
				}
			}
		}
	}
}

func sumName(sum bool) string {
	if sum {
		return "datasum"
	}
	return "nodatasum"
}

func benchRequest(b *testing.B, name string, opts Options, sum bool, size int, write bool) {
	b.Run(name, func(b *testing.B) {
		opts.NoVolatileDetect = true
		opts.DataSum = sum
		fs := newTestFS(b, raid.Raid1, 64*mib, opts)
		buf := blk.AlignedBuffer(size)
		const span = 16 * mib
		for off := 0; off < span; off += size {
			if _, err := fs.write(int64(off), buf, 0); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(int64(size))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			pos := int64(i*size) % span
			var err error
			if write {
				_, err = fs.write(pos, buf, 0)
			} else {
				_, err = fs.read(pos, buf, 0)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
