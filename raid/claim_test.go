package raid

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// imageFile makes an empty image of MinDeviceSize bytes in a new directory
// and returns its path.
func imageFile(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 4*MinDeviceSize); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOneFileTwiceIsRefused: two paths to one file (./, a symlink, a hard
// link) are one device, refused before anything is opened, with both paths
// named; so are two paths to one image still to be created.
func TestOneFileTwiceIsRefused(t *testing.T) {
	img := imageFile(t, "a.img")
	dir := filepath.Dir(img)
	link, hard := filepath.Join(dir, "link.img"), filepath.Join(dir, "hard.img")
	if err := os.Symlink("a.img", link); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(img, hard); err != nil {
		t.Fatal(err)
	}
	other := imageFile(t, "b.img")
	for _, second := range []string{filepath.Join(dir, ".", "a.img"), dir + "//a.img", link, hard} {
		paths := []string{img, other, second}
		want := img + " and " + second + " are the same file"
		err := CheckDistinct(paths)
		var same *SameDeviceError
		if !errors.As(err, &same) || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckDistinct %q: %v, want %q", paths, err, want)
		}
		if _, _, err := Assemble(paths, AssembleOptions{Profile: Raid1C3, Logger: testLogger()}); !errors.As(err, &same) {
			t.Errorf("Assemble %q: %v, want the same file refused", paths, err)
		}
		if _, err := OpenDevices(paths, DeviceOptions{Logger: testLogger()}); !errors.As(err, &same) {
			t.Errorf("OpenDevices %q: %v, want the same file refused", paths, err)
		}
	}
	if err := CheckDistinct([]string{img, other}); err != nil {
		t.Errorf("two files: %v", err)
	}
	// Nothing was formatted: the image is still blank.
	d, err := OpenDevice(img, DeviceOptions{ReadOnly: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadSuper(); !errors.Is(err, ErrBlankSuper) {
		t.Errorf("image written: %v", err)
	}
	d.Close()

	newDir := t.TempDir()
	absent := []string{filepath.Join(newDir, "n.img"), filepath.Join(newDir, ".", "n.img")}
	_, _, err = Assemble(absent, AssembleOptions{Profile: Raid1, Create: MinDeviceSize * 4, Logger: testLogger()})
	if err == nil || !strings.Contains(err.Error(), "are the same file") {
		t.Errorf("two paths to one new image: %v", err)
	}
}

// TestClaimedDeviceIsRefused: a device open for writing is held until
// Close: a second open (even in the same process, read-only or not) is
// refused naming the holder; readers share; Unclaimed reads anyway.
func TestClaimedDeviceIsRefused(t *testing.T) {
	img := imageFile(t, "a.img")
	w, err := OpenDevice(img, DeviceOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var asked DeviceID
	holder := func(id DeviceID) string { asked = id; return "the server of /dev/ublkb7 (pid 42)" }
	for _, ro := range []bool{false, true} {
		_, err := OpenDevice(img, DeviceOptions{ReadOnly: ro, Holder: holder, Logger: testLogger()})
		var ce *ClaimError
		want := "device " + img + " is in use by the server of /dev/ublkb7 (pid 42)"
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), want) {
			t.Errorf("read-only %v beside a writer: %v, want %q", ro, err, want)
		}
		if asked != w.ID() {
			t.Errorf("holder asked about %+v, the device is %+v", asked, w.ID())
		}
	}
	if _, err := OpenDevice(img, DeviceOptions{Logger: testLogger()}); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("no holder known: %v", err)
	}
	r, err := OpenDevice(img, DeviceOptions{ReadOnly: true, Unclaimed: true, Logger: testLogger()})
	if err != nil {
		t.Errorf("unclaimed read beside a writer: %v", err)
	} else {
		r.Close()
	}
	if _, err := OpenDevice(img, DeviceOptions{Unclaimed: true, Logger: testLogger()}); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("unclaimed write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// Closed, the device is free; readers then share it and keep writers out.
	r1, err := OpenDevice(img, DeviceOptions{ReadOnly: true, Logger: testLogger()})
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	r2, err := OpenDevice(img, DeviceOptions{ReadOnly: true, Logger: testLogger()})
	if err != nil {
		t.Errorf("two readers: %v", err)
	} else {
		r2.Close()
	}
	var ce *ClaimError
	if _, err := OpenDevice(img, DeviceOptions{Logger: testLogger()}); !errors.As(err, &ce) {
		t.Errorf("writer beside a reader: %v", err)
	}
	r1.Close()
	w, err = OpenDevice(img, DeviceOptions{Logger: testLogger()})
	if err != nil {
		t.Fatalf("after the readers closed: %v", err)
	}
	w.Close()
}

// TestAssembleOfHeldImages: a volume whose images a server holds is
// refused, and a failed Assemble leaves none of the images claimed.
func TestAssembleOfHeldImages(t *testing.T) {
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")}
	opts := AssembleOptions{Profile: Raid1, Create: 4 * MinDeviceSize, Logger: testLogger()}
	vol, _, err := Assemble(paths, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		o := AssembleOptions{Profile: AnyProfile, ReadOnly: ro, Logger: testLogger()}
		var ce *ClaimError
		if _, _, err := Assemble(paths, o); !errors.As(err, &ce) || ce.Path != paths[0] {
			t.Errorf("read-only %v: %v, want %s in use", ro, err, paths[0])
		}
	}
	ro, _, err := Assemble(paths, AssembleOptions{Profile: AnyProfile, ReadOnly: true, Unclaimed: true, Logger: testLogger()})
	if err != nil {
		t.Fatalf("unclaimed read-only: %v", err)
	}
	ro.Close()
	if err := vol.Close(); err != nil {
		t.Fatal(err)
	}

	// b.img held: a.img, opened first, must be let go when b.img is refused.
	b, err := OpenDevice(paths[1], DeviceOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Assemble(paths, opts); err == nil {
		t.Fatal("b.img held, Assemble succeeded")
	}
	b.Close()
	vol, _, err = Assemble(paths, opts)
	if err != nil {
		t.Fatalf("after the refusal: %v", err)
	}
	vol.Close()
}
