package loop

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/btrfsdio/btrfsdio/ublk"
	"golang.org/x/sys/unix"
)

// memData is an in-memory RequestData, standing in for the request pages.
type memData struct {
	b     []byte
	reads int
	fail  error
}

func (m *memData) ReadAt(p []byte, off int64) (int, error) {
	m.reads++
	if m.fail != nil {
		return 0, m.fail
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memData) WriteAt(p []byte, off int64) (int, error) {
	if m.fail != nil {
		return 0, m.fail
	}
	if off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("write past request end")
	}
	return copy(m.b[off:], p), nil
}

const fileSize = 1 << 20

// newLoop creates a 1 MiB file whose byte i is i*7 (mod 256) and opens it.
func newLoop(t *testing.T, opts Options) (*Target, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backing")
	content := make([]byte, fileSize)
	for i := range content {
		content[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l, path
}

func fileBytes(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func req(op ublk.Op, sector uint64, sectors uint32, data ublk.RequestData) *ublk.Request {
	return &ublk.Request{Op: op, Sector: sector, Sectors: sectors, Data: data}
}

func TestParams(t *testing.T) {
	l, _ := newLoop(t, Options{})
	p := l.Params()
	if p.Size != fileSize || p.LogicalBlockSize != 512 || p.MaxIOBytes != ublk.DefaultMaxIOBytes ||
		!p.VolatileCache || !p.FUA || !p.Discard || !p.WriteZeroes || p.ReadOnly {
		t.Errorf("params %+v", p)
	}
	ro, _ := newLoop(t, Options{ReadOnly: true, MaxIOBytes: 256 << 10})
	if p := ro.Params(); !p.ReadOnly || p.VolatileCache || p.Discard || p.MaxIOBytes != 256<<10 {
		t.Errorf("read-only params %+v", p)
	}
}

func TestRead(t *testing.T) {
	l, path := newLoop(t, Options{MaxIOBytes: 4096}) // several chunks per request
	d := &memData{b: make([]byte, 3*4096+512)}
	if got := l.Handle(req(ublk.OpRead, 3, uint32(len(d.b)/512), d)); got != int32(len(d.b)) {
		t.Fatalf("read = %d", got)
	}
	if !bytes.Equal(d.b, fileBytes(t, path, 3*512, int64(len(d.b)))) {
		t.Fatal("read returned other bytes than the file holds at sector 3")
	}
}

func TestWriteAndFUA(t *testing.T) {
	l, path := newLoop(t, Options{MaxIOBytes: 4096})
	d := &memData{b: bytes.Repeat([]byte("ublk"), 2048)} // 8 KiB
	r := req(ublk.OpWrite, 100, 16, d)
	r.Flags = ublk.ReqFUA
	if got := l.Handle(r); got != 8192 {
		t.Fatalf("write = %d", got)
	}
	if !bytes.Equal(fileBytes(t, path, 100*512, 8192), d.b) {
		t.Fatal("file does not hold the written bytes")
	}
	if d.reads != 2 {
		t.Errorf("request data read %d times, want 2 chunks", d.reads)
	}
	if got := l.Handle(req(ublk.OpFlush, 0, 0, nil)); got != 0 {
		t.Fatalf("flush = %d", got)
	}
}

func TestDiscardAndWriteZeroes(t *testing.T) {
	for _, tc := range []struct {
		op    ublk.Op
		flags ublk.ReqFlags
	}{{ublk.OpDiscard, 0}, {ublk.OpWriteZeroes, 0}, {ublk.OpWriteZeroes, ublk.ReqNoUnmap}} {
		l, path := newLoop(t, Options{})
		r := req(tc.op, 16, 64, nil) // 32 KiB at 8 KiB
		r.Flags = tc.flags
		if got := l.Handle(r); got != 0 {
			t.Fatalf("%s = %d", tc.op, got)
		}
		if got := fileBytes(t, path, 16*512, 64*512); !bytes.Equal(got, make([]byte, len(got))) {
			t.Errorf("%s flags %#x: range not zero", tc.op, tc.flags)
		}
		// Neighbours untouched, size kept.
		before, after := int64(16*512-1), int64(80*512)
		if got := fileBytes(t, path, before, 1)[0]; got != byte(before*7) {
			t.Errorf("%s clobbered the byte before the range", tc.op)
		}
		if got := fileBytes(t, path, after, 1)[0]; got != byte(after*7) {
			t.Errorf("%s clobbered the byte after the range", tc.op)
		}
		if st, _ := os.Stat(path); st.Size() != fileSize {
			t.Errorf("%s changed the file size to %d", tc.op, st.Size())
		}
	}
}

func TestWriteZeroesFallback(t *testing.T) {
	l, path := newLoop(t, Options{})
	l.noZeroRange.Store(true) // as on a file system without ZERO_RANGE
	r := req(ublk.OpWriteZeroes, 8, 8, nil)
	r.Flags = ublk.ReqNoUnmap // and no punching either: plain zero writes
	if got := l.Handle(r); got != 0 {
		t.Fatalf("write zeroes = %d", got)
	}
	if got := fileBytes(t, path, 8*512, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Error("range not zero")
	}
}

func TestErrors(t *testing.T) {
	l, _ := newLoop(t, Options{})
	if got := l.Handle(req(ublk.Op(4), 0, 8, nil)); got != -int32(unix.EOPNOTSUPP) {
		t.Errorf("unknown op = %d", got)
	}
	beyond := &memData{b: make([]byte, 4096)}
	if got := l.Handle(req(ublk.OpRead, fileSize/512-4, 8, beyond)); got != -int32(unix.EIO) {
		t.Errorf("read past the end = %d", got)
	}
	broken := &memData{b: make([]byte, 4096), fail: unix.EFAULT}
	if got := l.Handle(req(ublk.OpWrite, 0, 8, broken)); got != -int32(unix.EFAULT) {
		t.Errorf("write with failing request data = %d", got)
	}
	broken.fail = errors.New("no errno")
	if got := l.Handle(req(ublk.OpRead, 0, 8, broken)); got != -int32(unix.EIO) {
		t.Errorf("read with failing request data = %d", got)
	}
	ro, _ := newLoop(t, Options{ReadOnly: true})
	if got := ro.Handle(req(ublk.OpWrite, 0, 8, &memData{b: make([]byte, 4096)})); got != -int32(unix.EROFS) {
		t.Errorf("write on read-only = %d", got)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing"), Options{}); err == nil {
		t.Error("missing file accepted")
	}
	small := filepath.Join(dir, "small")
	os.WriteFile(small, []byte("tiny"), 0o600)
	if _, err := Open(small, Options{}); err == nil {
		t.Error("file smaller than a block accepted")
	}
	if _, err := Open(dir, Options{}); err == nil {
		t.Error("directory accepted")
	}
	odd := filepath.Join(dir, "odd")
	os.WriteFile(odd, make([]byte, 4096+100), 0o600)
	l, err := Open(odd, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Size() != 4096 {
		t.Errorf("size of a 4196-byte file = %d, want 4096", l.Size())
	}
}

// wrappingRequests start where sector<<9 wraps past 2^64: at 2^55 the byte
// offset is 0, just below it negative, at 2^54 the most negative int64.
var wrappingRequests = []struct {
	sector  uint64
	sectors uint32
}{
	{1<<55 - 1, 8}, // also (1<<64-1)>>9
	{1 << 55, 8},
	{1<<55 + 8, 8},
	{1 << 54, 8},
	{^uint64(0), 1},
	{fileSize/512 - 4, 8}, // no wrap, just past the end
}

// TestWrappingSectorRefused: a request whose sector plus length wraps is
// refused with EIO (bio_check_eod), never served at the wrapped offset:
// the backing file is unchanged and no request byte is read.
func TestWrappingSectorRefused(t *testing.T) {
	l, path := newLoop(t, Options{})
	want := fileBytes(t, path, 0, fileSize)
	for _, w := range wrappingRequests {
		for _, op := range []ublk.Op{ublk.OpWrite, ublk.OpRead, ublk.OpDiscard, ublk.OpWriteZeroes} {
			data := &memData{b: bytes.Repeat([]byte{0xee}, int(w.sectors)<<9)}
			if got := l.Handle(req(op, w.sector, w.sectors, data)); got != -int32(unix.EIO) {
				t.Errorf("%s of %d sectors at sector %d = %d, want -EIO", op, w.sectors, w.sector, got)
			}
			if data.reads != 0 {
				t.Errorf("%s at sector %d read the request's data", op, w.sector)
			}
		}
	}
	if !bytes.Equal(fileBytes(t, path, 0, fileSize), want) {
		t.Error("a refused request changed the backing file")
	}
}

// TestOpenClaimsTheBackingFile: while a loop target has its file open, a
// second writer is refused with ErrInUse, and so is a reader; two readers
// share it; Close releases it.
func TestOpenClaimsTheBackingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(path, make([]byte, fileSize), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range []Options{{}, {ReadOnly: true}} {
		if _, err := Open(path, opts); !errors.Is(err, ErrInUse) {
			t.Errorf("second open (read-only %v) while a writer holds it: %v, want ErrInUse", opts.ReadOnly, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	r1, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open after Close: %v", err)
	}
	defer r1.Close()
	r2, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("two readers: %v", err)
	}
	defer r2.Close()
	if _, err := Open(path, Options{}); !errors.Is(err, ErrInUse) {
		t.Errorf("a writer beside readers: %v, want ErrInUse", err)
	}
}
