package raid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"sync"

	"github.com/btrfsdio/btrfsdio/blk"
)

// The RAID5/6 journal closes the write hole. No kernel counterpart in btrfs,
// which has the hole; the idea is md's raid5 journal (raid5-cache.c), with
// the log on the volume's own devices instead of a separate one: before a
// write that changes the parity of a full stripe that may hold committed
// data (every read-modify-write, and in-place full-stripe overwrites), the
// new data and parity of the columns it changes are appended to the journal
// area of nparity+1 devices and flushed; only then do the in-place writes
// start. A power cut between the in-place writes leaves data and parity
// that disagree, and a later rebuild (a device lost) would compute garbage
// from them; at the next open, replaying the entry rewrites them whole.
// Entries are retired once a barrier of every device has made their
// in-place writes durable.
//
// On disk (at Superblock.JournalOffset of each device, JournalBytes long):
// two header sectors, written alternately, recording the retired sequence
// number; then entries from journalEntriesStart, appended at one head
// shared by every device and reset to the start once all are retired. An
// entry is one header sector (its segments: stripe index, byte range in the
// stripe) followed by the segments' bytes, with a crc32c over all of it: a
// torn entry fails its crc and is ignored, which is right because its
// in-place writes never started. Sequence numbers only grow, so the entries
// of a device are read from the start while they keep growing; what lies
// beyond is from before a reset, already retired.
const (
	journalHeaderMagic  = "BDIOJHDR"
	journalEntryMagic   = "BDIOJENT"
	journalEntriesStart = 2 * SectorSize
	journalSegBytes     = 24
	journalSegsOff      = 64
	journalMaxSegs      = (SectorSize - journalSegsOff) / journalSegBytes
	// Format gives a RAID5/6 volume 1/64 of a device within
	// [minJournalBytes, maxJournalBytes] (formatJournalBytes).
	minJournalBytes = 4 << 20
	maxJournalBytes = 64 << 20
)

// formatJournalBytes sizes the journal area of a volume of ndevs devices of
// size bytes, meta of which the metadata area takes: none without parity;
// else 1/64 of the device within [4 MiB, 64 MiB], and always room for two
// of the largest entries; a device too small for 4 MiB besides the data's
// minimum gets that floor only.
func formatJournalBytes(p Profile, ndevs int, size, meta uint64) uint64 {
	if !p.IsRaid56() {
		return 0
	}
	floor := journalFloor(uint64(ndevs))
	j := max(min(max(size/64, minJournalBytes), maxJournalBytes), floor)
	j = (j + StripeLen - 1) / StripeLen * StripeLen
	if size < MinDeviceSize+meta || size-MinDeviceSize-meta < j {
		return floor
	}
	return j
}

// journalFloor is the smallest journal a RAID5/6 volume of ndevs devices
// may have: the headers and two of the largest entries, in whole stripes.
func journalFloor(ndevs uint64) uint64 {
	j := journalEntriesStart + 2*(SectorSize+ndevs*StripeLen)
	return (j + StripeLen - 1) / StripeLen * StripeLen
}

// journalMaxEntry is the largest entry a full stripe over nstripes stripes
// can need: the header sector and every stripe whole.
func journalMaxEntry(nstripes int) uint64 { return SectorSize + uint64(nstripes)*StripeLen }

// journalSeg is one run of bytes of one stripe (raid_map order) an entry
// carries.
type journalSeg struct {
	stripe int
	rg     byteRange
}

// journalEntry is one entry read back.
type journalEntry struct {
	seq      uint64
	full     uint64 // full stripe logical
	segs     []journalSeg
	payload  []byte
	location string
}

// raid56Journal is the journal of one open volume.
type raid56Journal struct {
	v      *Volume
	offset uint64 // journal area start on every device
	size   uint64 // JournalBytes
	fsid   [16]byte

	mu      sync.Mutex
	cond    *sync.Cond
	head    uint64          // where the next entry goes, from the area start
	seq     uint64          // last sequence number handed out
	retired uint64          // entries up to here are retired on disk
	hdrGen  uint64          // header writes so far: picks the header sector
	pending map[uint64]bool // entries whose in-place writes are not done
}

// journalDevices are the devices an entry goes to: the first nparity+1
// present ones, so that it survives losing as many devices as the profile
// tolerates.
func (j *raid56Journal) journalDevices() []*Device {
	var out []*Device
	for _, d := range j.v.devs {
		if !d.Missing() && len(out) < j.v.attr.nparity+1 {
			out = append(out, d)
		}
	}
	return out
}

// log appends the entry for the columns pl changes of r's full stripe (the
// data from r's buffers, where raid56Write put the bio's data, and the new
// parity) and makes it durable, before any in-place write. The returned
// sequence number must be handed to done once the in-place writes are over.
func (j *raid56Journal) log(r *rbio, pl writePlan) (uint64, error) {
	var segs []journalSeg
	for i, c := range pl.covers {
		if !c.empty() {
			segs = append(segs, journalSeg{i, c.byteRange})
		}
	}
	for i := r.ndata; i < len(r.bufs); i++ {
		for _, rg := range pl.runs {
			segs = append(segs, journalSeg{i, rg})
		}
	}
	if len(segs) > journalMaxSegs {
		return 0, fmt.Errorf("raid: journal: %d segments, an entry holds %d", len(segs), journalMaxSegs)
	}
	n := uint64(SectorSize)
	for _, s := range segs {
		n += s.rg.hi - s.rg.lo
	}
	if n > j.size-journalEntriesStart {
		return 0, fmt.Errorf("raid: journal: a %d-byte entry does not fit the %d-byte journal", n, j.size)
	}
	buf := blk.AlignedBuffer(int(n))
	off := uint64(SectorSize)
	for _, s := range segs {
		off += uint64(copy(buf[off:], r.bufs[s.stripe][s.rg.lo:s.rg.hi]))
	}

	j.mu.Lock()
	defer j.mu.Unlock()
	for j.head+n > j.size {
		// A full journal forces the barrier that retires it: wait for the
		// in-place writes in flight, then flush every device.
		if len(j.pending) > 0 {
			j.cond.Wait()
			continue
		}
		j.mu.Unlock()
		err := j.v.Flush()
		j.mu.Lock()
		if err != nil {
			return 0, fmt.Errorf("raid: journal full, barrier to retire it: %w", err)
		}
	}
	seq := j.seq + 1
	j.encodeEntry(buf, seq, r.ioc.FullStripeLogical, segs)
	devs := j.journalDevices()
	errs := make([]error, len(devs))
	var wg sync.WaitGroup
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.writeBuf(buf, j.offset+j.head); err != nil {
				errs[i] = err
				return
			}
			errs[i] = d.flush()
		}()
	}
	wg.Wait()
	good := 0
	for i, err := range errs {
		if err != nil {
			j.v.log.Warnf("raid: journal entry %d on %s: %v", seq, devs[i].Path(), err)
		} else {
			good++
		}
	}
	// The entry must survive losing the devices the profile tolerates: of
	// the nparity+1 devices it went to, those that failed it are already
	// lost, so one good copy is what is left to require.
	if good == 0 {
		return 0, fmt.Errorf("raid: journal entry %d for full stripe %d reached %d of %d devices: %w",
			seq, r.ioc.FullStripeLogical, good, len(devs), errors.Join(errs...))
	}
	j.seq = seq
	j.head += n
	j.pending[seq] = true
	return seq, nil
}

// done marks entry seq's in-place writes as over: the next barrier may
// retire it.
func (j *raid56Journal) done(seq uint64) {
	j.mu.Lock()
	delete(j.pending, seq)
	j.cond.Broadcast()
	j.mu.Unlock()
}

// retirable is the newest sequence number up to which every entry's
// in-place writes are done.
func (j *raid56Journal) retirable() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	t := j.seq
	for s := range j.pending {
		t = min(t, s-1)
	}
	return t
}

// retire records on every present device that the entries up to target
// are retired (a barrier has made their in-place writes durable), flushes
// the record, and lets the next entry start over at the area start when
// nothing newer was appended meanwhile.
func (j *raid56Journal) retire(target uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if target > j.retired {
		if err := j.writeHeader(target); err != nil {
			return err
		}
		j.retired = target
	}
	if j.seq == j.retired && len(j.pending) == 0 {
		j.head = journalEntriesStart
	}
	return nil
}

// writeHeader writes the header recording retired to every present device,
// in the sector the older header occupies, and flushes it.
func (j *raid56Journal) writeHeader(retired uint64) error {
	j.hdrGen++
	b := blk.AlignedBuffer(SectorSize)
	le := binary.LittleEndian
	copy(b[8:16], journalHeaderMagic)
	copy(b[16:32], j.fsid[:])
	le.PutUint64(b[32:], j.hdrGen)
	le.PutUint64(b[40:], retired)
	le.PutUint32(b[0:], crc32.Checksum(b[4:], castagnoli))
	at := j.offset + (j.hdrGen%2)*SectorSize
	var errs []error
	good := 0
	for _, d := range j.v.devs {
		if d.Missing() {
			continue
		}
		err := d.writeBuf(b, at)
		if err == nil {
			err = d.flush()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", d.Path(), err))
			continue
		}
		good++
	}
	if good == 0 {
		return fmt.Errorf("raid: journal: recording entries up to %d as retired: %w", retired, errors.Join(errs...))
	}
	if len(errs) > 0 {
		j.v.log.Warnf("raid: journal: recording entries up to %d as retired: %v", retired, errors.Join(errs...))
	}
	return nil
}

func (j *raid56Journal) encodeEntry(buf []byte, seq, full uint64, segs []journalSeg) {
	le := binary.LittleEndian
	clear(buf[:SectorSize])
	copy(buf[8:16], journalEntryMagic)
	copy(buf[16:32], j.fsid[:])
	le.PutUint64(buf[32:], seq)
	le.PutUint64(buf[40:], full)
	le.PutUint32(buf[48:], uint32(len(segs)))
	le.PutUint64(buf[56:], uint64(len(buf)))
	for i, s := range segs {
		o := journalSegsOff + i*journalSegBytes
		le.PutUint32(buf[o:], uint32(s.stripe))
		le.PutUint64(buf[o+8:], s.rg.lo)
		le.PutUint64(buf[o+16:], s.rg.hi-s.rg.lo)
	}
	le.PutUint32(buf[0:], crc32.Checksum(buf[4:], castagnoli))
}

// readHeader returns the valid header with the newest generation on d:
// (generation, retired); ok false when there is none.
func (j *raid56Journal) readHeader(d *Device) (gen, retired uint64, ok bool) {
	le := binary.LittleEndian
	for i := uint64(0); i < 2; i++ {
		b := blk.AlignedBuffer(SectorSize)
		if d.readBuf(b, j.offset+i*SectorSize) != nil {
			continue
		}
		if string(b[8:16]) != journalHeaderMagic || !bytes.Equal(b[16:32], j.fsid[:]) ||
			le.Uint32(b[0:]) != crc32.Checksum(b[4:], castagnoli) {
			continue
		}
		if g := le.Uint64(b[32:]); !ok || g > gen {
			gen, retired, ok = g, le.Uint64(b[40:]), true
		}
	}
	return gen, retired, ok
}

// scan reads d's entries from the area start while they are whole and their
// sequence numbers grow.
func (j *raid56Journal) scan(d *Device) []journalEntry {
	le := binary.LittleEndian
	var out []journalEntry
	var last uint64
	for pos := uint64(journalEntriesStart); pos+SectorSize <= j.size; {
		hdr := blk.AlignedBuffer(SectorSize)
		if d.readBuf(hdr, j.offset+pos) != nil || string(hdr[8:16]) != journalEntryMagic || !bytes.Equal(hdr[16:32], j.fsid[:]) {
			break
		}
		seq, full, nsegs, n := le.Uint64(hdr[32:]), le.Uint64(hdr[40:]), le.Uint32(hdr[48:]), le.Uint64(hdr[56:])
		if seq <= last || n < SectorSize || n%SectorSize != 0 || n > j.size-pos || nsegs > journalMaxSegs {
			break
		}
		buf := blk.AlignedBuffer(int(n))
		if d.readBuf(buf, j.offset+pos) != nil || le.Uint32(buf[0:]) != crc32.Checksum(buf[4:], castagnoli) {
			break
		}
		e := journalEntry{seq: seq, full: full, payload: buf[SectorSize:], location: fmt.Sprintf("%s@%d", d.Path(), j.offset+pos)}
		sum := uint64(0)
		for i := 0; i < int(nsegs); i++ {
			o := journalSegsOff + i*journalSegBytes
			s := journalSeg{stripe: int(le.Uint32(buf[o:])), rg: byteRange{le.Uint64(buf[o+8:]), 0}}
			l := le.Uint64(buf[o+16:])
			if l > StripeLen || s.rg.lo > StripeLen-l {
				e.segs = nil
				break
			}
			s.rg.hi = s.rg.lo + l
			sum += l
			e.segs = append(e.segs, s)
		}
		if e.segs == nil || sum != n-SectorSize {
			break // a crc-valid entry this program would never write: stop trusting the area
		}
		out = append(out, e)
		last = seq
		pos += n
	}
	return out
}

// openJournal is the journal's mount: read what every present device holds,
// replay in sequence order every whole entry newer than the retired point
// onto the present devices, make that durable with a barrier, and retire
// it. It runs before anything reads the volume, degraded or not.
func (v *Volume) openJournal(sb *Superblock) error {
	if sb.JournalBytes == 0 {
		return nil
	}
	if need := journalEntriesStart + journalMaxEntry(v.chunk.numStripes()); sb.JournalBytes < need {
		return fmt.Errorf("raid: journal of %d bytes cannot hold an entry of %d stripes (%d bytes)", sb.JournalBytes, v.chunk.numStripes(), need)
	}
	j := &raid56Journal{v: v, offset: sb.JournalOffset(), size: sb.JournalBytes, fsid: sb.Fsid,
		head: journalEntriesStart, pending: map[uint64]bool{}}
	j.cond = sync.NewCond(&j.mu)
	entries := map[uint64]journalEntry{}
	maxSeq := uint64(0)
	for _, d := range v.devs {
		if d.Missing() {
			continue
		}
		if gen, retired, ok := j.readHeader(d); ok {
			j.hdrGen = max(j.hdrGen, gen)
			j.retired = max(j.retired, retired)
		}
		for _, e := range j.scan(d) {
			maxSeq = max(maxSeq, e.seq)
			if _, dup := entries[e.seq]; !dup {
				entries[e.seq] = e
			}
		}
	}
	var seqs []uint64
	for s := range entries {
		if s > j.retired {
			seqs = append(seqs, s)
		}
	}
	slices.Sort(seqs)
	for _, d := range v.devs {
		if d.readOnly && !d.Missing() {
			// An offline scrub or check opens read-only: it cannot replay,
			// and reports the parity the replay would have rewritten.
			if len(seqs) > 0 {
				v.log.Warnf("raid: journal: %d entries (%d..%d) not replayed: %s is open read-only; mount the volume to replay them",
					len(seqs), seqs[0], seqs[len(seqs)-1], d.Path())
			}
			return nil
		}
	}
	for _, s := range seqs {
		if err := v.replayJournalEntry(entries[s]); err != nil {
			return err
		}
	}
	j.seq = max(maxSeq, j.retired)
	if len(seqs) > 0 {
		v.log.Warnf("raid: journal: replayed %d entries (%d..%d) of the RAID5/6 journal", len(seqs), seqs[0], seqs[len(seqs)-1])
		if err := v.Flush(); err != nil {
			return fmt.Errorf("raid: journal: barrier after the replay: %w", err)
		}
	}
	if j.seq > j.retired {
		j.mu.Lock()
		err := j.writeHeader(j.seq)
		j.mu.Unlock()
		if err != nil {
			return err
		}
		j.retired = j.seq
	}
	v.journal = j
	return nil
}

// replayJournalEntry rewrites the data and parity an entry carries in
// place, on the devices present.
func (v *Volume) replayJournalEntry(e journalEntry) error {
	full := v.FullStripeLen()
	if e.full%full != 0 || e.full >= v.chunk.length {
		return fmt.Errorf("raid: journal entry %d at %s: full stripe %d is not one of this volume's", e.seq, e.location, e.full)
	}
	ioc, _, err := v.MapBlock(blk.OpWrite, e.full, full, 0)
	if err != nil {
		return fmt.Errorf("raid: journal entry %d at %s: %w", e.seq, e.location, err)
	}
	off := uint64(0)
	for _, s := range e.segs {
		n := s.rg.hi - s.rg.lo
		if s.stripe >= len(ioc.Stripes) {
			return fmt.Errorf("raid: journal entry %d at %s: stripe %d of %d", e.seq, e.location, s.stripe, len(ioc.Stripes))
		}
		st := ioc.Stripes[s.stripe]
		if !st.Dev.Missing() {
			if err := st.Dev.writeBuf(e.payload[off:off+n], st.Physical+s.rg.lo); err != nil {
				return fmt.Errorf("raid: journal: replaying entry %d at %s: %w", e.seq, e.location, err)
			}
		}
		off += n
	}
	return nil
}
