package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"github.com/btrfsdio/btrfsdio/blk"
	"github.com/btrfsdio/btrfsdio/btrfsdio"
	"github.com/btrfsdio/btrfsdio/raid"
)

// The --json output of scrub, check, list, torture and race: one object
// on stdout, snake_case keys, documented in docs/json.md. A change that
// removes or renames a key, or changes its meaning, bumps jsonSchemaVersion;
// adding a key does not.
const jsonSchemaVersion = 1

// jsonHeader starts every --json object.
type jsonHeader struct {
	SchemaVersion int    `json:"schema_version"`
	Command       string `json:"command"`
	Version       string `json:"version"` // btrfsdio's
	Kernel        string `json:"kernel"`  // uname -r
	Time          string `json:"time"`    // RFC 3339, UTC, when the output was made
	ExitStatus    int    `json:"exit_status"`
}

func newJSONHeader(cmd string, exit int) jsonHeader {
	var u unix.Utsname
	kernel := ""
	if unix.Uname(&u) == nil {
		kernel = unix.ByteSliceToString(u.Release[:])
	}
	return jsonHeader{SchemaVersion: jsonSchemaVersion, Command: cmd, Version: version, Kernel: kernel,
		Time: time.Now().UTC().Format(time.RFC3339), ExitStatus: exit}
}

// writeJSON prints v, indented, on w.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// findingJSON is one damaged or repaired thing scrub or check found.
type findingJSON struct {
	// Kind: superblock, metadata, csum_error, differing_copies,
	// parity_mismatch, read_error, repaired, unrepairable.
	Kind    string  `json:"kind"`
	Logical *uint64 `json:"logical,omitempty"` // byte in the volume's address space
	Mirror  int     `json:"mirror,omitempty"`  // the copy, 1-based
	Stripe  string  `json:"stripe,omitempty"`  // RAID5/6 parity: P or Q
	// Image and Physical locate the copy: the image (or block device)
	// and the byte offset in it.
	Image    string  `json:"image,omitempty"`
	Physical *uint64 `json:"physical,omitempty"`
	// Checksum: crc32c of the data found and the one committed.
	Checksum *checksumJSON `json:"checksum,omitempty"`
	// MirrorGroups are the copies that agree with each other
	// (differing_copies), each group a list of mirrors.
	MirrorGroups [][]int    `json:"mirror_groups,omitempty"`
	Copies       []copyJSON `json:"copies,omitempty"`
	Detail       string     `json:"detail,omitempty"`
	Repaired     *bool      `json:"repaired,omitempty"`
	RepairError  string     `json:"repair_error,omitempty"`
}

type checksumJSON struct {
	Found    string `json:"found"`
	Expected string `json:"expected"`
}

// copyJSON locates one mirror of a sector.
type copyJSON struct {
	Mirror   int    `json:"mirror"`
	Image    string `json:"image,omitempty"`
	Physical uint64 `json:"physical"`
}

func u64(v uint64) *uint64 { return &v }

// locate finds where mirror (1-based) of the sector at logical lives, as
// a read of that mirror maps it (btrfs_map_block); ok false when it has
// no single place (RAID5/6 rebuilds, a missing device).
func locate(vol *raid.Volume, logical uint64, mirror int) (copyJSON, bool) {
	if mirror < 1 || (vol.Profile().IsRaid56() && mirror > 1) {
		return copyJSON{}, false
	}
	ioc, _, err := vol.MapBlock(blk.OpRead, logical, raid.SectorSize, mirror)
	if err != nil || len(ioc.Stripes) != 1 || ioc.Stripes[0].Dev == nil {
		return copyJSON{}, false
	}
	s := ioc.Stripes[0]
	return copyJSON{Mirror: mirror, Image: s.Dev.Path(), Physical: s.Physical}, true
}

// withPlace fills in f's image and physical offset from its logical and mirror.
func withPlace(vol *raid.Volume, f findingJSON) findingJSON {
	if f.Logical != nil {
		if c, ok := locate(vol, *f.Logical, f.Mirror); ok {
			f.Image, f.Physical = c.Image, u64(c.Physical)
		}
	}
	return f
}

// copyFindings lists the bad superblock and metadata copies.
func copyFindings(supers []raid.SuperCopy, meta []btrfsdio.MetaCopyStatus) []findingJSON {
	var out []findingJSON
	for _, c := range supers {
		if c.Err != nil {
			out = append(out, findingJSON{Kind: "superblock", Mirror: c.Index + 1, Image: c.Device, Physical: u64(c.Bytenr),
				Detail: c.Err.Error(), Repaired: repairedPtr(c.Repaired, c.RepairErr), RepairError: errString(c.RepairErr)})
		}
	}
	for _, c := range meta {
		if c.Err != nil {
			out = append(out, findingJSON{Kind: "metadata", Mirror: c.Index + 1, Image: c.Path, Physical: u64(c.Offset),
				Detail: c.Err.Error(), Repaired: repairedPtr(c.Repaired, c.RepairErr), RepairError: errString(c.RepairErr)})
		}
	}
	return out
}

// repairedPtr is nil when no repair was tried.
func repairedPtr(repaired bool, err error) *bool {
	if !repaired && err == nil {
		return nil
	}
	return &repaired
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// dataFindings lists what a data scrub found and did.
func dataFindings(vol *raid.Volume, rep *raid.ScrubReport) []findingJSON {
	var out []findingJSON
	for _, c := range rep.CsumErrors {
		out = append(out, withPlace(vol, findingJSON{Kind: "csum_error", Logical: u64(c.Logical), Mirror: c.Mirror,
			Checksum: &checksumJSON{Found: fmt.Sprintf("0x%08x", c.Got), Expected: fmt.Sprintf("0x%08x", c.Want)}}))
	}
	for _, d := range rep.Differences {
		f := findingJSON{Kind: "differing_copies", Logical: u64(d.Logical), MirrorGroups: d.Groups}
		for _, g := range d.Groups {
			for _, m := range g {
				if c, ok := locate(vol, d.Logical, m); ok {
					f.Copies = append(f.Copies, c)
				}
			}
		}
		out = append(out, f)
	}
	for _, m := range rep.ParityMismatches {
		var which string
		switch {
		case m.P && m.Q:
			which = "P and Q"
		case m.P:
			which = "P"
		default:
			which = "Q"
		}
		out = append(out, findingJSON{Kind: "parity_mismatch", Logical: u64(m.FullStripe + m.Offset),
			Detail: fmt.Sprintf("full stripe %d, offset %d: %s disagree with the data", m.FullStripe, m.Offset, which)})
	}
	for _, r := range rep.ReadErrors {
		out = append(out, findingJSON{Kind: "read_error", Logical: u64(r.Logical), Mirror: r.Mirror, Stripe: r.Stripe,
			Image: r.Device, Physical: u64(r.Physical), Detail: errString(r.Err)})
	}
	for _, r := range rep.Repaired {
		f := findingJSON{Kind: "repaired", Logical: u64(r.Logical), Mirror: r.Mirror, Stripe: r.Stripe, Detail: r.Why}
		if r.Stripe == "" {
			f = withPlace(vol, f)
		}
		out = append(out, f)
	}
	for _, u := range rep.Unrepairable {
		out = append(out, findingJSON{Kind: "unrepairable", Logical: u64(u.Logical), Detail: u.Why})
	}
	return out
}

// staleJSON is a device behind the volume (see printStale).
type staleJSON struct {
	Image      string `json:"image"`
	Generation uint64 `json:"generation"`
}

func staleDevices(stale []raid.StaleDevice) []staleJSON {
	out := []staleJSON{}
	for _, d := range stale {
		out = append(out, staleJSON{Image: d.Path, Generation: d.Generation})
	}
	return out
}
