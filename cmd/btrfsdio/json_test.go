package main

import (
	"encoding/json"
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
