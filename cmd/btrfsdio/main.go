// Command btrfsdio manages ublk devices the way ublksrv's `ublk` tool does:
//
//	btrfsdio add -t TYPE [-n ID] [-q N] [-d DEPTH] [--foreground] [target flags...]
//	btrfsdio del -n ID | -a
//	btrfsdio recover -n ID
//	btrfsdio list [-n ID] [-v]
//	btrfsdio features | version | help
//
// Subcommands and target types register themselves from init functions, so
// new ones live in their own files (see registerCommand and registerTarget).
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"

	"github.com/btrfsdio/btrfsdio/ublk"
	"github.com/spf13/pflag"
)

// version is set at link time: -ldflags "-X main.version=...".
var version = "dev"

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the operation failed
	exitUsage = 2 // the command line is wrong
)

// env is what a subcommand writes to; tests substitute buffers.
type env struct {
	stdout io.Writer
	stderr io.Writer
	// collect, when set, receives a command's option set instead of its
	// help being printed on --help: the man page and the completions are
	// made from the very options the commands parse (gendoc.go).
	collect func(*pflag.FlagSet)
}

// failf prints "btrfsdio: ..." on stderr and returns code.
func (e *env) failf(code int, format string, args ...any) int {
	fmt.Fprintf(e.stderr, "btrfsdio: "+format+"\n", args...)
	return code
}

// command is one subcommand (ublksrv's cmd_dev_add, cmd_list_dev_info, ...).
type command struct {
	name    string
	summary string // one line for `help`
	usage   string // the synopsis after the command name
	help    string // more for `help COMMAND` and `COMMAND --help`
	exits   string // the exit statuses, one a line; "" is defaultExits
	hidden  bool   // internal commands, e.g. __serve
	run     func(e *env, args []string) int
}

var commands = map[string]*command{}

// registerCommand adds a subcommand; call it from an init function.
func registerCommand(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("btrfsdio: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// checkDriver is ublk.CheckDriver; tests replace it to run with or without
// /dev/ublk-control regardless of the host.
var checkDriver = ublk.CheckDriver

func init() {
	registerCommand(&command{name: "help", summary: "show this help, or a command's usage (the same as COMMAND --help)",
		usage: "[COMMAND | -t TYPE]", run: runHelp,
		help: "With -t TYPE: the options of 'add -t TYPE', the target type's included."})
	registerCommand(&command{name: "version", summary: "print the version", run: runVersion})
}

func main() {
	os.Exit(run(&env{stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:]))
}

// run dispatches to a subcommand and returns the exit code.
func run(e *env, args []string) int {
	if len(args) == 0 {
		printUsage(e.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "--help", "-help":
		name = "help"
	case "-v", "--version", "-version":
		name = "version"
	}
	c, ok := commands[name]
	if !ok {
		return e.failf(exitUsage, "unknown command %q; run 'btrfsdio help'", args[0])
	}
	return c.run(e, args[1:])
}

func runVersion(e *env, args []string) int {
	if code, done := parseArgs(e, newFlags("version"), args); done {
		return code
	}
	fmt.Fprintf(e.stdout, "btrfsdio %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}

// runHelp prints the overview, or a command's help by running it with
// --help, so `help CMD` and `CMD --help` print the same text.
func runHelp(e *env, args []string) int {
	fs := newFlags("help")
	typ := fs.StringP("type", "t", "", "print the options of 'add -t TYPE'")
	man := fs.Bool("man", false, "print the manual page (roff, for man(1)): every command's help")
	err := fs.Parse(compatLong(fs, args))
	switch {
	case err == nil && e.collect != nil && fs.Changed("help"):
		e.collect(fs)
		return exitOK
	case err == nil && *man:
		if fs.NArg() > 0 || *typ != "" {
			return e.failf(exitUsage, "help: --man takes no other argument")
		}
		writeMan(e.stdout)
		return exitOK
	case err != nil:
		return e.failf(exitUsage, "help: %v", err)
	case *typ != "":
		if _, ok := targetTypes[*typ]; !ok {
			return e.failf(exitUsage, "help: unknown target type %q (known types: %s)", *typ, strings.Join(targetNames(), ", "))
		}
		return runAdd(e, []string{"-t", *typ, "--help"})
	case fs.NArg() > 1:
		return e.failf(exitUsage, "help: unexpected argument %q", fs.Arg(1))
	case fs.NArg() == 0:
		if help, _ := fs.GetBool("help"); help {
			printCommandHelp(e.stdout, commands["help"], fs)
			return exitOK
		}
		printUsage(e.stdout)
		return exitOK
	}
	c, ok := commands[fs.Arg(0)]
	if !ok || c.hidden {
		return e.failf(exitUsage, "no help for unknown command %q", fs.Arg(0))
	}
	return c.run(e, []string{"--help"})
}
func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: btrfsdio COMMAND [ARGS]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands[n]
		fmt.Fprintf(w, "  %-9s %s\n", n, strings.TrimSpace(c.usage))
		fmt.Fprintf(w, "  %-9s   %s\n", "", c.summary)
	}
	fmt.Fprintln(w)
	printTargetTypes(w)
}
