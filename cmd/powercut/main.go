// Command powercut runs the power-loss replay harness (internal/powercut,
// after dm-log-writes, CrashMonkey and fstests' replay-log) over the whole
// matrix: nine profiles, COW, COW with data checksums and NODATACOW, bounce
// and zero-copy direct IO. It ends with one line, "powercut: N cut points,
// M scenarios, F failures", and exits 1 when F is not 0 (make powercut).
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/btrfsdio/btrfsdio/internal/powercut"
)

func main() {
	seed := flag.Uint64("seed", 1, "base seed (a failure prints the one to replay it)")
	scenario := flag.String("scenario", "", "run only these scenarios: comma-separated names (profile/kind/dio, as printed) or profiles")
	requests := flag.Int("requests", 32, "requests in each scenario's workload")
	minCuts := flag.Int("cuts", 40, "fewest cut points per scenario")
	jobs := flag.Int("j", runtime.NumCPU(), "scenarios run at once")
	noBitmap := flag.Bool("no-bitmap", false, "run without the write-intent bitmap (shows what it prevents)")
	maxCuts := flag.Int("maxcuts", 0, "sample the flush cut points of a scenario down to this many (0: every flush)")
	logBudget := flag.Uint64("log-budget", 0, "metadata log bytes between checkpoints (0: the default; 8192 puts a checkpoint every other commit)")
	noJournal := flag.Bool("nojournal", false, "write RAID5/6 volumes without their journal (shows the write hole it closes)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: powercut [-seed N] [-scenario NAMES] [-requests N] [-cuts N] [-maxcuts N] [-no-bitmap] [-nojournal] [-log-budget BYTES] [-j N]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 || *requests < 1 || *minCuts < 1 || *maxCuts < 0 {
		flag.Usage()
		os.Exit(2)
	}
	list := powercut.Matrix()
	if *scenario != "" {
		var err error
		if list, err = powercut.ParseScenarios(*scenario); err != nil {
			fmt.Fprintf(os.Stderr, "powercut: %v\n", err)
			os.Exit(2)
		}
	}
	cfg := powercut.Config{Seed: *seed, DevSize: 16 << 20, Requests: *requests, MinCuts: *minCuts, MaxCuts: *maxCuts,
		NoBitmap: *noBitmap, NoJournal: *noJournal, MetaLogBudget: *logBudget}
	sum := powercut.Report(os.Stdout, list, cfg, *jobs, func(s powercut.Scenario, seed uint64) string {
		env := "" // make powercut GOFLAGS=-tags=nobarrier: the replay needs the same build
		if g := os.Getenv("GOFLAGS"); g != "" {
			env = fmt.Sprintf("GOFLAGS=%q ", g)
		}
		opt := ""
		if *noBitmap {
			opt += " -no-bitmap"
		}
		if *noJournal {
			opt += " -nojournal"
		}
		if *logBudget != 0 {
			opt += fmt.Sprintf(" -log-budget %d", *logBudget)
		}
		return fmt.Sprintf("%sgo run ./cmd/powercut -seed %d -scenario %s -requests %d -cuts %d -maxcuts %d%s",
			env, seed, s.Name(), *requests, *minCuts, *maxCuts, opt)
	})
	fmt.Println(sum.Line())
	if sum.Failures > 0 {
		os.Exit(1)
	}
}
