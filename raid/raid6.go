package raid

import (
	"encoding/binary"
	"fmt"
)

// This file is lib/raid6 for the one implementation btrfs needs here: the
// GF(2^8) tables of mktables.c (polynomial x^8+x^4+x^3+x^2+1 = 0x11d,
// generator {02}), P/Q generation as raid6_gen_syndrome and the two
// recoveries of recov.c. Buffers are 8-byte words processed eight GF
// elements at a time, the way int.uc's "unative_t" loop does.

// gfPoly is the low byte of the RAID-6 field polynomial 0x11d.
const gfPoly = 0x1d

var (
	// gfMul is raid6_gfmul: gfMul[a][b] = a*b.
	gfMul [256][256]byte
	// gfExp is raid6_gfexp: {02}^i.
	gfExp [256]byte
	// gfInv is raid6_gfinv: the multiplicative inverse (gfInv[0] = 0).
	gfInv [256]byte
	// gfExi is raid6_gfexi: 1/({02}^i + 1), used by two-data recovery.
	gfExi [256]byte
)

func init() {
	for a := 0; a < 256; a++ {
		for b := 0; b < 256; b++ {
			gfMul[a][b] = gfMulSlow(byte(a), byte(b))
		}
	}
	v := byte(1)
	for i := 0; i < 256; i++ {
		gfExp[i] = v
		v = gfMul[v][2]
	}
	for a := 1; a < 256; a++ {
		for b := 1; b < 256; b++ {
			if gfMul[a][b] == 1 {
				gfInv[a] = byte(b)
				break
			}
		}
	}
	for i := 0; i < 256; i++ {
		gfExi[i] = gfInv[gfExp[i]^1]
	}
}

// gfMulSlow multiplies in GF(2^8) bit by bit (mktables.c's gfmul).
func gfMulSlow(a, b byte) byte {
	var v byte
	for b != 0 {
		if b&1 != 0 {
			v ^= a
		}
		hi := a & 0x80
		a <<= 1
		if hi != 0 {
			a ^= gfPoly
		}
		b >>= 1
	}
	return v
}

// mul2x8 multiplies each of the eight bytes of w by {02}: int.uc's
// SHLBYTE + MASK step.
func mul2x8(w uint64) uint64 {
	hi := w & 0x8080808080808080
	return ((w << 1) & 0xfefefefefefefefe) ^ ((hi >> 7) * gfPoly)
}

// syndrome computes P = xor of the data and Q = sum of {02}^i * data[i]
// (Horner from the highest data disk down, as raid6_gen_syndrome), treating
// the data buffers at skipA and skipB as zero (-1: none), which is what the
// recovery routines need. q may be nil (RAID5). All buffers have p's length.
func syndrome(data [][]byte, p, q []byte, skipA, skipB int) {
	n := len(p)
	top := len(data) - 1
	word := func(z, off int) uint64 {
		if z == skipA || z == skipB {
			return 0
		}
		return binary.LittleEndian.Uint64(data[z][off:])
	}
	off := 0
	for ; off+8 <= n; off += 8 {
		wp := word(top, off)
		wq := wp
		for z := top - 1; z >= 0; z-- {
			wd := word(z, off)
			wp ^= wd
			wq = mul2x8(wq) ^ wd
		}
		binary.LittleEndian.PutUint64(p[off:], wp)
		if q != nil {
			binary.LittleEndian.PutUint64(q[off:], wq)
		}
	}
	for ; off < n; off++ {
		var bp, bq byte
		for z := top; z >= 0; z-- {
			var d byte
			if z != skipA && z != skipB {
				d = data[z][off]
			}
			bp ^= d
			bq = gfMul[bq][2] ^ d
		}
		p[off] = bp
		if q != nil {
			q[off] = bq
		}
	}
}

// genSyndrome is raid6_gen_syndrome (q == nil: the RAID5 xor parity).
func genSyndrome(data [][]byte, p, q []byte) { syndrome(data, p, q, -1, -1) }

// xorInto is xor_blocks for one source: dst ^= src.
func xorInto(dst, src []byte) {
	n := min(len(dst), len(src))
	i := 0
	for ; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(dst[i:])^binary.LittleEndian.Uint64(src[i:]))
	}
	for ; i < n; i++ {
		dst[i] ^= src[i]
	}
}

// recovDataFromP rebuilds data[a] from P and the other data: the RAID5
// recovery (raid56.c does it with xor_blocks).
func recovDataFromP(data [][]byte, p []byte, a int) {
	copy(data[a], p)
	for z := range data {
		if z != a {
			xorInto(data[a], data[z])
		}
	}
}

// recov2Data is raid6_2data_recov: rebuild data[a] and data[b] (a != b)
// from P, Q and the other data.
func recov2Data(data [][]byte, p, q []byte, a, b int) {
	if a > b {
		a, b = b, a
	}
	// Syndrome of the survivors: P^dp and Q^dq are then the contributions
	// of the two missing blocks alone.
	dp, dq := data[a], data[b]
	syndrome(data, dp, dq, a, b)
	pbmul := &gfMul[gfExi[b-a]]
	qmul := &gfMul[gfInv[gfExp[a]^gfExp[b]]]
	for i := range p {
		px := p[i] ^ dp[i]
		qx := qmul[q[i]^dq[i]]
		db := pbmul[px] ^ qx
		dp[i] = db ^ px
		dq[i] = db
	}
}

// recovDataP is raid6_datap_recov: rebuild data[a] from Q and the other
// data, and regenerate P (which is also lost) into p.
func recovDataP(data [][]byte, p, q []byte, a int) {
	dq := data[a]
	syndrome(data, p, dq, a, -1)
	qmul := &gfMul[gfInv[gfExp[a]]]
	for i := range q {
		d := qmul[q[i]^dq[i]]
		dq[i] = d
		p[i] ^= d
	}
}

// recoverStripes is raid56.c's recover_vertical over a column range: bufs
// holds the data stripes then P (then Q), all of one length; those marked
// failed hold garbage. It rebuilds every failed data stripe (and P when it
// is needed as scratch), or says why it cannot.
func recoverStripes(bufs [][]byte, nparity int, failed []bool) error {
	ndata := len(bufs) - nparity
	data, p := bufs[:ndata], bufs[ndata]
	var q []byte
	if nparity == 2 {
		q = bufs[ndata+1]
	}
	var lost []int
	for i := 0; i < ndata; i++ {
		if failed[i] {
			lost = append(lost, i)
		}
	}
	pLost := failed[ndata]
	qLost := nparity < 2 || failed[ndata+1]
	switch {
	case len(lost) == 0:
		return nil
	case len(lost) == 1 && !pLost:
		recovDataFromP(data, p, lost[0])
		return nil
	case len(lost) == 1 && !qLost:
		recovDataP(data, p, q, lost[0])
		return nil
	case len(lost) == 2 && !pLost && !qLost:
		recov2Data(data, p, q, lost[0], lost[1])
		return nil
	}
	return fmt.Errorf("raid: %d data stripes lost with P lost=%v, Q lost=%v: beyond what %d parity stripes rebuild", len(lost), pLost, qLost, nparity)
}
