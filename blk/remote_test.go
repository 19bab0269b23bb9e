package blk

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
)

// countingRemote is remote memory that counts the reads made of it.
type countingRemote struct {
	memRemote
	reads int
}

func (c *countingRemote) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	return c.memRemote.ReadAt(p, off)
}

// CopyFromBio reads contiguous remote pages of one memory in one call, and
// breaks the run at a gap, at another memory and at a local page.
func TestCopyFromBioCoalescesRemoteRuns(t *testing.T) {
	a := &countingRemote{memRemote: memRemote{b: fill(16*PageSize, 3)}}
	b := &countingRemote{memRemote: memRemote{b: fill(2*PageSize, 5)}}
	local := fill(PageSize, 7)
	bio := BioAllocBioset(nil, 16, Opf(OpRead))
	var want []byte
	add := func(p *Page, mem []byte) {
		bio.AddPage(p, PageSize, 0)
		want = append(want, mem...)
	}
	for i := 0; i < 4; i++ { // run 1: pages 0-3 of a
		add(NewRemotePage(a, int64(i*PageSize), PageSize), a.b[i*PageSize:(i+1)*PageSize])
	}
	for i := 5; i < 7; i++ { // run 2: pages 5-6 of a (a gap before)
		add(NewRemotePage(a, int64(i*PageSize), PageSize), a.b[i*PageSize:(i+1)*PageSize])
	}
	add(NewRemotePage(b, 0, PageSize), b.b[:PageSize])                  // run 3: another memory
	add(NewPage(local), local)                                          // a local page
	add(NewRemotePage(b, PageSize, PageSize), b.b[PageSize:2*PageSize]) // run 4: after the local page
	dst := make([]byte, len(want))
	if err := CopyFromBio(bio, bio.Iter, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, want) {
		t.Fatal("copied bytes differ")
	}
	if a.reads != 2 || b.reads != 2 {
		t.Errorf("reads: %d of a, %d of b; want 2 and 2", a.reads, b.reads)
	}
	// A window that starts and ends inside pages.
	iter := bio.Iter
	bio.AdvanceIter(&iter, 100)
	iter.Size = 5*PageSize + 17
	dst = make([]byte, iter.Size)
	if err := CopyFromBio(bio, iter, dst); err != nil || !bytes.Equal(dst, want[100:100+iter.Size]) {
		t.Fatalf("window copy: %v", err)
	}
	if err := CopyFromBio(bio, bio.Iter, make([]byte, 10)); err == nil {
		t.Error("a short destination was accepted")
	}
	bad := BioAllocBioset(nil, 1, Opf(OpRead))
	bad.AddPage(NewRemotePage(brokenRemote{}, 0, PageSize), PageSize, 0)
	if err := CopyFromBio(bad, bad.Iter, make([]byte, PageSize)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("unreachable remote page: %v", err)
	}
}
