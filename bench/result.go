package main

import (
	"fmt"
	"strconv"
	"time"
)

// report is pubbench's output, printed as a table or as JSON.
type report struct {
	Machine    map[string]string `json:"machine"`
	Params     map[string]any    `json:"params"`
	Results    []*modeResult     `json:"results"`
	Ratios     []ratio           `json:"ratios"`
	BestSearch []searchResult    `json:"best_search,omitempty"` // the search for mode (c′)'s setting
	Memory     *memResult        `json:"memory"`
	Notes      []string          `json:"notes,omitempty"`
	StartedAt  time.Time         `json:"started_at"`
	FinishedAt time.Time         `json:"finished_at"`
}

// modeResult is the outcome of one mode.
type modeResult struct {
	Mode           string        `json:"mode"`
	Label          string        `json:"label"`
	Counted        string        `json:"counted"` // what msgs_per_sec counts
	Conc           string        `json:"concurrency"`
	LatencyOf      string        `json:"latency_of"` // what one latency sample measures
	Rounds         int           `json:"rounds"`
	Rate           float64       `json:"msgs_per_sec"`
	RoundRates     []float64     `json:"round_msgs_per_sec"` // each round's msgs/s, in round order
	LoadAvg        []float64     `json:"load_avg_1m"`        // the machine's 1-minute load average as each round's run began
	Mean           time.Duration `json:"-"`
	P50            time.Duration `json:"-"`
	P99            time.Duration `json:"-"`
	MeanMs         float64       `json:"mean_ms"`
	P50Ms          float64       `json:"p50_ms"`
	P99Ms          float64       `json:"p99_ms"`
	Measured       int           `json:"confirmed_measured"` // confirmed inside the measured window
	Samples        int           `json:"latency_samples"`
	ConfirmedTotal int64         `json:"confirmed_total"`
	Errors         int64         `json:"errors"`
	LastError      string        `json:"last_error,omitempty"`
	WallSeconds    float64       `json:"wall_seconds"`
	// CPU seconds per confirmed message over the whole mode (warm-up included)
	ServiceCPUPerMsg *float64 `json:"service_cpu_sec_per_msg,omitempty"`
	BenchCPUPerMsg   *float64 `json:"pubbench_cpu_sec_per_msg,omitempty"`
	BrokerCPUPerMsg  *float64 `json:"broker_cpu_sec_per_msg,omitempty"`
	ServiceCPUCores  *float64 `json:"service_cpu_cores,omitempty"`
	BrokerCPUCores   *float64 `json:"broker_cpu_cores,omitempty"`
	// mode service only: where a request's time went
	Split *latencySplit `json:"latency_split,omitempty"`
	// mode spooled only
	Spool *spoolResult `json:"spool,omitempty"`
}

// spoolResult is what mode (e) reports beyond the acceptance rate. Its CPU
// figures (and wall_seconds) cover the load and the drain, per accepted
// message.
type spoolResult struct {
	LoadSeconds      float64  `json:"load_seconds"`  // warm-up + measurement + the last answers
	DrainSeconds     float64  `json:"drain_seconds"` // after the load until publisher_spool_messages was 0
	Drained          bool     `json:"drained"`       // false: -spool-drain-timeout passed first
	Accepted         int64    `json:"accepted"`      // 202 answers, warm-up included
	EndToEndRate     float64  `json:"end_to_end_msgs_per_sec"`
	BrokerConfirmed  *float64 `json:"broker_confirmed,omitempty"` // increase of publisher_messages_total{outcome="confirmed"}
	InQueue          *int64   `json:"in_queue,omitempty"`         // queue depth after the drain
	PeakSpoolMsgs    float64  `json:"peak_spool_messages"`
	PeakSpoolBytes   float64  `json:"peak_spool_bytes"`
	Fsyncs           *float64 `json:"fsyncs,omitempty"`             // group commits during load and drain
	FsyncMeanSeconds *float64 `json:"fsync_mean_seconds,omitempty"` // their mean duration
	MsgsPerFsync     *float64 `json:"messages_per_fsync,omitempty"` // accepted / fsyncs: the mean group size
	SpoolParent      string   `json:"spool_parent"`
	SpoolParentTmpfs bool     `json:"spool_parent_tmpfs"`
}

// memResult is the RSS measurement.
type memResult struct {
	Skipped        string  `json:"skipped,omitempty"`
	Messages       int     `json:"messages"`
	RSSIdleBytes   int64   `json:"rss_idle_bytes"`
	RSSHeldBytes   int64   `json:"rss_held_bytes"`
	RSSPeakBytes   int64   `json:"rss_peak_bytes"`
	Held           float64 `json:"held_messages"` // buffered + inflight when RSS was read
	HeapInuseBytes float64 `json:"heap_inuse_bytes"`
	Goroutines     float64 `json:"goroutines"`
	Confirmed      int     `json:"confirmed_after_alarm_cleared"`
	Failed         int     `json:"failed"`
	FailedSample   string  `json:"failed_sample,omitempty"`
	DrainSeconds   float64 `json:"drain_seconds"`
}

// latencySplit divides the mean latency of mode (a) between the service's
// Publish (from the handler's call to the broker's confirm: mailbox, publish,
// broker, confirm back to the handler) and the rest (the HTTP hop both ways:
// load generator, kernel, the service's HTTP server). Publish's mean comes
// from publisher_publish_duration_seconds over the whole mode, warm-up
// included; the client's over the measured window.
type latencySplit struct {
	ClientMeanMs  float64 `json:"client_mean_ms"`
	PublishMeanMs float64 `json:"publish_mean_ms"`
	HTTPMeanMs    float64 `json:"http_mean_ms"`
}

func newLatencySplit(clientMean time.Duration, pubSecs, pubCount float64) *latencySplit {
	if pubCount <= 0 {
		return nil
	}
	s := &latencySplit{
		ClientMeanMs:  float64(clientMean) / 1e6,
		PublishMeanMs: pubSecs / pubCount * 1e3,
	}
	s.HTTPMeanMs = s.ClientMeanMs - s.PublishMeanMs
	return s
}

// result turns a mode's runs into its line of the table.
func (b *bench) result(a *modeAgg) *modeResult {
	measured := float64(a.runs) * b.cfg.duration.Seconds()
	r := &modeResult{
		Mode: a.mode, Label: modeLabels[a.mode], Counted: modeCounts[a.mode], Conc: b.concLabel(a.mode), Rounds: a.runs,
		Measured: a.measured, ConfirmedTotal: a.okTotal, Errors: a.errs, LastError: a.lastError,
		Rate: float64(a.measured) / measured, WallSeconds: a.wall, LatencyOf: b.latencyOf(a.mode),
		RoundRates: a.roundRates, LoadAvg: a.loads,
	}
	r.Samples = len(a.lat)
	r.Mean = mean(a.lat)
	r.P50, r.P99 = latencySummary(a.lat)
	r.MeanMs, r.P50Ms, r.P99Ms = float64(r.Mean)/1e6, float64(r.P50)/1e6, float64(r.P99)/1e6
	if a.mode == modeService && a.pubOK && len(a.lat) > 0 {
		r.Split = newLatencySplit(r.Mean, a.pubSecs, a.pubCount)
	}
	a.setCPU(r)
	if a.spool {
		r.Spool = b.spoolResult(a)
	}
	return r
}

// setCPU sets r's CPU per message, and the cores busy, of the service, of
// pubbench and of the broker (the service's and the broker's only where they
// could be read throughout).
func (a *modeAgg) setCPU(r *modeResult) {
	if a.okTotal <= 0 || a.wall <= 0 {
		return
	}
	per := func(d float64) *float64 { v := d / float64(a.okTotal); return &v }
	cores := func(d float64) *float64 { v := d / a.wall; return &v }
	if a.svcOK {
		r.ServiceCPUPerMsg, r.ServiceCPUCores = per(a.svcCPU), cores(a.svcCPU)
	}
	r.BenchCPUPerMsg = per(a.selfCPU)
	if a.brokerOK {
		r.BrokerCPUPerMsg, r.BrokerCPUCores = per(a.broker), cores(a.broker)
	}
}

// spoolResult is mode spooled's part of its result; it notes messages
// answered 202 but missing from the queue after a complete drain.
func (b *bench) spoolResult(a *modeAgg) *spoolResult {
	sp := &spoolResult{
		LoadSeconds: a.load, DrainSeconds: a.drain, Drained: a.drained, Accepted: a.okTotal,
		PeakSpoolMsgs: a.peakSpoolMsgs, PeakSpoolBytes: a.peakSpoolBytes,
		SpoolParent: b.cfg.spoolParent, SpoolParentTmpfs: isTmpfs(b.cfg.spoolParent),
	}
	if t := a.load + a.drain; t > 0 {
		sp.EndToEndRate = float64(a.okTotal) / t
	}
	if a.fsyncOK && a.fsyncs > 0 {
		n, mean, per := a.fsyncs, a.fsyncSecs/a.fsyncs, float64(a.okTotal)/a.fsyncs
		sp.Fsyncs, sp.FsyncMeanSeconds, sp.MsgsPerFsync = &n, &mean, &per
	}
	if a.confOK {
		c := a.confirmed
		sp.BrokerConfirmed = &c
	}
	if a.queuedOK {
		q := a.queued
		sp.InQueue = &q
		if q < a.okTotal && a.drained {
			b.note("spooled: %d messages were answered 202 but only %d are in the queue after the drain: LOST MESSAGES", a.okTotal, q)
		}
	}
	return sp
}

// concLabel is the concurrency column of mode: channels x window (pipelined, best),
// requests x messages per request (batch), streams x window (stream), else C.
func (b *bench) concLabel(mode string) string {
	switch mode {
	case modePipelined:
		return fmt.Sprintf("%dx%d", b.cfg.pipeChannels, b.cfg.pipeWindow)
	case modeBest:
		return b.best.String()
	case modeBatch, modeBatchKeyed:
		return fmt.Sprintf("%dx%d", b.cfg.batchConc, b.cfg.batchSize)
	case modeStream:
		return fmt.Sprintf("%dx%d", b.cfg.streams, b.cfg.streamWindow)
	}
	return strconv.Itoa(b.cfg.c)
}

// ratio is one "(a)/(b)" line: over all rounds (the modes' merged rates),
// and round by round (each round's rates, interleaved, so a busy moment of
// the machine weighs on both sides) with their median.
type ratio struct {
	Name   string    `json:"name"`
	Value  float64   `json:"value"`
	Valid  bool      `json:"valid"`
	Rounds []float64 `json:"rounds,omitempty"`
	Median float64   `json:"median,omitempty"`
	num    string
	den    string
}

// rateSpooledE2E is the key of mode spooled's end-to-end rate in the map
// ratios takes.
const rateSpooledE2E = modeSpooled + "_end_to_end"

// rates returns the modes' rates by mode, and mode spooled's end-to-end rate
// under rateSpooledE2E.
func rates(results []*modeResult) map[string]float64 {
	rate := map[string]float64{}
	for _, r := range results {
		rate[r.Mode] = r.Rate
		if r.Spool != nil {
			rate[rateSpooledE2E] = r.Spool.EndToEndRate
		}
	}
	return rate
}

// ratioDefs are the ratios of the report, in order: label, numerator and
// denominator (keys of the map ratios takes).
var ratioDefs = []struct{ label, num, den string }{
	{"(a)/(b) service/raw", modeService, modeRaw},
	{"(a)/(c) service/pipelined", modeService, modePipelined},
	{"(a)/(d) service/mgmt", modeService, modeMgmt},
	{"(e)/(a) spooled vs synchronous", modeSpooled, modeService},
	{"(e) end-to-end/(a)", rateSpooledE2E, modeService},
	{"(f)/(c) batch/pipelined", modeBatch, modePipelined},
	{"(g)/(c) stream/pipelined", modeStream, modePipelined},
	{"(f)/(b) batch/raw", modeBatch, modeRaw},
	{"(g)/(b) stream/raw", modeStream, modeRaw},
	{"(h)/(a) traced/untraced", modeTraced, modeService},
	{"(i)/(a) keyed/keyless single publish", modeServiceKeyed, modeService},
	{"(j)/(f) keyed/keyless batch", modeBatchKeyed, modeBatch},
	{"(f)/(c′) batch/best pipelined", modeBatch, modeBest},
	{"(g)/(c′) stream/best pipelined", modeStream, modeBest},
	{"(c′)/(c) best/pipelined", modeBest, modePipelined},
}

// ratios returns the ratioDefs of the modes' rates; a ratio is invalid when
// either side is missing or its denominator is zero.
func ratios(rate map[string]float64) []ratio {
	out := make([]ratio, 0, len(ratioDefs))
	for _, d := range ratioDefs {
		a, okA := rate[d.num]
		b, okB := rate[d.den]
		r := ratio{Name: d.label, num: d.num, den: d.den}
		if okA && okB && b > 0 {
			r.Value, r.Valid = a/b, true
		}
		out = append(out, r)
	}
	return out
}

// setRoundRatios sets each valid ratio's per-round values (round k of the
// numerator over round k of the denominator) and their median, from the
// results' round rates; mode spooled's end-to-end rate has none.
func setRoundRatios(rs []ratio, results []*modeResult) {
	byMode := map[string][]float64{}
	for _, r := range results {
		byMode[r.Mode] = r.RoundRates
	}
	for i := range rs {
		num, den := byMode[rs[i].num], byMode[rs[i].den]
		if !rs[i].Valid || len(num) == 0 || len(num) != len(den) {
			continue
		}
		var per []float64
		for k := range num {
			if den[k] > 0 {
				per = append(per, num[k]/den[k])
			}
		}
		if len(per) == len(num) {
			rs[i].Rounds, rs[i].Median = per, median(per)
		}
	}
}

// newReport starts the report: the machine and the parameters. With mode
// spooled it notes a spool parent on a tmpfs.
func (b *bench) newReport() *report {
	cfg := b.cfg
	rep := &report{StartedAt: time.Now(), Machine: machineInfo(cfg), Params: map[string]any{
		"c": cfg.c, "size": cfg.size, "duration": cfg.duration.String(), "warmup": cfg.warmup.String(),
		"persistent": cfg.persistent, "rounds": cfg.rounds, "queue": cfg.queue, "pipe_channels": cfg.pipeChannels,
		"pipe_window": cfg.pipeWindow, "service_channels": cfg.serviceChannels,
		"service_gomaxprocs": gomaxprocsLabel(cfg.serviceGOMAXPROCS), "http_client": cfg.httpClient,
	}}
	if slicesContains(cfg.modes, modeBatch) || slicesContains(cfg.modes, modeBatchKeyed) {
		rep.Params["batch_size"], rep.Params["batch_c"] = cfg.batchSize, cfg.batchConc
	}
	if slicesContains(cfg.modes, modeStream) {
		rep.Params["streams"], rep.Params["stream_window"] = cfg.streams, cfg.streamWindow
	}
	if slicesContains(cfg.modes, modeSpooled) {
		rep.Params["spool_parent"] = cfg.spoolParent
		rep.Params["spool_drain_timeout"] = cfg.spoolDrainTimeout.String()
		if isTmpfs(cfg.spoolParent) {
			b.note("-spool-parent %s is a tmpfs: fsync costs nothing there, so mode spooled is flattered", cfg.spoolParent)
		}
	}
	return rep
}
