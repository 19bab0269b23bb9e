package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btrfsdio/btrfsdio/raid"
)

// TestScrubCheckJSON: scrub --json and check --json name a damaged copy
// by image, physical offset, mirror and checksum, under the header every
// --json object has (docs/json.md).
func TestScrubCheckJSON(t *testing.T) {
	a, b, _, tg, _ := datasumRaid1With64K(t, 5)
	extent := tg.FS.AllocatedExtents()[0]
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	damaged := int64(raid.ReservedBytes+extent[0]) + 100
	scribble(t, b, damaged)
	for _, cmd := range []string{"check", "scrub"} {
		code, out, stderr := runCLI(t, nil, cmd, "--json", "-f", a, "-f", b)
		if code != exitDamaged {
			t.Fatalf("%s --json: exit %d, %q", cmd, code, stderr)
		}
		var doc map[string]any
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("%s --json: %v in %q", cmd, err, out)
		}
		for _, k := range []string{"schema_version", "command", "version", "kernel", "time", "exit_status", "profile",
			"images", "sectors_checked", "csum_errors", "differing", "findings", "missing_devids", "stale_devices"} {
			if _, ok := doc[k]; !ok {
				t.Errorf("%s --json lacks %q: %s", cmd, k, out)
			}
		}
		for k := range doc {
			if k != strings.ToLower(k) || strings.Contains(k, "-") {
				t.Errorf("%s --json: key %q is not snake_case", cmd, k)
			}
		}
		if doc["schema_version"] != float64(jsonSchemaVersion) || doc["command"] != cmd || doc["exit_status"] != float64(exitDamaged) {
			t.Errorf("%s --json header: %v %v %v", cmd, doc["schema_version"], doc["command"], doc["exit_status"])
		}
		found := false
		for _, f := range doc["findings"].([]any) {
			f := f.(map[string]any)
			if f["kind"] != "csum_error" {
				continue
			}
			found = true
			phys, _ := f["physical"].(float64)
			sum, _ := f["checksum"].(map[string]any)
			if f["image"] != b || f["mirror"] != float64(2) || int64(phys) > damaged || int64(phys)+raid.SectorSize <= damaged ||
				sum == nil || sum["found"] == sum["expected"] {
				t.Errorf("%s --json: csum finding %v; want image %s, mirror 2, the sector holding byte %d, two checksums", cmd, f, b, damaged)
			}
		}
		if !found {
			t.Errorf("%s --json: no csum_error finding in %s", cmd, out)
		}
	}
}

// decodeJSON decodes a --json output and checks the header and keys.
func decodeJSON(t *testing.T, cmd, out string, keys ...string) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%s --json: %v in %q", cmd, err, out)
	}
	for _, k := range append([]string{"schema_version", "command", "version", "kernel", "time", "exit_status"}, keys...) {
		if _, ok := doc[k]; !ok {
			t.Errorf("%s --json lacks %q: %s", cmd, k, out)
		}
	}
	if doc["command"] != cmd {
		t.Errorf("%s --json: command %v", cmd, doc["command"])
	}
	return doc
}

// TestTortureRaceJSON: torture (write and verify) and race print their
// figures as documented.
func TestTortureRaceJSON(t *testing.T) {
	dev := backingFile(t)
	state := filepath.Join(t.TempDir(), "state.json")
	code, out, stderr := runCLI(t, nil, "torture", "-d", dev, "--state", state, "--writes", "40", "--flush-every", "8", "--json")
	if code != exitOK {
		t.Fatalf("torture --json: exit %d, %q", code, stderr)
	}
	doc := decodeJSON(t, "torture", out, "mode", "device", "state", "blocks", "writes_this_run", "writes_total", "flushes_total", "stopped_by")
	if doc["mode"] != "write" || doc["writes_this_run"] != float64(40) || doc["flushes_total"] != float64(5) {
		t.Errorf("torture --json: %s", out)
	}
	code, out, stderr = runCLI(t, nil, "torture", "-d", dev, "--state", state, "--verify", "--json")
	if code != exitOK {
		t.Fatalf("torture --verify --json: exit %d, %q", code, stderr)
	}
	if doc = decodeJSON(t, "torture", out, "mode", "bad_blocks", "blocks"); doc["mode"] != "verify" || doc["bad_blocks"] != float64(0) {
		t.Errorf("torture --verify --json: %s", out)
	}
	code, out, stderr = runCLI(t, nil, "race", "-d", dev, "--writes", "3", "--span", "1", "--bs", "4096", "--threads", "1", "--json")
	if code != exitOK {
		t.Fatalf("race --json: exit %d, %q", code, stderr)
	}
	if doc = decodeJSON(t, "race", out, "device", "op", "ios", "bytes_per_io", "scribblers", "seconds", "mib_per_second"); doc["ios"] != float64(3) || doc["op"] != "write" {
		t.Errorf("race --json: %s", out)
	}
}

// TestBenchJSON: bench --json FILE writes the header and the result in
// snake_case, the profile by name.
func TestBenchJSON(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(t.TempDir(), "bench.json")
	code, _, stderr := runCLI(t, nil, "bench", "--dir", dir, "--size", "256k", "--bs", "64k", "--rounds", "1", "--qd", "0", "--json", path)
	if code != exitOK {
		t.Fatalf("bench: exit %d, %q", code, stderr)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := decodeJSON(t, "bench", string(b), "config", "cells", "raw_direct", "memcpy", "resolution_pct")
	cfg, _ := doc["config"].(map[string]any)
	if cfg["profile"] != "raid1" || cfg["bs"] != float64(64<<10) {
		t.Errorf("bench --json config: %v", cfg)
	}
}
