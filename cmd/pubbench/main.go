// Command pubbench measures, against one RabbitMQ broker in one run, the
// confirmed messages per second and the p50/p99 latency of four ways to
// publish with confirms:
//
//	(a) service    the publisher service over HTTP at concurrency -c (pubbench
//	               builds it and runs it as a child process on free loopback
//	               ports)
//	(b) raw        amqp091-go, -c goroutines each with its own confirm channel
//	               publishing and waiting for its own confirm
//	(c) pipelined  amqp091-go, -pipe-channels channels with -pipe-window
//	               confirms in flight each (the ceiling)
//	(d) mgmt       RabbitMQ's management API publish endpoint, -c clients
//	(e) spooled    a second service child with a durable spool
//	               (PUBLISHER_SPOOL_DIR in a new temporary directory under
//	               -spool-parent, removed afterwards), -c clients sending
//	               "Prefer: respond-async": msgs/s counts the 202 answers
//	               (durable on the service's disk, not yet confirmed by the
//	               broker); after the load pubbench waits until
//	               publisher_spool_messages is 0 and reports the drain time and
//	               the end-to-end rate, accepted / (load + drain)
//
// It prints a table, the ratios (a)/(b), (a)/(c), (a)/(d) and (e)/(a), the
// CPU each process spent per message, and the service's RSS while it holds
// -memory-messages messages behind a broker memory alarm. scripts/bench.sh
// starts a private broker and runs it:
//
//	bash scripts/bench.sh -duration 5s
//
// Every mode is bounded by -warmup plus -duration (plus the 30 s timeout of
// the operations in flight at its end; mode spooled plus
// -spool-drain-timeout); only loopback addresses are used for the service.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

type config struct {
	c                     int
	size                  int
	duration, warmup      time.Duration
	pause                 time.Duration
	rounds                int
	modes                 []string
	amqpURL, mgmtURL      string
	persistent            bool
	queue                 string
	pipeChannels          int
	pipeWindow            int
	servicePkg            string
	serviceBin            string
	serviceChannels       int
	serviceBuffer         int
	serviceGOMAXPROCS     int
	serviceConfirmTimeout time.Duration
	serviceEnv            []string
	rabbitmqctl           string
	node                  string
	brokerPidFile         string
	memoryMessages        int
	memoryConc            int
	spoolParent           string
	spoolMaxBytes         int64
	spoolDrainTimeout     time.Duration
	jsonOut               bool
	httpClient            string
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func parseFlags(args []string) (*config, error) {
	var cfg config
	fs := flag.NewFlagSet("pubbench", flag.ContinueOnError)
	fs.IntVar(&cfg.c, "c", 64, "concurrency of modes service, raw and mgmt")
	fs.IntVar(&cfg.size, "size", 256, "message body size in bytes")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured duration of each mode")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured warm-up before each mode's measurement")
	fs.IntVar(&cfg.rounds, "rounds", 1, "runs of every mode, interleaved (a b c d a b c d ...); the results merge them, which evens out a noisy machine")
	fs.DurationVar(&cfg.pause, "pause", time.Second, "pause after purging the queue between modes")
	modes := fs.String("modes", strings.Join(allModes, ","), "comma-separated modes to run, in this order: "+strings.Join(allModes, ","))
	fs.StringVar(&cfg.amqpURL, "amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "broker AMQP URL")
	fs.StringVar(&cfg.mgmtURL, "mgmt-url", "http://guest:guest@127.0.0.1:15672", "broker management API base URL (mode mgmt)")
	fs.BoolVar(&cfg.persistent, "persistent", true, "publish persistent messages (delivery mode 2)")
	fs.StringVar(&cfg.queue, "queue", "pubbench", "durable queue the messages are routed to (declared, and purged between modes)")
	fs.IntVar(&cfg.pipeChannels, "pipe-channels", 16, "channels of mode pipelined")
	fs.IntVar(&cfg.pipeWindow, "pipe-window", 256, "unconfirmed messages in flight per channel in mode pipelined")
	fs.StringVar(&cfg.servicePkg, "service-pkg", "./cmd/publisher", "package of the service, built with go build")
	fs.StringVar(&cfg.serviceBin, "service-bin", "", "a prebuilt service binary (skips the build)")
	fs.IntVar(&cfg.serviceChannels, "service-channels", 0, "PUBLISHER_CHANNELS of the service (0: its default)")
	fs.IntVar(&cfg.serviceBuffer, "service-buffer", 10000, "PUBLISHER_BUFFER_SIZE of the service")
	fs.IntVar(&cfg.serviceGOMAXPROCS, "service-gomaxprocs", 0, "GOMAXPROCS of the service (0: Go's default, the number of CPUs, as the raw modes run; 1: as deploy/ runs the sidecar under its half-core CPU limit)")
	fs.DurationVar(&cfg.serviceConfirmTimeout, "service-confirm-timeout", 90*time.Second, "PUBLISHER_CONFIRM_TIMEOUT of the service (long: the memory measurement holds messages)")
	fs.Var((*stringList)(&cfg.serviceEnv), "service-env", "extra NAME=value in the service's environment, e.g. PUBLISHER_CHANNELS=4 or GOGC=200 (repeatable)")
	fs.StringVar(&cfg.rabbitmqctl, "rabbitmqctl", "rabbitmqctl", "rabbitmqctl command")
	fs.StringVar(&cfg.node, "rabbitmqctl-node", "", "broker node name for rabbitmqctl -n; empty skips the memory measurement")
	fs.StringVar(&cfg.brokerPidFile, "broker-pid-file", "", "the broker's pid file, to report its CPU per message (optional)")
	fs.IntVar(&cfg.memoryMessages, "memory-messages", 10000, "messages held in the service for the RSS measurement (0 skips it)")
	fs.IntVar(&cfg.memoryConc, "memory-dials", 256, "concurrent connection dials while firing the memory measurement's requests")
	fs.StringVar(&cfg.spoolParent, "spool-parent", os.TempDir(), "directory under which mode spooled creates (and removes) the spooled service's PUBLISHER_SPOOL_DIR; should be a real disk, not tmpfs")
	fs.Int64Var(&cfg.spoolMaxBytes, "spool-max-bytes", 0, "PUBLISHER_SPOOL_MAX_BYTES of the spooled service (0: its default)")
	fs.DurationVar(&cfg.spoolDrainTimeout, "spool-drain-timeout", 3*time.Minute, "mode spooled: how long to wait after the load for the spool to drain")
	fs.BoolVar(&cfg.jsonOut, "json", false, "print the results as JSON instead of a table")
	fs.StringVar(&cfg.httpClient, "http-client", "lean", "HTTP client of modes service and spooled: lean (one prepared request per keep-alive connection, little CPU) or net/http")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	for _, m := range strings.Split(*modes, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		if _, ok := modeLabels[m]; !ok {
			return nil, fmt.Errorf("-modes: unknown mode %q (want %s)", m, strings.Join(allModes, ","))
		}
		cfg.modes = append(cfg.modes, m)
	}
	switch {
	case len(cfg.modes) == 0:
		return nil, errors.New("-modes: no mode")
	case cfg.c < 1 || cfg.c > 10000:
		return nil, errors.New("-c: must be 1..10000")
	case cfg.size < 0 || cfg.size > 16<<20:
		return nil, errors.New("-size: must be 0..16 MiB")
	case cfg.duration <= 0 || cfg.duration > time.Hour:
		return nil, errors.New("-duration: must be in (0, 1h]")
	case cfg.warmup < 0 || cfg.warmup > time.Hour:
		return nil, errors.New("-warmup: must be in [0, 1h]")
	case cfg.pipeChannels < 1 || cfg.pipeChannels > 1000 || cfg.pipeWindow < 1 || cfg.pipeWindow > 100000:
		return nil, errors.New("-pipe-channels/-pipe-window: out of range")
	case cfg.memoryMessages < 0 || cfg.memoryMessages > 15000:
		return nil, errors.New("-memory-messages: must be 0..15000 (each is a connection)")
	case cfg.memoryConc < 1:
		return nil, errors.New("-memory-dials: must be positive")
	case cfg.httpClient != "lean" && cfg.httpClient != "net/http":
		return nil, fmt.Errorf("-http-client: %q: want lean or net/http", cfg.httpClient)
	case cfg.serviceGOMAXPROCS < 0 || cfg.serviceGOMAXPROCS > 1024:
		return nil, errors.New("-service-gomaxprocs: must be 0..1024")
	case cfg.rounds < 1 || cfg.rounds > 100:
		return nil, errors.New("-rounds: must be 1..100")
	case cfg.queue == "":
		return nil, errors.New("-queue: must not be empty")
	case cfg.spoolMaxBytes < 0:
		return nil, errors.New("-spool-max-bytes: must not be negative")
	case cfg.spoolDrainTimeout <= 0 || cfg.spoolDrainTimeout > time.Hour:
		return nil, errors.New("-spool-drain-timeout: must be in (0, 1h]")
	}
	if slicesContains(cfg.modes, modeSpooled) {
		if st, err := os.Stat(cfg.spoolParent); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("-spool-parent %q: not a directory", cfg.spoolParent)
		}
	}
	for _, kv := range cfg.serviceEnv {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			return nil, fmt.Errorf("-service-env %q: want NAME=value (PUBLISHER_CHANNELS=4, GOMAXPROCS=1, ...)", kv)
		}
	}
	if slicesContains(cfg.modes, modeMgmt) {
		u, err := url.Parse(cfg.mgmtURL)
		if err != nil || u.Scheme != "http" || !isLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("-mgmt-url %q: want http://user:pass@127.0.0.1:PORT", cfg.mgmtURL)
		}
	}
	return &cfg, nil
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func isLoopbackHost(h string) bool {
	return h == "localhost" || h == "127.0.0.1" || h == "::1"
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pubbench: "+format+"\n", args...)
}

// modeResult is the outcome of one mode.
type modeResult struct {
	Mode           string        `json:"mode"`
	Label          string        `json:"label"`
	Counted        string        `json:"counted"` // what msgs_per_sec counts
	Conc           string        `json:"concurrency"`
	Rounds         int           `json:"rounds"`
	Rate           float64       `json:"msgs_per_sec"`
	Mean           time.Duration `json:"-"`
	P50            time.Duration `json:"-"`
	P99            time.Duration `json:"-"`
	MeanMs         float64       `json:"mean_ms"`
	P50Ms          float64       `json:"p50_ms"`
	P99Ms          float64       `json:"p99_ms"`
	Measured       int           `json:"confirmed_measured"`
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

type report struct {
	Machine    map[string]string `json:"machine"`
	Params     map[string]any    `json:"params"`
	Results    []*modeResult     `json:"results"`
	Ratios     []ratio           `json:"ratios"`
	Memory     *memResult        `json:"memory"`
	Notes      []string          `json:"notes,omitempty"`
	StartedAt  time.Time         `json:"started_at"`
	FinishedAt time.Time         `json:"finished_at"`
}

type bench struct {
	cfg       *config
	body      []byte
	svc       *service // mode service (and the memory measurement)
	spoolSvc  *service // mode spooled
	brokerPid string
	notes     []string
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "pubbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "pubbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *config) error {
	b := &bench{cfg: cfg, body: makeBody(cfg.size)}
	rep := &report{StartedAt: time.Now(), Machine: machineInfo(cfg), Params: map[string]any{
		"c": cfg.c, "size": cfg.size, "duration": cfg.duration.String(), "warmup": cfg.warmup.String(),
		"persistent": cfg.persistent, "rounds": cfg.rounds, "queue": cfg.queue, "pipe_channels": cfg.pipeChannels,
		"pipe_window": cfg.pipeWindow, "service_channels": cfg.serviceChannels,
		"service_gomaxprocs": gomaxprocsLabel(cfg.serviceGOMAXPROCS), "http_client": cfg.httpClient,
	}}
	if slicesContains(cfg.modes, modeSpooled) {
		rep.Params["spool_parent"] = cfg.spoolParent
		rep.Params["spool_drain_timeout"] = cfg.spoolDrainTimeout.String()
		if isTmpfs(cfg.spoolParent) {
			b.note("-spool-parent %s is a tmpfs: fsync costs nothing there, so mode spooled is flattered", cfg.spoolParent)
		}
	}
	if cfg.brokerPidFile != "" {
		if p, err := os.ReadFile(cfg.brokerPidFile); err == nil {
			b.brokerPid = strings.TrimSpace(string(p))
		} else {
			b.note("broker CPU not reported: %v", err)
		}
	}
	if err := b.purge(); err != nil {
		return err
	}
	if slicesContains(cfg.modes, modeService) {
		svc, err := startService(ctx, cfg, serviceOpts{name: "service"})
		if err != nil {
			return err
		}
		b.svc = svc
		defer svc.stop()
	}
	if slicesContains(cfg.modes, modeSpooled) {
		opts := serviceOpts{name: "spooled service", spoolParent: cfg.spoolParent}
		if b.svc != nil {
			opts.bin = b.svc.bin // built once
		}
		svc, err := startService(ctx, cfg, opts)
		if err != nil {
			return err
		}
		b.spoolSvc = svc
		defer svc.stop()
	}
	aggs := map[string]*modeAgg{}
	for round := 1; round <= cfg.rounds; round++ {
		if cfg.rounds > 1 {
			logf("round %d of %d", round, cfg.rounds)
		}
		for _, m := range cfg.modes {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			run, err := b.runMode(ctx, m)
			if err != nil {
				return err
			}
			logf("%s: %s msgs/s, %d errors", modeLabels[m], fmtRate(float64(len(run.m.lat))/cfg.duration.Seconds()), run.m.errs)
			if sr := run.spool; sr != nil {
				logf("%s: drained in %.2fs (drained: %v); end to end %s msgs/s", modeLabels[m], sr.drain, sr.drained,
					fmtRate(float64(run.m.okTotal)/(sr.load+sr.drain)))
			}
			if run.m.lastError != "" {
				logf("%s: last error: %s", modeLabels[m], run.m.lastError)
			}
			if aggs[m] == nil {
				aggs[m] = &modeAgg{mode: m}
			}
			aggs[m].add(run)
			if err := b.purge(); err != nil {
				return err
			}
		}
	}
	for _, m := range cfg.modes {
		rep.Results = append(rep.Results, b.result(aggs[m]))
	}
	rep.Ratios = ratios(rates(rep.Results))
	rep.Memory = b.measureMemory(ctx)
	if err := b.purge(); err != nil {
		b.note("final purge: %v", err)
	}
	rep.Notes = b.notes
	rep.FinishedAt = time.Now()
	if cfg.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return printReport(rep)
}

func (b *bench) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	logf("%s", s)
	b.notes = append(b.notes, s)
}

func makeBody(n int) []byte {
	body := make([]byte, n)
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	for i := range body {
		body[i] = alphabet[i%len(alphabet)]
	}
	return body
}

// purge declares the durable queue and empties it.
func (b *bench) purge() error {
	conn, err := amqp.Dial(b.cfg.amqpURL)
	if err != nil {
		return fmt.Errorf("dial %s: %w", redact(b.cfg.amqpURL), err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(b.cfg.queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", b.cfg.queue, err)
	}
	if _, err := ch.QueuePurge(b.cfg.queue, false); err != nil {
		return fmt.Errorf("purge queue %s: %w", b.cfg.queue, err)
	}
	return nil
}

func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
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

func (b *bench) concLabel(mode string) string {
	if mode == modePipelined {
		return fmt.Sprintf("%dx%d", b.cfg.pipeChannels, b.cfg.pipeWindow)
	}
	return strconv.Itoa(b.cfg.c)
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
		Measured: len(a.lat), ConfirmedTotal: a.okTotal, Errors: a.errs, LastError: a.lastError,
		Rate: float64(len(a.lat)) / measured, WallSeconds: a.wall,
	}
	r.Mean = mean(a.lat)
	r.P50, r.P99 = latencySummary(a.lat)
	r.MeanMs, r.P50Ms, r.P99Ms = float64(r.Mean)/1e6, float64(r.P50)/1e6, float64(r.P99)/1e6
	if a.mode == modeService && a.pubOK && len(a.lat) > 0 {
		r.Split = newLatencySplit(r.Mean, a.pubSecs, a.pubCount)
	}
	if a.okTotal > 0 && a.wall > 0 {
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
	if a.spool {
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
		r.Spool = sp
	}
	return r
}

func machineInfo(cfg *config) map[string]string {
	m := map[string]string{
		"cpus":       strconv.Itoa(runtime.NumCPU()),
		"go":         runtime.Version(),
		"goos/arch":  runtime.GOOS + "/" + runtime.GOARCH,
		"gomaxprocs": strconv.Itoa(runtime.GOMAXPROCS(0)),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				m["memory"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if u, err := url.Parse(cfg.mgmtURL); err == nil && isLoopbackHost(u.Hostname()) {
		client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil}}
		req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(cfg.mgmtURL, "/")+"/api/overview", nil)
		if resp, err := client.Do(req); err == nil {
			var ov struct {
				RabbitMQ string `json:"rabbitmq_version"`
				Erlang   string `json:"erlang_version"`
			}
			if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&ov) == nil {
				m["rabbitmq"], m["erlang"] = ov.RabbitMQ, ov.Erlang
			}
			resp.Body.Close()
		}
		client.CloseIdleConnections()
	}
	return m
}

func printReport(rep *report) error {
	w := os.Stdout
	fmt.Fprintf(w, "machine: %s cpus (%s), %s RAM; broker RabbitMQ %s on Erlang %s, same machine\n",
		rep.Machine["cpus"], rep.Machine["cpu"], rep.Machine["memory"], orDash(rep.Machine["rabbitmq"]), orDash(rep.Machine["erlang"]))
	fmt.Fprintf(w, "params: c=%v size=%vB persistent=%v duration=%v x %v round(s) warmup=%v queue=%v (durable)\n",
		rep.Params["c"], rep.Params["size"], rep.Params["persistent"], rep.Params["duration"], rep.Params["rounds"], rep.Params["warmup"], rep.Params["queue"])
	fmt.Fprintf(w, "service: GOMAXPROCS=%v, PUBLISHER_CHANNELS=%v; HTTP client of the HTTP modes: %v\n\n",
		rep.Params["service_gomaxprocs"], channelsLabel(rep.Params["service_channels"]), rep.Params["http_client"])
	if err := writeTable(w, rep.Results); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, r := range rep.Results {
		if r.ServiceCPUCores == nil {
			continue
		}
		if r.Spool != nil {
			fmt.Fprintf(w, "spooled service CPU: %.1f µs per accepted message, load and drain (%.2f cores busy meanwhile)\n",
				*r.ServiceCPUPerMsg*1e6, *r.ServiceCPUCores)
		} else {
			fmt.Fprintf(w, "service CPU: %.1f µs per confirmed message (%.2f cores busy during its mode)\n",
				*r.ServiceCPUPerMsg*1e6, *r.ServiceCPUCores)
		}
	}
	for _, r := range rep.Results {
		if s := r.Split; s != nil {
			fmt.Fprintf(w, "%s latency: mean %.2f ms per answer; %.2f ms of it inside the service's Publish (mailbox, broker, confirm), %.2f ms the HTTP hop both ways\n",
				r.Label, s.ClientMeanMs, s.PublishMeanMs, s.HTTPMeanMs)
		}
	}
	for _, r := range rep.Results {
		if sp := r.Spool; sp != nil {
			writeSpoolSummary(w, r)
		}
	}
	if m := rep.Memory; m != nil {
		if m.Skipped != "" {
			fmt.Fprintf(w, "\nservice memory: not measured: %s\n", m.Skipped)
		} else {
			fmt.Fprintf(w, "\nservice memory: RSS %s idle, %s holding %.0f messages (buffered+inflight; target %d), peak %s; Go heap in use %s, %.0f goroutines\n",
				fmtBytes(m.RSSIdleBytes), fmtBytes(m.RSSHeldBytes), m.Held, m.Messages, fmtBytes(m.RSSPeakBytes),
				fmtBytes(int64(m.HeapInuseBytes)), m.Goroutines)
			fmt.Fprintf(w, "  after the alarm was cleared: %d confirmed, %d failed, drained in %.1fs\n", m.Confirmed, m.Failed, m.DrainSeconds)
			if m.FailedSample != "" {
				fmt.Fprintf(w, "  a failure: %s\n", m.FailedSample)
			}
		}
	}
	if len(rep.Notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range rep.Notes {
			fmt.Fprintln(w, "  -", n)
		}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// rabbitmqctl runs rabbitmqctl -n NODE args... with a bound.
func (b *bench) rabbitmqctl(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.cfg.rabbitmqctl, append([]string{"-n", b.cfg.node}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s -n %s %s: %w: %s", b.cfg.rabbitmqctl, b.cfg.node, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// gomaxprocsLabel is -service-gomaxprocs as printed: 0 is Go's default.
func gomaxprocsLabel(n int) string {
	if n == 0 {
		return "default (" + strconv.Itoa(runtime.NumCPU()) + ")"
	}
	return strconv.Itoa(n)
}

// channelsLabel is -service-channels as printed: 0 is the service's default.
func channelsLabel(v any) string {
	if n, ok := v.(int); ok && n == 0 {
		return "default"
	}
	return fmt.Sprint(v)
}
