package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/tgt"
)

// runStatsInterval is how often a server refreshes the counters in its run
// file; `list -v` shows them at most this old.
const runStatsInterval = time.Second

// writeRunFile writes ri to path through a temporary file and a rename, so
// that `list` never reads a half-written file. The file keeps CreateTemp's
// mode 0600: recover trusts only a run file nobody else can write.
func writeRunFile(path string, ri *runInfo) error {
	b, err := json.MarshalIndent(ri, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("run file: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("run file %s: %w", path, err)
	}
	return nil
}

// marshalStatus is a target's Status as the run file keeps it; nil (and a
// warning) if it does not marshal.
func marshalStatus(st tgt.Status, log logrus.FieldLogger) json.RawMessage {
	b, err := json.Marshal(st)
	if err != nil {
		log.Warnf("cannot record the target's status for 'list': %v", err)
		return nil
	}
	return b
}

// statsRefresher rewrites a run file with a target's Status whenever it
// changed, and logs the target's warnings about the change.
type statsRefresher struct {
	path string
	ri   runInfo
	tgt  tgt.Reporter
	log  logrus.FieldLogger
	// last is the Status last written, lastJSON its JSON.
	last     tgt.Status
	lastJSON json.RawMessage
}

// refreshRunStats starts refreshing path every interval until the returned
// function is called; that function stops it, waits, and logs the target's
// summary.
func refreshRunStats(path string, ri runInfo, src tgt.Reporter, interval time.Duration, log logrus.FieldLogger) func() {
	r := &statsRefresher{path: path, ri: ri, tgt: src, log: log, lastJSON: ri.Stats}
	if tt, ok := targetTypes[ri.Type]; ok && tt.DecodeStatus != nil && len(ri.Stats) > 0 {
		r.last, _ = tt.DecodeStatus(ri.Stats)
	}
	stop := every(interval, nil, func() { r.refresh(interval) })
	return func() {
		stop()
		r.summary()
	}
}

// refresh writes the current Status if it changed since the last call.
func (r *statsRefresher) refresh(interval time.Duration) {
	st := r.tgt.Status()
	b := marshalStatus(st, r.log)
	if b == nil || bytes.Equal(b, r.lastJSON) {
		return
	}
	for _, w := range st.Warnings(r.last, interval) {
		r.log.Warn(w)
	}
	r.last, r.lastJSON = st, b
	r.ri.Stats = b
	r.ri.StatsTime = time.Now().UTC().Format(time.RFC3339)
	if err := writeRunFile(r.path, &r.ri); err != nil {
		r.log.Warnf("cannot refresh counters for 'list': %v", err)
	}
}

// summary logs the target's summary when the server stops.
func (r *statsRefresher) summary() {
	if s := r.tgt.Status().Summary(); s != "" {
		r.log.Info(s)
	}
}

// every calls fn every interval, and at once on each signal from wake (nil:
// none), on its own goroutine until the returned function is called; that
// function waits for a call in progress to finish.
func every(interval time.Duration, wake <-chan os.Signal, fn func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			case <-wake:
			}
			fn()
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
