package powercut

import (
	"slices"

	"github.com/btrfsdio/btrfsdio/raid"
)

// ExpectedFailures is the one table of scenarios known to fail today, each
// with the reason and the issue that owns it. A scenario listed here must
// fail, and only in the way the reason says: at some cut point the copies
// or parity of committed data disagree (check's differing copies and
// parity mismatches); any other fault is a failure like in any scenario.
// When a change fixes it, the run reports an unexpected pass, which counts
// as a failure until the row is removed. Everything else must pass.
var ExpectedFailures = []struct {
	Profiles []raid.Profile
	Kinds    []Kind
	Reason   string
}{} // empty: every scenario of the matrix passes

// Expected returns why scenario s is expected to fail, or "".
func Expected(s Scenario) string {
	for _, x := range ExpectedFailures {
		if slices.Contains(x.Profiles, s.Profile) && slices.Contains(x.Kinds, s.Kind) {
			return x.Reason
		}
	}
	return ""
}
