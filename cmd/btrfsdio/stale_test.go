package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/iomap"
	"github.com/btrfsdio/btrfsdio/ublk"
)

// TestStaleDeviceShown: an image left out of a degraded add comes back
// behind the volume; check and scrub (offline) name it with its generation
// and the volume's, the next add resyncs it and list says so, reads return the last
// write and check is clean again.
func TestStaleDeviceShown(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	args := []string{"--profile", "raid1", "--size", "8M", "-f", a, "-f", b}
	writeAll := func(tgArgs []string, fill byte) {
		t.Helper()
		tg, err := buildBtrfs(t, tgArgs...)
		if err != nil {
			t.Fatal(err)
		}
		data := bytes.Repeat([]byte{fill}, 64<<10)
		buf := blk.AlignedBuffer(len(data))
		copy(buf, data)
		if _, err := tg.FS.Inode().DirectWrite(&iomap.Kiocb{Pos: 1 << 20}, iomap.NewIovIter(buf, 0)); err != nil {
			t.Fatal(err)
		}
		if err := tg.Close(); err != nil {
			t.Fatal(err)
		}
	}
	writeAll(args, 'A')
	// b is away (absent) while the volume runs degraded on a.
	if err := os.Rename(b, b+".away"); err != nil {
		t.Fatal(err)
	}
	writeAll(append([]string{"--degraded"}, args...), 'B')
	if err := os.Rename(b+".away", b); err != nil {
		t.Fatal(err)
	}

	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb}
	code := run(e, []string{"check", "-f", a, "-f", b})
	if code != exitOK || !strings.Contains(out.String(), "device "+b+" is behind the volume: generation ") ||
		!strings.Contains(out.String(), "not resynced yet") {
		t.Fatalf("check with a stale image: %d %q %q", code, out.String(), errb.String())
	}

	out.Reset()
	code = run(e, []string{"scrub", "-f", a, "-f", b})
	if code != exitOK || !strings.Contains(out.String(), "device "+b+" is behind the volume: generation ") {
		t.Fatalf("scrub with a stale image: %d %q %q", code, out.String(), errb.String())
	}

	tg, err := buildBtrfs(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	tg.FS.WaitResync() // add resyncs beside the I/O
	st := tg.FS.Stats()
	var l bytes.Buffer
	printDevice(&l, ublk.Status{}, &runInfo{Type: "btrfsdio", Stats: statusJSON(t, st)})
	if !strings.Contains(l.String(), "resync: "+b+" came back behind the volume (generation ") || !strings.Contains(l.String(), ": resynced (") ||
		st.ResyncDone != st.ResyncTotal || st.ResyncTotal == 0 {
		t.Fatalf("list after the resync: %q (%d of %d bytes)", l.String(), st.ResyncDone, st.ResyncTotal)
	}
	for range 4 { // the read policy alternates between the copies
		got := blk.AlignedBuffer(64 << 10)
		if _, err := tg.FS.Inode().DirectRead(&iomap.Kiocb{Pos: 1 << 20}, iomap.NewIovIter(got, 0)); err != nil ||
			!bytes.Equal(got, bytes.Repeat([]byte{'B'}, len(got))) {
			t.Fatalf("read after the resync: %v, %q...", err, got[:8])
		}
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run(e, []string{"check", "-f", a, "-f", b}); code != exitOK || strings.Contains(out.String(), "behind") ||
		!strings.Contains(out.String(), "no errors found") {
		t.Fatalf("check after the resync: %d %q %q", code, out.String(), errb.String())
	}
}
