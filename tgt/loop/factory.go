package loop

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/btrfsdio/btrfsdio/raid"
	"github.com/btrfsdio/btrfsdio/tgt"
	"github.com/btrfsdio/btrfsdio/ublk"
	"github.com/spf13/pflag"
)

// Type is the loop target of `add -t loop`.
var Type = tgt.Type{
	Name:  "loop",
	Usage: "-f FILE [--read-only]   serve a file or block device",
	New:   func() tgt.Factory { return &Factory{} },
}

// Factory builds the loop target from its flags (ublksrv's loop
// init_tgt).
type Factory struct {
	file     string
	readOnly bool
}

var _ tgt.Factory = (*Factory)(nil)

// Flags registers -f/--file and --read-only.
func (f *Factory) Flags(fs *pflag.FlagSet) {
	fs.StringVarP(&f.file, "file", "f", "", "backing file or block device")
	fs.BoolVar(&f.readOnly, "read-only", false, "export read-only")
}

// Validate requires an existing, non-directory -f.
func (f *Factory) Validate() error {
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

// Build opens the backing file with Open; a file some server holds is
// refused naming it.
func (f *Factory) Build(env tgt.Env) (ublk.Target, ublk.TargetParams, error) {
	l, err := Open(f.file, Options{ReadOnly: f.readOnly})
	if errors.Is(err, ErrInUse) && env.Holder != nil {
		if id, lerr := raid.LookupDevice(f.file); lerr == nil {
			if holder := env.Holder(id); holder != "" {
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
func (f *Factory) Info() map[string]any {
	return map[string]any{"file": f.file, "read_only": f.readOnly}
}
