package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/publisher-dev/publisher/internal/promtext"
	"github.com/publisher-dev/publisher/internal/svcproc"
)

// service is the publisher binary running as a child process.
type service struct {
	proc     *svcproc.Proc
	name     string // for messages: "service" or "spooled service"
	bin      string
	dir      string // temporary: the binary (when built here) and the log
	spoolDir string // temporary PUBLISHER_SPOOL_DIR; empty without a spool
}

// serviceOpts are what differs between the service children.
type serviceOpts struct {
	name string
	bin  string // a binary built already; empty: cfg.serviceBin, or build one
	// spoolParent, when not empty, gives the service a durable spool in a new
	// temporary directory under it (removed by stop)
	spoolParent string
	// env is added to the service's environment last.
	env []string
}

const (
	readyLimit  = 30 * time.Second // from the start until /readyz answers 200
	stopGrace   = 20 * time.Second // from SIGTERM until the child is killed
	logTailSize = 4000             // bytes of the log in error messages
)

// startServices starts the service children the modes need: the service
// for modes service, batch and stream (and the memory measurement), the
// spooled service for mode spooled, built once for both. stopServices stops
// them.
func (b *bench) startServices(ctx context.Context) error {
	if slicesContains(b.cfg.modes, modeService) || slicesContains(b.cfg.modes, modeBatch) || slicesContains(b.cfg.modes, modeStream) ||
		slicesContains(b.cfg.modes, modeServiceKeyed) || slicesContains(b.cfg.modes, modeBatchKeyed) {
		svc, err := startService(ctx, b.cfg, serviceOpts{name: "service"})
		if err != nil {
			return err
		}
		b.svc = svc
	}
	if slicesContains(b.cfg.modes, modeSpooled) {
		opts := serviceOpts{name: "spooled service", spoolParent: b.cfg.spoolParent}
		if b.svc != nil {
			opts.bin = b.svc.bin // built once
		}
		svc, err := startService(ctx, b.cfg, opts)
		if err != nil {
			return err
		}
		b.spoolSvc = svc
	}
	if slicesContains(b.cfg.modes, modeTraced) {
		sink, err := newOTLPSink()
		if err != nil {
			return err
		}
		b.sink = sink
		opts := serviceOpts{name: "traced service", env: []string{
			"OTEL_EXPORTER_OTLP_ENDPOINT=" + sink.url(), "OTEL_SERVICE_NAME=pubbench-traced",
		}}
		if b.svc != nil {
			opts.bin = b.svc.bin
		}
		svc, err := startService(ctx, b.cfg, opts)
		if err != nil {
			return err
		}
		b.tracedSvc = svc
	}
	return nil
}

// stopServices stops the children startServices started, the last first.
func (b *bench) stopServices() {
	if b.tracedSvc != nil {
		b.tracedSvc.stop()
	}
	if b.sink != nil {
		b.sink.close()
		b.note("mode (h): the traced service exported %d OTLP requests, %d bytes, to pubbench's sink", b.sink.requests.Load(), b.sink.bytes.Load())
	}
	if b.spoolSvc != nil {
		b.spoolSvc.stop()
	}
	if b.svc != nil {
		b.svc.stop()
	}
}

// startService builds the service (unless a binary is given), starts it on
// free loopback ports against amqpURL and waits until /readyz answers 200.
func startService(ctx context.Context, cfg *config, opts serviceOpts) (*service, error) {
	dir, err := os.MkdirTemp("", "pubbench-")
	if err != nil {
		return nil, err
	}
	s := &service{name: opts.name, dir: dir}
	if s.name == "" {
		s.name = "service"
	}
	if s.bin, err = serviceBinary(ctx, cfg, opts.bin, dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if opts.spoolParent != "" {
		if s.spoolDir, err = os.MkdirTemp(opts.spoolParent, "pubbench-spool-"); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("spool directory: %w", err)
		}
	}
	s.proc, err = svcproc.Start(svcproc.Spec{
		Bin:     s.bin,
		Env:     append(serviceEnv(cfg, s.spoolDir), opts.env...),
		LogPath: filepath.Join(dir, "publisher.log"),
		// the child must not outlive pubbench, even when pubbench is killed
		DieWithParent: true,
	})
	if err != nil {
		s.removeDirs()
		return nil, err
	}
	if s.spoolDir != "" {
		logf("%s pid %d: api %s, admin %s, spool %s", s.name, s.pid(), s.proc.APIAddr(), s.proc.AdminAddr(), s.spoolDir)
	} else {
		logf("%s pid %d: api %s, admin %s", s.name, s.pid(), s.proc.APIAddr(), s.proc.AdminAddr())
	}
	if err := s.waitReady(ctx); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// serviceBinary returns bin, else -service-bin, else a binary of
// -service-pkg built into dir. The build runs in -service-dir, the service's
// own module, so the binary measured is the one its go.mod and go.sum make
// (as make build does), not one built with this module's requirements.
func serviceBinary(ctx context.Context, cfg *config, bin, dir string) (string, error) {
	if bin == "" {
		bin = cfg.serviceBin
	}
	if bin != "" {
		return bin, nil
	}
	bin = filepath.Join(dir, "publisher")
	logf("building %s in %s", cfg.servicePkg, cfg.serviceDir)
	// go build's -C must be its first flag; Build puts flags right after "build"
	return bin, svcproc.Build(ctx, cfg.servicePkg, bin, os.Stderr, "-C", cfg.serviceDir)
}

// serviceEnv is the child's environment: pubbench's without its PUBLISHER_*
// and GOMAXPROCS, then the service's settings from cfg, -service-env, and
// last the spool (when spoolDir is set), so the spooled service always has
// its own fresh spool. svcproc adds the listen addresses.
func serviceEnv(cfg *config, spoolDir string) []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PUBLISHER_") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"PUBLISHER_AMQP_URLS="+cfg.amqpURL,
		"PUBLISHER_LOG_LEVEL=warn",
		"PUBLISHER_BUFFER_SIZE="+strconv.Itoa(cfg.serviceBuffer),
		// the memory measurement holds messages behind a broker alarm for a while
		"PUBLISHER_CONFIRM_TIMEOUT="+cfg.serviceConfirmTimeout.String(),
	)
	if cfg.serviceGOMAXPROCS > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(cfg.serviceGOMAXPROCS))
	}
	if cfg.serviceChannels > 0 {
		env = append(env, "PUBLISHER_CHANNELS="+strconv.Itoa(cfg.serviceChannels))
	}
	env = append(env, cfg.serviceEnv...)
	if spoolDir != "" {
		env = append(env, "PUBLISHER_SPOOL_DIR="+spoolDir)
		if cfg.spoolMaxBytes > 0 {
			env = append(env, "PUBLISHER_SPOOL_MAX_BYTES="+strconv.FormatInt(cfg.spoolMaxBytes, 10))
		}
	}
	return env
}

// waitReady waits until /readyz answers 200, at most readyLimit.
func (s *service) waitReady(ctx context.Context) error {
	err := s.proc.WaitReady(ctx, readyLimit)
	switch {
	case errors.Is(err, svcproc.ErrExited):
		return fmt.Errorf("%s exited before it was ready (%v); log:\n%s", s.name, s.proc.Err(), s.logTail())
	case errors.Is(err, svcproc.ErrNotReady):
		return fmt.Errorf("%s not ready within %s; log:\n%s", s.name, readyLimit, s.logTail())
	}
	return err
}

func (s *service) pid() int { return s.proc.Pid() }

// alive reports whether the child is still running.
func (s *service) alive() bool { return s.proc.Running() }

// logTail returns the end of the service's log.
func (s *service) logTail() string { return s.proc.LogTail(logTailSize) }

// removeDirs removes the temporary directory and the spool directory.
func (s *service) removeDirs() {
	os.RemoveAll(s.dir)
	if s.spoolDir != "" {
		os.RemoveAll(s.spoolDir)
	}
}

// stop sends SIGTERM, waits up to stopGrace, kills when needed and removes
// the temporary directories (the spool's too).
func (s *service) stop() {
	defer s.removeDirs()
	_, err := s.proc.Stop(stopGrace)
	switch {
	case errors.Is(err, svcproc.ErrKilled):
		logf("%s did not stop within %s of SIGTERM; killed it", s.name, stopGrace)
	case err != nil:
		logf("%s: %v", s.name, err)
	}
}

// scrape reads the service's /metrics.
func (s *service) scrape() (promtext.Samples, error) {
	return s.proc.Metrics(context.Background())
}
