package powercut

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

const (
	blockSize  = 4096 // what a power cut keeps or drops as a unit
	tearSector = 512  // what a torn block is made of
)

// Policy says what a power cut keeps of the writes no flush made durable
// (CrashMonkey's choice of which unflushed bios reach the media).
type Policy struct {
	Keep float64 // probability that a 4 KiB block of such a write is kept
	Tear float64 // probability that a kept block is torn: each 512-byte sector kept or not
}

func (p Policy) String() string { return fmt.Sprintf("keep %.2f tear %.2f", p.Keep, p.Tear) }

// image is one device's content: 4 KiB blocks by index, absent ones zero.
// A block put whole points into the log's copy of the write; owned says
// which blocks are the image's own, to be written in part.
type image struct {
	blocks map[uint64][]byte
	owned  map[uint64]bool
}

func newImage() *image { return &image{blocks: map[uint64][]byte{}, owned: map[uint64]bool{}} }

// put writes data at off, or only the sectors keep selects (nil: all).
func (img *image) put(off uint64, data []byte, keep func() bool) {
	for len(data) > 0 {
		idx, at := off/blockSize, int(off%blockSize)
		n := min(len(data), blockSize-at)
		if n == blockSize && keep == nil {
			img.blocks[idx], img.owned[idx] = data[:n:n], false
			off += uint64(n)
			data = data[n:]
			continue
		}
		b := img.blocks[idx]
		if !img.owned[idx] {
			b = append(make([]byte, 0, blockSize), b...)
			b = b[:blockSize]
			img.blocks[idx], img.owned[idx] = b, true
		}
		if keep == nil {
			copy(b[at:], data[:n])
		} else {
			for s := 0; s < n; s += tearSector {
				if keep() {
					copy(b[at+s:at+min(n, s+tearSector)], data[s:min(n, s+tearSector)])
				}
			}
		}
		off += uint64(n)
		data = data[n:]
	}
}

// Crash is replay-log up to a cut with a power cut's losses: it builds the
// images the devices hold when exactly the first cut events of the log have
// happened and the power goes, and writes them as sparse files in dir (one
// per device, in NewLog's order), returning their paths. Writes that
// completed before a completed flush of their device was issued are kept;
// every other write issued before the cut is kept, dropped or torn per 4 KiB
// block as pol and rng decide, independently on every device.
func (l *Log) Crash(cut int, pol Policy, rng *rand.Rand, dir string) ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	durableBefore := make([]int, len(l.sizes)) // begin of the last completed flush
	for _, io := range l.ios {
		if io.flush && io.end >= 0 && io.end < cut && !io.err {
			durableBefore[io.dev] = max(durableBefore[io.dev], io.begin)
		}
	}
	imgs := make([]*image, len(l.sizes))
	for i := range imgs {
		imgs[i] = newImage()
	}
	tear := func() bool { return rng.IntN(2) == 0 }
	for _, io := range l.ios { // in issue order
		if io.begin >= cut {
			break
		}
		if io.flush {
			continue
		}
		if io.end >= 0 && io.end < durableBefore[io.dev] && !io.err {
			imgs[io.dev].put(io.off, io.data, nil)
			continue
		}
		for at := 0; at < len(io.data); {
			n := min(len(io.data)-at, blockSize-int((io.off+uint64(at))%blockSize))
			if rng.Float64() < pol.Keep {
				var keep func() bool
				if rng.Float64() < pol.Tear {
					keep = tear
				}
				imgs[io.dev].put(io.off+uint64(at), io.data[at:at+n], keep)
			}
			at += n
		}
	}
	var paths []string
	for i, img := range imgs {
		p := filepath.Join(dir, fmt.Sprintf("dev%d.img", i))
		if err := writeImage(p, l.sizes[i], img); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// writeImage writes img as a sparse file of size bytes, runs of adjacent
// blocks at once.
func writeImage(path string, size uint64, img *image) error {
	os.Remove(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("powercut: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		return fmt.Errorf("powercut: %w", err)
	}
	idx := make([]uint64, 0, len(img.blocks))
	for k := range img.blocks {
		idx = append(idx, k)
	}
	slices.Sort(idx)
	for len(idx) > 0 {
		n := 1 // a run of adjacent blocks, one pwritev
		for n < len(idx) && n < 1024 && idx[n] == idx[0]+uint64(n) {
			n++
		}
		iovs := make([][]byte, n)
		for i, k := range idx[:n] {
			iovs[i] = img.blocks[k]
		}
		if err := pwritev(f, iovs, int64(idx[0]*blockSize)); err != nil {
			return fmt.Errorf("powercut: writing %s: %w", path, err)
		}
		idx = idx[n:]
	}
	return f.Close()
}

// pwritev writes iovs at off, all of them.
func pwritev(f *os.File, iovs [][]byte, off int64) error {
	for len(iovs) > 0 {
		n, err := unix.Pwritev(int(f.Fd()), iovs, off)
		if err != nil {
			return err
		}
		off += int64(n)
		for n > 0 {
			if n < len(iovs[0]) {
				iovs[0] = iovs[0][n:]
				break
			}
			n -= len(iovs[0])
			iovs = iovs[1:]
		}
	}
	return nil
}
