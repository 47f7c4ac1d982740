package main

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// runRounds runs every mode cfg.rounds times, interleaved, purging the
// queue after each, and returns each mode's runs.
func (b *bench) runRounds(ctx context.Context) (map[string]*modeAgg, error) {
	cfg := b.cfg
	aggs := map[string]*modeAgg{}
	for round := 1; round <= cfg.rounds; round++ {
		if cfg.rounds > 1 {
			logf("round %d of %d", round, cfg.rounds)
		}
		for _, m := range cfg.modes {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			run, err := b.runMode(ctx, m)
			if err != nil {
				return nil, err
			}
			b.logRun(m, run)
			if aggs[m] == nil {
				aggs[m] = &modeAgg{mode: m}
			}
			aggs[m].add(run)
			aggs[m].roundRates = append(aggs[m].roundRates, float64(run.m.measured)/cfg.duration.Seconds())
			if err := b.purge(); err != nil {
				return nil, err
			}
		}
	}
	return aggs, nil
}

// logRun logs the outcome of one run of mode.
func (b *bench) logRun(mode string, run modeRun) {
	label := modeLabels[mode]
	logf("%s: %s msgs/s, %d errors", label, fmtRate(float64(run.m.measured)/b.cfg.duration.Seconds()), run.m.errs)
	if sr := run.spool; sr != nil {
		logf("%s: drained in %.2fs (drained: %v); end to end %s msgs/s", label, sr.drain, sr.drained,
			fmtRate(float64(run.m.okTotal)/(sr.load+sr.drain)))
	}
	if run.m.lastError != "" {
		logf("%s: last error: %s", label, run.m.lastError)
	}
}

// modeRun is one run of one mode (one round).
type modeRun struct {
	m                       merged
	load                    float64 // the 1-minute load average as the run began
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
	roundRates              []float64 // each run's msgs/s, in round order
	loads                   []float64 // each run's 1-minute load average as it began
	lat                     []time.Duration
	measured                int
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
	a.loads = append(a.loads, r.load)
	a.lat = append(a.lat, r.m.lat...)
	a.measured += r.m.measured
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
	if r.spool != nil {
		a.addSpool(r.spool)
	}
}

// addSpool adds the spool figures of one run of mode spooled.
func (a *modeAgg) addSpool(sr *spoolRun) {
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

// runMode runs one mode once: warm-up, measurement, and the CPU the service,
// pubbench and the broker spent meanwhile.
func (b *bench) runMode(ctx context.Context, mode string) (modeRun, error) {
	select {
	case <-ctx.Done():
		return modeRun{}, ctx.Err()
	case <-time.After(b.cfg.pause):
	}
	load := loadAvg1()
	logf("running %s at %s for %s (+%s warm-up), load average %.2f", modeLabels[mode], b.concLabel(mode), b.cfg.duration, b.cfg.warmup, load)
	svc := b.svc
	switch mode {
	case modeSpooled:
		svc = b.spoolSvc
	case modeTraced:
		svc = b.tracedSvc
	}
	var pub0 *publishTotals
	if mode == modeService {
		pub0 = b.scrapePublish(svc)
	}
	before := b.sampleCPU(svc)
	w := newWindow(b.cfg.warmup, b.cfg.duration)
	run, err := b.runLoad(ctx, mode, w)
	if err != nil {
		return modeRun{}, err
	}
	run.load = load
	run.wall = time.Since(w.start).Seconds() // mode spooled: the drain included
	isService := isServiceMode(mode)
	run.setCPU(before, b.sampleCPU(svc), isService)
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

// runLoad runs mode's load in the window w.
func (b *bench) runLoad(ctx context.Context, mode string, w window) (modeRun, error) {
	var run modeRun
	var err error
	switch mode {
	case modeService:
		run.m, err = b.runService(ctx, w, b.svc)
	case modeTraced:
		run.m, err = b.runService(ctx, w, b.tracedSvc)
	case modeRaw:
		run.m, err = b.runRaw(ctx, w)
	case modePipelined:
		run.m, err = b.runPipelined(ctx, w)
	case modeBest:
		run.m, err = b.runPipelinedWith(ctx, w, b.best)
	case modeMgmt:
		run.m, err = b.runMgmt(ctx, w)
	case modeSpooled:
		run.m, run.spool, err = b.runSpooled(ctx, w)
	case modeBatch:
		run.m, err = b.runBatch(ctx, w)
	case modeStream:
		run.m, err = b.runStream(ctx, w)
	case modeServiceKeyed:
		run.m, err = b.runServiceKeyed(ctx, w)
	case modeBatchKeyed:
		run.m, err = b.runBatchKeyed(ctx, w)
	}
	return run, err
}

// cpuProbe samples the CPU seconds of a service, this process and the
// broker; svcOK and brokerOK say whether those two could be read.
type cpuProbe struct {
	svc, self, broker float64
	svcOK, brokerOK   bool
}

func (b *bench) sampleCPU(svc *service) (p cpuProbe) {
	if svc != nil {
		if v, err := procCPU(strconv.Itoa(svc.pid())); err == nil {
			p.svc, p.svcOK = v, true
		}
	}
	p.self, _ = procCPU("self")
	if b.brokerPid != "" {
		if v, err := procCPU(b.brokerPid); err == nil {
			p.broker, p.brokerOK = v, true
		}
	}
	return p
}

// setCPU records the CPU spent between two probes; the service's only in a
// mode of the service (isService).
func (r *modeRun) setCPU(before, after cpuProbe, isService bool) {
	r.svcCPU, r.svcOK = after.svc-before.svc, isService && before.svcOK && after.svcOK
	r.selfCPU = after.self - before.self
	r.broker, r.brokerOK = after.broker-before.broker, before.brokerOK && after.brokerOK
}

// publishTotals are the count and the sum of the service's
// publisher_publish_duration_seconds.
type publishTotals struct{ count, sum float64 }

// scrapePublish reads the service's publishTotals; nil when they cannot be
// read (the latency split is then left out).
func (b *bench) scrapePublish(svc *service) *publishTotals {
	m, err := svc.scrape()
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
