package powercut

import (
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/raid"
)

// Kind is the inode's data flags: copy-on-write with or without data
// checksums, or NODATACOW (which implies NODATASUM in btrfs, so there is no
// NOCOW datasum kind).
type Kind int

const (
	Cow Kind = iota
	CowDataSum
	NoCow
)

var kindNames = [...]string{"cow", "cow+datasum", "nocow"}

func (k Kind) String() string { return kindNames[k] }

// Kinds lists every inode kind.
func Kinds() []Kind { return []Kind{Cow, CowDataSum, NoCow} }

// Scenario is one cell of the matrix: a profile, an inode kind and a dio
// mode.
type Scenario struct {
	Profile raid.Profile
	Kind    Kind
	Mode    btrfsdio.DioMode
}

// Name is how the scenario is named in reports and in -scenario.
func (s Scenario) Name() string { return fmt.Sprintf("%s/%s/%s", s.Profile, s.Kind, s.Mode) }

// options are the filesystem options of the scenario.
func (s Scenario) options() btrfsdio.Options {
	return btrfsdio.Options{Mode: s.Mode, DataSum: s.Kind == CowDataSum, NoCow: s.Kind == NoCow}
}

// seed is the scenario's own seed derived from the run's, so that one
// scenario replays alone with the same workload and cuts.
func (s Scenario) seed(base uint64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s.Name()))
	return base ^ h.Sum64()
}

// devices is how many devices the scenario's volume has: enough that every
// profile stripes or mirrors across devices (raid5 over three, raid6 and
// raid10 over four).
func (s Scenario) devices() int {
	switch s.Profile {
	case raid.Single, raid.Dup:
		return 1
	case raid.Raid0, raid.Raid1:
		return 2
	case raid.Raid1C3, raid.Raid5:
		return 3
	}
	return 4
}

// Matrix is every scenario: the nine profiles, three inode kinds, two dio
// modes.
func Matrix() []Scenario {
	var out []Scenario
	for _, p := range raid.Profiles() {
		for _, k := range Kinds() {
			for _, m := range []btrfsdio.DioMode{btrfsdio.Bounce, btrfsdio.ZeroCopy} {
				out = append(out, Scenario{Profile: p, Kind: k, Mode: m})
			}
		}
	}
	return out
}

// ParseScenario reads a Name back.
func ParseScenario(name string) (Scenario, error) {
	for _, s := range Matrix() {
		if s.Name() == name {
			return s, nil
		}
	}
	var names []string
	for _, s := range Matrix() {
		names = append(names, s.Name())
	}
	return Scenario{}, fmt.Errorf("unknown scenario %q (want one of %s)", name, strings.Join(names, ", "))
}

// ParseScenarios picks scenarios by a comma-separated list of names, each a
// whole scenario name or a profile name for all of that profile's (no
// kernel counterpart: the harness's command line).
func ParseScenarios(list string) ([]Scenario, error) {
	var out []Scenario
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if !strings.Contains(name, "/") {
			p, err := raid.ParseProfile(name)
			if err != nil {
				return nil, err
			}
			for _, s := range Matrix() {
				if s.Profile == p {
					out = append(out, s)
				}
			}
			continue
		}
		s, err := ParseScenario(name)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}
