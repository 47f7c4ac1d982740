package main

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// Metrics of the spooled service read by mode (e).
const (
	metricSpoolMessages = "publisher_spool_messages"
	metricSpoolBytes    = "publisher_spool_bytes"
	metricMessagesTotal = "publisher_messages_total"
	labelConfirmed      = `outcome="confirmed"` // of metricMessagesTotal
	metricFsyncCount    = "publisher_spool_fsync_duration_seconds_count"
	metricFsyncSum      = "publisher_spool_fsync_duration_seconds_sum"
	// read by mode (a): the time requests spent inside Publish
	metricPublishCount = "publisher_publish_duration_seconds_count"
	metricPublishSum   = "publisher_publish_duration_seconds_sum"
)

// spoolRun is what mode (e) measures beyond the closed loop: the drain of the
// spool after the load, and what reached the broker.
type spoolRun struct {
	load      float64 // seconds from the start of the warm-up to the last answer
	drain     float64 // seconds from the last answer until publisher_spool_messages was 0
	drained   bool    // false: the drain timed out (or the service died)
	confirmed float64 // increase of publisher_messages_total{outcome="confirmed"}
	confOK    bool
	queued    int     // messages in the queue after the drain (-1: unknown)
	peakMsgs  float64 // highest publisher_spool_messages seen
	peakBytes float64
	fsyncs    float64 // group commits (fdatasyncs) during load and drain
	fsyncSecs float64 // their total duration
	fsyncOK   bool
}

// runSpooled is mode (e): c concurrent keep-alive HTTP clients posting to the
// spooled service with "Prefer: respond-async"; a message counts when it is
// answered 202 {"status":"spooled"}, that is durable on the service's disk,
// not yet confirmed by the broker. After the load it waits (bounded by
// -spool-drain-timeout) until the spool is empty, so the end-to-end rate can
// be reported next to the acceptance rate.
func (b *bench) runSpooled(ctx context.Context, w window) (merged, *spoolRun, error) {
	svc := b.spoolSvc
	metricsClient := newMetricsClient()
	defer metricsClient.CloseIdleConnections()
	sr := &spoolRun{queued: -1}
	before, err := svc.scrape(metricsClient)
	if err != nil {
		return merged{}, nil, fmt.Errorf("spooled: %w", err)
	}
	if n := before.Value(metricSpoolMessages); n != 0 {
		b.note("spooled: the spool held %.0f messages before the mode (an earlier drain did not finish)", n)
	}
	conf0, conf0OK := before.Sum(metricMessagesTotal, labelConfirmed)

	// peak spool size while the load runs
	loadDone := make(chan struct{})
	peakDone := make(chan struct{})
	go func() {
		defer close(peakDone)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-loadDone:
				return
			case <-t.C:
				if m, err := svc.scrape(metricsClient); err == nil {
					sr.peakMsgs = max(sr.peakMsgs, m.Value(metricSpoolMessages))
					sr.peakBytes = max(sr.peakBytes, m.Value(metricSpoolBytes))
				}
			}
		}
	}()
	u, h := b.publishRequest(svc)
	h.Set("Prefer", "respond-async")
	op, done, err := b.poster(u, h, b.body, http.StatusAccepted, []byte(`"spooled"`))
	if err != nil {
		close(loadDone)
		<-peakDone
		return merged{}, nil, err
	}
	m := runClosedLoop(ctx, w, b.cfg.c, opTimeout, op)
	done()
	loadEnd := time.Now()
	close(loadDone)
	<-peakDone
	sr.load = loadEnd.Sub(w.start).Seconds()

	// drain: poll until the spool is empty
	logf("%s: %d accepted; waiting (at most %s) for the spool to drain", modeLabels[modeSpooled], m.okTotal, b.cfg.spoolDrainTimeout)
	deadline := loadEnd.Add(b.cfg.spoolDrainTimeout)
	lastErr := error(nil)
	for {
		mm, err := svc.scrape(metricsClient)
		now := time.Now()
		if err == nil {
			n, ok := mm.Sum(metricSpoolMessages)
			if ok {
				sr.peakMsgs = max(sr.peakMsgs, n)
				sr.peakBytes = max(sr.peakBytes, mm.Value(metricSpoolBytes))
				if n == 0 {
					sr.drain, sr.drained = now.Sub(loadEnd).Seconds(), true
					break
				}
			} else {
				err = fmt.Errorf("no %s", metricSpoolMessages)
			}
		}
		if err != nil {
			lastErr = err
		}
		if !svc.alive() {
			return merged{}, nil, fmt.Errorf("the spooled service exited while its spool drained; log:\n%s", svc.logTail())
		}
		if now.After(deadline) || ctx.Err() != nil {
			sr.drain = now.Sub(loadEnd).Seconds()
			msg := fmt.Sprintf("spooled: the spool did not drain within %s", b.cfg.spoolDrainTimeout)
			if lastErr != nil {
				msg += fmt.Sprintf(" (last scrape error: %v)", lastErr)
			}
			if err == nil {
				msg += fmt.Sprintf("; %.0f messages still spooled", mm.Value(metricSpoolMessages))
			}
			b.note("%s; the end-to-end rate is an upper bound", msg)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if after, err := svc.scrape(metricsClient); err == nil {
		if c, ok := after.Sum(metricMessagesTotal, labelConfirmed); ok && conf0OK {
			sr.confirmed, sr.confOK = c-conf0, true
		}
		c1, ok1 := after.Sum(metricFsyncCount)
		s1, ok2 := after.Sum(metricFsyncSum)
		c0, ok3 := before.Sum(metricFsyncCount)
		s0, ok4 := before.Sum(metricFsyncSum)
		if ok1 && ok2 && ok3 && ok4 {
			sr.fsyncs, sr.fsyncSecs, sr.fsyncOK = c1-c0, s1-s0, true
		}
	}
	if n, err := b.queueDepth(); err == nil {
		sr.queued = n
	} else {
		b.note("spooled: queue depth: %v", err)
	}
	return m, sr, nil
}
