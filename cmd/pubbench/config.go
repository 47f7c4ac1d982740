package main

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
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

func (s *stringList) String() string { return strings.Join(*s, ",") }

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
