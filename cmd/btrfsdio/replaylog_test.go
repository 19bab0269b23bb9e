package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btrfsdio/btrfsdio/internal/logwrites"
)

// writeLog writes a dm-log-writes log of 512-byte sectors: a write of 'a'
// at sector 0, mark "one", a write of 'b' at sector 1, mark "two".
func writeLog(t *testing.T) string {
	t.Helper()
	const ss = 512
	log := make([]byte, ss)
	binary.LittleEndian.PutUint64(log[0:], logwrites.Magic)
	binary.LittleEndian.PutUint64(log[8:], logwrites.Version)
	binary.LittleEndian.PutUint64(log[16:], 4)
	binary.LittleEndian.PutUint32(log[24:], ss)
	add := func(sector, nr, flags uint64, mark string, data []byte) {
		h := make([]byte, ss)
		binary.LittleEndian.PutUint64(h[0:], sector)
		binary.LittleEndian.PutUint64(h[8:], nr)
		binary.LittleEndian.PutUint64(h[16:], flags)
		binary.LittleEndian.PutUint64(h[24:], uint64(len(mark)))
		copy(h[32:], mark)
		log = append(append(log, h...), data...)
	}
	add(0, 1, 0, "", bytes.Repeat([]byte{'a'}, ss))
	add(0, 0, logwrites.FlagMark, "one", nil)
	add(1, 1, 0, "", bytes.Repeat([]byte{'b'}, ss))
	add(0, 0, logwrites.FlagMark, "two", nil)
	p := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(p, log, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReplayLogCLI(t *testing.T) {
	log := writeLog(t)
	code, out, stderr := runCLI(t, nil, "replay-log", "--log", log, "--list")
	if code != exitOK || out != "one\ntwo\n" {
		t.Fatalf("--list: exit %d, %q %q", code, out, stderr)
	}
	dev := backingFile(t)
	code, out, stderr = runCLI(t, nil, "replay-log", "--log", log, "--replay", dev, "--end-mark", "one")
	if code != exitOK || !strings.Contains(out, `2 entries up to mark "one": 1 writes`) {
		t.Fatalf("replay to one: exit %d, %q %q", code, out, stderr)
	}
	b, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 'a' || b[511] != 'a' || b[512] != 0 {
		t.Errorf("after the replay to one: sector 0 %q.., sector 1 %q..", b[0], b[512])
	}

	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--replay", dev}, exitUsage, "--log LOGDEV is required"},
		{[]string{"--log", log}, exitUsage, "--replay DEV or --list is required"},
		{[]string{"--log", log, "--list", "--replay", dev}, exitUsage, "--list takes no"},
		{[]string{"--log", log, "--replay", dev, "extra"}, exitUsage, "unexpected argument"},
		{[]string{"--log", log, "--replay", dev, "--end-mark", "three"}, exitFail, `mark "three": no such mark in the log`},
		{[]string{"--log", dev, "--replay", log}, exitFail, "not a dm-log-writes log"},
	} {
		code, _, stderr := runCLI(t, nil, append([]string{"replay-log"}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("%q: exit %d, %q; want %d and %q", c.args, code, stderr, c.code, c.msg)
		}
	}
	// The failed replays left the target as the first one did.
	if b2, _ := os.ReadFile(dev); !bytes.Equal(b, b2) {
		t.Error("a failed replay-log changed the target")
	}
}
