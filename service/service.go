// Package service is the publisher service assembled: the supervision tree,
// the publisher and, with a spool, the relay in front of it, the two HTTP
// listeners, readiness, liveness and metrics. Its shape is Config → New →
// Run(ctx): the command (cmd/publisher) reads the configuration from the
// environment, sets up logging and signals, and calls it.
//
// The tree:
//
//	root                (one-for-one; on exhaustion: keep retrying with a
//	│                    spool, else degrade (default) or exit (ErrGaveUp))
//	├── broker          (escalating one-for-one)
//	│   ├── publisher   (owns the AMQP connection and its confirm channels)
//	│   └── forwarder   (with a spool: publishes what the spool holds)
//	├── auth            (with PUBLISHER_AUTH_FILE: reloads it on change and SIGHUP)
//	└── http            (publish API and admin listeners)
//
// broker starts first so that, stopping in reverse order, the HTTP listeners
// drain their requests while the publisher can still confirm them. The
// shutdown sequence and its timing are described at Run.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/publisher-dev/publisher/apps"
	"github.com/publisher-dev/publisher/idempotency"
	"github.com/publisher-dev/publisher/metrics"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/relay"
	"github.com/publisher-dev/publisher/spool"
	"github.com/publisher-dev/publisher/supervision"
	"github.com/publisher-dev/publisher/tracing"
)

// ErrGaveUp is returned by Run when the supervision tree exhausted the root's
// restart intensity and PUBLISHER_ON_GIVE_UP=exit (the command exits with
// status 3, so the container runtime, the supervisor above, takes over). It
// wraps the *supervision.EscalationError.
var ErrGaveUp = errors.New("service: supervision tree gave up")

// errGivenUp answers publishes while the tree has given up and the broker is
// still away (PUBLISHER_ON_GIVE_UP=degrade, no spool).
var errGivenUp = errors.New("service: broker unavailable, retrying at the slowest backoff")

// Service is the running service. Create it with New, run it with Run.
type Service struct {
	cfg   Config
	log   *slog.Logger
	pub   *publisher.Publisher
	spool *spool.Spool // nil without a spool
	relay *relay.Relay // nil without a spool
	// sender is what the publish API sends through: the relay with a spool,
	// else relay.Direct, straight to the publisher.
	sender  relay.Sender
	metrics *metrics.Metrics
	reg     *prometheus.Registry
	root    *supervision.Supervisor
	tracer  *tracing.Tracer // nil: no spans
	// appSet is the apps in force (the publish API reads it per request):
	// auth's with PUBLISHER_AUTH_FILE, else one Set for the process's life
	// (PUBLISHER_AUTH_TOKEN's one app, or none: anonymous).
	appSet func() *apps.Set
	auth   *apps.Registry // nil without PUBLISHER_AUTH_FILE
	// keys are the idempotency keys of the publish API (with a spool, the
	// relay restores and confirms them too).
	keys *idempotency.Store

	// broker is the host and port of the broker last connected to, for the
	// supervision events' log records (the tracing conventions'
	// server.address and server.port).
	broker atomic.Pointer[brokerAddr]

	apiTLS             *apiTLS      // the publish API's certificate; nil: plain HTTP
	apiLn, adminLn     net.Listener // handed to the first incarnation of the http child
	apiAddr, adminAddr string       // where they listen (with port 0: the port chosen)

	// draining is set when Run's ctx ends: not ready, new publishes 503.
	draining atomic.Bool
	// givenUp is 1 + the publisher's connection count when the root last gave
	// up (0: it has not): the tree has given up on the broker for as long as
	// no connection was made since.
	givenUp   atomic.Uint64
	treeAlive atomic.Bool // root supervisor running (liveness)
}

// Options are what the service takes besides its Config; the zero value is
// valid.
type Options struct {
	// Topology is declared on every connect (PUBLISHER_TOPOLOGY_FILE, loaded
	// by the caller); nil for none.
	Topology *publisher.Topology
	// Logger receives the service's logs; nil means slog.Default().
	Logger *slog.Logger
	// Tracer makes the spans (tracing.Setup, from the OTEL_* environment);
	// nil for none. The trace context of requests is carried into the
	// messages either way. The caller shuts it down after Run.
	Tracer *tracing.Tracer
}

// New checks cfg (zero fields mean their defaults), listens on both
// addresses (so a taken port fails at once), opens the spool when configured
// (recovering what an earlier run left) and builds the tree. Nothing connects
// to the broker before Run.
func New(cfg Config, opts Options) (*Service, error) {
	return newService(cfg, opts, nil)
}

// newService is New with the publisher's connections made by dial when it
// is not nil (tests pass internal/fakeamqp's).
func newService(cfg Config, opts Options, dial func(context.Context, string) (publisher.Conn, error)) (_ *Service, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := cfg.prepare(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Service{cfg: cfg, log: log, reg: prometheus.NewRegistry(), tracer: opts.Tracer}
	defer func() {
		if err != nil {
			s.closeListeners()
			s.closeSpool()
		}
	}()
	if cfg.TLSCertFile != "" {
		if s.apiTLS, err = newAPITLS(cfg, log); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	if s.apiLn, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
		return nil, fmt.Errorf("PUBLISHER_LISTEN_ADDR: %w", err)
	}
	if s.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		return nil, fmt.Errorf("PUBLISHER_ADMIN_ADDR: %w", err)
	}
	s.apiAddr, s.adminAddr = s.apiLn.Addr().String(), s.adminLn.Addr().String()
	if s.metrics, err = metrics.New(s.reg); err != nil {
		return nil, err
	}
	sec := cfg.brokerSecurity()
	s.pub, err = publisher.New(publisher.Config{
		URLs:               cfg.AMQPURLs,
		URLsFile:           sec.URLsFile,
		TLS:                sec.TLS,
		AuthMechanism:      sec.AuthMechanism,
		Channels:           cfg.Channels,
		BufferSize:         cfg.BufferSize,
		ConfirmTimeout:     cfg.ConfirmTimeout,
		MaxPublishAttempts: cfg.MaxPublishAttempts,
		Topology:           opts.Topology,
		Logger:             log,
		Observer:           s.metrics,
		OnConnect:          s.connected,
		Dial:               dial,
	})
	if err != nil {
		return nil, err
	}
	if err := s.metrics.WatchState(s.pub, s.readyAt, s.degradedAt); err != nil {
		return nil, err
	}
	if sec.TLS.CertFile != "" {
		expiry := func() (time.Time, bool) { t, err := sec.TLS.ClientCertExpiry(); return t, err == nil }
		if err := s.metrics.WatchClientCert(expiry); err != nil {
			return nil, err
		}
	}
	s.metrics.Declare("root", "broker", "http")
	s.metrics.Declare("broker", "publisher")
	s.keys = idempotency.NewStore(idempotency.Config{
		Window:   cfg.IdempotencyWindow,
		MaxKeys:  cfg.IdempotencyMaxKeys,
		OnLookup: func(r idempotency.Result) { s.metrics.IdempotencyLookup(r.String()) },
		OnEvict:  s.metrics.IdempotencyEvicted,
	})
	if err := s.metrics.WatchIdempotency(s.keys.Len); err != nil {
		return nil, err
	}

	hook := func(ev supervision.Event) {
		s.metrics.Event(ev)
		s.logEvent(ev)
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
	if err := broker.Add(supervision.ChildSpec{Name: "publisher", Service: s.pub, ShutdownTimeout: publisherStopTimeout}); err != nil {
		return nil, err
	}
	if cfg.SpoolDir != "" {
		if err := s.openSpool(); err != nil {
			return nil, err
		}
		// Started after the publisher, so stopped before it.
		if err := broker.Add(supervision.ChildSpec{Name: "forwarder", Service: s.relay, ShutdownTimeout: forwarderStopTimeout}); err != nil {
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
	if err := s.root.Add(supervision.ChildSpec{Name: "broker", Service: broker, ShutdownTimeout: publisherStopTimeout + forwarderStopTimeout}); err != nil {
		return nil, err
	}
	s.sender = relay.Direct{Publisher: s.pub}
	if s.relay != nil {
		s.sender = s.relay
	}
	if err := s.setUpApps(); err != nil {
		return nil, err
	}
	if err := s.root.Add(supervision.ChildSpec{Name: "http", Service: supervision.ServiceFunc(s.serveHTTP), ShutdownTimeout: cfg.ShutdownTimeout + httpStopSlack}); err != nil {
		return nil, err
	}
	return s, nil
}

// setUpApps decides who may publish: PUBLISHER_AUTH_FILE's apps, reloaded
// by the root's child "auth" (started before http, so stopped after it), or
// one Set for the process's life. The apps' series exist from the start.
func (s *Service) setUpApps() error {
	if s.cfg.AuthFile == "" {
		set := apps.Open()
		if s.cfg.AuthToken != "" {
			set = apps.Single(s.cfg.AuthToken)
		}
		s.appSet = func() *apps.Set { return set }
		s.metrics.Apps(set.Names())
		return nil
	}
	first := s.cfg.authApps
	s.auth = apps.NewRegistry(s.cfg.AuthFile, first, apps.Options{Logger: s.log, OnReload: s.authReloaded})
	s.appSet = s.auth.Current
	s.metrics.Apps(first.Names())
	s.log.Info("auth file loaded", "file", s.cfg.AuthFile, "apps", first.Names())
	for _, w := range first.Warnings() {
		s.log.Warn("auth file: " + w)
	}
	s.metrics.Declare("root", "auth")
	return s.root.Add(supervision.ChildSpec{Name: "auth", Service: s.auth, ShutdownTimeout: authStopTimeout})
}

// authReloaded is the auth Registry's OnReload: the reload counted, the new
// apps' series made.
func (s *Service) authReloaded(set *apps.Set, err error) {
	s.metrics.ConfigReload(err)
	if set != nil {
		s.metrics.Apps(set.Names())
	}
}

// ReloadAuth asks for PUBLISHER_AUTH_FILE to be loaded again now, changed or
// not (the command calls it on SIGHUP); it never blocks. The reload is
// logged and counted (publisher_config_reloads_total); a file that does not
// load leaves the apps in force as they were. Without the file it only logs
// that there is nothing to reload.
func (s *Service) ReloadAuth() {
	if s.auth == nil {
		s.log.Info("reload asked: nothing to reload (PUBLISHER_AUTH_FILE is not set)")
		return
	}
	s.auth.Reload()
}

// The children's shutdown timeouts. The publisher ends its incarnation within
// about twice its close timeout (the close handshake, then the cut of a
// stalled socket: publisher's closeTimeout of 1s); the forwarder only stops
// reading the spool. httpStopSlack is what the http child may take beyond
// PUBLISHER_SHUTDOWN_TIMEOUT: it answers every request by then itself (see
// Run), so this only bounds a bug.
const (
	publisherStopTimeout = 3 * time.Second
	forwarderStopTimeout = 2 * time.Second
	httpStopSlack        = 2 * time.Second
	// authStopTimeout: the auth child stops at once, unless it is reading
	// the file right then.
	authStopTimeout = time.Second
)

// APIAddr is the publish API's listening address (useful with port 0).
func (s *Service) APIAddr() string { return s.apiAddr }

// AdminAddr is the admin listener's address.
func (s *Service) AdminAddr() string { return s.adminAddr }

// openSpool opens PUBLISHER_SPOOL_DIR (recovering what an earlier run left)
// and the relay in front of the publisher.
func (s *Service) openSpool() error {
	// The spool's counters must exist before Open, which reports what it
	// recovers (fsyncs, corrupt segments, lost records) through them; its
	// gauges read the spool once it is open.
	sm, err := metrics.NewSpool(s.reg, s.cfg.SpoolMaxBytes, s.spoolStatus)
	if err != nil {
		return err
	}
	sp, err := spool.Open(s.cfg.SpoolDir, spool.Options{
		MaxBytes:  s.cfg.SpoolMaxBytes,
		Logger:    s.log,
		OnFsync:   sm.Fsync,
		OnCorrupt: sm.Corrupt,
		OnLost:    sm.Lost,
		Describe:  relay.MessageIDOf,
	})
	if err != nil {
		return fmt.Errorf("PUBLISHER_SPOOL_DIR: %w", err)
	}
	s.spool = sp
	st := sp.Status()
	s.log.Info("spool opened", "dir", s.cfg.SpoolDir, "messages", st.Messages, "bytes", st.Bytes,
		"max_bytes", s.cfg.SpoolMaxBytes, "segment_bytes", st.SegmentBytes, "accepting", st.Accepting)
	s.relay = relay.New(relay.Config{
		Spool:          sp,
		Publisher:      s.pub,
		ConfirmTimeout: s.cfg.ConfirmTimeout,
		Logger:         s.log,
		OnDeadLetter:   sm.DeadLettered,
		Keys:           s.keys,
		KeysFile:       filepath.Join(s.cfg.SpoolDir, keysFile),
	})
	ctx, cancel := context.WithTimeout(context.Background(), restoreKeysTimeout)
	defer cancel()
	n, err := s.relay.RestoreKeys(ctx)
	if err != nil {
		// Publishing goes on: only retries of the keys not restored may be
		// published again.
		s.log.Warn("idempotency keys not all restored", "restored", n, "error", err)
	} else if n > 0 {
		s.log.Info("idempotency keys restored", "keys", n)
	}
	return nil
}

// keysFile is the journal of the confirmed idempotency keys, in the spool
// directory (relay/keys.go); restoreKeysTimeout bounds reading it and the
// spool's records for their keys at start.
const (
	keysFile           = "idempotency.log"
	restoreKeysTimeout = time.Minute
)

// spoolStatus is the spool's state for the metrics (zero before it is open).
func (s *Service) spoolStatus() spool.Status {
	if s.spool == nil {
		return spool.Status{}
	}
	return s.spool.Status()
}

// rootDecider restarts the broker subtree (its publisher then dials the next
// URL) while the root's intensity allows. Beyond it, the tree has given up on
// the broker. With a spool, it keeps retrying at the slowest backoff whatever
// PUBLISHER_ON_GIVE_UP says: riding out an outage is the spool's purpose, the
// messages it holds wait for the broker, and exiting would turn 202s (or,
// with a full spool, 503s with Retry-After) into refused connections without
// curing anything (a spool that cannot recover fails /healthz instead).
// Without a spool it escalates (Run returns ErrGaveUp) or, with
// PUBLISHER_ON_GIVE_UP=degrade, keeps retrying, not ready.
func (s *Service) rootDecider(f supervision.Failure) supervision.Directive {
	if !f.Exhausted {
		return supervision.Restart
	}
	if s.relay == nil && s.cfg.OnGiveUp != "degrade" {
		return supervision.Escalate
	}
	first := !s.degraded()
	s.givenUp.Store(1 + s.pub.State().Connects)
	if first {
		mode := "degraded: not ready, answering 503"
		if s.relay != nil {
			mode = "the spool keeps accepting while it has room (ready, 202)"
		}
		s.log.Error("supervision tree gave up on the broker; retrying at the slowest backoff; "+mode,
			"child", f.Child, "error", f.Err, "failures", f.Stats.Failures)
	}
	return supervision.Restart
}

// Run runs the tree until ctx ends (a clean shutdown: nil) or the tree gives
// up (ErrGaveUp) or fails otherwise (another error).
//
// Shutdown, from the moment ctx ends, with T = PUBLISHER_SHUTDOWN_TIMEOUT:
//  1. readiness goes false and every new publish is answered 503 (the
//     listener stays open, so callers get an answer, not a refused
//     connection); keep-alives are turned off;
//  2. the publishes in flight get until T - min(1s, T/4) to be confirmed;
//  3. then every request still waiting is answered: with a spool 202 (the
//     message is on disk), else 503 when the message was never sent to the
//     broker (it never will be: a retry makes no duplicate) or 504 when it was
//     (it may still arrive);
//  4. the listeners close, then the broker subtree stops: the forwarder, then
//     the publisher, whose connection closes cleanly or, against a broker that
//     stopped reading (an alarm), is cut after a second.
//
// So the process ends within T plus a second or two, whatever the broker does.
func (s *Service) Run(ctx context.Context) error {
	brokers := any(redactedURLs(s.cfg.AMQPURLs))
	if s.cfg.AMQPURLsFile != "" {
		brokers = "from " + s.cfg.AMQPURLsFile
	}
	s.log.Info("publisher starting", "listen", s.APIAddr(), "https", s.apiTLS != nil, "admin", s.AdminAddr(),
		"brokers", brokers, "on_give_up", s.cfg.OnGiveUp, "spool", s.cfg.SpoolDir != "", "apps", s.appSet().Names())
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
		return nil
	case err := <-done:
		s.treeAlive.Store(false)
		s.closeListeners()
		var esc *supervision.EscalationError
		if errors.As(err, &esc) {
			s.log.Error("supervision tree gave up: exiting so the container runtime takes over",
				"child", esc.Child, "error", err)
			// The publisher was stopped without Terminated (an escalation keeps
			// state for a restart); nobody will restart it now, so fail back
			// whatever still waits.
			s.pub.Terminated(err)
			s.closeSpool()
			return fmt.Errorf("%w: %w", ErrGaveUp, err)
		}
		s.closeSpool()
		s.log.Error("supervision tree stopped", "error", errString(err))
		if err == nil {
			err = errors.New("service: supervision tree stopped")
		}
		return err
	}
}

func (s *Service) closeListeners() {
	for _, ln := range []net.Listener{s.apiLn, s.adminLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

func (s *Service) closeSpool() {
	if s.spool == nil {
		return
	}
	s.relay.EndTraces()
	s.relay.CloseKeys()
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

type brokerAddr struct {
	host string
	port int
}

// connected is the publisher's OnConnect: the broker in use, for the spans'
// and the supervision log records' server.address and server.port.
func (s *Service) connected(host string, port int) {
	s.broker.Store(&brokerAddr{host, port})
	s.tracer.SetBroker(host, port)
}

// logEvent logs one supervision event. Restarts and escalations are log
// records, not span events (they belong to no request, and OpenTelemetry is
// moving span events to log-based events): they carry the tracing
// conventions' messaging.system and the broker's server.address and
// server.port, to be correlated with the connection's spans.
func (s *Service) logEvent(ev supervision.Event) {
	log := s.log
	attrs := []any{"supervisor", ev.Supervisor, "child", ev.Child, "messaging.system", "rabbitmq"}
	if b := s.broker.Load(); b != nil {
		attrs = append(attrs, "server.address", b.host, "server.port", b.port)
	}
	if ev.Err != nil {
		attrs = append(attrs, "error", ev.Err.Error())
	}
	switch ev.Kind {
	case supervision.EventFailure:
		attrs = append(attrs, "directive", ev.Directive.String(), "failures_in_window", ev.Stats.Failures,
			"total_restarts", ev.Stats.TotalRestarts, "uptime", ev.Stats.LastUptime.String(),
			"progressed", ev.Stats.Progressed)
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
