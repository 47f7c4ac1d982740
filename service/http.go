package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/publisher-dev/publisher/httpapi"
	"github.com/publisher-dev/publisher/publisher"
)

// HTTP server limits. maxHeaderBytes is the publish API's own header limit,
// answered 431 by the handler (so the answer is counted); net/http's limit
// is set above it (serverMaxHeaderBytes, its default) and only answers, uncounted,
// requests whose headers exceed that.
const (
	readHeaderTimeout    = 5 * time.Second  // a client gets this long to send its headers (slowloris)
	apiReadTimeout       = 30 * time.Second // a whole request, body included
	idleTimeout          = 2 * time.Minute  // a keep-alive connection's idle time
	maxHeaderBytes       = 64 << 10
	serverMaxHeaderBytes = http.DefaultMaxHeaderBytes
	adminReadTimeout     = 10 * time.Second
	adminWriteTimeout    = 30 * time.Second // a scrape of /metrics
	// writeSlack is what an answer may take to write beyond the longest a
	// publish waits (PUBLISHER_CONFIRM_TIMEOUT).
	writeSlack = 10 * time.Second
)

// drainReserve is the part of PUBLISHER_SHUTDOWN_TIMEOUT T kept for what comes
// after the requests are answered (closing the listeners, stopping the broker
// subtree): min(1s, T/4). answerGrace bounds the wait for handlers to write
// their answers once their requests were cancelled.
func drainReserve(t time.Duration) time.Duration { return min(time.Second, t/4) }

const answerGrace = 500 * time.Millisecond

// serveHTTP is the http child: both listeners, served until ctx ends (then
// drained, see Run) or one of them fails (then the child fails and root
// restarts it, listening anew).
func (s *Service) serveHTTP(ctx context.Context) error {
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
	// The requests' contexts derive from base: cancelling it with
	// publisher.ErrClosed answers every publish still waiting at the end of
	// a shutdown's drain.
	base, cancelRequests := context.WithCancelCause(context.Background())
	defer cancelRequests(nil)
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	handler := httpapi.NewHandler(httpapi.Config{
		Sender:           s.sender,
		Apps:             s.appSet,
		AllowedExchanges: s.cfg.AllowedExchanges,
		MaxBodyBytes:     s.cfg.MaxBodyBytes,
		MaxHeaderBytes:   maxHeaderBytes,
		Accepting:        s.accepting,
		Logger:           s.log,
		OnResponse:       s.metrics.HTTPResponse,
		ConfirmTimeout:   s.cfg.ConfirmTimeout,
		MaxBatchMessages: s.cfg.MaxBatchMessages,
		MaxBatchBytes:    s.cfg.MaxBatchBytes,
		StreamWindow:     s.cfg.StreamWindow,
		OnBatch:          s.metrics.Batch,
		OnStream:         s.metrics.Stream,
		OnMessage:        s.metrics.AppMessage,
		OnRateWait:       s.metrics.AppRateWait,
		Tracer:           s.tracer,
		CloudEvents:      httpapi.CloudEventsConfig{Source: s.cfg.CloudEventsSource, Convention: s.cfg.cloudEventsConvention},
	})
	api := &http.Server{
		Handler:           handler,
		BaseContext:       func(net.Listener) context.Context { return base },
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       apiReadTimeout,
		WriteTimeout:      s.cfg.ConfirmTimeout + writeSlack,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    serverMaxHeaderBytes,
		ErrorLog:          errLog,
	}
	admin := &http.Server{
		Handler: httpapi.NewAdminHandler(httpapi.AdminConfig{
			Gatherer: s.reg,
			Healthy:  s.healthy,
			Ready:    s.readyDetail,
		}),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       adminReadTimeout,
		WriteTimeout:      adminWriteTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          errLog,
	}
	errc := make(chan error, 2)
	go func() { errc <- fmt.Errorf("publish API: %w", api.Serve(apiLn)) }()
	go func() { errc <- fmt.Errorf("admin: %w", admin.Serve(adminLn)) }()

	var failure error
	select {
	case <-ctx.Done():
		s.drain(api, handler, cancelRequests)
	case failure = <-errc:
		cancelRequests(publisher.ErrClosed)
	}
	sctx, cancel := context.WithTimeout(context.Background(), answerGrace)
	defer cancel()
	if err := api.Shutdown(sctx); err != nil {
		s.log.Warn("publish API: requests still open after their answers were due; closing them", "error", err)
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
	if errors.Is(failure, http.ErrServerClosed) {
		failure = nil
	}
	return failure
}

// drain is steps 1 to 3 of the shutdown (see Run): the listener stays open
// (new publishes get 503 from accepting), the publishes in progress get until
// the drain deadline, then whatever still waits is cancelled with
// publisher.ErrClosed, which each handler answers at once.
func (s *Service) drain(api *http.Server, handler *httpapi.Handler, cancelRequests context.CancelCauseFunc) {
	start := time.Now()
	api.SetKeepAlivesEnabled(false) // answers say "Connection: close" from now on
	deadline := start.Add(s.cfg.ShutdownTimeout - drainReserve(s.cfg.ShutdownTimeout))
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for handler.InFlight() > 0 && time.Now().Before(deadline) {
		<-tick.C
	}
	if n := handler.InFlight(); n > 0 {
		s.log.Warn("shutdown: answering the publishes still waiting for the broker", "publishes", n,
			"waited", time.Since(start).Round(time.Millisecond).String())
	}
	cancelRequests(publisher.ErrClosed)
}

// drainPoll is how often the drain looks at the publishes in progress: often
// enough that an idle service shuts down at once, rarely enough to cost
// nothing.
const drainPoll = 5 * time.Millisecond
