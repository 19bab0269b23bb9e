package bench

import (
	"bytes"
	"strings"
	"testing"
)

// TestFlushScaleSmall runs --flush-scale on one small size: the mapping is
// one extent every 64 KiB, every FLUSH is timed, and the line has the
// issue's five fields.
func TestFlushScaleSmall(t *testing.T) {
	cfg := FlushScaleConfig{Dir: t.TempDir(), Sizes: []int64{64 << 20}, Stride: 64 << 10, Writes: 64, FlushEvery: 16}
	rows, err := FlushScale(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := rows[0]
	if r.Extents < 900 || r.Bytes <= 0 || r.P50 <= 0 || r.P99 < r.P50 || r.PeakRSS <= 0 {
		t.Fatalf("row %+v", r)
	}
	var out bytes.Buffer
	WriteFlushScale(&out, cfg, rows)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if f := strings.Fields(lines[len(lines)-1]); len(f) < 6 || f[0] != "flush-scale" || f[1] != "64M" {
		t.Fatalf("line %q", lines[len(lines)-1])
	}
}
