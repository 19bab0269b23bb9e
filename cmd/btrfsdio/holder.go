package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/btrfsdio/btrfsdio/raid"
)

// imageHolder names the running server whose run file lists the image id,
// for the message of a claim that failed ("" when no server does: the
// holder is then some other process, a scrub --repair say).
func imageHolder(id raid.DeviceID) string {
	runFiles, _ := filepath.Glob(filepath.Join(runDir(), "ublk*.json"))
	for _, path := range runFiles {
		if strings.HasSuffix(path, ".stats.json") { // the counters, not a run file
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var ri runInfo
		if json.Unmarshal(b, &ri) != nil || ri.PID <= 0 || !processAlive(ri.PID) {
			continue
		}
		for _, img := range runImages(&ri) {
			if got, err := raid.LookupDevice(img); err == nil && got == id {
				return fmt.Sprintf("the server of /dev/ublkb%d (pid %d)", ri.DevID, ri.PID)
			}
		}
	}
	return ""
}

// runImages are the backing files a run file records (a btrfsdio target's
// "files", a loop target's "file"), relative ones made absolute from the
// directory add ran in.
func runImages(ri *runInfo) []string {
	var imgs []string
	add := func(v any) {
		if s, ok := v.(string); ok && s != "" {
			if !filepath.IsAbs(s) {
				s = filepath.Join(ri.Dir, s)
			}
			imgs = append(imgs, s)
		}
	}
	add(ri.Target["file"])
	if files, ok := ri.Target["files"].([]any); ok {
		for _, f := range files {
			add(f)
		}
	}
	return imgs
}
