package main

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/btrfsdio/btrfsdio/raid"
)

// craftHostileImage makes a 4 MiB single-device image whose superblocks
// (valid csums) claim a 2^63-byte metadata slot, so that 2 x 1 x slot wraps
// to 0 and the range checks used to pass, and a 64 MiB root: check and add
// sized a 64 MiB buffer from it (a 1 TiB root ran out of memory).
func craftHostileImage(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hostile.img")
	d, err := raid.OpenDevice(path, raid.DeviceOptions{Create: true, Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sb, err := raid.Format([]*raid.Device{d}, raid.Single)
	if err != nil {
		t.Fatal(err)
	}
	sb.TotalBytes, sb.MetaSlotBytes, sb.MetaCopies, sb.RootBytes = 1<<63, 1<<63, 1, 64<<20
	if err := d.WriteSuper(sb); err != nil {
		t.Fatal(err)
	}
	return path
}

// allocated runs fn and returns how many bytes it allocated.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestHostileImageRefused: check and add refuse the crafted image as a
// bad superblock, without allocating anything near what it claims.
func TestHostileImageRefused(t *testing.T) {
	path := craftHostileImage(t)
	var code int
	var stderr string
	n := allocated(func() { code, _, stderr = runCLI(t, nil, "check", "-f", path) })
	if code == exitOK || !strings.Contains(stderr, "superblock") || n > 16<<20 {
		t.Errorf("check: exit %d after allocating %d bytes: %s", code, n, stderr)
	}
	t.Logf("check: %s", stderr)
	var err error
	n = allocated(func() { _, err = buildBtrfs(t, "--profile", "single", "-f", path) })
	if err == nil || !strings.Contains(err.Error(), "superblock") || n > 16<<20 {
		t.Errorf("add: %v after allocating %d bytes", err, n)
	}
}
