package ublk

import "testing"

// TestRequestInRange: bio_check_eod in sectors, so that a start near 2^55
// (where Offset wraps to 0) or a length past the end is refused, and the
// last sectors of the device are not.
func TestRequestInRange(t *testing.T) {
	const size = 1 << 20 // 2048 sectors
	cases := []struct {
		sector  uint64
		sectors uint32
		want    bool
	}{
		{0, 8, true},
		{2040, 8, true},
		{2048, 0, true}, // a FLUSH-like empty request at the end
		{2041, 8, false},
		{2048, 1, false},
		{1<<55 - 1, 8, false}, // Offset -512; also (1<<64-1)>>9
		{1 << 55, 8, false},   // Offset 0
		{1 << 54, 8, false},   // Offset -2^63
		{^uint64(0), 8, false},
		{0, ^uint32(0), false},
	}
	for _, c := range cases {
		r := &Request{Sector: c.sector, Sectors: c.sectors}
		if got := r.InRange(size); got != c.want {
			t.Errorf("%d sectors at %d in %d bytes: %v, want %v", c.sectors, c.sector, size, got, c.want)
		}
	}
	if (&Request{Sectors: 1}).InRange(511) {
		t.Error("a sector fits a device smaller than a sector")
	}
}
