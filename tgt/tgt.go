// Package tgt is what the btrfsdio CLI knows of a ublk target: ublksrv's
// struct ublk_tgt_ops reduced to its option parsing, its build and its
// description for `list`. Each target is one package below (tgt/btrfs,
// tgt/loop) that owns its flags, validation, build and IO; the CLI's
// generic code (add, list, recover, del) only sees a Factory.
package tgt

import (
	"fmt"
	"math/big"
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

// ParseSize reads a size: 4096, 512k, 256M, 1.5G, 1GiB, 2T (suffixes K M G T
// P E, any case, optionally followed by B or iB, all powers of 1024; a
// fraction must come to whole bytes). The error names the value as given
// (no kernel counterpart: the command line's sizes, as memparse reads the
// kernel's).
func ParseSize(s string) (int64, error) {
	num := strings.TrimSpace(s)
	lower := strings.ToLower(num)
	for _, unit := range []string{"ib", "b"} {
		if strings.HasSuffix(lower, unit) && len(lower) > len(unit) {
			lower = lower[:len(lower)-len(unit)]
			if unit == "ib" && !strings.ContainsAny(lower[len(lower)-1:], "kmgtpe") {
				return 0, fmt.Errorf("bad size %q: want a number with an optional K, M, G, T, P or E suffix (e.g. 512k, 1.5G, 1GiB)", s)
			}
			break
		}
	}
	shift := uint(0)
	if n := len(lower); n > 0 {
		if i := strings.IndexByte("kmgtpe", lower[n-1]); i >= 0 {
			shift = 10 * uint(i+1)
			lower = lower[:n-1]
		}
	}
	if lower == "" || strings.Trim(lower, "0123456789.") != "" || strings.Count(lower, ".") > 1 ||
		lower[0] == '.' || lower[len(lower)-1] == '.' {
		return 0, fmt.Errorf("bad size %q: want a number with an optional K, M, G, T, P or E suffix (e.g. 512k, 1.5G, 1GiB)", s)
	}
	r, ok := new(big.Rat).SetString(lower)
	if !ok {
		return 0, fmt.Errorf("bad size %q", s)
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), shift)))
	switch {
	case !r.IsInt():
		return 0, fmt.Errorf("bad size %q: not a whole number of bytes", s)
	case r.Sign() <= 0:
		return 0, fmt.Errorf("bad size %q: must be positive", s)
	case r.Num().BitLen() > 62:
		return 0, fmt.Errorf("size %q is too large: the limit is 4E (2^62 bytes)", s)
	}
	return r.Num().Int64(), nil
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
