package powercut

import (
	"flag"
	"testing"
	"time"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/raid"
)

var (
	seedFlag     = flag.Uint64("powercut.seed", 1, "base seed of the power-cut scenarios (replay a failure with the seed it printed)")
	scenarioFlag = flag.String("powercut.scenario", "", "run only this scenario (profile/kind/dio, as printed)")
)

func TestPowercutScratch(t *testing.T) {
	cfg := Config{Seed: *seedFlag, DevSize: 8 << 20, Requests: 24, MinCuts: 40, MaxCuts: 60}
	for _, s := range []Scenario{
		{raid.Single, Cow, btrfsdio.Bounce},
		{raid.Raid1, CowDataSum, btrfsdio.ZeroCopy},
		{raid.Raid1, NoCow, btrfsdio.Bounce},
		{raid.Raid5, Cow, btrfsdio.Bounce},
		{raid.Raid1C4, Cow, btrfsdio.Bounce},
	} {
		t0 := time.Now()
		r := Run(s, cfg)
		w, f := 0, 0
		t.Logf("%s: %d cuts, %d failures, err %v, %v", s.Name(), r.Cuts, len(r.Failures), r.Err, time.Since(t0))
		_, _ = w, f
		for i, m := range r.Failures {
			if i < 3 {
				t.Log(m)
			}
		}
	}
}
