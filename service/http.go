package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
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
		Idempotency:      s.keys,
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
			// The live tree, its failure texts masked once more.
			Tree:        s.root.Snapshot,
			RedactError: s.redactError,
		}),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       adminReadTimeout,
		WriteTimeout:      adminWriteTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          errLog,
	}
	serveAPI := api.Serve
	if s.apiTLS != nil {
		api.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: s.apiTLS.configForClient}
		// HTTP/1.1 only, as on the plain listener: a non-nil TLSNextProto
		// keeps net/http from offering HTTP/2.
		api.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		serveAPI = func(ln net.Listener) error { return api.ServeTLS(ln, "", "") }
	}
	errc := make(chan error, 2)
	go func() { errc <- fmt.Errorf("publish API: %w", serveAPI(apiLn)) }()
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

// apiTLS is the publish API's TLS (PUBLISHER_TLS_CERT_FILE and
// PUBLISHER_TLS_KEY_FILE; with PUBLISHER_TLS_CLIENT_CA_FILE, client
// certificates required): every handshake asks configForClient, which
// reads a file again once it changed on disk. It lives on the Service, so
// the http child's restarts keep it.
//
// Hand-written rather than a file watcher (github.com/fsnotify/fsnotify):
// a watcher needs a goroutine of its own and, for a Kubernetes Secret, a
// watch on the directory whose ..data symlink is swapped; a stat of each
// file at each handshake sees every kind of replacement with neither, and
// costs little (measured on this 2-core machine: 4 µs for the two stats,
// against 1.1 ms for a loopback TLS 1.3 handshake, ECDSA P-256).
type apiTLS struct {
	certFile, keyFile, caFile string
	log                       *slog.Logger

	mu sync.Mutex // guards what follows
	// cert and pool are in use (nil: not read yet), read from the files as
	// certAt and caAt stamp them; certFailedAt and caFailedAt stamp the last
	// files that could not be used (logged once per change).
	cert                 *tls.Certificate
	certAt, certFailedAt [2]fileStamp
	pool                 *x509.CertPool
	caAt, caFailedAt     fileStamp
}

// fileStamp tells a file's versions apart: a replaced file (a new inode, as
// an atomic rename or a Secret's symlink swap makes) or one rewritten in
// place (its time and size).
type fileStamp struct {
	mod       time.Time
	size      int64
	dev, ino  uint64
	statFails bool
}

func stamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{statFails: true}
	}
	st := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(sys.Dev), sys.Ino
	}
	return st
}

// newAPITLS reads the publish API's certificate (and client CAs) for the
// first time; its errors are configuration errors naming the variable.
func newAPITLS(cfg Config, log *slog.Logger) (*apiTLS, error) {
	a := &apiTLS{certFile: cfg.TLSCertFile, keyFile: cfg.TLSKeyFile, caFile: cfg.TLSClientCAFile, log: log}
	if _, _, err := a.current(); err != nil {
		return nil, err
	}
	return a, nil
}

// configForClient is the tls.Config of one handshake (tls.Config's
// GetConfigForClient): TLS 1.2 at least, HTTP/1.1, the certificate in use
// and, with client CAs, a client certificate they issued required.
func (a *apiTLS) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	cert, pool, err := a.current()
	if err != nil {
		return nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}, Certificates: []tls.Certificate{*cert}}
	if pool != nil {
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	return c, nil
}

// current is the certificate and client CAs to use now, each read again when
// its files changed since it was read. A change that cannot be used (a key
// written after its certificate, a half-written file) keeps the previous one
// in use, logged once per change, and is tried again at the next handshake.
func (a *apiTLS) current() (*tls.Certificate, *x509.CertPool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now := [2]fileStamp{stamp(a.certFile), stamp(a.keyFile)}; a.cert == nil || now != a.certAt {
		pair, err := loadKeyPair("TLS_CERT_FILE", "TLS_KEY_FILE", a.certFile, a.keyFile)
		switch {
		case err == nil:
			if a.cert != nil {
				a.log.Info("publish API: TLS certificate read again", "file", a.certFile,
					"subject", pair.Leaf.Subject.String(), "not_after", pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
			}
			a.cert, a.certAt = &pair, now
		case a.cert == nil:
			return nil, nil, err
		case now != a.certFailedAt:
			a.certFailedAt = now
			a.log.Warn("publish API: the TLS certificate changed on disk and cannot be used; serving the previous one", "error", err.Error())
		}
	}
	if a.caFile == "" {
		return a.cert, nil, nil
	}
	if now := stamp(a.caFile); a.pool == nil || now != a.caAt {
		pool, err := loadCA("TLS_CLIENT_CA_FILE", a.caFile)
		switch {
		case err == nil:
			if a.pool != nil {
				a.log.Info("publish API: client CA file read again", "file", a.caFile)
			}
			a.pool, a.caAt = pool, now
		case a.pool == nil:
			return nil, nil, err
		case now != a.caFailedAt:
			a.caFailedAt = now
			a.log.Warn("publish API: the client CA file changed on disk and cannot be used; keeping the previous one", "error", err.Error())
		}
	}
	return a.cert, a.pool, nil
}
