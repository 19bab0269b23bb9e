package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
)

// Running under systemd (scripts/btrfsdio@.service): `add --foreground`
// is a Type=notify service. It tells the service manager when the device
// is live and when it stops with sd_notify's datagrams, and logs to the
// journal in sd-daemon's format. No library: the protocol is one
// datagram on a unix socket and a "<N>" prefix per line.

// sdNotify sends state (newline-separated VAR=VALUE assignments such as
// "READY=1") to the service manager's $NOTIFY_SOCKET, as sd_notify(3)
// does (no kernel counterpart: systemd's protocol). Without
// $NOTIFY_SOCKET it does nothing and returns nil. A name starting with
// '@' is in the abstract namespace.
func sdNotify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] != '/' && name[0] != '@' {
		return fmt.Errorf("sd_notify: NOTIFY_SOCKET=%q is neither a path nor an abstract name", name)
	}
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	if name[0] == '@' {
		addr.Name = "\x00" + name[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %q: %w", state, err)
	}
	return nil
}

// underJournal reports whether w is the journal's stream: $JOURNAL_STREAM
// ("DEVICE:INODE") names the file w is, as sd-daemon(3) tells services to
// check (a redirected stderr is not the journal any more).
func underJournal(w io.Writer) bool {
	js := os.Getenv("JOURNAL_STREAM")
	f, ok := w.(*os.File)
	if js == "" || !ok {
		return false
	}
	dev, ino, found := strings.Cut(js, ":")
	if !found {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return strconv.FormatUint(st.Dev, 10) == dev && strconv.FormatUint(st.Ino, 10) == ino
}

// journalFormatter writes one line per entry prefixed with its syslog
// priority, "<3>message key=value", which journald reads from a service's
// stderr (sd-daemon(3)'s SD_ERR ... SD_DEBUG); the journal adds the time.
type journalFormatter struct{}

// syslogPriority maps logrus levels to syslog(3) priorities.
func syslogPriority(l logrus.Level) int {
	switch l {
	case logrus.PanicLevel:
		return 0 // LOG_EMERG
	case logrus.FatalLevel:
		return 2 // LOG_CRIT
	case logrus.ErrorLevel:
		return 3 // LOG_ERR
	case logrus.WarnLevel:
		return 4 // LOG_WARNING
	case logrus.InfoLevel:
		return 6 // LOG_INFO
	}
	return 7 // LOG_DEBUG
}

func (journalFormatter) Format(e *logrus.Entry) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "<%d>%s", syslogPriority(e.Level), strings.ReplaceAll(e.Message, "\n", " "))
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := fmt.Sprint(e.Data[k])
		if strings.ContainsAny(v, " \"=\n") {
			v = strconv.Quote(v)
		}
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// notifyService tells the service manager about the device (READY=1 once
// it is live, STOPPING=1 when it stops); a failure only costs systemd's
// view, so it is logged.
func notifyService(log logrus.FieldLogger, state string) {
	if err := sdNotify(state); err != nil {
		log.Warnf("%v", err)
	}
}
