package raid

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

func scrubRepair(t *testing.T, v *Volume, csum CsumLookup) *ScrubReport {
	t.Helper()
	rep, err := v.ScrubRepair(0, v.Capacity(), csum)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// checkAllMirrors reads every mirror of the whole volume and compares each
// with want.
func checkAllMirrors(t *testing.T, v *Volume, want []byte) {
	t.Helper()
	for m := 1; m <= v.NumCopies(0, SectorSize); m++ {
		got, st := readAt(t, v, 0, len(want), m, nil)
		if st != blk.StsOK || !bytes.Equal(got, want) {
			t.Fatalf("mirror %d after repair: status %v, equal %v", m, st, bytes.Equal(got, want))
		}
	}
}

// copyAt is where mirror (or, on RAID5/6, the data stripe) of logical lives.
func copyAt(t *testing.T, v *Volume, logical uint64, mirror int) IOStripe {
	t.Helper()
	if v.Profile().IsRaid56() {
		mirror = 1
	}
	ioc, _, err := v.MapBlock(blk.OpRead, logical, SectorSize, mirror)
	if err != nil {
		t.Fatal(err)
	}
	return ioc.Stripes[0]
}

func whyContains(rep *ScrubReport, s string) bool {
	for _, r := range rep.Repaired {
		if strings.Contains(r.Why, s) {
			return true
		}
	}
	return false
}

// TestScrubRepairCorruptedCopy corrupts one copy of three sectors on every
// profile with redundancy; ScrubRepair with csums rewrites them from the
// copy whose csum matches (RAID5/6: rebuilds them from parity), and a
// second scrub is clean.
func TestScrubRepairCorruptedCopy(t *testing.T) {
	for _, p := range append([]Profile{Dup}, redundantProfiles...) {
		t.Run(p.String(), func(t *testing.T) {
			v, model := filledVolume(t, p, 512<<10, uint64(p)+40)
			bad := []uint64{0, v.FullStripeLen() + 3*SectorSize, v.Capacity() - SectorSize}
			for i, l := range bad {
				// Corrupt mirror 1 of one sector: the lowest mirror is bad,
				// so only the csum finds the good copy.
				s := copyAt(t, v, l, 1+i%2)
				corrupt(t, s.Dev, s.Physical, SectorSize)
			}
			rep := scrubRepair(t, v, csumsOf(model, nil))
			if len(rep.Repaired) != len(bad) || len(rep.Unrepairable) != 0 {
				t.Fatalf("repaired %+v, unrepairable %+v", rep.Repaired, rep.Unrepairable)
			}
			if !whyContains(rep, "csum mismatch") {
				t.Errorf("repairs do not say why: %+v", rep.Repaired)
			}
			if rep := scrub(t, v, 0, v.Capacity(), csumsOf(model, nil)); !rep.Clean() {
				t.Fatalf("scrub after repair: %+v", rep)
			}
			checkAllMirrors(t, v, model)
		})
	}
}

// TestScrubRepairNodatasumLowestMirror: without csums, mirrors that
// differ are made equal to the lowest mirror, and the repair says it was
// that choice, not a checksum.
func TestScrubRepairNodatasumLowestMirror(t *testing.T) {
	for _, p := range []Profile{Raid1, Raid1C3, Raid10} {
		t.Run(p.String(), func(t *testing.T) {
			v, model := filledVolume(t, p, 512<<10, uint64(p)+50)
			const l = 5 * SectorSize
			s := copyAt(t, v, l, 1)
			corrupt(t, s.Dev, s.Physical, SectorSize)
			lowest, _ := readAt(t, v, l, SectorSize, 1, nil)
			rep := scrubRepair(t, v, nil)
			if len(rep.Differences) != 1 || len(rep.Repaired) != v.NumCopies(l, SectorSize)-1 || len(rep.Unrepairable) != 0 {
				t.Fatalf("differences %+v, repaired %+v, unrepairable %+v", rep.Differences, rep.Repaired, rep.Unrepairable)
			}
			if !whyContains(rep, "no csum: kept mirror 1, the lowest") || rep.Repaired[0].From != 1 || !rep.Repaired[0].Guessed {
				t.Errorf("repair does not say the lowest mirror won: %+v", rep.Repaired)
			}
			if rep := scrub(t, v, 0, v.Capacity(), nil); !rep.Clean() {
				t.Fatalf("scrub after repair: %+v", rep)
			}
			copy(model[l:], lowest)
			checkAllMirrors(t, v, model)
		})
	}
}

// TestScrubRepairRaid56 covers the parity profiles: bad P (and Q) is
// recomputed from the data with or without csums; a bad data sector is
// rebuilt from parity when a csum (or, on RAID6, the agreement of P and Q)
// says it is the bad one; RAID5 without csums trusts the data, as the
// kernel does.
func TestScrubRepairRaid56(t *testing.T) {
	for _, p := range []Profile{Raid5, Raid6} {
		t.Run(p.String(), func(t *testing.T) {
			v, model := filledVolume(t, p, 512<<10, uint64(p)+60)
			full := v.FullStripeLen()
			ioc, _, err := v.MapBlock(blk.OpWrite, full, full, 0)
			if err != nil {
				t.Fatal(err)
			}
			nd := v.DataStripes()
			for i := nd; i < len(ioc.Stripes); i++ { // P (and Q) of a column
				corrupt(t, ioc.Stripes[i].Dev, ioc.Stripes[i].Physical+2*SectorSize, SectorSize)
			}
			rep := scrubRepair(t, v, nil)
			if len(rep.ParityMismatches) != 1 || len(rep.Repaired) != p.Parity() || len(rep.Unrepairable) != 0 ||
				rep.Repaired[0].Stripe != "P" || !whyContains(rep, "recomputed from the data") {
				t.Fatalf("bad parity: mismatches %+v repaired %+v unrepairable %+v", rep.ParityMismatches, rep.Repaired, rep.Unrepairable)
			}
			if rep := scrub(t, v, 0, v.Capacity(), nil); !rep.Clean() {
				t.Fatalf("scrub after the parity repair: %+v", rep)
			}

			// A bad data sector: found by csum, or (RAID6) by P and Q.
			csums := []CsumLookup{csumsOf(model, nil)}
			if p == Raid6 {
				csums = append(csums, nil)
			}
			for _, csum := range csums {
				s := copyAt(t, v, full+S+SectorSize, 1)
				corrupt(t, s.Dev, s.Physical, SectorSize)
				rep = scrubRepair(t, v, csum)
				if len(rep.Repaired) != 1 || len(rep.Unrepairable) != 0 || rep.Repaired[0].Logical != full+S+SectorSize ||
					!whyContains(rep, "rebuilt from parity") {
					t.Fatalf("bad data (csum %v): repaired %+v unrepairable %+v", csum != nil, rep.Repaired, rep.Unrepairable)
				}
				if rep := scrub(t, v, 0, v.Capacity(), csumsOf(model, nil)); !rep.Clean() {
					t.Fatalf("scrub after the data repair: %+v", rep)
				}
				checkAllMirrors(t, v, model)
			}
			if p == Raid5 { // no csum: the data wins, the parity is rewritten
				s := copyAt(t, v, SectorSize, 1)
				corrupt(t, s.Dev, s.Physical, SectorSize)
				rep = scrubRepair(t, v, nil)
				if len(rep.Repaired) != 1 || rep.Repaired[0].Stripe != "P" {
					t.Fatalf("raid5 without csums: repaired %+v", rep.Repaired)
				}
				if rep := scrub(t, v, 0, v.Capacity(), nil); !rep.Clean() {
					t.Fatalf("scrub after rewriting parity: %+v", rep)
				}
			}
		})
	}
}

// TestScrubRepairUnreadable: a copy whose read fails is rewritten from a
// good one. The sector is also corrupted on disk, so only a rewrite makes
// the next scrub (with the device readable again) clean.
func TestScrubRepairUnreadable(t *testing.T) {
	for _, p := range redundantProfiles {
		t.Run(p.String(), func(t *testing.T) {
			v, model := filledVolume(t, p, 512<<10, uint64(p)+70)
			const l = 7 * SectorSize
			s := copyAt(t, v, l, 2)
			corrupt(t, s.Dev, s.Physical, SectorSize)
			s.Dev.InjectFault(blk.OpRead, 1)
			rep := scrubRepair(t, v, nil)
			if len(rep.ReadErrors) != 1 || len(rep.Unrepairable) != 0 || !whyContains(rep, "unreadable") {
				t.Fatalf("read errors %+v repaired %d unrepairable %+v", rep.ReadErrors, len(rep.Repaired), rep.Unrepairable)
			}
			if rep := scrub(t, v, 0, v.Capacity(), csumsOf(model, nil)); !rep.Clean() {
				t.Fatalf("scrub after repair: %+v", rep)
			}
			checkAllMirrors(t, v, model)
		})
	}
}

// TestScrubRepairUnrepairable: both RAID1 copies fail their csum, or the
// rewrite fails; the sector is reported, not "repaired".
func TestScrubRepairUnrepairable(t *testing.T) {
	v, model := filledVolume(t, Raid1, 512<<10, 80)
	for m := 1; m <= 2; m++ {
		s := copyAt(t, v, 0, m)
		corrupt(t, s.Dev, s.Physical, SectorSize)
	}
	rep := scrubRepair(t, v, csumsOf(model, nil))
	if len(rep.Unrepairable) != 1 || len(rep.Repaired) != 0 || !strings.Contains(rep.Unrepairable[0].Why, "no copy matches its csum") {
		t.Fatalf("repaired %+v unrepairable %+v", rep.Repaired, rep.Unrepairable)
	}
	s := copyAt(t, v, S, 2)
	corrupt(t, s.Dev, s.Physical, SectorSize)
	s.Dev.InjectFault(blk.OpWrite, -1)
	rep = scrubRepair(t, v, csumsOf(model, nil))
	s.Dev.InjectFault(blk.OpWrite, 0)
	if len(rep.Unrepairable) != 2 || !strings.Contains(rep.Unrepairable[1].Why, "rewriting mirror 2") {
		t.Fatalf("failed rewrite: unrepairable %+v", rep.Unrepairable)
	}
}

// TestScrubRepairDegraded: a scrub of a volume with a missing device
// neither reports nor writes its copies; the others are repaired.
func TestScrubRepairDegraded(t *testing.T) {
	for _, p := range []Profile{Raid1C3, Raid6} {
		t.Run(p.String(), func(t *testing.T) {
			paths, model := formatModel(t, p, newRng(uint64(p)))
			v, err := openDegraded(t, paths, []int{0}, true)
			if err != nil {
				t.Fatal(err)
			}
			// A sector whose copy (RAID6: data stripe) 2 is present.
			l := uint64(3 * SectorSize)
			s := copyAt(t, v, l, 2)
			for s.Dev.Missing() {
				l += S
				s = copyAt(t, v, l, 2)
			}
			corrupt(t, s.Dev, s.Physical, SectorSize)
			rep := scrubRepair(t, v, csumsOf(model, nil))
			if len(rep.ReadErrors) != 0 || len(rep.Repaired) != 1 || len(rep.Unrepairable) != 0 {
				t.Fatalf("read errors %+v repaired %+v unrepairable %+v", rep.ReadErrors, rep.Repaired, rep.Unrepairable)
			}
			if rep := scrub(t, v, 0, v.Capacity(), csumsOf(model, nil)); !rep.Clean() {
				t.Fatalf("scrub after repair: %+v", rep)
			}
			checkModel(t, v, model, "degraded read after repair")
		})
	}
}

func newRng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 90)) }
