package powercut

import (
	"fmt"
	"io"
)

// Summary is what a run of several scenarios found.
type Summary struct {
	Cuts, Scenarios int
	// Failures counts the scenarios that broke a promise without being
	// expected to, and the expected failures that passed.
	Failures int
}

// Line is the run's last line.
func (s Summary) Line() string {
	return fmt.Sprintf("powercut: %d cut points, %d scenarios, %d failures", s.Cuts, s.Scenarios, s.Failures)
}

// maxShown is how many failing cut points a report details per scenario.
const maxShown = 5

// Report runs every scenario of list with cfg and writes one line per
// scenario to w: ok, FAIL (with the failing cut points and how to replay
// them: replay names the command for a scenario and seed), XFAIL (an
// expected failure, with its reason: only the copies or parity of committed
// data disagree; any other fault of such a scenario is a FAIL) or XPASS (an
// expected failure that passed: a failure until ExpectedFailures is
// updated).
//
// Up to jobs scenarios run at once; the lines keep the order of list.
func Report(w io.Writer, list []Scenario, cfg Config, jobs int, replay func(Scenario, uint64) string) Summary {
	results := make([]chan *Result, len(list))
	sem := make(chan struct{}, max(jobs, 1))
	for i, s := range list {
		results[i] = make(chan *Result, 1)
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] <- Run(s, cfg)
		}()
	}
	var sum Summary
	for i, s := range list {
		r := <-results[i]
		sum.Scenarios++
		sum.Cuts += r.Cuts
		why := Expected(s)
		switch {
		case r.Err != nil:
			sum.Failures++
			fmt.Fprintf(w, "FAIL  %s: %v\n      replay: %s\n", s.Name(), r.Err, replay(s, cfg.Seed))
		case len(r.Failures) > 0 || len(r.Inconsistent) > 0 && why == "":
			sum.Failures++
			fmt.Fprintf(w, "FAIL  %s: %d of %d cut points fail; replay: %s\n", s.Name(),
				len(r.Failures)+len(r.Inconsistent), r.Cuts, replay(s, cfg.Seed))
			all := append(r.Failures, r.Inconsistent...)
			for i, f := range all {
				if i == maxShown {
					fmt.Fprintf(w, "      ... %d more\n", len(all)-maxShown)
					break
				}
				fmt.Fprintf(w, "      %s\n", f)
			}
		case len(r.Inconsistent) > 0:
			fmt.Fprintf(w, "XFAIL %s: %d of %d cut points leave copies that disagree (%s)\n", s.Name(), len(r.Inconsistent), r.Cuts, why)
		case why != "":
			sum.Failures++
			fmt.Fprintf(w, "XPASS %s: %d cut points, none fails, but it is listed in ExpectedFailures (%s): remove the row\n",
				s.Name(), r.Cuts, why)
		default:
			fmt.Fprintf(w, "ok    %s: %d cut points\n", s.Name(), r.Cuts)
		}
	}
	return sum
}
