package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The man page and both completions name every command and every option
// each command parses (the target types' options too), since they are
// made from the same option sets; the bash script parses.
func TestManAndCompletionCoverEveryOption(t *testing.T) {
	code, man, stderr := runCLI(t, nil, "help", "--man")
	if code != exitOK || stderr != "" || !strings.HasPrefix(man, ".TH BTRFSDIO 8 ") {
		t.Fatalf("help --man: exit %d stderr %q start %.40q", code, stderr, man)
	}
	_, bash, _ := runCLI(t, nil, "completion", "bash")
	_, zsh, _ := runCLI(t, nil, "completion", "zsh")
	cmds, targets := docCommands(), docTargets()
	if len(cmds) < 15 || len(targets) != len(targetTypes) {
		t.Fatalf("%d commands, %d target types", len(cmds), len(targets))
	}
	nopts := 0
	for _, c := range cmds {
		if !strings.Contains(man, "\n.SS \""+roff(c.name)) {
			t.Errorf("man: no section for %s", c.name)
		}
		bashCase := regexp.MustCompile(`(?m)^\t` + regexp.QuoteMeta(c.name) + `\)\n\t\topts='([^']*)'`).FindStringSubmatch(bash)
		zshCase := regexp.MustCompile(`(?s)\n\t` + regexp.QuoteMeta(c.name) + `\)\n\t\t_arguments -s(.*?)\n\t\t;;`).FindStringSubmatch(zsh)
		if bashCase == nil || zshCase == nil {
			t.Errorf("%s: no case in the bash (%v) or zsh (%v) completion", c.name, bashCase != nil, zshCase != nil)
			continue
		}
		if !strings.Contains(zsh, "\t\t'"+c.name+":") {
			t.Errorf("zsh: %s not among the commands", c.name)
		}
		bashOpts := " " + bashCase[1] + " "
		for _, f := range commandFlags(c, targets) {
			nopts++
			if !strings.Contains(man, `\fB\-\-`+roff(f.Name)+`\fR`) {
				t.Errorf("man: no --%s (%s)", f.Name, c.name)
			}
			if !strings.Contains(bashOpts, " --"+f.Name+" ") || (f.Shorthand != "" && !strings.Contains(bashOpts, " -"+f.Shorthand+" ")) {
				t.Errorf("bash: %s lacks --%s/-%s", c.name, f.Name, f.Shorthand)
			}
			if !strings.Contains(zshCase[1], "--"+f.Name+"}") && !strings.Contains(zshCase[1], "'--"+f.Name+"'") {
				t.Errorf("zsh: %s lacks --%s", c.name, f.Name)
			}
		}
	}
	for _, want := range []string{`\fB\-z\fR, \fB\-\-zero\-copy\fR`, `\fB\-\-profile\fR \fIP\fR`, ".SS \"add \\-t btrfsdio\"", "Exit status:"} {
		if !strings.Contains(man, want) {
			t.Errorf("man: no %q", want)
		}
	}
	if nopts < 80 {
		t.Errorf("only %d options across the commands", nopts)
	}
	if sh, err := exec.LookPath("bash"); err == nil {
		p := filepath.Join(t.TempDir(), "btrfsdio.bash")
		os.WriteFile(p, []byte(bash), 0o600)
		if out, err := exec.Command(sh, "-n", p).CombinedOutput(); err != nil {
			t.Errorf("bash -n: %v: %s", err, out)
		}
	}
	if code, _, stderr := runCLI(t, nil, "completion", "fish"); code != exitUsage || !strings.Contains(stderr, `unknown shell "fish"`) {
		t.Errorf("completion fish: exit %d %q", code, stderr)
	}
}

// `make install DESTDIR=... PREFIX=/usr` lays out the binary, the unit with
// its paths set, the man page, both completions, the logrotate config and
// the example service config.
func TestMakeInstallLayout(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	dest, tmp := t.TempDir(), t.TempDir()
	cmd := exec.Command("make", "-s", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/usr", "BIN="+filepath.Join(tmp, "btrfsdio"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for path, want := range map[string]string{
		"usr/sbin/btrfsdio":                              "\x7fELF",
		"usr/share/man/man8/btrfsdio.8":                  ".TH BTRFSDIO 8",
		"usr/share/bash-completion/completions/btrfsdio": "# bash completion for btrfsdio",
		"usr/share/zsh/site-functions/_btrfsdio":         "#compdef btrfsdio",
		"usr/lib/systemd/system/btrfsdio@.service":       "# btrfsdio@ID.service",
		"etc/logrotate.d/btrfsdio":                       "# Logs of daemonized servers",
		"usr/share/doc/btrfsdio/example.conf":            "# /etc/btrfsdio/ID.conf",
	} {
		b, err := os.ReadFile(filepath.Join(dest, path))
		if err != nil || !strings.HasPrefix(string(b), want) {
			t.Errorf("%s: %v, starts %.30q, want %q", path, err, b, want)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/btrfsdio@.service"))
	for _, want := range []string{"Type=notify", "EnvironmentFile=/etc/btrfsdio/%i.conf",
		"exec /usr/sbin/btrfsdio add --foreground -n %i $$BTRFSDIO_ARGS", "exec /usr/sbin/btrfsdio recover --foreground -n %i",
		"/usr/sbin/btrfsdio del -n %i", "Restart=on-failure"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit: no %q", want)
		}
	}
	if strings.Contains(string(unit), "@BINDIR@") {
		t.Error("unit: @BINDIR@ left")
	}
	if st, err := os.Stat(filepath.Join(dest, "etc/btrfsdio")); err != nil || !st.IsDir() {
		t.Errorf("/etc/btrfsdio: %v", err)
	}
}
