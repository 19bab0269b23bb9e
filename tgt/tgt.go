// Package tgt is what the btrfsdio CLI knows of a ublk target: ublksrv's
// struct ublk_tgt_ops reduced to its option parsing, its build and its
// description for `list`. Each target is one package below (tgt/btrfs,
// tgt/loop) that owns its flags, validation, build and IO; the CLI's
// generic code (add, list, recover, del) only sees a Factory.
package tgt

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/btrfsdio/btrfsdio/raid"
	"github.com/btrfsdio/btrfsdio/ublk"
	"github.com/spf13/pflag"
)

// Factory turns one target type's command-line flags into a ublk.Target
// (ublksrv's struct ublk_tgt_ops: init_tgt with its own option parsing).
type Factory interface {
	// Flags registers the type's flags on fs (next to add's common flags),
	// GNU style: --long, with a one-letter -s where it has one.
	Flags(fs *pflag.FlagSet)
	// Validate checks the parsed flags without side effects. `add` calls it
	// before daemonizing so mistakes show up on the terminal.
	Validate() error
	// Build opens the backing store and returns the target and the device it
	// offers. It runs in the server process.
	Build(env Env) (ublk.Target, ublk.TargetParams, error)
	// Info describes the target for `list` (ublksrv's "target" JSON).
	Info() map[string]any
}

// Env is what a target's Build gets from the server that runs it.
type Env struct {
	// RunDir is the private directory of the servers' run files (a tmpfs),
	// where a target may keep state that must outlive its server.
	RunDir string
	// Holder names the running server that holds the image id, "" when
	// none does (for the message of a failed claim).
	Holder func(id raid.DeviceID) string
	// Notice tells whoever runs add something it should know (nil: nobody).
	Notice func(msg string)
}

// Type is one entry of the registry behind `add -t TYPE`.
type Type struct {
	Name  string
	Usage string // the type's flags, for help
	New   func() Factory
	// DecodeStatus reads back the Status of a Reporter from its JSON (nil
	// when the type's targets have none).
	DecodeStatus func(b []byte) (Status, error)
}

// FileList is a repeatable -f flag (a pflag.Value).
type FileList []string

func (l *FileList) String() string     { return strings.Join(*l, ",") }
func (l *FileList) Set(s string) error { *l = append(*l, s); return nil }

// Type names the value in help: -f, --file PATH.
func (l *FileList) Type() string { return "PATH" }

// ParseSize reads 4096, 64K, 256M, 1G, 2T (no kernel counterpart: the
// command line's sizes, as memparse reads the kernel's).
func ParseSize(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty size")
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// Plural is "1 device", "2 devices" (no kernel counterpart: wording shared
// by the targets and the CLI).
func Plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// Status is a target's live state: `list` shows it and the server keeps it
// current in its run file. The target marshals it itself (encoding/json);
// the CLI reads it back with its Type's DecodeStatus.
type Status interface {
	// Lines are what `list` prints under the device, one a line.
	Lines() []string
	// ReadOnly says why the target stopped taking writes, "" while it
	// takes them: recover does not bring such a device back writable.
	ReadOnly() string
	// Warnings are what the server logs about the change from prev, its
	// state every earlier.
	Warnings(prev Status, every time.Duration) []string
	// Summary is what the server logs of it when it stops ("" for nothing).
	Summary() string
}

// Reporter is a target with a Status.
type Reporter interface {
	Status() Status
}
