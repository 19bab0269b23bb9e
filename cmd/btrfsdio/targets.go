package main

import (
	"fmt"
	"io"
	"sort"

	"github.com/btrfsdio/btrfsdio/tgt"
	"github.com/btrfsdio/btrfsdio/tgt/btrfs"
	"github.com/btrfsdio/btrfsdio/tgt/loop"
)

// targetTypes is the registry behind `add -t TYPE`: every target package
// below tgt/.
var targetTypes = map[string]tgt.Type{}

// registerTarget adds a target type.
func registerTarget(t tgt.Type) {
	if _, dup := targetTypes[t.Name]; dup {
		panic("btrfsdio: target type registered twice: " + t.Name)
	}
	targetTypes[t.Name] = t
}

func init() {
	registerTarget(btrfs.Type)
	registerTarget(loop.Type)
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
		fmt.Fprintf(w, "  %-9s %s\n", n, targetTypes[n].Usage)
	}
}
