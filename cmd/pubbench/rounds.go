package main

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// modeRun is one run of one mode (one round).
type modeRun struct {
	m                       merged
	wall                    float64
	svcCPU, selfCPU, broker float64
	svcOK, brokerOK         bool
	spool                   *spoolRun // mode spooled only
	// mode service only: increase of publisher_publish_duration_seconds
	// (count 0: it could not be read)
	pubCount, pubSecs float64
}

// modeAgg accumulates a mode's runs over the rounds.
type modeAgg struct {
	mode                    string
	runs                    int
	lat                     []time.Duration
	okTotal, errs           int64
	lastError               string
	wall                    float64
	svcCPU, selfCPU, broker float64
	svcOK, brokerOK         bool
	// mode service: sums over the rounds
	pubCount, pubSecs float64
	pubOK             bool
	// mode spooled: sums over the rounds
	spool                         bool
	load, drain, confirmed        float64
	drained, confOK, queuedOK     bool
	queued                        int64
	peakSpoolMsgs, peakSpoolBytes float64
	fsyncs, fsyncSecs             float64
	fsyncOK                       bool
}

func (a *modeAgg) add(r modeRun) {
	if a.runs == 0 {
		a.svcOK, a.brokerOK, a.pubOK = true, true, true
	}
	a.pubCount += r.pubCount
	a.pubSecs += r.pubSecs
	a.pubOK = a.pubOK && r.pubCount > 0
	a.runs++
	a.lat = append(a.lat, r.m.lat...)
	a.okTotal += r.m.okTotal
	a.errs += r.m.errs
	if r.m.lastError != "" {
		a.lastError = r.m.lastError
	}
	a.wall += r.wall
	a.svcCPU += r.svcCPU
	a.selfCPU += r.selfCPU
	a.broker += r.broker
	a.svcOK = a.svcOK && r.svcOK
	a.brokerOK = a.brokerOK && r.brokerOK
	if sr := r.spool; sr != nil {
		if !a.spool {
			a.spool, a.drained, a.confOK, a.queuedOK, a.fsyncOK = true, true, true, true, true
		}
		a.fsyncs += sr.fsyncs
		a.fsyncSecs += sr.fsyncSecs
		a.fsyncOK = a.fsyncOK && sr.fsyncOK
		a.load += sr.load
		a.drain += sr.drain
		a.drained = a.drained && sr.drained
		a.confirmed += sr.confirmed
		a.confOK = a.confOK && sr.confOK
		if sr.queued >= 0 {
			a.queued += int64(sr.queued)
		} else {
			a.queuedOK = false
		}
		a.peakSpoolMsgs = max(a.peakSpoolMsgs, sr.peakMsgs)
		a.peakSpoolBytes = max(a.peakSpoolBytes, sr.peakBytes)
	}
}

// runMode runs one mode once: warm-up, measurement, and the CPU the service,
// pubbench and the broker spent meanwhile.
func (b *bench) runMode(ctx context.Context, mode string) (modeRun, error) {
	select {
	case <-ctx.Done():
		return modeRun{}, ctx.Err()
	case <-time.After(b.cfg.pause):
	}
	logf("running %s at %s for %s (+%s warm-up)", modeLabels[mode], b.concLabel(mode), b.cfg.duration, b.cfg.warmup)
	svc := b.svc
	if mode == modeSpooled {
		svc = b.spoolSvc
	}
	var pub0 *publishTotals
	if mode == modeService {
		pub0 = b.scrapePublish(svc)
	}
	before, svcOK, brokerOK := b.sampleCPU(svc)
	w := newWindow(b.cfg.warmup, b.cfg.duration)
	var run modeRun
	var err error
	switch mode {
	case modeService:
		run.m, err = b.runService(ctx, w)
	case modeRaw:
		run.m, err = b.runRaw(ctx, w)
	case modePipelined:
		run.m, err = b.runPipelined(ctx, w)
	case modeMgmt:
		run.m, err = b.runMgmt(ctx, w)
	case modeSpooled:
		run.m, run.spool, err = b.runSpooled(ctx, w)
	}
	if err != nil {
		return modeRun{}, err
	}
	run.wall = time.Since(w.start).Seconds() // mode spooled: the drain included
	after, svcOK2, brokerOK2 := b.sampleCPU(svc)
	isService := mode == modeService || mode == modeSpooled
	run.svcCPU, run.svcOK = after.svc-before.svc, isService && svcOK && svcOK2
	run.selfCPU = after.self - before.self
	run.broker, run.brokerOK = after.broker-before.broker, brokerOK && brokerOK2
	if isService && !svc.alive() {
		return modeRun{}, fmt.Errorf("the %s exited during its mode; log:\n%s", svc.name, svc.logTail())
	}
	if pub0 != nil {
		if pub1 := b.scrapePublish(svc); pub1 != nil {
			run.pubCount = pub1.count - pub0.count
			run.pubSecs = pub1.sum - pub0.sum
		}
	}
	return run, nil
}

// cpuProbe samples the CPU of a service, this process and the broker.
type cpuProbe struct{ svc, self, broker float64 }

func (b *bench) sampleCPU(svc *service) (p cpuProbe, svcOK, brokerOK bool) {
	if svc != nil {
		if v, err := procCPU(strconv.Itoa(svc.pid())); err == nil {
			p.svc, svcOK = v, true
		}
	}
	p.self, _ = procCPU("self")
	if b.brokerPid != "" {
		if v, err := procCPU(b.brokerPid); err == nil {
			p.broker, brokerOK = v, true
		}
	}
	return
}

// publishTotals are the count and the sum of the service's
// publisher_publish_duration_seconds.
type publishTotals struct{ count, sum float64 }

// scrapePublish reads the service's publishTotals; nil when they cannot be
// read (the latency split is then left out).
func (b *bench) scrapePublish(svc *service) *publishTotals {
	client := newMetricsClient()
	defer client.CloseIdleConnections()
	m, err := svc.scrape(client)
	if err != nil {
		return nil
	}
	count, ok1 := m.Sum(metricPublishCount)
	sum, ok2 := m.Sum(metricPublishSum)
	if !ok1 || !ok2 {
		return nil
	}
	return &publishTotals{count: count, sum: sum}
}
