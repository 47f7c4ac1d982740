package main

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// config is pubbench's flags, checked by parseFlags.
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
	best                  pipeSetting
	bestSearch            []pipeSetting
	bestSearchDuration    time.Duration
	bestSearchRounds      int
	servicePkg            string
	serviceDir            string
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
	batchSize, batchConc  int
	streams, streamWindow int
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// parseFlags parses and checks pubbench's arguments.
func parseFlags(args []string) (*config, error) {
	var cfg config
	fs := flag.NewFlagSet("pubbench", flag.ContinueOnError)
	modes, best, search := cfg.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if cfg.modes, err = parseModes(*modes); err != nil {
		return nil, err
	}
	if cfg.best, err = parsePipeSetting(*best); err != nil {
		return nil, fmt.Errorf("-best: %w", err)
	}
	if cfg.bestSearch, err = parsePipeSettings(*search); err != nil {
		return nil, fmt.Errorf("-best-search: %w", err)
	}
	for _, check := range []func() error{cfg.checkRanges, cfg.checkSpoolParent, cfg.checkServiceEnv, cfg.checkServiceDir, cfg.checkMgmtURL} {
		if err := check(); err != nil {
			return nil, err
		}
	}
	return &cfg, nil
}

// register defines the flags on fs, each filling its field of cfg; -modes,
// -best and -best-search, which parseFlags reads, are returned.
func (cfg *config) register(fs *flag.FlagSet) (modes, best, search *string) {
	fs.IntVar(&cfg.c, "c", 64, "concurrency of modes service, raw, mgmt and spooled")
	fs.IntVar(&cfg.size, "size", 256, "message body size in bytes")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured duration of each mode")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured warm-up before each mode's measurement")
	fs.IntVar(&cfg.rounds, "rounds", 1, "runs of every mode, interleaved (a b c d a b c d ...); the results merge them, which evens out a noisy machine")
	fs.DurationVar(&cfg.pause, "pause", time.Second, "pause after purging the queue between modes")
	modes = fs.String("modes", strings.Join(allModes, ","), "comma-separated modes to run, in this order: "+strings.Join(allModes, ","))
	fs.StringVar(&cfg.amqpURL, "amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "broker AMQP URL")
	fs.StringVar(&cfg.mgmtURL, "mgmt-url", "http://guest:guest@127.0.0.1:15672", "broker management API base URL (mode mgmt)")
	fs.BoolVar(&cfg.persistent, "persistent", true, "publish persistent messages (delivery mode 2)")
	fs.StringVar(&cfg.queue, "queue", "pubbench", "durable queue the messages are routed to (declared, and purged between modes)")
	fs.IntVar(&cfg.pipeChannels, "pipe-channels", 16, "channels of mode pipelined")
	fs.IntVar(&cfg.pipeWindow, "pipe-window", 256, "unconfirmed messages in flight per channel in mode pipelined")
	best = fs.String("best", "1x2048", "mode best (c′): CHANNELSxWINDOW of the pipelined client, used as it is when -best-search is empty, else replaced by the fastest setting of the search")
	search = fs.String("best-search", "1x512,1x1024,1x2048,1x4096,2x1024,4x512,16x256", "mode best (c′): CHANNELSxWINDOW settings of the pipelined client measured before the rounds (-best-search-rounds interleaved rounds of -best-search-duration each); the one with the highest median rate is mode best's; empty: no search, -best as given")
	fs.DurationVar(&cfg.bestSearchDuration, "best-search-duration", 4*time.Second, "mode best (c′): measured duration of each setting in each round of the search (after a 1 s warm-up)")
	fs.IntVar(&cfg.bestSearchRounds, "best-search-rounds", 2, "mode best (c′): interleaved rounds of the search")
	fs.StringVar(&cfg.servicePkg, "service-pkg", "./cmd/publisher", "package of the service, built with go build in -service-dir")
	fs.StringVar(&cfg.serviceDir, "service-dir", "..", "the service's module (the repository root: .. from bench/, where go run . runs), in which -service-pkg is built with that module's go.mod")
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
	fs.IntVar(&cfg.batchSize, "batch-size", 100, "mode batch: messages per /v1/batch request (the service refuses more than its PUBLISHER_MAX_BATCH_MESSAGES, 1000 by default)")
	fs.IntVar(&cfg.batchConc, "batch-c", 8, "mode batch: concurrent /v1/batch requests, each on a keep-alive connection of its own")
	fs.IntVar(&cfg.streams, "streams", 4, "mode stream: concurrent /v1/stream requests")
	fs.IntVar(&cfg.streamWindow, "stream-window", 1024, "mode stream: lines each stream keeps written and not answered (at most the service's PUBLISHER_STREAM_WINDOW, 1024 by default, or the service stops reading and the socket buffers add to the latency)")
	fs.StringVar(&cfg.httpClient, "http-client", "lean", "HTTP client of modes service, mgmt and spooled: lean (one prepared request per keep-alive connection, little CPU) or net/http; modes batch and stream always use their lean clients")
	return modes, best, search
}

// parseModes reads -modes: known names, comma-separated, blanks ignored.
func parseModes(list string) ([]string, error) {
	var modes []string
	for _, m := range strings.Split(list, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		if _, ok := modeLabels[m]; !ok {
			return nil, fmt.Errorf("-modes: unknown mode %q (want %s)", m, strings.Join(allModes, ","))
		}
		modes = append(modes, m)
	}
	return modes, nil
}

// pipeSetting is the pipelined client's channels and, per channel, the
// unconfirmed messages in flight.
type pipeSetting struct{ channels, window int }

func (p pipeSetting) String() string { return fmt.Sprintf("%dx%d", p.channels, p.window) }

// parsePipeSetting reads CHANNELSxWINDOW (1..1000 channels, a window of
// 1..100000).
func parsePipeSetting(s string) (pipeSetting, error) {
	c, w, ok := strings.Cut(strings.TrimSpace(s), "x")
	var p pipeSetting
	var err1, err2 error
	p.channels, err1 = strconv.Atoi(c)
	p.window, err2 = strconv.Atoi(w)
	if !ok || err1 != nil || err2 != nil || p.channels < 1 || p.channels > 1000 || p.window < 1 || p.window > 100000 {
		return pipeSetting{}, fmt.Errorf("%q: want CHANNELSxWINDOW, 1..1000 channels and a window of 1..100000, e.g. 1x2048", s)
	}
	return p, nil
}

// parsePipeSettings reads a comma-separated list of pipe settings (blanks
// ignored; empty: none).
func parsePipeSettings(list string) ([]pipeSetting, error) {
	var out []pipeSetting
	for _, s := range strings.Split(list, ",") {
		if strings.TrimSpace(s) == "" {
			continue
		}
		p, err := parsePipeSetting(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// checkRanges checks each flag's own range (and that -modes names one).
func (cfg *config) checkRanges() error {
	switch {
	case len(cfg.modes) == 0:
		return errors.New("-modes: no mode")
	case cfg.c < 1 || cfg.c > 10000:
		return errors.New("-c: must be 1..10000")
	case cfg.size < 0 || cfg.size > 16<<20:
		return errors.New("-size: must be 0..16 MiB")
	case cfg.duration <= 0 || cfg.duration > time.Hour:
		return errors.New("-duration: must be in (0, 1h]")
	case cfg.warmup < 0 || cfg.warmup > time.Hour:
		return errors.New("-warmup: must be in [0, 1h]")
	case cfg.pipeChannels < 1 || cfg.pipeChannels > 1000 || cfg.pipeWindow < 1 || cfg.pipeWindow > 100000:
		return errors.New("-pipe-channels/-pipe-window: out of range")
	case cfg.bestSearchDuration <= 0 || cfg.bestSearchDuration > time.Hour:
		return errors.New("-best-search-duration: must be in (0, 1h]")
	case cfg.bestSearchRounds < 1 || cfg.bestSearchRounds > 100:
		return errors.New("-best-search-rounds: must be 1..100")
	case cfg.memoryMessages < 0 || cfg.memoryMessages > 15000:
		return errors.New("-memory-messages: must be 0..15000 (each is a connection)")
	case cfg.memoryConc < 1:
		return errors.New("-memory-dials: must be positive")
	case cfg.httpClient != "lean" && cfg.httpClient != "net/http":
		return fmt.Errorf("-http-client: %q: want lean or net/http", cfg.httpClient)
	case cfg.serviceGOMAXPROCS < 0 || cfg.serviceGOMAXPROCS > 1024:
		return errors.New("-service-gomaxprocs: must be 0..1024")
	case cfg.rounds < 1 || cfg.rounds > 100:
		return errors.New("-rounds: must be 1..100")
	case cfg.queue == "":
		return errors.New("-queue: must not be empty")
	case cfg.spoolMaxBytes < 0:
		return errors.New("-spool-max-bytes: must not be negative")
	case cfg.spoolDrainTimeout <= 0 || cfg.spoolDrainTimeout > time.Hour:
		return errors.New("-spool-drain-timeout: must be in (0, 1h]")
	case cfg.batchSize < 1 || cfg.batchSize > 100000:
		return errors.New("-batch-size: must be 1..100000")
	case cfg.batchConc < 1 || cfg.batchConc > 10000:
		return errors.New("-batch-c: must be 1..10000")
	case cfg.streams < 1 || cfg.streams > 1000:
		return errors.New("-streams: must be 1..1000")
	case cfg.streamWindow < 1 || cfg.streamWindow > 1<<20:
		return errors.New("-stream-window: must be 1..1048576")
	}
	return nil
}

// checkSpoolParent checks that mode spooled has a directory for its spool.
func (cfg *config) checkSpoolParent() error {
	if slicesContains(cfg.modes, modeSpooled) {
		if st, err := os.Stat(cfg.spoolParent); err != nil || !st.IsDir() {
			return fmt.Errorf("-spool-parent %q: not a directory", cfg.spoolParent)
		}
	}
	return nil
}

// checkServiceEnv checks that every -service-env is NAME=value.
func (cfg *config) checkServiceEnv() error {
	for _, kv := range cfg.serviceEnv {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			return fmt.Errorf("-service-env %q: want NAME=value (PUBLISHER_CHANNELS=4, GOMAXPROCS=1, ...)", kv)
		}
	}
	return nil
}

// checkServiceDir checks that a service that must be built has a module to
// be built in (a wrong working directory is the usual cause).
func (cfg *config) checkServiceDir() error {
	if cfg.serviceBin != "" {
		return nil
	}
	for _, m := range []string{modeService, modeSpooled, modeBatch, modeStream, modeTraced, modeServiceKeyed, modeBatchKeyed} {
		if !slicesContains(cfg.modes, m) {
			continue
		}
		if _, err := os.Stat(filepath.Join(cfg.serviceDir, "go.mod")); err != nil {
			return fmt.Errorf("-service-dir %q: not the service's module (no go.mod); run pubbench from bench/, or give -service-dir or -service-bin", cfg.serviceDir)
		}
		return nil
	}
	return nil
}

// checkMgmtURL checks that mode mgmt has a loopback HTTP management API.
func (cfg *config) checkMgmtURL() error {
	if slicesContains(cfg.modes, modeMgmt) {
		u, err := url.Parse(cfg.mgmtURL)
		if err != nil || u.Scheme != "http" || !isLoopbackHost(u.Hostname()) {
			return fmt.Errorf("-mgmt-url %q: want http://user:pass@127.0.0.1:PORT", cfg.mgmtURL)
		}
	}
	return nil
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
