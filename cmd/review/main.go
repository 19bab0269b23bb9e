// Command review prints the seed patch hunk by hunk, each upstream function
// next to the Go function that ports it, and fails when a definition of the
// diff has no Go twin or docs/upstream-map.md names a twin that no longer
// exists:
//
//	review [-only NAME] [-q] [-write] [-map FILE] [SEED]
//
// SEED defaults to ../shared/seed/ beside the repository. Line numbers in
// the map are checked loosely (a moved twin is a note, not a failure);
// -write updates them.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/btrfsdio/btrfsdio/internal/review"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("review", flag.ContinueOnError)
	opts := review.Options{}
	fs.StringVar(&opts.Map, "map", "", "the upstream map (default: ROOT/"+review.MapPath+")")
	fs.StringVar(&opts.Only, "only", "", "print only the upstream definition of this name (e.g. btrfs_dio_submit_io)")
	fs.BoolVar(&opts.Quiet, "q", false, "print only the findings")
	fs.BoolVar(&opts.Write, "write", false, "update the map's line numbers")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: review [-only NAME] [-q] [-write] [-map FILE] [SEED]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return 2
	}
	root, err := review.ModuleRoot(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	opts.Root = root
	opts.Seed = review.DefaultSeed(root)
	if fs.NArg() == 1 {
		opts.Seed = fs.Arg(0)
	}
	if opts.Map == "" {
		opts.Map = filepath.Join(root, review.MapPath)
	}
	f, err := review.Run(opts, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if len(f.Problems) > 0 {
		return 1
	}
	return 0
}
