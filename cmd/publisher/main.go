// Command publisher is the supervised RabbitMQ publishing service: it takes
// messages over HTTP and answers once the broker has confirmed them (or, with
// a spool, once they are durably on disk). The service itself is package
// service; this command reads the configuration from the environment, sets up
// logging and signals, and runs it.
//
// Exit status: 0 after a clean shutdown, 1 on a runtime error (e.g. a listen
// address in use), 2 on invalid configuration, 3 when the supervision tree
// gave up (PUBLISHER_ON_GIVE_UP=exit and no spool accepting messages).
//
// Signals: SIGTERM and SIGINT shut down (see service.Service.Run); SIGHUP
// reloads PUBLISHER_AUTH_FILE.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/publisher-dev/publisher/internal/logthrottle"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/service"
	"github.com/publisher-dev/publisher/tracing"
)

// Exit statuses.
const (
	exitOK      = 0
	exitRuntime = 1
	exitConfig  = 2
	exitGiveUp  = 3
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("publisher", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "publisher: a supervised RabbitMQ publishing service.\n\nUsage: publisher [-help]\n\nConfiguration is read from the environment:\n\n")
		_ = envconfig.Usagef("PUBLISHER", &service.Config{}, stdout, usageFormat)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	cfg, err := loadConfig()
	unknown := service.UnknownVariables(os.Environ(), pprofVariable)
	if err != nil {
		// No logger without a valid configuration: the warnings are plain
		// lines like the error, and come first, since a misspelling may be
		// its cause (PUBLISHER_SPOOL_MAX_BYTES set beside a misspelled
		// PUBLISHER_SPOOL_DIR).
		for _, u := range unknown {
			fmt.Fprintf(stderr, "publisher: warning: %s\n", u)
		}
		fmt.Fprintf(stderr, "publisher: %v\n", err)
		return exitConfig
	}
	log, logs := newLogger(cfg, stderr)
	defer flushLogs(logs)
	warnUnknown(log, unknown)

	var topo *publisher.Topology
	if cfg.TopologyFile != "" {
		if topo, err = publisher.LoadTopology(cfg.TopologyFile); err != nil {
			fmt.Fprintf(stderr, "publisher: %v: PUBLISHER_TOPOLOGY_FILE: %v\n", service.ErrConfig, err)
			return exitConfig
		}
	}

	tracer, err := tracing.Setup(context.Background(), tracing.Options{ServiceVersion: version, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "publisher: %v: %v\n", service.ErrConfig, err)
		return exitConfig
	}
	defer shutdownTracing(tracer, log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP reloads PUBLISHER_AUTH_FILE. Caught from here on, so one that
	// comes while the service starts waits for it rather than ending the
	// process (SIGHUP's default).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	svc, err := service.New(*cfg, service.Options{Topology: topo, Logger: log, Tracer: tracer})
	switch {
	case errors.Is(err, service.ErrConfig): // the token file, the apps file, the spool directory
		fmt.Fprintf(stderr, "publisher: %v\n", err)
		return exitConfig
	case err != nil:
		log.Error("cannot start", "error", err)
		return exitRuntime
	}
	stopReloads := forwardReloads(hup, svc.ReloadAuth)
	defer stopReloads()
	switch err := svc.Run(ctx); {
	case err == nil:
		return exitOK
	case errors.Is(err, service.ErrGaveUp):
		return exitGiveUp
	default:
		return exitRuntime
	}
}

// forwardReloads calls reload for each signal received on sig until stop
// is called; stop returns once its goroutine has.
func forwardReloads(sig <-chan os.Signal, reload func()) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-sig:
				reload()
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

// pprofVariable is the one PUBLISHER_* variable the command reads besides
// service.Config's, in a build with -tags pprof (pprof.go).
const pprofVariable = "PUBLISHER_PPROF_ADDR"

// warnUnknown logs a warning for each PUBLISHER_* variable that is not a
// setting (service.UnknownVariables), naming the setting it most likely means
// and never its value. It runs before anything connects, so the warning comes
// before the symptoms (the default broker dialled, the default timeout).
//
// A warning, not an error: a container's environment is not the service's
// alone (a platform, an injected sidecar or a shared ConfigMap may set
// PUBLISHER_* variables of their own), and a newer deployment's setting
// reaching an older binary, in a rollback or a rolling upgrade, must not turn
// into a service that refuses to start.
func warnUnknown(log *slog.Logger, unknown []service.UnknownVariable) {
	for _, u := range unknown {
		attrs := []any{"variable", u.Name}
		if u.Closest != "" {
			attrs = append(attrs, "did_you_mean", u.Closest)
		}
		log.Warn(u.String(), attrs...)
	}
}

const flushTimeout = time.Second

// version is the service.version of the spans (set at build time with
// -ldflags "-X main.version=...").
var version = "dev"

// shutdownTracing exports the spans still buffered. It is bounded by
// tracingFlushTimeout: the OTLP endpoint may be away, and the exit must stay
// within PUBLISHER_SHUTDOWN_TIMEOUT plus a second or two.
func shutdownTracing(t *tracing.Tracer, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), tracingFlushTimeout)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		log.Warn("tracing: spans not exported at exit", "error", err)
	}
}

const tracingFlushTimeout = 500 * time.Millisecond

const usageFormat = `{{range .}}{{usage_key .}}
    {{usage_description .}} (default: {{if usage_default .}}{{usage_default .}}{{else}}empty{{end}})
{{end}}`

// newLogger is the service's logger: JSON or text, at the configured level,
// with repeated identical warnings and errors written once per interval with
// a count (a storm of refusals must not flood the log).
func newLogger(cfg *service.Config, w io.Writer) (*slog.Logger, *logthrottle.Handler) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if cfg.LogFormat == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	// Supervision events stay apart per child.
	keys := append(slices.Clone(logthrottle.DefaultKeyAttrs), "supervisor", "child")
	th := logthrottle.New(h, logthrottle.Options{KeyAttrs: keys})
	return slog.New(th), th
}

// flushLogs writes the counts of repeated log lines still pending. It is
// the last thing before exit, so it gets a bound of its own (flushTimeout:
// writing a few lines to stderr takes microseconds).
func flushLogs(h *logthrottle.Handler) {
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	_ = h.Flush(ctx)
}
