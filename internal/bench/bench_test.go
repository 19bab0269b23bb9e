package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/btrfsdio/btrfsdio/raid"
)

func TestRunSmallMatrix(t *testing.T) {
	var steps []string
	res, err := Run(Config{Dir: t.TempDir(), Profile: raid.Raid1, Bytes: 8 << 20, BS: 1 << 20, Rounds: 2,
		BouncePool: 2 << 20, QD: 4, QDBytes: 8 << 20},
		func(round, rounds int, what string) { steps = append(steps, what) })
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2*7+3 {
		t.Fatalf("progress saw %d steps, want 17: %v", len(steps), steps)
	}
	if len(res.Load) != len(Modes) {
		t.Fatalf("%d QD loads, want %d", len(res.Load), len(Modes))
	}
	for _, l := range res.Load {
		if l.WriteMiBs <= 0 || l.ReadMiBs <= 0 || l.PeakRSS <= 0 || l.AllocsPerReq <= 0 {
			t.Fatalf("load %+v", l)
		}
		if pooled := l.Mode == "bounce"; pooled != (l.PoolPeak > 0) || l.PoolPeak > 2<<20 {
			t.Fatalf("load %s: pool peak %d", l.Mode, l.PoolPeak)
		}
	}
	for _, c := range append(res.Cells, res.Memcpy) {
		if len(c.MiBs) != 2 || c.Min() <= 0 || c.Median() < c.Min() || c.Max() < c.Median() {
			t.Fatalf("cell %s %s %v: %v", c.Op, c.Mode, c.DataSum, c.MiBs)
		}
		if len(c.CPU) != 2 || c.CPUMedian() < 0 {
			t.Fatalf("cell %s %s %v: CPU per MiB %v", c.Op, c.Mode, c.DataSum, c.CPU)
		}
	}
	if b := res.copyBound("read"); b <= 0 || b >= 1 {
		t.Fatalf("copy bound %v, want a ratio below 1", b)
	}
	var tab bytes.Buffer
	res.WriteTable(&tab)
	for _, want := range []string{"Read (zerocopy)", "Write (bounce (pooled))", "Read (bounce --faithful)", "Nodatasum", "Datasum", "Read (raw file)", "QD4", "peak RSS", "CPU per MiB", "memcpy 1024 KiB"} {
		if !strings.Contains(tab.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, tab.String())
		}
	}
	var js bytes.Buffer
	if err := res.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Cells) != len(res.Cells) || back.Memcpy == nil || len(back.Cells[0].CPU) != 2 {
		t.Fatalf("JSON round trip: %v", err)
	}
	var svg bytes.Buffer
	if err := res.WriteSVG(&svg); err != nil || strings.Count(svg.String(), "<rect") != 14 {
		t.Fatalf("svg: %v, %d bars", err, strings.Count(svg.String(), "<rect"))
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, c := range []Config{{BS: 1000, Bytes: 1 << 20, Rounds: 1}, {BS: 4096, Bytes: 100, Rounds: 1}, {BS: 4096, Bytes: 1 << 20},
		{BS: 4096, Bytes: 1 << 20, Rounds: 1, QD: 4, QDBytes: 1 << 20}} {
		if _, err := Run(c, nil); err == nil {
			t.Fatalf("%+v accepted", c)
		}
	}
}

func TestDiff(t *testing.T) {
	if d := diff(75, 100); d != -25 {
		t.Fatalf("diff %v", d)
	}
	// Round 2 ran on a busy machine for both: the paired diff ignores it.
	b := &Cell{MiBs: []float64{90, 45, 95}}
	z := &Cell{MiBs: []float64{100, 50, 100}}
	if d := pairedDiff(b, z); math.Abs(d+10) > 1e-9 {
		t.Fatalf("paired diff %v", d)
	}
}

func TestCopyBound(t *testing.T) {
	// Zero-copy moves a MiB in 3 ms and memcpy in 1 ms: a bounce request
	// whose copy never overlaps takes 4 ms, 0.75x.
	r := &Result{Cells: []*Cell{{Op: "read", Mode: "zerocopy", MiBs: []float64{1000.0 / 3}}}, Memcpy: &Cell{MiBs: []float64{1000}}}
	if b := r.copyBound("read"); math.Abs(b-0.75) > 1e-9 {
		t.Fatalf("copy bound %v, want 0.75", b)
	}
}
