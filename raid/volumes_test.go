package raid

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
)

type wantStripe struct {
	dev  int
	phys uint64
}

type mapCase struct {
	op       blk.Op
	logical  uint64
	length   uint64
	mirror   int
	stripes  []wantStripe
	mapLen   uint64
	maxErr   int
	mirrorIs int // expected IOContext.MirrorNum
	raidMap  []uint64
}

func rd(logical, length uint64, mirror int, mapLen uint64, dev int, phys uint64) mapCase {
	m := mirror
	if m == 0 {
		m = 1
	}
	return mapCase{op: blk.OpRead, logical: logical, length: length, mirror: mirror,
		stripes: []wantStripe{{dev, phys}}, mapLen: mapLen, mirrorIs: m}
}

func wr(logical, length, mapLen uint64, maxErr int, stripes ...wantStripe) mapCase {
	return mapCase{op: blk.OpWrite, logical: logical, length: length, stripes: stripes, mapLen: mapLen, maxErr: maxErr}
}

// Every device holds R + 8 stripes, so with n devices: SINGLE 8S, DUP 4S,
// RAID0 8nS, RAID1* 8S, RAID10 4nS, RAID5 8(n-1)S, RAID6 8(n-2)S.
func TestMapBlockTable(t *testing.T) {
	P, Q := PStripe, QStripe
	tables := map[Profile]struct {
		capacity uint64
		cases    []mapCase
	}{
		Single: {8 * S, []mapCase{
			rd(0, 8*S, 0, 8*S, 0, R),
			rd(3*S+4096, S, 1, S, 0, R+3*S+4096),
			wr(7*S, 4*S, S, 0, wantStripe{0, R + 7*S}), // clipped at the chunk end
		}},
		Dup: {4 * S, []mapCase{
			wr(S+8192, 2*S, 2*S, 0, wantStripe{0, R + S + 8192}, wantStripe{0, R + 4*S + S + 8192}),
			wr(3*S, 2*S, S, 0, wantStripe{0, R + 3*S}, wantStripe{0, R + 7*S}),
			rd(0, S, 2, S, 0, R+4*S),
			rd(2*S, S, 1, S, 0, R+2*S),
		}},
		Raid0: {32 * S, []mapCase{
			rd(0, 2*S, 1, S, 0, R),
			rd(5*S+4096, S, 0, S-4096, 1, R+S+4096),
			rd(7*S, 4096, 0, 4096, 3, R+S),
			wr(S-4096, 8192, 4096, 0, wantStripe{0, R + S - 4096}),
			wr(31*S, 4*S, S, 0, wantStripe{3, R + 7*S}),
		}},
		Raid1: {8 * S, []mapCase{
			wr(3*S, 4*S, 4*S, 1, wantStripe{0, R + 3*S}, wantStripe{1, R + 3*S}),
			rd(S, S, 2, S, 1, R+S),
			rd(S+4096, 3*S, 1, 3*S, 0, R+S+4096),
		}},
		Raid1C3: {8 * S, []mapCase{
			wr(0, S, S, 2, wantStripe{0, R}, wantStripe{1, R}, wantStripe{2, R}),
			rd(2*S, S, 3, S, 2, R+2*S),
		}},
		Raid1C4: {8 * S, []mapCase{
			wr(4096, 4096, 4096, 3, wantStripe{0, R + 4096}, wantStripe{1, R + 4096}, wantStripe{2, R + 4096}, wantStripe{3, R + 4096}),
			rd(5*S, S, 4, S, 3, R+5*S),
		}},
		Raid10: {16 * S, []mapCase{
			wr(0, 2*S, S, 1, wantStripe{0, R}, wantStripe{1, R}),
			wr(S+4096, S, S-4096, 1, wantStripe{2, R + 4096}, wantStripe{3, R + 4096}),
			rd(2*S, S, 2, S, 1, R+S),
			rd(3*S, S, 1, S, 2, R+S),
			rd(3*S+8192, 2*S, 2, S-8192, 3, R+S+8192),
		}},
		Raid5: {24 * S, []mapCase{
			rd(0, 4*S, 0, S, 0, R),
			rd(4*S+8192, S, 1, S-8192, 2, R+S+8192), // full stripe 1: data on 1,2,3, P on 0
			rd(9*S, S, 0, S, 3, R+3*S),              // full stripe 3 starts on device 3
			rd(12*S, S, 0, S, 0, R+4*S),             // full stripe 4: rotation wraps
			{op: blk.OpWrite, logical: 3*S + 4096, length: 10 * S, mapLen: 3*S - 4096, maxErr: 1,
				stripes: []wantStripe{{1, R + S}, {2, R + S}, {3, R + S}, {0, R + S}},
				raidMap: []uint64{3 * S, 4 * S, 5 * S, P}},
			{op: blk.OpRead, logical: 4*S + 8192, length: S, mirror: 2, mapLen: S - 8192, maxErr: 1, mirrorIs: 2,
				stripes: []wantStripe{{1, R + S}, {2, R + S}, {3, R + S}, {0, R + S}},
				raidMap: []uint64{3 * S, 4 * S, 5 * S, P}},
		}},
		Raid6: {16 * S, []mapCase{
			{op: blk.OpWrite, logical: 2 * S, length: 2 * S, mapLen: 2 * S, maxErr: 2,
				stripes: []wantStripe{{1, R + S}, {2, R + S}, {3, R + S}, {0, R + S}},
				raidMap: []uint64{2 * S, 3 * S, P, Q}},
			{op: blk.OpWrite, logical: 6*S + 4096, length: 8 * S, mapLen: 2*S - 4096, maxErr: 2,
				stripes: []wantStripe{{3, R + 3*S}, {0, R + 3*S}, {1, R + 3*S}, {2, R + 3*S}},
				raidMap: []uint64{6 * S, 7 * S, P, Q}},
			rd(3*S, S, 1, S, 2, R+S),
			{op: blk.OpRead, logical: 3 * S, length: S, mirror: 3, mapLen: S, maxErr: 2, mirrorIs: 3,
				stripes: []wantStripe{{1, R + S}, {2, R + S}, {3, R + S}, {0, R + S}},
				raidMap: []uint64{2 * S, 3 * S, P, Q}},
		}},
	}
	for _, p := range Profiles() {
		tab := tables[p]
		t.Run(p.String(), func(t *testing.T) {
			v := newVolume(t, p, 8*S)
			if v.Capacity() != tab.capacity {
				t.Fatalf("capacity %d, want %d", v.Capacity(), tab.capacity)
			}
			for _, c := range tab.cases {
				checkMapCase(t, v, c)
			}
		})
	}
}

func checkMapCase(t *testing.T, v *Volume, c mapCase) {
	t.Helper()
	name := fmt.Sprintf("%s %d+%d mirror %d", c.op, c.logical, c.length, c.mirror)
	ioc, mapLen, err := v.MapBlock(c.op, c.logical, c.length, c.mirror)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if mapLen != c.mapLen || ioc.MaxErrors != c.maxErr || ioc.MirrorNum != c.mirrorIs {
		t.Errorf("%s: map_length %d max_errors %d mirror %d, want %d %d %d",
			name, mapLen, ioc.MaxErrors, ioc.MirrorNum, c.mapLen, c.maxErr, c.mirrorIs)
	}
	var got []wantStripe
	for _, s := range ioc.Stripes {
		if s.Dev != v.devs[s.DevIndex] {
			t.Errorf("%s: stripe device pointer does not match index %d", name, s.DevIndex)
		}
		got = append(got, wantStripe{s.DevIndex, s.Physical})
	}
	if fmt.Sprint(got) != fmt.Sprint(c.stripes) {
		t.Errorf("%s: stripes %v, want %v", name, got, c.stripes)
	}
	if fmt.Sprint(ioc.RaidMap) != fmt.Sprint(c.raidMap) {
		t.Errorf("%s: raid_map %v, want %v", name, ioc.RaidMap, c.raidMap)
	}
}

func TestNumCopiesAndAttributes(t *testing.T) {
	want := map[Profile][4]int{ // num_copies, max_errors, copies, parity
		Single: {1, 0, 1, 0}, Dup: {2, 0, 2, 0}, Raid0: {1, 0, 1, 0}, Raid1: {2, 1, 2, 0},
		Raid1C3: {3, 2, 3, 0}, Raid1C4: {4, 3, 4, 0}, Raid10: {2, 1, 2, 0}, Raid5: {2, 1, 1, 1}, Raid6: {4, 2, 1, 2}, // RAID6: one per stripe (4 devices here)
	}
	for _, p := range Profiles() {
		v := newVolume(t, p, 8*S)
		w := want[p]
		got := [4]int{v.NumCopies(0, 4096), p.ToleratedFailures(), p.Copies(), p.Parity()}
		if got != w {
			t.Errorf("%s: num_copies/max_errors/copies/parity %v, want %v", p, got, w)
		}
		if v.NumCopies(v.Capacity(), 4096) != 1 {
			t.Errorf("%s: num_copies outside the chunk is not 1", p)
		}
		if q, err := ParseProfile(p.String()); err != nil || q != p {
			t.Errorf("ParseProfile(%q) = %v, %v", p, q, err)
		}
	}
	if _, err := ParseProfile("raid7"); err == nil {
		t.Error("ParseProfile accepted raid7")
	}
	if p, _ := ParseProfile(" RAID1C3 "); p != Raid1C3 {
		t.Error("ParseProfile is not case-insensitive")
	}
}

func TestMapBlockRejects(t *testing.T) {
	v := newVolume(t, Raid1, 8*S)
	bad := []struct {
		op      blk.Op
		logical uint64
		length  uint64
		mirror  int
	}{
		{blk.OpRead, v.Capacity(), 4096, 0},
		{blk.OpRead, 0, 0, 0},
		{blk.OpRead, 0, 4096, 3},
		{blk.OpRead, 0, 4096, -1},
		{blk.OpWrite, 0, 4096, 1},
		{blk.OpDiscard, 0, 4096, 0},
	}
	for _, c := range bad {
		if _, _, err := v.MapBlock(c.op, c.logical, c.length, c.mirror); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("MapBlock(%s, %d, %d, %d) = %v, want EINVAL", c.op, c.logical, c.length, c.mirror, err)
		}
	}
}

func TestReadPolicyRoundRobin(t *testing.T) {
	for _, p := range []Profile{Dup, Raid1, Raid1C3, Raid10} {
		v := newVolume(t, p, 8*S)
		n := v.NumCopies(0, 4096)
		for i := 0; i < 2*n; i++ {
			ioc, _, err := v.MapBlock(blk.OpRead, 0, 4096, 0)
			if err != nil {
				t.Fatal(err)
			}
			if want := i%n + 1; ioc.MirrorNum != want {
				t.Fatalf("%s: read %d went to mirror %d, want %d", p, i, ioc.MirrorNum, want)
			}
			want, _, _ := v.MapBlock(blk.OpRead, 0, 4096, ioc.MirrorNum)
			if ioc.Stripes[0] != want.Stripes[0] {
				t.Fatalf("%s: policy mirror %d maps to %+v, explicit to %+v", p, ioc.MirrorNum, ioc.Stripes[0], want.Stripes[0])
			}
		}
	}
}

func TestNewVolumeValidates(t *testing.T) {
	devs := newDevices(t, 5, R+8*S)
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	bad := []struct {
		p    Profile
		devs []*Device
	}{
		{Raid1, devs[:1]}, {Raid1, devs[:3]}, {Raid1C3, devs[:4]}, {Raid10, devs[:3]},
		{Raid6, devs[:2]}, {Dup, devs[:2]}, {Single, devs[:2]}, {Raid0, []*Device{devs[0], devs[0]}},
		{Raid0, nil}, {Profile(42), devs[:1]},
	}
	for _, c := range bad {
		if _, err := NewVolume(c.devs, c.p, VolumeOptions{Logger: testLogger()}); err == nil {
			t.Errorf("NewVolume(%s, %d devices) succeeded", c.p, len(c.devs))
		}
	}
	// Devices of different sizes: all are used as the smallest.
	small := newDevices(t, 1, R+2*S)[0]
	v, err := NewVolume([]*Device{devs[0], small}, Raid0, VolumeOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if v.Capacity() != 4*S {
		t.Errorf("raid0 over 8S and 2S devices: capacity %d, want %d", v.Capacity(), 4*S)
	}
	small.Close()
}
