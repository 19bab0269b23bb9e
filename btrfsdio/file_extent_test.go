package btrfsdio

import (
	"math/rand"
	"testing"
)

// TestFileExtentTreeAgainstModel replaces random ranges and checks every
// sector's mapping, and that exactly the overwritten disk bytes are freed.
func TestFileExtentTreeAgainstModel(t *testing.T) {
	const sectors = 256
	var tree fileExtentTree
	model := make([]uint64, sectors) // disk address per sector, holeAddr for a hole
	for i := range model {
		model[i] = holeAddr
	}
	rng := rand.New(rand.NewSource(1))
	next := uint64(1 << 30)
	for i := 0; i < 2000; i++ {
		s := rng.Intn(sectors)
		n := 1 + rng.Intn(min(32, sectors-s))
		disk := next
		if rng.Intn(5) == 0 {
			disk = holeAddr
		} else {
			next += uint64(n) * SectorSize
		}
		var wantFreed uint64
		for k := s; k < s+n; k++ {
			if model[k] != holeAddr {
				wantFreed += SectorSize
			}
			if disk == holeAddr {
				model[k] = holeAddr
			} else {
				model[k] = disk + uint64(k-s)*SectorSize
			}
		}
		var freed uint64
		for _, f := range tree.replace(uint64(s)*SectorSize, uint64(n)*SectorSize, disk) {
			freed += f.len
		}
		if freed != wantFreed {
			t.Fatalf("step %d: freed %d, want %d", i, freed, wantFreed)
		}
	}
	for k := 0; k < sectors; k++ {
		fe, hole := tree.lookup(uint64(k)*SectorSize, SectorSize)
		got := holeAddr
		if !hole {
			got = fe.diskBytenr + (uint64(k)*SectorSize - fe.start)
		}
		if got != model[k] {
			t.Fatalf("sector %d maps to %d, want %d", k, got, model[k])
		}
	}
	ext := tree.snapshot()
	for i := 1; i < len(ext); i++ {
		if ext[i-1].start+ext[i-1].len > ext[i].start {
			t.Fatalf("extents overlap or are unsorted at %d", i)
		}
	}
}
