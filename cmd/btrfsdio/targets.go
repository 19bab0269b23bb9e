package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/btrfsdio/btrfsdio/raid"
	"github.com/btrfsdio/btrfsdio/tgt/loop"
	"github.com/btrfsdio/btrfsdio/ublk"
)

// TargetFactory turns one target type's command-line flags into a ublk.Target
// (ublksrv's struct ublk_tgt_ops: init_tgt with its own option parsing).
type TargetFactory interface {
	// Flags registers the type's flags on fs (next to add's common flags).
	Flags(fs *flag.FlagSet)
	// Validate checks the parsed flags without side effects. `add` calls it
	// before daemonizing so mistakes show up on the terminal.
	Validate() error
	// Build opens the backing store and returns the target and the device it
	// offers. It runs in the server process.
	Build() (ublk.Target, ublk.TargetParams, error)
	// Info describes the target for `list` (ublksrv's "target" JSON).
	Info() map[string]any
}

// targetType is one entry of the registry behind `add -t TYPE`.
type targetType struct {
	name  string
	usage string // the type's flags, for help
	new   func() TargetFactory
}

var targetTypes = map[string]targetType{}

// registerTarget adds a target type; call it from an init function.
func registerTarget(t targetType) {
	if _, dup := targetTypes[t.name]; dup {
		panic("btrfsdio: target type registered twice: " + t.name)
	}
	targetTypes[t.name] = t
}

// targetNames lists the registered types, sorted.
func targetNames() []string {
	names := make([]string, 0, len(targetTypes))
	for n := range targetTypes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func printTargetTypes(w io.Writer) {
	fmt.Fprintln(w, "target types (add -t TYPE):")
	for _, n := range targetNames() {
		fmt.Fprintf(w, "  %-9s %s\n", n, targetTypes[n].usage)
	}
}

func init() {
	registerTarget(targetType{
		name:  "loop",
		usage: "-f FILE [--read-only]   serve a file or block device",
		new:   func() TargetFactory { return &loopFactory{} },
	})
}

// loopFactory builds the reference loop target (ublk/loop).
type loopFactory struct {
	file     string
	readOnly bool
}

// Flags registers -f/--file and --read-only.
func (f *loopFactory) Flags(fs *flag.FlagSet) {
	fs.StringVar(&f.file, "f", "", "backing file or block device")
	fs.StringVar(&f.file, "file", "", "same as -f")
	fs.BoolVar(&f.readOnly, "read-only", false, "export read-only")
}

// Validate requires an existing, non-directory -f.
func (f *loopFactory) Validate() error {
	if strings.TrimSpace(f.file) == "" {
		return errors.New("loop: -f FILE is required")
	}
	st, err := os.Stat(f.file)
	if err != nil {
		return fmt.Errorf("loop: %w", err)
	}
	if st.IsDir() {
		return fmt.Errorf("loop: %s is a directory", f.file)
	}
	return nil
}

// Build opens the backing file with loop.Open.
func (f *loopFactory) Build() (ublk.Target, ublk.TargetParams, error) {
	l, err := loop.Open(f.file, loop.Options{ReadOnly: f.readOnly})
	if errors.Is(err, loop.ErrInUse) {
		if id, lerr := raid.LookupDevice(f.file); lerr == nil {
			if holder := imageHolder(id); holder != "" {
				err = fmt.Errorf("loop: %s is in use by %s", f.file, holder)
			}
		}
	}
	if err != nil {
		return nil, ublk.TargetParams{}, err
	}
	return l, l.Params(), nil
}

// Info records the backing file for `list`.
func (f *loopFactory) Info() map[string]any {
	return map[string]any{"file": f.file, "read_only": f.readOnly}
}
