package powercut

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// zeroVal is the value of a block never written, or discarded.
const zeroVal = -1

// model is what the workload did to every file block: the requests that
// wrote or discarded it, in order.
type model struct {
	reqs    []request
	history [][]int // per file block: request ids that changed it
	// blocks caches content: every cut compares the same values again.
	blocks map[[2]uint64][]byte
}

func newModel(size uint64) *model {
	return &model{history: make([][]int, size/blockSize), blocks: map[[2]uint64][]byte{}}
}

// add records request id.
func (m *model) add(id int, r request) {
	m.reqs = append(m.reqs, r)
	if r.kind == reqFlush {
		return
	}
	for b := r.off / blockSize; b < (r.off+r.len)/blockSize; b++ {
		m.history[b] = append(m.history[b], id)
	}
}

// value is what request id leaves in a block.
func (m *model) value(id int) int {
	if m.reqs[id].kind == reqDiscard {
		return zeroVal
	}
	return id
}

// allowed is what block b may hold after a power cut at event cut: what it
// held when the last FLUSH (or FUA write) acknowledged before the cut was,
// or what any later request issued before the cut put there. It also
// returns that FLUSH's request id (-1: none).
func (m *model) allowed(b uint64, cut int) ([]int, int) {
	last := -1
	for id, r := range m.reqs {
		if r.durable() && r.ack < cut {
			last = id
		}
	}
	vals := []int{zeroVal}
	for _, id := range m.history[b] {
		switch {
		case id <= last:
			vals = []int{m.value(id)}
		case m.reqs[id].start < cut:
			if !slices.Contains(vals, m.value(id)) {
				vals = append(vals, m.value(id))
			}
		}
	}
	return vals, last
}

// content is the bytes value v puts in file block b.
func content(v int, b uint64) []byte {
	buf := make([]byte, blockSize)
	if v != zeroVal {
		fill(buf, v, b*blockSize)
	}
	return buf
}

// zeroBlock is what a block never written or discarded holds.
var zeroBlock = make([]byte, blockSize)

// block is content(v, b), computed once per scenario.
func (m *model) block(v int, b uint64) []byte {
	if v == zeroVal {
		return zeroBlock
	}
	k := [2]uint64{uint64(v), b}
	c, ok := m.blocks[k]
	if !ok {
		c = content(v, b)
		m.blocks[k] = c
	}
	return c
}

// verify holds block b's bytes got against the allowed values, as a whole
// block or, with unit 512, sector by sector (a NODATACOW block is
// overwritten in place, so it is only as atomic as the device's sector).
// It returns "" when got is allowed, else what it holds.
func (m *model) verify(got []byte, b uint64, vals []int, unit int) string {
	for s := 0; s < blockSize; s += unit {
		u := got[s : s+unit]
		id := binary.LittleEndian.Uint64(u)
		ok := false
		for _, v := range vals {
			// The stamp says which value the unit can be; only that
			// one is compared in full.
			if (v == zeroVal && id == 0 || v != zeroVal && id == uint64(v)+1) && bytes.Equal(u, m.block(v, b)[s:s+unit]) {
				ok = true
				break
			}
		}
		if !ok {
			return describe(u, s)
		}
	}
	return ""
}

// describe says what bytes that match no allowed value hold, sector by
// sector: the request and file offset each one's stamp names, zeroes, or
// unknown data.
func describe(got []byte, at int) string {
	var parts []string
	for s := 0; s < len(got); s += tearSector {
		sec := got[s : s+tearSector]
		var what string
		id, pos := binary.LittleEndian.Uint64(sec), binary.LittleEndian.Uint64(sec[8:])
		switch {
		case bytes.Equal(sec, make([]byte, tearSector)):
			what = "zeroes"
		case id != 0 && id < 1<<31 && pos%tearSector == 0 && bytes.Equal(sec, content(int(id-1), pos/blockSize)[pos%blockSize:][:tearSector]):
			what = fmt.Sprintf("request %d's data for file offset %d", id-1, pos&^(blockSize-1))
		default:
			what = "unknown data"
		}
		if n := len(parts); n > 0 && strings.HasSuffix(parts[n-1], what) {
			continue
		}
		parts = append(parts, fmt.Sprintf("from byte %d: %s", at+s, what))
	}
	return strings.Join(parts, ", ")
}

// valNames names values for a report.
func valNames(vals []int) string {
	var s []string
	for _, v := range vals {
		if v == zeroVal {
			s = append(s, "zeroes")
		} else {
			s = append(s, fmt.Sprintf("request %d", v))
		}
	}
	return strings.Join(s, " or ")
}
