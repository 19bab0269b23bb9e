package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
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
	if want := 2*(1+2*2) + 2*len(Modes); len(steps) != want || steps[0] != "nodatasum: filling the images" || steps[2] != "nodatasum: read, 6 interleaved" {
		t.Fatalf("progress saw %d steps, want %d: %q", len(steps), want, steps)
	}
	if len(res.Load) != len(Modes) {
		t.Fatalf("%d QD loads, want %d", len(res.Load), len(Modes))
	}
	for _, l := range res.Load {
		if len(l.Rounds) != 2 {
			t.Fatalf("load %s: %d rounds, want 2", l.Mode, len(l.Rounds))
		}
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
	if res.Resolution != res.resolution() || res.Resolution <= 0 {
		t.Fatalf("resolution %v, recomputed %v", res.Resolution, res.resolution())
	}
	if b := res.copyBound("read"); b <= 0 || b >= 1 {
		t.Fatalf("copy bound %v, want a ratio below 1", b)
	}
	var tab bytes.Buffer
	res.WriteTable(&tab)
	for _, want := range []string{"Read (zerocopy)", "Write (bounce (pooled))", "Read (bounce --faithful)", "Nodatasum", "Datasum", "Read (raw file)", "QD4", "2 rounds in rotated order", "what this section can resolve", "peak RSS", "CPU per MiB", "memcpy 1024 KiB", "what this run can resolve"} {
		if !strings.Contains(tab.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, tab.String())
		}
	}
	var js bytes.Buffer
	if err := res.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Config     map[string]any `json:"config"`
		Cells      []*Cell        `json:"cells"`
		Memcpy     *Cell          `json:"memcpy"`
		Resolution float64        `json:"resolution_pct"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Cells) != len(res.Cells) || back.Memcpy == nil || len(back.Cells[0].CPU) != 2 || back.Resolution != res.Resolution {
		t.Fatalf("JSON round trip: %v", err)
	}
	// snake_case, the profile by name (it was "Profile": 3).
	if back.Config["profile"] != res.Config.Profile.String() || back.Config["bs"] != float64(res.Config.BS) || back.Config["Profile"] != nil {
		t.Fatalf("JSON config: %v", back.Config)
	}
	var svg bytes.Buffer
	if err := res.WriteSVG(&svg); err != nil || strings.Count(svg.String(), "<rect") != 2*2*len(Modes)+2 {
		t.Fatalf("svg: %v, %d bars", err, strings.Count(svg.String(), "<rect"))
	}
}

// TestInterleave checks that every target moves every block once per
// pass, in file order, a whole slice in a row, every target once per
// slice, in orders that change (williamsOrders), and gets its own figures.
func TestInterleave(t *testing.T) {
	type call struct {
		target int
		off    int64
	}
	var calls []call
	var targets []*target
	for k := 0; k < 3; k++ {
		targets = append(targets, &target{read: &Cell{Op: "read"}, write: &Cell{Op: "write"},
			io: func(isWrite bool, off int64) error {
				if !isWrite {
					t.Fatal("a write pass read")
				}
				calls = append(calls, call{k, off})
				return nil
			}})
	}
	const bs = 4 << 20
	perSlice := sliceBytes / bs
	// 12 slices and a half, plus a partial block that is not moved.
	total := int64(12*sliceBytes + sliceBytes/2)
	if err := interleave(Config{BS: bs, Bytes: total + 4096}, targets, true); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 3*int(total/bs) {
		t.Fatalf("%d calls, want %d", len(calls), 3*total/bs)
	}
	next := make([]int64, 3)
	for i, c := range calls {
		if c.off != next[c.target] {
			t.Fatalf("call %d: target %d at %d, want %d", i, c.target, c.off, next[c.target])
		}
		next[c.target] += bs
	}
	firsts := map[int]bool{}
	for s, i := 0, 0; i < len(calls); s++ {
		n := min(perSlice, int((total-int64(s)*sliceBytes)/bs))
		firsts[calls[i].target] = true
		seen := map[int]bool{}
		for turn := 0; turn < 3; turn++ {
			k := calls[i].target
			if seen[k] {
				t.Fatalf("slice %d: target %d ran twice", s, k)
			}
			seen[k] = true
			for j := 0; j < n; j, i = j+1, i+1 {
				if calls[i].target != k {
					t.Fatalf("slice %d: call %d went to target %d inside target %d's turn", s, i, calls[i].target, k)
				}
			}
		}
	}
	if len(firsts) < 2 {
		t.Fatalf("target %v went first in all 13 slices", firsts)
	}
	for k, tg := range targets {
		if len(tg.write.MiBs) != 1 || tg.write.MiBs[0] <= 0 || len(tg.write.CPU) != 1 || len(tg.read.MiBs) != 0 {
			t.Fatalf("target %d: write %v, read %v", k, tg.write.MiBs, tg.read.MiBs)
		}
	}
	// An error names the configuration and stops the pass.
	targets[1].io = func(bool, int64) error { return errors.New("boom") }
	targets[1].write.Mode = "bounce"
	if err := interleave(Config{BS: bs, Bytes: total}, targets, true); err == nil || !strings.Contains(err.Error(), "bounce nodatasum: write at 0: boom") {
		t.Fatalf("error %v", err)
	}
}

func TestWilliamsOrders(t *testing.T) {
	for n := 1; n <= 7; n++ {
		orders := williamsOrders(n)
		pos := map[[2]int]int{}  // (value, position) -> count
		pair := map[[2]int]int{} // (value, the value after it) -> count
		for _, o := range orders {
			if len(o) != n {
				t.Fatalf("n=%d: order %v", n, o)
			}
			seen := map[int]bool{}
			for j, v := range o {
				if v < 0 || v >= n || seen[v] {
					t.Fatalf("n=%d: %v is not a permutation", n, o)
				}
				seen[v] = true
				pos[[2]int{v, j}]++
				if j > 0 {
					pair[[2]int{o[j-1], v}]++
				}
			}
		}
		for v := 0; v < n; v++ {
			for j := 0; j < n; j++ {
				if pos[[2]int{v, j}] != len(orders)/n {
					t.Fatalf("n=%d: %d at position %d %d times in %v", n, v, j, pos[[2]int{v, j}], orders)
				}
			}
			for w := 0; w < n; w++ {
				if want := len(orders) / n; v != w && pair[[2]int{v, w}] != want {
					t.Fatalf("n=%d: %d before %d %d times, want %d: %v", n, v, w, pair[[2]int{v, w}], want, orders)
				}
			}
		}
	}
}

func TestFill(t *testing.T) {
	dir := t.TempDir()
	imgs := []image{{dir + "/a/d0.img", 3*fillChunk + 4096}, {dir + "/b/d0.img", fillChunk}, {dir + "/raw.img", 8192}}
	if err := fill(imgs); err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		b, err := os.ReadFile(img.path)
		if err != nil || int64(len(b)) != img.size || bytes.Count(b, []byte{0}) != len(b) {
			t.Fatalf("%s: %d bytes, want %d zeros (%v)", img.path, len(b), img.size, err)
		}
	}
	// An image that exists is never overwritten.
	if err := os.WriteFile(imgs[2].path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fill(imgs[2:]); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("filling over an existing file: %v", err)
	}
	if b, _ := os.ReadFile(imgs[2].path); string(b) != "data" {
		t.Fatalf("existing file became %q", b)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, c := range []Config{{BS: 1000, Bytes: 1 << 20, Rounds: 1}, {BS: 4096, Bytes: 100, Rounds: 1}, {BS: 4096, Bytes: 1 << 20},
		{BS: 4096, Bytes: 1 << 20, Rounds: 1, QD: 4, QDBytes: 1 << 20}} {
		if _, err := Run(c, nil); err == nil {
			t.Fatalf("%+v accepted", c)
		}
	}
	// Images that cannot fit, or nowhere to put them: refused up front.
	dir := t.TempDir()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Dir: dir, Profile: raid.Raid1, BS: 1 << 20, Bytes: 1 << 50, Rounds: 1}, "MiB free; the raw file and the 5 filesystems"},
		{Config{Dir: dir + "/missing", Profile: raid.Raid1, BS: 1 << 20, Bytes: 1 << 20, Rounds: 1}, "no such file"},
	} {
		if _, err := Run(c.cfg, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%+v: error %v, want %q", c.cfg, err, c.want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 0 {
		t.Fatalf("a refused run left %v (%v)", entries, err)
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
	// The resolution is the widest datasum write diff, either way.
	r := &Result{Cells: []*Cell{
		{Op: "write", Mode: "zerocopy", DataSum: true, MiBs: []float64{100}},
		{Op: "write", Mode: "bounce", DataSum: true, MiBs: []float64{103}},
		{Op: "write", Mode: "faithful", DataSum: true, MiBs: []float64{95}},
		{Op: "write", Mode: "faithful", MiBs: []float64{50}},
	}}
	if res := r.resolution(); math.Abs(res-5) > 1e-9 {
		t.Fatalf("resolution %v, want 5", res)
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

// TestRunLoads checks the QD load's rounds: every mode once a round, the
// rounds in the QD1 table's rotated orders (each mode first once in three
// rounds of three), the summaries the medians of their own rounds, and the
// resolution the paired diff of zero-copy and fallback reads.
func TestRunLoads(t *testing.T) {
	modes := []string{"zerocopy", "bounce", "fallback"}
	var calls []string
	var steps []string
	// Round r's figures: mode k writes 100*(k+1)+r and reads 1000+10*r,
	// except fallback, which reads 2% above zero-copy in round 2.
	round := 0
	run := func(cfg Config, mode string) (*Load, error) {
		if len(calls)%len(modes) == 0 {
			round++
		}
		calls = append(calls, mode)
		k := slices.Index(modes, mode)
		read := float64(1000 + 10*round)
		if mode == "fallback" && round == 2 {
			read *= 1.02
		}
		return &Load{Mode: mode, QD: cfg.QD, WriteMiBs: float64(100*(k+1) + round), ReadMiBs: read,
			PeakRSS: int64(round) << 20, PeakReset: round != 3, PoolPeak: int64(k*round) << 20}, nil
	}
	loads, err := runLoads(Config{QD: 8, Rounds: 3}, modes, func(r, n int, what string) {
		steps = append(steps, fmt.Sprintf("%d/%d %s", r, n, what))
	}, run)
	if err != nil {
		t.Fatal(err)
	}
	firsts := map[string]bool{}
	for r := 0; r < 3; r++ {
		got := calls[r*3 : r*3+3]
		firsts[got[0]] = true
		if want := williamsOrders(3)[r]; got[0] != modes[want[0]] || got[1] != modes[want[1]] || got[2] != modes[want[2]] {
			t.Fatalf("round %d ran %v, want order %v", r+1, got, want)
		}
	}
	if len(calls) != 9 || len(firsts) != 3 {
		t.Fatalf("calls %v: want 9, each mode first once", calls)
	}
	if steps[0] != "1/3 QD8 "+calls[0] || steps[8] != "3/3 QD8 "+calls[8] {
		t.Fatalf("progress %q", steps)
	}
	for k, l := range loads {
		if l.Mode != modes[k] || len(l.Rounds) != 3 {
			t.Fatalf("summary %d: %s with %d rounds", k, l.Mode, len(l.Rounds))
		}
		if want := float64(100*(k+1) + 2); l.WriteMiBs != want || l.PeakRSS != 2<<20 || l.PeakReset || l.PoolPeak != int64(3*k)<<20 {
			t.Fatalf("%s: write %v (want %v), peak RSS %d, reset %v, pool peak %d", l.Mode, l.WriteMiBs, want, l.PeakRSS, l.PeakReset, l.PoolPeak)
		}
	}
	if loads[0].ReadMiBs != 1020 || loads[2].ReadMiBs != 1030 {
		t.Fatalf("read medians %v %v, want 1020 and 1030", loads[0].ReadMiBs, loads[2].ReadMiBs)
	}
	r := &Result{Config: Config{Profile: raid.Raid1}, Load: loads}
	// Paired diffs 0, +2%, 0: the median is 0.
	if res := r.loadResolution(); res != 0 {
		t.Fatalf("load resolution %v, want 0", res)
	}
	r.Load[2].Rounds[0].ReadMiBs *= 1.05 // a second noisy round: median +2%
	if res := r.loadResolution(); math.Abs(res-2) > 1e-9 {
		t.Fatalf("load resolution %v, want 2", res)
	}
	r.LoadResolution = r.loadResolution()
	var tab bytes.Buffer
	r.writeLoad(&tab)
	for _, want := range []string{"3 rounds in rotated order", "zerocopy            102 [101 102 103]", "bounce (pooled)     202 [201 202 203] +98.0%", "what this section can resolve", "2.0% either way"} {
		if !strings.Contains(tab.String(), want) {
			t.Fatalf("QD table lacks %q:\n%s", want, tab.String())
		}
	}
	// A failing run stops the load with its error.
	if _, err := runLoads(Config{QD: 8, Rounds: 2}, modes, nil, func(Config, string) (*Load, error) { return nil, errors.New("boom") }); err == nil || err.Error() != "boom" {
		t.Fatalf("error %v", err)
	}
}
