package main

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// visibleCommands are the commands `help` lists.
func visibleCommands() []string {
	var names []string
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// TestHelpEveryCommand: -h, --help and `help CMD` print the same text on
// stdout, exit 0, with the synopsis, the options and the exit statuses,
// and say nothing of the project's internals.
func TestHelpEveryCommand(t *testing.T) {
	// Options each help must list (a sample per command).
	want := map[string][]string{
		"add":        {"-t, --type", "-n, --number", "-q, --queues", "-r, --recovery", "--foreground", "btrfsdio", "loop"},
		"del":        {"-n, --number", "-a, --all"},
		"list":       {"-n, --number", "-v, --verbose"},
		"recover":    {"-n, --number", "--foreground"},
		"scrub":      {"--repair", "--degraded", "--ignore-lock", "-f, --file", "4  with --repair"},
		"check":      {"--degraded", "--ignore-lock", "-f, --file", "3  damage found"},
		"mkfs":       {"--profile", "--datasum", "--nocow", "--size", "--force", "-f, --file"},
		"bench":      {"--profile", "--size", "--bs", "--rounds", "--json", "--svg", "--bitmap", "--journal-writes"},
		"race":       {"-d, --device", "--writes", "--span", "--threads", "--bs", "--read"},
		"torture":    {"-d, --device", "--state", "--writes", "--flush-every", "--blocks", "--random", "--verify"},
		"replay-log": {"--log", "--replay", "--end-mark", "--list"},
		"help":       {"-t, --type"},
	}
	for _, name := range visibleCommands() {
		var outs []string
		for _, args := range [][]string{{name, "-h"}, {name, "--help"}, {"help", name}} {
			code, out, stderr := runCLI(t, nil, args...)
			if code != exitOK || stderr != "" {
				t.Errorf("btrfsdio %q: exit %d, stderr %q; want exit 0 and nothing on stderr", args, code, stderr)
			}
			outs = append(outs, out)
		}
		if outs[0] != outs[1] || outs[0] != outs[2] {
			t.Errorf("%s: -h, --help and 'help %s' differ:\n%s\n---\n%s\n---\n%s", name, name, outs[0], outs[1], outs[2])
		}
		out := outs[0]
		for _, w := range append([]string{"usage: btrfsdio " + name, "options:", "-h, --help", "exit status:", "2  bad command line"}, want[name]...) {
			if !strings.Contains(out, w) {
				t.Errorf("help %s lacks %q:\n%s", name, w, out)
			}
		}
		for _, bad := range []string{"seed", "Usage of", "flag: help requested"} {
			if strings.Contains(strings.ToLower(out), strings.ToLower(bad)) {
				t.Errorf("help %s says %q:\n%s", name, bad, out)
			}
		}
	}
}

// TestHelpType: `help -t TYPE` is `add -t TYPE --help`, the type's options
// included.
func TestHelpType(t *testing.T) {
	for typ, opt := range map[string]string{"loop": "--read-only", "btrfsdio": "--faithful"} {
		code, out, _ := runCLI(t, nil, "help", "-t", typ)
		_, add, _ := runCLI(t, nil, "add", "-t", typ, "--help")
		if code != exitOK || out != add || !strings.Contains(out, opt) {
			t.Errorf("help -t %s: exit %d, %q; want add -t %s --help's text with %s", typ, code, out, typ, opt)
		}
		if strings.Contains(strings.ToLower(out), "seed") {
			t.Errorf("help -t %s names the seed:\n%s", typ, out)
		}
	}
	if code, _, stderr := runCLI(t, nil, "help", "-t", "nbd"); code != exitUsage || !strings.Contains(stderr, `unknown target type "nbd"`) {
		t.Errorf("help -t nbd: exit %d, %q", code, stderr)
	}
}

// TestStrayArgumentsRefused: every command refuses an argument that is
// not an option, with exit 2, before doing anything.
func TestStrayArgumentsRefused(t *testing.T) {
	file := backingFile(t)
	for _, name := range visibleCommands() {
		args := []string{name, "extra"}
		switch name {
		case "help":
			args = []string{"help", "list", "extra"}
		case "completion":
			args = []string{"completion", "bash", "extra"}
		case "add":
			args = []string{"add", "-t", "loop", "-f", file, "extra"}
		case "race":
			// Once ran 2000 writes of 1 MiB to F.
			args = []string{"race", "-d", file, "extra", "--writes", "3"}
		}
		code, out, stderr := runCLI(t, nil, args...)
		if code != exitUsage || !strings.Contains(stderr, `unexpected argument "extra"`) || out != "" {
			t.Errorf("btrfsdio %q: exit %d, stdout %q, stderr %q; want exit 2 and the argument named", args, code, out, stderr)
		}
	}
}

// TestGNUOptions: bundled short options, -nVALUE, --long=VALUE, -- ending
// the options, and the single-dash long names older run files record.
func TestGNUOptions(t *testing.T) {
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"del", "-an", "3"}, exitUsage, "give -n ID or -a, not both"},
		{[]string{"del", "-a", "-n3"}, exitUsage, "give -n ID or -a, not both"},
		{[]string{"del", "--all", "--number=3"}, exitUsage, "give -n ID or -a, not both"},
		{[]string{"race", "--", "-d", "x"}, exitUsage, `unexpected argument "-d"`},
		{[]string{"mkfs", "-profile", "raid9", "-f", "x"}, exitUsage, `unknown profile "raid9"`},
		{[]string{"mkfs", "-profile=raid9", "-f", "x"}, exitUsage, `unknown profile "raid9"`},
		{[]string{"mkfs", "--size", "99999999999T", "--profile", "single", "-f", "x"}, exitUsage, `size "99999999999T" is too large`},
		{[]string{"add", "-tloop"}, exitUsage, "loop: -f FILE is required"},
		{[]string{"add", "-tnbd"}, exitUsage, `unknown target type "nbd"`},
		{[]string{"del", "--a", "--n", "3"}, exitUsage, "give -n ID or -a, not both"},
		{[]string{"del", "--a", "--n=3"}, exitUsage, "give -n ID or -a, not both"},
		// ublksrv's long names.
		{[]string{"add", "-t", "loop", "-f", "/dev/null", "--user_recovery", "2"}, exitUsage, "-r 2: must be 0 or 1"},
		{[]string{"add", "-t", "loop", "-f", "/dev/null", "--user_recovery=1", "--user_recovery_reissue", "3"}, exitUsage, "-i 3: must be 0 or 1"},
		{[]string{"add", "-t", "loop", "-f", "/dev/null", "--user_recovery_fail_io", "1"}, exitUsage, "-e 1 (fail IO while no server runs) needs -r 1"},
	}
	for _, c := range cases {
		code, _, stderr := runCLI(t, nil, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("btrfsdio %q: exit %d, %q; want exit %d and %q", c.args, code, stderr, c.code, c.msg)
		}
	}
}

// TestTortureVerifyWithoutState: --verify needs the state a torture run
// wrote; without it every written block would be reported corrupt.
func TestTortureVerifyWithoutState(t *testing.T) {
	dev := backingFile(t)
	state := filepath.Join(t.TempDir(), "absent.json")
	code, out, stderr := runCLI(t, nil, "torture", "-d", dev, "--state", state, "--verify")
	if code != exitFail || !strings.Contains(stderr, "does not exist") || strings.Contains(out, "blocks") {
		t.Errorf("torture --verify without a state: exit %d, %q %q", code, out, stderr)
	}
	if _, err := os.Stat(state); err == nil {
		t.Errorf("torture --verify created %s", state)
	}
}

// TestBenchUsage: bench's bad options exit 2 and an unwritable --json
// fails before anything is measured.
func TestBenchUsage(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"bench", "--rounds", "0"}, exitUsage, "--rounds 0"},
		{[]string{"bench", "--bs", "3000"}, exitUsage, "--bs"},
		{[]string{"bench", "--size", "1M", "--bs", "2M"}, exitUsage, "at most --size"},
		{[]string{"bench", "--qd", "-1"}, exitUsage, "--qd -1"},
		{[]string{"bench", "--qd", "8", "--qd-size", "4M"}, exitUsage, "--qd-size"},
		{[]string{"bench", "--bitmap", "--json", "x.json"}, exitUsage, "--json and --svg"},
		{[]string{"bench", "--bitmap", "--bitmap-file", "4k"}, exitUsage, "--bitmap-file"},
		{[]string{"bench", "--profile", "raid9"}, exitUsage, "--profile"},
		{[]string{"bench", "--size", "1.5Q"}, exitUsage, `bad size "1.5Q"`},
		{[]string{"bench", "--dir", dir, "--json", filepath.Join(dir, "no", "such", "x.json")}, exitFail, "no such file or directory"},
	}
	for _, c := range cases {
		code, _, stderr := runCLI(t, nil, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("btrfsdio %q: exit %d, %q; want exit %d and %q", c.args, code, stderr, c.code, c.msg)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("bench left %d files in --dir after refusing to run", len(ents))
	}
}

// TestRecordedGoStyleArgsStillParse: run files written before the GNU
// parser record add command lines in Go's flag style, which recover
// replays: they still parse to the same options.
func TestRecordedGoStyleArgsStillParse(t *testing.T) {
	file := backingFile(t)
	spec, err := parseAdd([]string{"-type", "loop", "-file=" + file, "-read-only", "-number", "7", "-queues", "1", "--r", "1"})
	if err != nil {
		t.Fatal(err)
	}
	if spec.typ != "loop" || spec.id != 7 || spec.queues != 1 || spec.recovery != 1 || spec.factory.Info()["file"] != file || spec.factory.Info()["read_only"] != true {
		t.Errorf("parsed %+v, target %v", spec, spec.factory.Info())
	}
}
