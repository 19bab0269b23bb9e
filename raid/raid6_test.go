package raid

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// The reference below is the textbook definition, byte by byte, with no
// tables: P = xor of D_i, Q = sum of g^i * D_i over GF(2^8)/0x11d, g = 2.

func refMul(a, b byte) byte {
	var r uint16
	x := uint16(a)
	for i := 0; i < 8; i++ {
		if b&(1<<i) != 0 {
			r ^= x << i
		}
	}
	for bit := 15; bit >= 8; bit-- { // reduce modulo x^8+x^4+x^3+x^2+1
		if r&(1<<bit) != 0 {
			r ^= 0x11d << (bit - 8)
		}
	}
	return byte(r)
}

func refPow2(i int) byte {
	v := byte(1)
	for ; i > 0; i-- {
		v = refMul(v, 2)
	}
	return v
}

func refInv(a byte) byte {
	for b := 1; b < 256; b++ {
		if refMul(a, byte(b)) == 1 {
			return byte(b)
		}
	}
	return 0
}

func refSyndrome(data [][]byte) (p, q []byte) {
	n := len(data[0])
	p, q = make([]byte, n), make([]byte, n)
	for z, d := range data {
		g := refPow2(z)
		for i := 0; i < n; i++ {
			p[i] ^= d[i]
			q[i] ^= refMul(g, d[i])
		}
	}
	return p, q
}

// refRecover2 solves Da + Db = Px, g^a Da + g^b Db = Qx per byte.
func refRecover2(data [][]byte, p, q []byte, a, b int) (da, db []byte) {
	n := len(p)
	da, db = make([]byte, n), make([]byte, n)
	ga, gb := refPow2(a), refPow2(b)
	inv := refInv(ga ^ gb)
	for i := 0; i < n; i++ {
		px, qx := p[i], q[i]
		for z, d := range data {
			if z != a && z != b {
				px ^= d[i]
				qx ^= refMul(refPow2(z), d[i])
			}
		}
		db[i] = refMul(inv, qx^refMul(ga, px))
		da[i] = px ^ db[i]
	}
	return da, db
}

func randData(rng *rand.Rand, ndata, n int) [][]byte {
	data := make([][]byte, ndata)
	for i := range data {
		data[i] = make([]byte, n)
		for k := range data[i] {
			data[i][k] = byte(rng.Uint32())
		}
	}
	return data
}

func cloneData(data [][]byte) [][]byte {
	out := make([][]byte, len(data))
	for i := range data {
		out[i] = append([]byte(nil), data[i]...)
	}
	return out
}

func TestGFTables(t *testing.T) {
	seen := map[byte]bool{}
	for i := 0; i < 255; i++ {
		if gfExp[i] != refPow2(i) {
			t.Fatalf("gfexp[%d] = %#x, want %#x", i, gfExp[i], refPow2(i))
		}
		seen[gfExp[i]] = true
	}
	if len(seen) != 255 {
		t.Fatalf("{02} generates %d elements, want 255", len(seen))
	}
	for a := 0; a < 256; a++ {
		for b := 0; b < 256; b++ {
			if gfMul[a][b] != refMul(byte(a), byte(b)) {
				t.Fatalf("gfmul[%d][%d] wrong", a, b)
			}
		}
		if a > 0 && refMul(byte(a), gfInv[a]) != 1 {
			t.Fatalf("gfinv[%d] wrong", a)
		}
	}
	// Linux's raid6 tables start 1, 2, 4, ..., 0x80, 0x1d.
	if gfExp[8] != 0x1d || gfExp[255] != 1 {
		t.Fatalf("gfexp[8] = %#x, gfexp[255] = %#x", gfExp[8], gfExp[255])
	}
}

func TestSyndromeMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for ndata := 1; ndata <= 8; ndata++ {
		for _, n := range []int{8, 4096, 4099} { // 4099: the byte tail
			data := randData(rng, ndata, n)
			p, q := make([]byte, n), make([]byte, n)
			genSyndrome(data, p, q)
			rp, rq := refSyndrome(data)
			if !bytes.Equal(p, rp) || !bytes.Equal(q, rq) {
				t.Fatalf("ndata %d len %d: P/Q differ from the reference", ndata, n)
			}
		}
	}
}

func TestRaid6RecoveryEveryPair(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 1024 + 5
	for ndata := 2; ndata <= 7; ndata++ {
		data := randData(rng, ndata, n)
		p, q := refSyndrome(data)
		for a := 0; a < ndata; a++ {
			for b := a + 1; b < ndata; b++ {
				ra, rb := refRecover2(data, p, q, a, b)
				if !bytes.Equal(ra, data[a]) || !bytes.Equal(rb, data[b]) {
					t.Fatalf("the reference itself fails for %d,%d", a, b)
				}
				work := cloneData(data)
				for _, z := range []int{a, b} {
					for i := range work[z] {
						work[z][i] = 0xa5
					}
				}
				recov2Data(work, p, q, b, a) // order must not matter
				if !bytes.Equal(work[a], data[a]) || !bytes.Equal(work[b], data[b]) {
					t.Fatalf("ndata %d: two-data recovery of %d,%d wrong", ndata, a, b)
				}
			}
		}
	}
}

func TestRaid6RecoveryDataAndP(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 4096
	for ndata := 1; ndata <= 6; ndata++ {
		data := randData(rng, ndata, n)
		p, q := refSyndrome(data)
		for a := 0; a < ndata; a++ {
			work := cloneData(data)
			lostP := make([]byte, n)
			for i := range work[a] {
				work[a][i], lostP[i] = 0x5a, 0x33
			}
			recovDataP(work, lostP, q, a)
			if !bytes.Equal(work[a], data[a]) || !bytes.Equal(lostP, p) {
				t.Fatalf("ndata %d: data+P recovery of %d wrong", ndata, a)
			}
		}
	}
}

func TestRecoverStripesCases(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const n = 512
	for _, nparity := range []int{1, 2} {
		ndata := 4
		data := randData(rng, ndata, n)
		p, q := refSyndrome(data)
		full := append(cloneData(data), p)
		if nparity == 2 {
			full = append(full, q)
		}
		nstripes := len(full)
		// Every set of up to nparity lost stripes is rebuilt; one more is refused.
		for mask := 1; mask < 1<<nstripes; mask++ {
			failed := make([]bool, nstripes)
			lost := 0
			for i := range failed {
				if mask&(1<<i) != 0 {
					failed[i] = true
					lost++
				}
			}
			work := cloneData(full)
			for i := range work {
				if failed[i] {
					for k := range work[i] {
						work[i][k] = byte(k)
					}
				}
			}
			err := recoverStripes(work, nparity, failed)
			if lost > nparity {
				if err == nil {
					t.Fatalf("nparity %d: %d lost stripes %b rebuilt", nparity, lost, mask)
				}
				continue
			}
			if err != nil {
				t.Fatalf("nparity %d: lost %b: %v", nparity, mask, err)
			}
			for i := 0; i < ndata; i++ {
				if !bytes.Equal(work[i], data[i]) {
					t.Fatalf("nparity %d: lost %b: data %d wrong", nparity, mask, i)
				}
			}
		}
	}
}

func BenchmarkGenSyndrome(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	data := randData(rng, 4, StripeLen)
	p, q := make([]byte, StripeLen), make([]byte, StripeLen)
	b.SetBytes(4 * StripeLen)
	for b.Loop() {
		genSyndrome(data, p, q)
	}
}
