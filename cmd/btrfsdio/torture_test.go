package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The torture writer's verify accepts exactly what a crash may leave: the
// last flushed write of each block or a later one, and zeroes for blocks
// never written; an older write, a torn block or foreign bytes fail it.
func TestTortureVerify(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "dev.img")
	if err := os.WriteFile(dev, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state.json")
	code, out, stderr := runCLI(t, nil, "torture", "-d", dev, "--state", state, "--writes", "203", "--flush-every", "16")
	if code != exitOK || !strings.Contains(out, "203 writes this run") {
		t.Fatalf("writer: exit %d, %q %q", code, out, stderr)
	}
	if code, out, stderr = runCLI(t, nil, "torture", "-d", dev, "--state", state, "--verify"); code != exitOK {
		t.Fatalf("verify of an intact device: exit %d, %q %q", code, out, stderr)
	}
	st, err := loadTortureState(state)
	if err != nil || st.Writes != 203 || st.Flushes != 12 || len(st.Later) != 0 {
		t.Fatalf("state after verify: %+v, %v", st, err)
	}
	var blk int64 = -1
	var seq uint64
	for b, s := range st.Flushed {
		blk, seq = b, s
		break
	}
	img, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	put := func(b []byte) {
		if _, err := img.WriteAt(b, blk*tortureBS); err != nil {
			t.Fatal(err)
		}
	}
	block := make([]byte, tortureBS)
	verify := func() int {
		code, _, _ := runCLI(t, nil, "torture", "-d", dev, "--state", state, "--verify")
		return code
	}

	// An older write of the block: what a lost flush leaves.
	fillTortureBlock(block, seq-1, blk)
	put(block)
	if verify() != exitFail {
		t.Error("an older write passed verify")
	}
	// A torn block.
	fillTortureBlock(block, seq, blk)
	block[100] ^= 1
	put(block)
	if verify() != exitFail {
		t.Error("a torn block passed verify")
	}
	// Another block's write.
	fillTortureBlock(block, seq, blk+1)
	put(block)
	if verify() != exitFail {
		t.Error("a misplaced block passed verify")
	}
	// A write after the last flush: allowed, and recorded.
	st.Later[blk] = []uint64{seq + 1000}
	if err := st.save(state); err != nil {
		t.Fatal(err)
	}
	fillTortureBlock(block, seq+1000, blk)
	put(block)
	if verify() != exitOK {
		t.Error("a write after the last flush failed verify")
	}
	if st, _ = loadTortureState(state); st.Flushed[blk] != seq+1000 {
		t.Errorf("verify recorded %d for block %d, want %d", st.Flushed[blk], blk, seq+1000)
	}
}

func TestTortureBadInput(t *testing.T) {
	cases := [][]string{
		{"torture"},
		{"torture", "-d", "/dev/null"},
		{"torture", "-d", "x", "--state", "s", "--flush-every", "0"},
		{"torture", "-d", "x", "--state", "s", "extra"},
	}
	for _, c := range cases {
		if code, _, stderr := runCLI(t, nil, c...); code != exitUsage {
			t.Errorf("%q: exit %d (%s), want %d", c, code, stderr, exitUsage)
		}
	}
	code, _, stderr := runCLI(t, nil, "torture", "-d", "/nonexistent/dev", "--state", "s")
	if code != exitFail || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing device: exit %d, %q", code, stderr)
	}
}
