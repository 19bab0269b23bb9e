package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// The manual page (`help --man`) and the shell completions (`completion
// bash|zsh`) are made from the commands' own option sets and help texts,
// at install time from the built binary (make install), so they cannot
// drift from what the commands accept.

func init() {
	registerCommand(&command{name: "completion", usage: "bash|zsh", run: runCompletion,
		summary: "print a completion script for bash or zsh (make install installs both)",
		help: "bash: source it, or install it as /usr/share/bash-completion/completions/btrfsdio.\n" +
			"zsh: install it as _btrfsdio in a directory of $fpath."})
}

// docCommand is one command as the man page and completions describe it.
type docCommand struct {
	*command
	fs *pflag.FlagSet // its options; nil if it has none but -h
}

// docTarget is one target type: the options `add -t TYPE` adds.
type docTarget struct {
	name, usage string
	flags       []*pflag.Flag
}

// collectFlags runs a command line with --help and returns the option set
// the command would have printed.
func collectFlags(c *command, args ...string) *pflag.FlagSet {
	var got *pflag.FlagSet
	c.run(&env{stdout: io.Discard, stderr: io.Discard, collect: func(fs *pflag.FlagSet) { got = fs }}, append(args, "--help"))
	return got
}

// docCommands lists the visible commands, sorted, with their options.
func docCommands() []docCommand {
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := make([]docCommand, 0, len(names))
	for _, n := range names {
		out = append(out, docCommand{commands[n], collectFlags(commands[n])})
	}
	return out
}

// docTargets lists the target types with the options each adds to add's.
func docTargets() []docTarget {
	base := collectFlags(commands["add"])
	var out []docTarget
	for _, n := range targetNames() {
		t := docTarget{name: n, usage: targetTypes[n].Usage}
		if fs := collectFlags(commands["add"], "-t", n); fs != nil {
			fs.VisitAll(func(f *pflag.Flag) {
				if !f.Hidden && base.Lookup(f.Name) == nil {
					t.flags = append(t.flags, f)
				}
			})
		}
		out = append(out, t)
	}
	return out
}

// visibleFlags lists fs's options in the order help prints them.
func visibleFlags(fs *pflag.FlagSet) []*pflag.Flag {
	var out []*pflag.Flag
	if fs != nil {
		fs.VisitAll(func(f *pflag.Flag) {
			if !f.Hidden {
				out = append(out, f)
			}
		})
	}
	return out
}

// roff escapes text for a man page line: backslashes and dashes, and a
// leading dot or quote that would read as a request.
func roff(s string) string {
	s = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// roffText writes paragraphs: lines are joined, blank lines start a new one.
func roffText(w io.Writer, text string) {
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		fmt.Fprintln(w, ".PP")
		for _, l := range strings.Split(para, "\n") {
			fmt.Fprintln(w, roff(strings.TrimSpace(l)))
		}
	}
}

func roffOptions(w io.Writer, flags []*pflag.Flag) {
	for _, f := range flags {
		varname, usage := optionText(f)
		names := `\fB\-\-` + roff(f.Name) + `\fR`
		if f.Shorthand != "" {
			names = `\fB\-` + roff(f.Shorthand) + `\fR, ` + names
		}
		if varname != "" {
			names += ` \fI` + roff(varname) + `\fR`
		}
		fmt.Fprintf(w, ".TP\n%s\n%s\n", names, roff(usage))
	}
}

// writeMan prints btrfsdio(8) in roff: every command with its synopsis,
// help, options and exit statuses, then the target types' options.
func writeMan(w io.Writer) {
	fmt.Fprintf(w, ".TH BTRFSDIO 8 \"\" \"btrfsdio %s\" \"System Administration\"\n", roff(version))
	fmt.Fprintln(w, ".SH NAME\nbtrfsdio \\- serve btrfs\\-style RAID volumes as ublk block devices, and check them offline")
	fmt.Fprintln(w, ".SH SYNOPSIS\n.B btrfsdio\n.I COMMAND\n.RI [ OPTIONS ]")
	fmt.Fprintln(w, ".SH DESCRIPTION")
	roffText(w, "btrfsdio manages ublk devices the way ublksrv's ublk tool does (add, del, list, recover, "+
		"features), serves them from user space, and makes, checks and scrubs its volumes offline. "+
		"Options follow GNU conventions: -s VALUE, --long VALUE, --long=VALUE, bundled switches, -- ends the options. "+
		"'btrfsdio help COMMAND' and 'btrfsdio COMMAND --help' print what this page says of a command.")
	fmt.Fprintln(w, ".SH COMMANDS")
	for _, c := range docCommands() {
		fmt.Fprintf(w, ".SS \"%s\"\n", strings.TrimSpace(roff(c.name+" "+c.usage)))
		roffText(w, c.summary)
		if c.help != "" {
			roffText(w, c.help)
		}
		if flags := visibleFlags(c.fs); len(flags) > 0 {
			fmt.Fprintln(w, ".PP\nOptions:")
			roffOptions(w, flags)
		}
		exits := c.exits
		if exits == "" {
			exits = defaultExits
		}
		fmt.Fprintln(w, ".PP\nExit status:\n.RS\n.nf")
		for _, l := range strings.Split(exits, "\n") {
			fmt.Fprintln(w, roff(strings.TrimSpace(l)))
		}
		fmt.Fprintln(w, ".fi\n.RE")
	}
	fmt.Fprintln(w, ".SH TARGET TYPES")
	for _, t := range docTargets() {
		fmt.Fprintf(w, ".SS \"add \\-t %s\"\n", roff(t.name))
		roffText(w, t.usage)
		if len(t.flags) > 0 {
			fmt.Fprintln(w, ".PP\nOptions:")
			roffOptions(w, t.flags)
		}
	}
	fmt.Fprintln(w, ".SH FILES")
	for _, f := range [][2]string{
		{"/etc/btrfsdio/ID.conf", "the add arguments of the btrfsdio@ID service (BTRFSDIO_ARGS=...)"},
		{"/run/btrfsdio/ublkN.json", "what a server records for list, recover and stats"},
		{"/var/log/btrfsdio/ublkN.log", "a daemonized server's log (rotated by /etc/logrotate.d/btrfsdio); under systemd the journal"},
	} {
		fmt.Fprintf(w, ".TP\n.I %s\n%s\n", roff(f[0]), roff(f[1]))
	}
	fmt.Fprintln(w, ".SH SEE ALSO\n.BR systemd.service (5),\n.BR logrotate (8),\n.BR mkfs.btrfs (8),\n.BR btrfs\\-scrub (8)")
}

// takesFiles says whether an option's value is best completed as a path:
// everything but numbers, sizes, and the target type.
func takesFiles(f *pflag.Flag) bool {
	varname, _ := optionText(f)
	switch {
	case varname == "" || f.Name == "type":
		return false
	case varname == "N" || varname == "SIZE" || varname == "BYTES" || varname == "P" || varname == "SECONDS":
		return false
	}
	switch f.Value.Type() {
	case "int", "uint", "int64", "uint64", "float64", "duration":
		return false
	}
	return true
}

// commandFlags is a command's options, for add with every target type's.
func commandFlags(c docCommand, targets []docTarget) []*pflag.Flag {
	flags := visibleFlags(c.fs)
	if c.name == "add" {
		seen := map[string]bool{}
		for _, f := range flags {
			seen[f.Name] = true
		}
		for _, t := range targets {
			for _, f := range t.flags {
				if !seen[f.Name] {
					seen[f.Name] = true
					flags = append(flags, f)
				}
			}
		}
	}
	return flags
}

// positional is what a command takes besides options.
func positional(c docCommand, cmds []docCommand) []string {
	switch c.name {
	case "help":
		var names []string
		for _, d := range cmds {
			names = append(names, d.name)
		}
		return names
	case "completion":
		return []string{"bash", "zsh"}
	}
	return nil
}

func writeBashCompletion(w io.Writer) {
	cmds, targets := docCommands(), docTargets()
	var names []string
	for _, c := range cmds {
		names = append(names, c.name)
	}
	fmt.Fprintf(w, `# bash completion for btrfsdio (made by 'btrfsdio completion bash' %s)
_btrfsdio() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W '%s' -- "$cur"))
		return
	fi
	local opts='' files='' values=''
	case ${COMP_WORDS[1]} in
`, version, strings.Join(names, " "))
	for _, c := range cmds {
		var opts, files, values []string
		opts = append(opts, positional(c, cmds)...)
		for _, f := range commandFlags(c, targets) {
			spell := []string{"--" + f.Name}
			if f.Shorthand != "" {
				spell = append(spell, "-"+f.Shorthand)
			}
			opts = append(opts, spell...)
			if v, _ := optionText(f); v != "" {
				values = append(values, spell...)
				if takesFiles(f) {
					files = append(files, spell...)
				}
			}
		}
		fmt.Fprintf(w, "\t%s)\n\t\topts='%s'\n\t\tfiles='%s'\n\t\tvalues='%s'\n\t\t;;\n",
			c.name, strings.Join(opts, " "), strings.Join(files, " "), strings.Join(values, " "))
	}
	fmt.Fprintf(w, `	esac
	case $prev in
	-t | --type)
		COMPREPLY=($(compgen -W '%s' -- "$cur"))
		return
		;;
	esac
	case " $files " in *" $prev "*)
		COMPREPLY=($(compgen -f -- "$cur"))
		return
		;;
	esac
	case " $values " in *" $prev "*)
		COMPREPLY=()
		return
		;;
	esac
	COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -F _btrfsdio btrfsdio
`, strings.Join(targetNames(), " "))
}

// zshQuote makes text safe inside a single-quoted _arguments description.
func zshQuote(s string) string {
	return strings.NewReplacer("'", `'\''`, "[", "(", "]", ")", ":", `\:`).Replace(s)
}

func writeZshCompletion(w io.Writer) {
	cmds, targets := docCommands(), docTargets()
	fmt.Fprintf(w, `#compdef btrfsdio
# zsh completion for btrfsdio (made by 'btrfsdio completion zsh' %s)
_btrfsdio() {
	local -a commands
	commands=(
`, version)
	for _, c := range cmds {
		fmt.Fprintf(w, "\t\t'%s:%s'\n", c.name, zshQuote(c.summary))
	}
	fmt.Fprintln(w, "\t)\n\tif (( CURRENT == 2 )); then\n\t\t_describe -t commands 'btrfsdio command' commands\n\t\treturn\n\tfi\n\tlocal cmd=$words[2]\n\tshift words\n\t(( CURRENT-- ))\n\tcase $cmd in")
	for _, c := range cmds {
		fmt.Fprintf(w, "\t%s)\n\t\t_arguments -s", c.name)
		for _, f := range commandFlags(c, targets) {
			varname, usage := optionText(f)
			spec := "'--" + f.Name + "'"
			if f.Shorthand != "" {
				spec = "{-" + f.Shorthand + ",--" + f.Name + "}"
			}
			arg := ""
			switch {
			case varname == "":
			case f.Name == "type":
				arg = ":" + varname + ":(" + strings.Join(targetNames(), " ") + ")"
			case takesFiles(f):
				arg = ":" + zshQuote(varname) + ":_files"
			default:
				arg = ":" + zshQuote(varname) + ": "
			}
			fmt.Fprintf(w, " \\\n\t\t\t'*'%s'[%s]%s'", spec, zshQuote(usage), arg)
		}
		if p := positional(c, cmds); len(p) > 0 {
			fmt.Fprintf(w, " \\\n\t\t\t'1:argument:(%s)'", strings.Join(p, " "))
		}
		fmt.Fprintln(w, "\n\t\t;;")
	}
	fmt.Fprintln(w, "\tesac\n}\n_btrfsdio \"$@\"")
}

func runCompletion(e *env, args []string) int {
	fs := newFlags("completion")
	err := fs.Parse(compatLong(fs, args))
	help, _ := fs.GetBool("help")
	switch {
	case err != nil:
		return e.failf(exitUsage, "completion: %v (see 'btrfsdio completion --help')", err)
	case help && e.collect != nil:
		e.collect(fs)
	case help:
		printCommandHelp(e.stdout, commands["completion"], fs)
	case fs.NArg() == 0:
		return e.failf(exitUsage, "completion: give one shell: bash or zsh")
	case fs.NArg() > 1:
		return e.failf(exitUsage, "completion: unexpected argument %q (see 'btrfsdio completion --help')", fs.Arg(1))
	case fs.Arg(0) == "bash":
		writeBashCompletion(e.stdout)
	case fs.Arg(0) == "zsh":
		writeZshCompletion(e.stdout)
	default:
		return e.failf(exitUsage, "completion: unknown shell %q (bash or zsh)", fs.Arg(0))
	}
	return exitOK
}
