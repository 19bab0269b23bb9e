package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// fakeNotifySocket listens where $NOTIFY_SOCKET will point, as systemd
// does for a Type=notify service, and returns the next datagram.
func fakeNotifySocket(t *testing.T, name string) func() string {
	t.Helper()
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	if name[0] == '@' {
		addr.Name = "\x00" + name[1:]
	}
	conn, err := net.ListenUnixgram("unixgram", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return func() string {
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
}

func TestSdNotify(t *testing.T) {
	for _, name := range []string{
		filepath.Join(t.TempDir(), "notify"),
		fmt.Sprintf("@btrfsdio-test-%d", os.Getpid()),
	} {
		next := fakeNotifySocket(t, name)
		if err := sdNotify("READY=1\nSTATUS=serving /dev/ublkb3"); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := next(); got != "READY=1\nSTATUS=serving /dev/ublkb3" {
			t.Errorf("%s: got %q", name, got)
		}
		notifyService(logrus.New(), "STOPPING=1")
		if got := next(); got != "STOPPING=1" {
			t.Errorf("%s: got %q", name, got)
		}
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want nothing done", err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody"))
	if err := sdNotify("READY=1"); err == nil {
		t.Error("sd_notify to a socket nobody listens on succeeded")
	}
}

// Logs carry sd-daemon's priority prefixes when stderr is the journal's
// stream ($JOURNAL_STREAM names its device and inode), and stay
// timestamped text otherwise.
func TestJournalLogging(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	log := newLogger(f)
	log.Errorf("stop: %s", "busy")
	log.WithField("dev", "/dev/ublkb0").Warn("stopped from outside")
	log.Info("serving")
	log.Debug("not shown at info level")
	b, _ := os.ReadFile(f.Name())
	want := "<3>stop: busy\n<4>stopped from outside dev=/dev/ublkb0\n<6>serving\n"
	if string(b) != want {
		t.Errorf("journal lines %q, want %q", b, want)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1))
	g, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	newLogger(g).Info("serving")
	b, _ = os.ReadFile(g.Name())
	if s := string(b); strings.HasPrefix(s, "<") || !strings.Contains(s, "time=") {
		t.Errorf("not the journal's stream, yet %q", s)
	}
}
