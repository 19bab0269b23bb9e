package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/btrfsdio/btrfsdio/btrfsdio"
)

// statsTarget is a target with live counters (the btrfsdio target): its
// server keeps them current in the run file, where `list -v` shows them.
type statsTarget interface {
	Stats() btrfsdio.Stats
}

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

// statsRefresher rewrites a run file with a target's counters whenever they
// changed, and logs zero-copy writes whose buffer changed in flight.
type statsRefresher struct {
	path string
	ri   runInfo
	tgt  statsTarget
	log  logrus.FieldLogger
	last btrfsdio.Stats
}

// refreshRunStats starts refreshing path every interval until the returned
// function is called; that function stops it, waits, and logs the
// detector's totals.
func refreshRunStats(path string, ri runInfo, tgt statsTarget, every time.Duration, log logrus.FieldLogger) func() {
	r := &statsRefresher{path: path, ri: ri, tgt: tgt, log: log}
	if ri.Stats != nil {
		r.last = *ri.Stats
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				r.refresh(every)
			}
		}
	}()
	return func() {
		close(stop)
		wg.Wait()
		r.summary()
	}
}

// refresh writes the current counters if they changed since the last call.
func (r *statsRefresher) refresh(every time.Duration) {
	st := r.tgt.Stats()
	if st == r.last {
		return
	}
	if d := st.VolatileWrites - r.last.VolatileWrites; d > 0 {
		r.log.Warnf("zero-copy: %d write(s) changed their buffer while in flight in the last %v (%d of %d checked so far); "+
			"the copies of a mirrored profile may differ: use --dio bounce", d, every, st.VolatileWrites, st.VolatileChecked)
	}
	r.last = st
	r.ri.Stats = &st
	r.ri.StatsTime = time.Now().UTC().Format(time.RFC3339)
	if err := writeRunFile(r.path, &r.ri); err != nil {
		r.log.Warnf("cannot refresh counters for 'list': %v", err)
	}
}

// summary logs the detector's totals when the server stops.
func (r *statsRefresher) summary() {
	st := r.tgt.Stats()
	if st.VolatileChecked > 0 {
		r.log.Infof("volatile write detector: %d of %d zero-copy writes changed their buffer while in flight",
			st.VolatileWrites, st.VolatileChecked)
	}
}
