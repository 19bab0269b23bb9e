package powercut

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/raid"
)

var (
	seedFlag     = flag.Uint64("powercut.seed", 1, "base seed of the power-cut scenarios (a failure prints the one to replay it)")
	scenarioFlag = flag.String("powercut.scenario", "", "run only this scenario (profile/kind/dio, as printed), e.g. raid1/cow/bounce")
)

// smallMatrix is what go test runs every time: every inode kind, both dio
// modes, one- to four-device profiles, NODATACOW mirrors (the write-intent
// bitmap's case), and one scenario of each expected failure (so a fix
// shows up as an unexpected pass here too). make powercut
// runs the whole matrix.
var smallMatrix = []Scenario{
	{raid.Single, Cow, btrfsdio.Bounce},
	{raid.Dup, CowDataSum, btrfsdio.ZeroCopy},
	{raid.Raid1, Cow, btrfsdio.ZeroCopy},
	{raid.Raid10, CowDataSum, btrfsdio.Bounce},
	{raid.Single, NoCow, btrfsdio.ZeroCopy},
	{raid.Raid1, NoCow, btrfsdio.Bounce},
	{raid.Raid5, Cow, btrfsdio.Bounce},
}

// smallConfig keeps go test -race under a minute on two cores.
func smallConfig() Config {
	return Config{Seed: *seedFlag, DevSize: 16 << 20, Requests: 24, MinCuts: 40, MaxCuts: 40}
}

func replayTest(s Scenario, seed uint64) string {
	return fmt.Sprintf("go test ./internal/powercut -run 'TestPowercut$' -powercut.seed=%d -powercut.scenario=%s", seed, s.Name())
}

// TestPowercut records a workload of writes (4 KiB..2 MiB, some FUA),
// discards and FLUSHes on each scenario, and at 40 cut points or more
// replays the devices' writes as a power cut leaves them: every image set
// mounts, check finds no damage, and every block holds its last flushed
// value or a later write's. Scenarios of ExpectedFailures must fail.
func TestPowercut(t *testing.T) {
	list := smallMatrix
	if *scenarioFlag != "" {
		s, err := ParseScenario(*scenarioFlag)
		if err != nil {
			t.Fatal(err)
		}
		list = []Scenario{s}
	}
	for _, s := range list {
		t.Run(s.Name(), func(t *testing.T) {
			t.Parallel() // each scenario has its own images
			r := Run(s, smallConfig())
			if r.Err != nil {
				t.Fatalf("%v\nreplay: %s", r.Err, replayTest(s, r.Seed))
			}
			if r.Cuts < 40 {
				t.Errorf("%d cut points, want at least 40", r.Cuts)
			}
			why := Expected(s)
			switch all := append(r.Failures, r.Inconsistent...); {
			case len(r.Failures) > 0 || len(r.Inconsistent) > 0 && why == "":
				t.Errorf("%d of %d cut points fail:\n%s\nreplay: %s", len(all), r.Cuts,
					strings.Join(all[:min(len(all), maxShown)], "\n"), replayTest(s, r.Seed))
			case len(r.Inconsistent) > 0:
				t.Logf("expected failure: %d of %d cut points leave copies that disagree (%s)", len(r.Inconsistent), r.Cuts, why)
			case why != "":
				t.Errorf("unexpected pass of %d cut points: remove the scenario from ExpectedFailures (%s)", r.Cuts, why)
			}
		})
	}
}

// TestPowercutBites proves the harness notices missing barriers: built
// with the nobarrier tag (a commit without its ordering flushes), scenarios
// that pass otherwise must fail. In a normal build it runs itself under the
// tag.
func TestPowercutBites(t *testing.T) {
	if !nobarrierBuild {
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			if goBin, err = exec.LookPath("go"); err != nil {
				t.Fatalf("no go command to build the nobarrier variant: %v", err)
			}
		}
		cmd := exec.Command(goBin, "test", "-tags", "nobarrier", "-count=1", "-run", "^TestPowercutBites$", ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the harness under -tags nobarrier: %v\n%s", err, out)
		}
		return
	}
	for _, s := range []Scenario{
		{raid.Single, CowDataSum, btrfsdio.Bounce},
		{raid.Raid1, Cow, btrfsdio.ZeroCopy},
	} {
		r := Run(s, smallConfig())
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if !r.Failed() {
			t.Errorf("%s: all %d cut points pass with the commit's barriers dropped: the harness does not bite", s.Name(), r.Cuts)
			continue
		}
		all := append(r.Failures, r.Inconsistent...)
		t.Logf("%s without barriers: %d of %d cut points fail, e.g. %s", s.Name(), len(all), r.Cuts, all[0])
	}
}

// TestPowercutBitmapBites proves the write-intent bitmap is what keeps
// NODATACOW mirrors in agreement: without it (VolumeOptions.NoBitmap) a
// cut between the copies of an in-place overwrite leaves copies that
// differ, and nothing at the mount resyncs them.
func TestPowercutBitmapBites(t *testing.T) {
	s := Scenario{raid.Raid1, NoCow, btrfsdio.Bounce}
	cfg := smallConfig()
	cfg.NoBitmap = true
	r := Run(s, cfg)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if len(r.Inconsistent) == 0 {
		t.Fatalf("%s without the bitmap: all %d cut points leave agreeing copies: the bitmap is not what keeps them", s.Name(), r.Cuts)
	}
	t.Logf("%s without the bitmap: %d of %d cut points leave copies that differ, e.g. %s", s.Name(), len(r.Inconsistent), r.Cuts, r.Inconsistent[0])
}

// testDevice is a blank image attached to nothing yet.
func testDevice(t *testing.T) *raid.Device {
	d, err := raid.OpenDevice(filepath.Join(t.TempDir(), "d.img"), raid.DeviceOptions{Create: true, Size: raid.MinDeviceSize, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func block(c byte) []byte { return bytes.Repeat([]byte{c}, blockSize) }

// readBlock reads block i of the crash image at path.
func readBlock(t *testing.T, path string, i int64) []byte {
	b := make([]byte, blockSize)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, i*blockSize); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCrashKeepsWhatAFlushCovered drives the log by hand: A is written and
// flushed, then B overwrites it and C lands elsewhere, unflushed. A cut
// after the flush keeps A whatever the policy; keeping everything gives
// the clean prefix (B, C), keeping nothing A and zeroes; a cut while the
// flush is still running may lose A; a torn block mixes 512-byte sectors.
func TestCrashKeepsWhatAFlushCovered(t *testing.T) {
	d := testDevice(t)
	lg := NewLog([]*raid.Device{d})
	lg.Begin(d, blk.OpWrite, 0, block('A'))(nil)
	flushEnd := lg.Begin(d, blk.OpFlush, 0, nil)
	inFlush := lg.Len()
	flushEnd(nil)
	lg.Begin(d, blk.OpWrite, 0, block('B'))(nil)
	lg.Begin(d, blk.OpWrite, blockSize, block('C'))(nil)
	all := lg.Len()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		cut    int
		pol    Policy
		b0, b1 []byte
	}{
		{all, Policy{Keep: 1}, block('B'), block('C')},
		{all, Policy{Keep: 0}, block('A'), block(0)},
		{inFlush, Policy{Keep: 0}, block(0), block(0)},
		{inFlush, Policy{Keep: 1}, block('A'), block(0)},
	} {
		paths, err := lg.Crash(tc.cut, tc.pol, rng, dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := readBlock(t, paths[0], 0); !bytes.Equal(got, tc.b0) {
			t.Errorf("cut %d %s: block 0 holds %q..., want %q...", tc.cut, tc.pol, got[:1], tc.b0[:1])
		}
		if got := readBlock(t, paths[0], 1); !bytes.Equal(got, tc.b1) {
			t.Errorf("cut %d %s: block 1 holds %q..., want %q...", tc.cut, tc.pol, got[:1], tc.b1[:1])
		}
	}
	torn := 0
	for range 20 {
		paths, err := lg.Crash(all, Policy{Keep: 1, Tear: 1}, rng, dir)
		if err != nil {
			t.Fatal(err)
		}
		got := readBlock(t, paths[0], 0)
		for s := 0; s < blockSize; s += tearSector {
			if c := got[s]; (c != 'A' && c != 'B') || !bytes.Equal(got[s:s+tearSector], bytes.Repeat([]byte{c}, tearSector)) {
				t.Fatalf("torn block has a sector of %q: tearing is per 512-byte sector of the old or new data", c)
			}
		}
		if bytes.Contains(got, []byte{'A'}) && bytes.Contains(got, []byte{'B'}) {
			torn++
		}
	}
	if torn == 0 {
		t.Error("20 crashes with Tear 1 never tore block 0")
	}
}

// TestModelAllows holds the model to its rule on a hand-made history: a
// block may hold its value at the last acknowledged FLUSH or FUA write, or
// any later request's issued before the cut.
func TestModelAllows(t *testing.T) {
	m := newModel(2 * blockSize)
	reqs := []request{
		{kind: reqWrite, off: 0, len: blockSize, start: 10, ack: 11},
		{kind: reqFlush, start: 12, ack: 13},
		{kind: reqWrite, off: 0, len: 2 * blockSize, start: 14, ack: 15},
		{kind: reqDiscard, off: 0, len: blockSize, start: 16, ack: 17},
		{kind: reqWriteFUA, off: blockSize, len: blockSize, start: 18, ack: 19},
	}
	for id, r := range reqs {
		m.add(id, r)
	}
	for _, tc := range []struct {
		b    uint64
		cut  int
		want []int
	}{
		{0, 11, []int{zeroVal, 0}},    // request 0 in flight: either
		{0, 13, []int{zeroVal, 0}},    // the flush not yet acknowledged
		{0, 14, []int{0}},             // the flush is acknowledged
		{0, 16, []int{0, 2}},          // then request 2 issued
		{0, 17, []int{0, 2, zeroVal}}, // and the discard
		{1, 20, []int{4}},             // the FUA write made it durable
		{1, 19, []int{zeroVal, 2, 4}}, // before its acknowledgement
		{0, 20, []int{zeroVal}},       // the FUA commits the discard before it too
	} {
		got, _ := m.allowed(tc.b, tc.cut)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("block %d at cut %d: allowed %v, want %v", tc.b, tc.cut, got, tc.want)
		}
	}
	good := content(2, 0)
	if msg := m.verify(good, 0, []int{0, 2}, blockSize); msg != "" {
		t.Errorf("request 2's block refused: %s", msg)
	}
	torn := append(content(0, 0)[:tearSector:tearSector], good[tearSector:]...)
	if msg := m.verify(torn, 0, []int{0, 2}, blockSize); msg == "" {
		t.Error("a torn block passes at 4 KiB granularity")
	}
	if msg := m.verify(torn, 0, []int{0, 2}, tearSector); msg != "" {
		t.Errorf("a torn block is refused at sector granularity: %s", msg)
	}
}

// TestPowercutJournalBites proves the RAID5/6 journal is what closes the
// write hole: recorded without it (Config.NoJournal), RAID5/6 scenarios
// that pass with it fail, at cut points whose stale parity rebuilds garbage
// once a device is lost or that check finds inconsistent.
func TestPowercutJournalBites(t *testing.T) {
	for _, s := range []Scenario{
		{raid.Raid5, Cow, btrfsdio.Bounce},
		{raid.Raid6, NoCow, btrfsdio.Bounce},
	} {
		cfg := smallConfig()
		cfg.NoJournal = true
		r := Run(s, cfg)
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if !r.Failed() {
			t.Errorf("%s: all %d cut points pass without the journal: the write hole test does not bite", s.Name(), r.Cuts)
			continue
		}
		all := append(r.Failures, r.Inconsistent...)
		t.Logf("%s without the journal: %d of %d cut points fail, e.g. %s", s.Name(), len(all), r.Cuts, all[0])
	}
}
