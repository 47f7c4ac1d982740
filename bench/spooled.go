package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/publisher-dev/publisher/internal/promtext"
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
	sr := &spoolRun{queued: -1}
	before, err := svc.scrape()
	if err != nil {
		return merged{}, nil, fmt.Errorf("spooled: %w", err)
	}
	n, err := before.Get(metricSpoolMessages)
	if err != nil {
		return merged{}, nil, fmt.Errorf("spooled: %w", err) // the drain could not be measured
	}
	if n != 0 {
		b.note("spooled: the spool held %.0f messages before the mode (an earlier drain did not finish)", n)
	}
	m, loadEnd, err := b.loadSpooled(ctx, w, sr)
	if err != nil {
		return merged{}, nil, err
	}
	sr.load = loadEnd.Sub(w.start).Seconds()
	logf("%s: %d accepted; waiting (at most %s) for the spool to drain", modeLabels[modeSpooled], m.okTotal, b.cfg.spoolDrainTimeout)
	if err := b.drainSpool(ctx, sr, loadEnd); err != nil {
		return merged{}, nil, err
	}
	if after, err := svc.scrape(); err == nil {
		sr.setTotals(before, after)
	}
	if n, err := b.queueDepth(); err == nil {
		sr.queued = n
	} else {
		b.note("spooled: queue depth: %v", err)
	}
	return m, sr, nil
}

// loadSpooled runs mode spooled's closed loop, recording the spool's peak
// size into sr meanwhile, and returns its outcome and when it ended.
func (b *bench) loadSpooled(ctx context.Context, w window, sr *spoolRun) (merged, time.Time, error) {
	stopPeak := b.watchSpoolPeak(sr)
	u, h := b.publishRequest(b.spoolSvc)
	h.Set("Prefer", "respond-async")
	op, done, err := b.poster(u, h, b.body, http.StatusAccepted, []byte(`"spooled"`))
	if err != nil {
		stopPeak()
		return merged{}, time.Time{}, err
	}
	m := runClosedLoop(ctx, w, b.cfg.c, opTimeout, op)
	done()
	loadEnd := time.Now()
	stopPeak()
	return m, loadEnd, nil
}

// watchSpoolPeak scrapes the spooled service every 250 ms into sr's peaks
// until stop, which waits for the last scrape, is called.
func (b *bench) watchSpoolPeak(sr *spoolRun) (stop func()) {
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
				if m, err := b.spoolSvc.scrape(); err == nil {
					if err := sr.observe(m); err != nil {
						b.note("spooled: peak: %v", err)
						return
					}
				}
			}
		}
	}()
	return func() {
		close(loadDone)
		<-peakDone
	}
}

// drainSpool polls the spooled service every 20 ms until its spool is
// empty, and records in sr how long that took after loadEnd. After
// -spool-drain-timeout (or when ctx is done) it gives up with a note: the
// end-to-end rate is then an upper bound. It fails when the service exits
// and when its /metrics lacks the spool's metrics.
func (b *bench) drainSpool(ctx context.Context, sr *spoolRun, loadEnd time.Time) error {
	svc := b.spoolSvc
	deadline := loadEnd.Add(b.cfg.spoolDrainTimeout)
	lastErr := error(nil)
	for {
		mm, err := svc.scrape()
		now := time.Now()
		if err == nil {
			if err := sr.observe(mm); err != nil {
				// a metric renamed: the drain cannot be seen, waiting would not end
				return fmt.Errorf("spooled: %w", err)
			}
			if n, _ := mm.Sum(metricSpoolMessages); n == 0 { // there: observe read it
				sr.drain, sr.drained = now.Sub(loadEnd).Seconds(), true
				return nil
			}
		}
		if err != nil {
			lastErr = err
		}
		if !svc.alive() {
			return fmt.Errorf("the spooled service exited while its spool drained; log:\n%s", svc.logTail())
		}
		if now.After(deadline) || ctx.Err() != nil {
			sr.drain = now.Sub(loadEnd).Seconds()
			msg := fmt.Sprintf("spooled: the spool did not drain within %s", b.cfg.spoolDrainTimeout)
			if lastErr != nil {
				msg += fmt.Sprintf(" (last scrape error: %v)", lastErr)
			}
			if err == nil {
				n, _ := mm.Sum(metricSpoolMessages) // there: observe read it
				msg += fmt.Sprintf("; %.0f messages still spooled", n)
			}
			b.note("%s; the end-to-end rate is an upper bound", msg)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// observe raises sr's peaks to the spool's size in m; an error, and no
// change, when m lacks either metric.
func (sr *spoolRun) observe(m promtext.Samples) error {
	msgs, err := m.Get(metricSpoolMessages)
	if err != nil {
		return err
	}
	bytes, err := m.Get(metricSpoolBytes)
	if err != nil {
		return err
	}
	sr.peakMsgs, sr.peakBytes = max(sr.peakMsgs, msgs), max(sr.peakBytes, bytes)
	return nil
}

// setTotals records what the broker confirmed and the spool's group commits
// between two scrapes; a figure missing from either stays unknown.
func (sr *spoolRun) setTotals(before, after promtext.Samples) {
	conf0, ok0 := before.Sum(metricMessagesTotal, labelConfirmed)
	if c, ok := after.Sum(metricMessagesTotal, labelConfirmed); ok && ok0 {
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
