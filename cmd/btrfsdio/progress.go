package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// exitInterrupted is the exit status after SIGINT or SIGTERM stopped a
// command that then finished cleanly (128 + SIGINT, as shells report it).
const exitInterrupted = 130

// progress is the line long work keeps current on a terminal (bytes done,
// rate, ETA), like btrfs scrub status or fio's status line; it prints
// nothing when stderr is not a terminal, or with --quiet.
type progress struct {
	w     io.Writer // nil: silent
	what  string
	total uint64
	start time.Time
	last  time.Time
}

// isTerminal reports whether w is a terminal (TCGETS succeeds).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// newProgress returns a progress line on e.stderr when it is a terminal
// and quiet is not set.
func newProgress(e *env, quiet bool, what string, total uint64) *progress {
	p := &progress{what: what, total: total, start: time.Now()}
	if !quiet && isTerminal(e.stderr) {
		p.w = e.stderr
	}
	return p
}

// update redraws the line, at most a few times a second.
func (p *progress) update(done uint64) {
	if p.w == nil {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 200*time.Millisecond && done < p.total {
		return
	}
	p.last = now
	el := now.Sub(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(done) / el
	}
	eta := "?"
	if rate > 0 && done <= p.total {
		eta = time.Duration(float64(p.total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(done) / float64(p.total)
	}
	fmt.Fprintf(p.w, "\r%s: %s of %s (%.0f%%), %s/s, ETA %s\x1b[K", p.what, humanBytes(float64(done)), humanBytes(float64(p.total)), pct, humanBytes(rate), eta)
}

// note replaces the line with free text (bench's phases).
func (p *progress) note(msg string) {
	if p.w != nil {
		fmt.Fprintf(p.w, "\r%s: %s\x1b[K", p.what, msg)
	}
}

// done clears the line.
func (p *progress) done() {
	if p.w != nil {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

func humanBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", n, units[i])
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}
