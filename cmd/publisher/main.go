// Command publisher is the supervised RabbitMQ publishing service: it takes
// messages over HTTP and answers once the broker has confirmed them.
//
// The supervision tree:
//
//	root                (one-for-one; on exhaustion: exit 3, or degrade)
//	├── broker          (escalating one-for-one)
//	│   └── publisher   (owns the AMQP connection and its confirm channels)
//	└── http            (publish API and admin listeners)
//
// broker starts first so that, stopping in reverse order, the HTTP servers
// drain their requests while the publisher can still confirm them.
//
// Exit status: 0 after a clean shutdown, 1 on a runtime error (e.g. a listen
// address in use), 2 on invalid configuration, 3 when the supervision tree
// gave up (PUBLISHER_ON_GIVE_UP=exit).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/publisher-dev/publisher/httpapi"
	"github.com/publisher-dev/publisher/metrics"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/relay"
	"github.com/publisher-dev/publisher/spool"
	"github.com/publisher-dev/publisher/supervision"
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
		_ = envconfig.Usagef("PUBLISHER", &Config{}, stdout, usageFormat)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintf(stderr, "publisher: %v\n", err)
		return exitConfig
	}
	log := newLogger(cfg, stderr)
	var topo *publisher.Topology
	if cfg.TopologyFile != "" {
		if topo, err = publisher.LoadTopology(cfg.TopologyFile); err != nil {
			fmt.Fprintf(stderr, "publisher: %v: PUBLISHER_TOPOLOGY_FILE: %v\n", errConfig, err)
			return exitConfig
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	svc, err := newService(cfg, topo, log)
	if err != nil {
		log.Error("cannot start", "error", err)
		return exitRuntime
	}
	return svc.run(ctx)
}

const usageFormat = `{{range .}}{{usage_key .}}
    {{usage_description .}} (default: {{if usage_default .}}{{usage_default .}}{{else}}empty{{end}})
{{end}}`

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// errGivenUp answers publishes while PUBLISHER_ON_GIVE_UP=degrade keeps the
// process up after the tree gave up and the broker is still away.
var errGivenUp = errors.New("publisher: broker unavailable, retrying at the slowest backoff")

type service struct {
	cfg     *Config
	log     *slog.Logger
	pub     *publisher.Publisher
	spool   *spool.Spool // nil without PUBLISHER_SPOOL_DIR
	relay   *relay.Relay // nil without PUBLISHER_SPOOL_DIR
	metrics *metrics.Metrics
	reg     *prometheus.Registry
	root    *supervision.Supervisor

	apiLn, adminLn net.Listener

	draining  atomic.Bool // SIGTERM received: not ready, new publishes 503
	givenUp   atomic.Bool // degrade mode after the root's intensity was exhausted
	treeAlive atomic.Bool // root supervisor running (liveness)
}

func newService(cfg *Config, topo *publisher.Topology, log *slog.Logger) (_ *service, err error) {
	s := &service{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			for _, ln := range []net.Listener{s.apiLn, s.adminLn} {
				if ln != nil {
					ln.Close()
				}
			}
			s.closeSpool()
		}
	}()
	// Listening before the tree starts makes a taken port fail at once.
	if s.apiLn, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
		return nil, fmt.Errorf("PUBLISHER_LISTEN_ADDR: %w", err)
	}
	if s.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		return nil, fmt.Errorf("PUBLISHER_ADMIN_ADDR: %w", err)
	}
	obs := &observer{}
	s.pub, err = publisher.New(publisher.Config{
		URLs:               cfg.AMQPURLs,
		Channels:           cfg.Channels,
		BufferSize:         cfg.BufferSize,
		ConfirmTimeout:     cfg.ConfirmTimeout,
		MaxPublishAttempts: cfg.MaxPublishAttempts,
		Topology:           topo,
		Logger:             log,
		Observer:           obs,
	})
	if err != nil {
		return nil, err
	}
	if s.metrics, err = metrics.New(s.reg, s.pub, s.ready); err != nil {
		return nil, err
	}
	obs.m = s.metrics
	s.metrics.Declare("root", "broker", "http")
	s.metrics.Declare("broker", "publisher")

	hook := func(ev supervision.Event) {
		s.metrics.Event(ev)
		logEvent(log, ev)
	}
	backoff := supervision.Backoff{Min: cfg.BackoffMin, Max: cfg.BackoffMax}
	broker := supervision.New(supervision.Spec{
		Name:        "broker",
		Strategy:    supervision.OneForOne,
		MaxRestarts: cfg.MaxRestarts,
		Window:      cfg.RestartWindow,
		Backoff:     backoff,
		EventHook:   hook,
		// DefaultDecider: restart within the intensity, escalate beyond it.
	})
	if err := broker.Add(supervision.ChildSpec{Name: "publisher", Service: s.pub, ShutdownTimeout: 10 * time.Second}); err != nil {
		return nil, err
	}
	if cfg.SpoolDir != "" {
		if err := s.openSpool(); err != nil {
			return nil, err
		}
		// Started after the publisher, so stopped before it.
		if err := broker.Add(supervision.ChildSpec{Name: "forwarder", Service: s.relay, ShutdownTimeout: 10 * time.Second}); err != nil {
			return nil, err
		}
		s.metrics.Declare("broker", "forwarder")
	}
	s.root = supervision.New(supervision.Spec{
		Name:        "root",
		Strategy:    supervision.OneForOne,
		MaxRestarts: cfg.RootMaxRestarts,
		Window:      cfg.RootRestartWindow,
		Backoff:     backoff,
		EventHook:   hook,
		Decider:     s.rootDecider,
	})
	drain := cfg.ShutdownTimeout + 5*time.Second
	if err := s.root.Add(supervision.ChildSpec{Name: "broker", Service: broker, ShutdownTimeout: drain}); err != nil {
		return nil, err
	}
	if err := s.root.Add(supervision.ChildSpec{Name: "http", Service: supervision.ServiceFunc(s.serveHTTP), ShutdownTimeout: drain}); err != nil {
		return nil, err
	}
	return s, nil
}

// openSpool opens PUBLISHER_SPOOL_DIR (recovering what an earlier run left)
// and the relay in front of the publisher.
func (s *service) openSpool() error {
	var sp *spool.Spool
	sm, err := metrics.NewSpool(s.reg, s.cfg.SpoolMaxBytes, func() (int, int64) {
		if sp == nil {
			return 0, 0
		}
		return sp.Stats()
	})
	if err != nil {
		return err
	}
	sp, err = spool.Open(s.cfg.SpoolDir, spool.Options{
		MaxBytes:  s.cfg.SpoolMaxBytes,
		Logger:    s.log,
		OnFsync:   sm.Fsync,
		OnCorrupt: sm.Corrupt,
	})
	if err != nil {
		return fmt.Errorf("PUBLISHER_SPOOL_DIR: %w", err)
	}
	s.spool = sp
	n, b := sp.Stats()
	s.log.Info("spool opened", "dir", s.cfg.SpoolDir, "messages", n, "bytes", b, "max_bytes", s.cfg.SpoolMaxBytes)
	s.relay = relay.New(relay.Config{
		Spool:          sp,
		Publisher:      s.pub,
		ConfirmTimeout: s.cfg.ConfirmTimeout,
		Logger:         s.log,
		OnDeadLetter:   sm.DeadLettered,
	})
	return nil
}

// rootDecider restarts the broker subtree (its publisher then dials the next
// URL) while the root's intensity allows; beyond it the process gives up (exit
// 3) or, with PUBLISHER_ON_GIVE_UP=degrade, keeps retrying, not ready.
func (s *service) rootDecider(f supervision.Failure) supervision.Directive {
	if !f.Exhausted {
		return supervision.Restart
	}
	if s.cfg.OnGiveUp == "degrade" {
		if !s.givenUp.Swap(true) {
			s.log.Error("supervision tree gave up; degraded: not ready, answering 503, retrying at the slowest backoff",
				"child", f.Child, "error", f.Err, "failures", f.Stats.Failures)
		}
		return supervision.Restart
	}
	return supervision.Escalate
}

func (s *service) run(ctx context.Context) int {
	s.log.Info("publisher starting", "listen", s.apiLn.Addr().String(), "admin", s.adminLn.Addr().String(),
		"brokers", redactedURLs(s.cfg.AMQPURLs), "on_give_up", s.cfg.OnGiveUp)
	treeCtx, cancelTree := context.WithCancel(context.Background())
	defer cancelTree()
	done := make(chan error, 1)
	s.treeAlive.Store(true)
	go func() { done <- s.root.Serve(treeCtx) }()

	select {
	case <-ctx.Done():
		s.log.Info("shutting down: draining", "timeout", s.cfg.ShutdownTimeout.String())
		s.draining.Store(true)
		cancelTree() // http stops first (drains), then broker (closes the connection)
		err := <-done
		s.treeAlive.Store(false)
		s.closeSpool()
		s.log.Info("shutdown complete", "error", errString(err))
		return exitOK
	case err := <-done:
		s.treeAlive.Store(false)
		var esc *supervision.EscalationError
		if errors.As(err, &esc) {
			s.log.Error("supervision tree gave up: exiting so the container runtime takes over",
				"child", esc.Child, "error", err, "exit_status", exitGiveUp)
			// The publisher was stopped without Terminated (an escalation keeps
			// state for a restart); nobody will restart it now, so fail back
			// whatever still waits.
			s.pub.Terminated(err)
			s.closeSpool()
			return exitGiveUp
		}
		s.log.Error("supervision tree stopped", "error", errString(err))
		return exitRuntime
	}
}

func (s *service) closeSpool() {
	if s.spool == nil {
		return
	}
	if err := s.spool.Close(); err != nil {
		s.log.Error("closing the spool", "error", err)
	}
}

func errString(err error) string {
	if err == nil || errors.Is(err, context.Canceled) {
		return ""
	}
	return err.Error()
}

func redactedURLs(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = publisher.RedactURL(u)
	}
	return out
}

// accepting gates new publishes (503 when it returns an error).
func (s *service) accepting() error {
	if s.draining.Load() {
		return publisher.ErrClosed
	}
	if s.relay != nil {
		return nil // the spool decides (503 when full or failing)
	}
	if s.degraded() {
		return errGivenUp
	}
	return nil
}

// degraded reports whether the tree gave up (degrade mode) and the broker is
// still away; the first look after the publisher connected again ends it.
func (s *service) degraded() bool {
	if !s.givenUp.Load() {
		return false
	}
	if !s.pub.State().Connected {
		return true
	}
	if s.givenUp.CompareAndSwap(true, false) {
		s.log.Info("broker reachable again: leaving degraded mode")
	}
	return false
}

// ready: connected, all confirm channels open, not blocked, not draining,
// not given up; with a spool: the spool accepts, whatever the broker does.
func (s *service) ready() bool {
	if s.draining.Load() {
		return false
	}
	if s.relay != nil {
		return s.relay.Accepting()
	}
	return !s.degraded() && s.pub.Ready()
}

func (s *service) readyDetail() (bool, map[string]any) {
	st := s.pub.State()
	d := map[string]any{
		"connected": st.Connected,
		"blocked":   st.Blocked,
		"channels":  st.Channels,
		"inflight":  st.Inflight,
		"buffered":  st.Buffered,
		"broker":    st.URL,
		"draining":  s.draining.Load(),
		"given_up":  s.degraded(),
	}
	d["broker_up"] = st.Connected && !st.Blocked
	if s.spool != nil {
		n, b := s.spool.Stats()
		d["spool_messages"], d["spool_bytes"], d["spool_accepting"] = n, b, s.relay.Accepting()
	}
	return s.ready(), d
}

// serveHTTP is the http child: both listeners, served until ctx ends (then
// drained within PUBLISHER_SHUTDOWN_TIMEOUT) or one of them fails (then the
// child fails and root restarts it, listening anew).
func (s *service) serveHTTP(ctx context.Context) error {
	apiLn, adminLn := s.apiLn, s.adminLn
	s.apiLn, s.adminLn = nil, nil // a restarted incarnation listens anew
	var err error
	if apiLn == nil {
		if apiLn, err = net.Listen("tcp", s.cfg.ListenAddr); err != nil {
			return fmt.Errorf("listen PUBLISHER_LISTEN_ADDR: %w", err)
		}
	}
	if adminLn == nil {
		if adminLn, err = net.Listen("tcp", s.cfg.AdminAddr); err != nil {
			apiLn.Close()
			return fmt.Errorf("listen PUBLISHER_ADMIN_ADDR: %w", err)
		}
	}
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	api := &http.Server{
		Handler: httpapi.NewHandler(httpapi.Config{
			Publisher:        s.handlerPublisher(),
			AuthToken:        s.cfg.AuthToken,
			AllowedExchanges: s.cfg.AllowedExchanges,
			MaxBodyBytes:     s.cfg.MaxBodyBytes,
			Accepting:        s.accepting,
			Logger:           s.log,
			OnResponse:       s.metrics.HTTPResponse,
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      s.cfg.ConfirmTimeout + 10*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}
	admin := &http.Server{
		Handler: httpapi.NewAdminHandler(httpapi.AdminConfig{
			Gatherer: s.reg,
			Healthy: func() error {
				if !s.treeAlive.Load() {
					return errors.New("supervision tree stopped")
				}
				return nil
			},
			Ready: s.readyDetail,
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errLog,
	}
	errc := make(chan error, 2)
	go func() { errc <- fmt.Errorf("publish API: %w", api.Serve(apiLn)) }()
	go func() { errc <- fmt.Errorf("admin: %w", admin.Serve(adminLn)) }()

	var failure error
	select {
	case <-ctx.Done():
	case failure = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := api.Shutdown(sctx); err != nil {
		s.log.Warn("publish API did not drain in time", "error", err)
		api.Close()
	}
	if err := admin.Shutdown(sctx); err != nil {
		admin.Close()
	}
	// Both Serve goroutines have returned once Shutdown/Close did.
	if failure == nil {
		<-errc
	}
	<-errc
	return failure
}

// handlerPublisher is what the publish API calls: the relay (spool first)
// when there is a spool, else the publisher directly.
func (s *service) handlerPublisher() httpapi.Publisher {
	if s.relay != nil {
		return s.relay
	}
	return s.pub
}

// observer forwards publisher outcomes to the metrics (set after both exist).
type observer struct{ m *metrics.Metrics }

func (o *observer) Published(out publisher.Outcome, d time.Duration) { o.m.Published(out, d) }
func (o *observer) Republished(n int)                                { o.m.Republished(n) }

func logEvent(log *slog.Logger, ev supervision.Event) {
	attrs := []any{"supervisor", ev.Supervisor, "child", ev.Child}
	if ev.Err != nil {
		attrs = append(attrs, "error", ev.Err.Error())
	}
	switch ev.Kind {
	case supervision.EventFailure:
		attrs = append(attrs, "directive", ev.Directive.String(), "failures_in_window", ev.Stats.Failures,
			"total_restarts", ev.Stats.TotalRestarts, "uptime", ev.Stats.LastUptime.String())
		if ev.Stack != nil {
			attrs = append(attrs, "stack", string(ev.Stack))
		}
		log.Warn("child failed", attrs...)
	case supervision.EventRestart:
		log.Info("child restarting", append(attrs, "delay", ev.Delay.String())...)
	case supervision.EventEscalation:
		log.Error("restart intensity exhausted: escalating", attrs...)
	case supervision.EventStop:
		log.Info("child stopped", attrs...)
	case supervision.EventStopTimeout:
		log.Error("child did not stop in time", attrs...)
	case supervision.EventStart, supervision.EventResume:
		log.Debug("child started", append(attrs, "kind", ev.Kind.String())...)
	}
}
