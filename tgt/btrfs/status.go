package btrfs

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/tgt"
)

// Status is the target's state for `list`: the filesystem's counters, under
// their JSON names (no kernel counterpart).
type Status struct{ btrfsdio.Stats }

var (
	_ tgt.Status   = Status{}
	_ tgt.Reporter = (*Target)(nil)
)

// Status returns the filesystem's counters now.
func (t *Target) Status() tgt.Status { return Status{t.FS.Stats()} }

// decodeStatus is Type.DecodeStatus.
func decodeStatus(b []byte) (tgt.Status, error) {
	var st Status
	err := json.Unmarshal(b, &st)
	return st, err
}

// Lines are the volatile write detector's count, the resync and the
// read-only state, as far as there is anything to say.
func (st Status) Lines() []string {
	var out []string
	if st.VolatileChecked > 0 {
		out = append(out, fmt.Sprintf("zero-copy writes changed in flight: %d of %d", st.VolatileWrites, st.VolatileChecked))
	}
	if st.Resync != "" {
		out = append(out, "resync: "+st.Resync)
	}
	if st.Stats.ReadOnly != "" {
		out = append(out, "READ-ONLY after a failure: "+st.Stats.ReadOnly,
			"(writes and flushes fail, reads work: del, check the images, then add again)")
	}
	return out
}

// ReadOnly is FsError's cause (btrfsdio.Stats.ReadOnly).
func (st Status) ReadOnly() string { return st.Stats.ReadOnly }

// Warnings report zero-copy writes whose buffer changed in flight since
// prev.
func (st Status) Warnings(prev tgt.Status, every time.Duration) []string {
	var last int64
	if p, ok := prev.(Status); ok {
		last = p.VolatileWrites
	}
	if d := st.VolatileWrites - last; d > 0 {
		return []string{fmt.Sprintf("zero-copy: %d write(s) changed their buffer while in flight in the last %v (%d of %d checked so far); "+
			"the copies of a mirrored profile may differ: use --dio bounce", d, every, st.VolatileWrites, st.VolatileChecked)}
	}
	return nil
}

// Summary is the volatile write detector's totals.
func (st Status) Summary() string {
	if st.VolatileChecked == 0 {
		return ""
	}
	return fmt.Sprintf("volatile write detector: %d of %d zero-copy writes changed their buffer while in flight",
		st.VolatileWrites, st.VolatileChecked)
}
