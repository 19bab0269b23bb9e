package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// Every command parses its options with spf13/pflag, the Go ecosystem's
// GNU-style parser (--long, -s, bundled -va, --long=value, -- ends the
// options), so all of them follow one convention, as ublksrv's getopt_long
// and btrfs-progs do, instead of Go's single-dash flag package.

// defaultExits is the exit status of a command that documents no other.
const defaultExits = `  0  success
  1  the operation failed
  2  bad command line`

// newFlags returns a command's option set, with -h/--help; it prints
// nothing itself (parseArgs reports).
func newFlags(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.BoolP("help", "h", false, "show this help and exit")
	return fs
}

// parseArgs parses args into fs and refuses any argument that is not an
// option. done says the command must return code now: 0 after -h/--help
// printed its help, exitUsage after a bad command line was reported.
func parseArgs(e *env, fs *pflag.FlagSet, args []string) (code int, done bool) {
	err := fs.Parse(compatLong(fs, args))
	if help, _ := fs.GetBool("help"); help && err == nil {
		if e.collect != nil {
			e.collect(fs)
			return exitOK, true
		}
		printCommandHelp(e.stdout, commands[fs.Name()], fs)
		return exitOK, true
	}
	if err != nil {
		return e.failf(exitUsage, "%s: %v (see 'btrfsdio %s --help')", fs.Name(), err, fs.Name()), true
	}
	if fs.NArg() > 0 {
		return e.failf(exitUsage, "%s: unexpected argument %q (see 'btrfsdio %s --help')", fs.Name(), fs.Arg(0), fs.Name()), true
	}
	return exitOK, false
}

// compatLong turns a single-dash long option (-profile, -size=1G), which
// Go's flag package accepted and run files written by earlier versions
// record (recover replays them), into its GNU form --profile; pflag would
// otherwise read it as bundled short options. A one-letter option given
// with two dashes (--n 3, which Go's package also took) becomes -n 3.
func compatLong(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		switch {
		case len(a) > 2 && a[0] == '-' && a[1] != '-':
			if name, _, _ := strings.Cut(a[1:], "="); len(name) > 1 && fs.Lookup(name) != nil {
				a = "-" + a
			}
		case len(a) > 2 && strings.HasPrefix(a, "--"):
			if name, _, _ := strings.Cut(a[2:], "="); len(name) == 1 && fs.Lookup(name) == nil && fs.ShorthandLookup(name) != nil {
				a = a[1:]
			}
		}
		out = append(out, a)
	}
	return out
}

// optionUsages lists fs's options as getopt_long tools do: "-s, --long
// VALUE" (VALUE from a `quoted` word of the usage, else from the type),
// then the usage and any default that says something, wrapped.
func optionUsages(fs *pflag.FlagSet) string {
	type row struct{ names, usage string }
	var rows []row
	width := 0
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		names := "    --" + f.Name // aligned under "-s, "
		if f.Shorthand != "" {
			names = "-" + f.Shorthand + ", --" + f.Name
		}
		varname, usage := optionText(f)
		if varname != "" {
			names += " " + varname
		}
		rows = append(rows, row{names, usage})
		width = max(width, len(names))
	})
	width = min(width, 30)
	var b strings.Builder
	for _, r := range rows {
		pad := strings.Repeat(" ", width+4)
		b.WriteString("  " + r.names)
		if len(r.names) > width {
			b.WriteString("\n" + pad)
		} else {
			b.WriteString(strings.Repeat(" ", width-len(r.names)+2))
		}
		col := width + 4
		for i, word := range strings.Fields(r.usage) {
			if i > 0 && col+1+len(word) > 100 {
				b.WriteString("\n" + pad)
				col = width + 4
			} else if i > 0 {
				b.WriteString(" ")
				col++
			}
			b.WriteString(word)
			col += len(word)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// optionText is what help says of an option: the name of its value (""
// for a switch) and its usage with any default that says something. The
// man page and the completions use it too.
func optionText(f *pflag.Flag) (varname, usage string) {
	varname, usage = pflag.UnquoteUsage(f)
	if f.Value.Type() == "bool" {
		varname = ""
	}
	switch varname {
	case "int", "uint", "int64", "uint64":
		varname = "N"
	case "string":
		varname = "VALUE"
	}
	switch d := f.DefValue; {
	case f.Value.Type() == "bool" && d == "true":
		usage += fmt.Sprintf(" (on by default; --%s=false turns it off)", f.Name)
	case d != "" && d != "0" && d != "false" && d != "[]" && !strings.Contains(usage, "default"):
		usage += fmt.Sprintf(" (default %s)", d)
	}
	return varname, usage
}

// printCommandHelp is what `btrfsdio help CMD` and `btrfsdio CMD --help`
// both print: the synopsis, what the command does, every option and the
// exit statuses.
func printCommandHelp(w io.Writer, c *command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "usage: btrfsdio %s %s\n\n%s\n", c.name, c.usage, c.summary)
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", c.help)
	}
	if fs != nil && fs.HasAvailableFlags() {
		fmt.Fprintf(w, "\noptions:\n%s", optionUsages(fs))
	}
	exits := c.exits
	if exits == "" {
		exits = defaultExits
	}
	fmt.Fprintf(w, "\nexit status:\n%s\n", exits)
}
