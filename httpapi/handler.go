// Package httpapi is the HTTP face of the publisher service: the publish API
// (POST /v1/publish/{exchange}/{routing_key}) and the admin listener (/metrics,
// /healthz, /readyz).
//
// Every answer is JSON with Content-Type application/json. A 200 answer is
// only ever given for a message the Sender answered relay.Confirmed (the
// broker confirmed it), a 202 only for relay.Spooled (durably held on local
// disk, not confirmed yet); every error is a 4xx or 5xx, read from the
// error's publisher.Kind (status.go). The contract users rely on (routes,
// headers, status codes) is docs/http-api.md.
package httpapi

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/publisher-dev/publisher/apps"
	"github.com/publisher-dev/publisher/cloudevents"
	"github.com/publisher-dev/publisher/idempotency"
	"github.com/publisher-dev/publisher/internal/amqpname"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/relay"
	"github.com/publisher-dev/publisher/tracing"
)

// DefaultExchangeName names the default exchange ("") in request paths and in
// Config.AllowedExchanges, as RabbitMQ's management API does.
const DefaultExchangeName = "amq.default"

// DefaultMaxBodyBytes is the body limit when Config.MaxBodyBytes is zero.
const DefaultMaxBodyBytes = 1 << 20

// StatusClientClosedRequest is the code passed to Config.OnResponse when the
// request's context was cancelled (the client went away) before the answer was
// known. It is nginx's convention; it is never meant to reach a client.
const StatusClientClosedRequest = 499

// maxShortStr is the longest AMQP short string: exchange names, routing keys,
// the string message properties and header-table keys.
const maxShortStr = amqpname.MaxShortStr

// maxExpiration is the largest per-message TTL RabbitMQ accepts, in ms.
const maxExpiration = 1<<31 - 1

// Config configures NewHandler. Its zero value (apart from Publisher, which is
// required) means the documented defaults.
type Config struct {
	// Sender takes the messages: a *relay.Relay (through the spool) or a
	// relay.Direct (straight to the publisher). Required.
	Sender relay.Sender
	// AuthToken, when not empty and Apps is nil, must be presented as
	// "Authorization: Bearer <token>": it is apps.Single's one app,
	// "default". It is compared in constant time (over SHA-256 digests, so
	// the token's length does not leak either).
	AuthToken string
	// Apps returns the apps in force (apps.Registry.Current, with
	// PUBLISHER_AUTH_FILE), read once per request (a stream reads it again
	// per line, so a reload applies to its next lines). A request's app is
	// its bearer token's (401 without one that is an app's); the app's scope
	// decides 403 per message, its rate 429 (docs/http-api.md, "Apps"). nil
	// means one Set for the handler's life: apps.Single(AuthToken), or
	// apps.Open() (no authentication: app "anonymous") without a token.
	Apps func() *apps.Set
	// AllowedExchanges limits the exchanges that may be published to; empty means
	// all. "amq.default" (or "") names the default exchange. It applies to
	// every app, before the app's own scope.
	AllowedExchanges []string
	// MaxBodyBytes bounds the request body; 0 means DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int64
	// MaxHeaderBytes, when positive, bounds the request line and headers as
	// they were sent (names, values, separators): beyond it the answer is 431,
	// given (and passed to OnResponse) by the handler, so it is counted.
	// net/http's own Server.MaxHeaderBytes should be set above it: the
	// requests it refuses never reach a handler.
	MaxHeaderBytes int
	// Accepting reports whether new publishes can be taken now. A non-nil error
	// (publisher.ErrClosed while shutting down, a "given up" error, ...) is
	// answered 503 with Retry-After before the body is read. nil means always
	// accepting.
	Accepting func() error
	// RetryAfter is the Retry-After of 503 answers, rounded up to whole seconds;
	// 0 means 1s.
	RetryAfter time.Duration
	// Logger receives unexpected failures (warn) and rejected requests (debug).
	// Neither bodies nor the Authorization header are ever logged. nil means
	// slog.Default().
	Logger *slog.Logger
	// OnResponse, if set, is called once per request on the publish routes with
	// the status code written (StatusClientClosedRequest when the client went
	// away). It is called on the request's goroutine and must be cheap.
	OnResponse func(code int)
	// ConfirmTimeout is how long a message waits for the broker before it is
	// answered without its confirm; 0 means publisher.DefaultConfirmTimeout.
	ConfirmTimeout time.Duration
	// MaxBatchMessages and MaxBatchBytes bound a /v1/batch request (413
	// beyond); 0 means DefaultMaxBatchMessages and DefaultMaxBatchBytes.
	MaxBatchMessages int
	MaxBatchBytes    int64
	// StreamWindow bounds the messages of one /v1/stream that are taken and
	// not answered yet: beyond it the handler stops reading the request
	// (backpressure). 0 means DefaultStreamWindow.
	StreamWindow int
	// OnBatch, if set, is called with the number of messages of every
	// well-formed batch; OnStream with +1 when a stream opens and -1 when it
	// ends.
	OnBatch  func(messages int)
	OnStream func(delta int)
	// OnMessage, if set, is called once per message of a known app with the
	// app's name and the status the message got: a single publish's answer
	// (once its token was accepted), each result of a batch or a stream; a
	// batch refused whole once its messages were read (429, 413, ...)
	// counts each of them with that status. OnRateWait, if set, is called
	// each time a stream of app waited d for the app's rate.
	OnMessage  func(app string, code int)
	OnRateWait func(app string, d time.Duration)
	// Tracer carries the requests' trace context into the messages (always)
	// and makes their spans when tracing is configured; nil means no spans
	// (the context is still carried).
	Tracer *tracing.Tracer
	// CloudEvents configures the CloudEvents modes.
	CloudEvents CloudEventsConfig
	// Idempotency holds the idempotency keys of the requests (the
	// Idempotency-Key header of a single publish, the idempotency_key of a
	// batch or stream message), scoped by app: see idempotent.go. nil means
	// a store with the defaults.
	Idempotency *idempotency.Store
}

// Defaults of the batch and stream limits (PUBLISHER_MAX_BATCH_MESSAGES,
// PUBLISHER_MAX_BATCH_BYTES, PUBLISHER_STREAM_WINDOW).
const (
	DefaultMaxBatchMessages = 1000
	DefaultMaxBatchBytes    = 16 << 20
	DefaultStreamWindow     = 1024
)

// Handler is the publish API, an http.Handler. It is immutable after
// NewHandler, but for its count of requests in flight.
type Handler struct {
	send       relay.Sender
	appSet     func() *apps.Set
	allowed    map[string]struct{} // nil: all allowed; "" is the default exchange
	maxBody    int64
	maxHeader  int
	accepting  func() error
	retryAfter string // pre-formatted Retry-After value
	log        *slog.Logger
	onResponse func(int)
	now        func() time.Time // the messages' timestamps
	rateNow    func() time.Time // the apps' buckets' clock

	confirmTimeout time.Duration
	maxBatchMsgs   int
	maxBatchBytes  int64
	streamWindow   int
	onBatch        func(int)
	onStream       func(int)
	onMessage      func(string, int)
	onRateWait     func(string, time.Duration)
	tracer         *tracing.Tracer
	ce             CloudEventsConfig
	keys           *idempotency.Store

	// inFlight counts the requests that passed the accepting gate and are
	// not answered yet (publishes waiting for the broker, open streams).
	inFlight atomic.Int64
}

// NewHandler returns the publish API:
//
//	POST /v1/publish/{exchange}/{routing_key...}
//	POST /v1/publish/{exchange}            (empty routing key)
//	POST /v1/batch                         (see serveBatch)
//	POST /v1/stream                        (see serveStream)
//
// The routing key is the rest of the path after the exchange, percent-decoded;
// it may contain '/' and may be empty ("/v1/publish/ex/" or "/v1/publish/ex").
// Paths with empty, "." or ".." segments are answered 400 rather than
// redirected (a redirect could move a POST to another exchange): percent-encode
// such routing keys ("a%2F%2Fb" for "a//b", "%2E%2E" for ".."). Other methods on
// the publish path get 405 with "Allow: POST"; other paths get 404.
//
// Request headers map to the message: Content-Type, Content-Encoding,
// X-Message-Id (generated when absent; echoed in the X-Message-Id response
// header and the JSON answer), X-Correlation-Id, X-Reply-To, X-Type (each at
// most 255 bytes), X-Expiration (ms, 0..2^31-1), X-Priority (0..255),
// X-Persistent and X-Mandatory ("true"/"false", any case; both default to
// true). Each of these may be given once; a repeated one is a 400.
// "X-Header-<name>: value" becomes the AMQP header <name> (lowercased, since
// HTTP header names are case-insensitive and HTTP/2 lowercases them) with a
// string value; several lines for the same name are joined with ", " as HTTP
// (RFC 9110 §5.3) allows any proxy to do.
//
// Checks run in this order, so a rejected request never reaches the
// Sender: 431 (headers over Config.MaxHeaderBytes), the path (404, or 400
// for a malformed one), 405 (method), 401 (token: the request's app), 403
// (allow-list, then the app's scope), 413 (Content-Length over the limit),
// 400 (headers, then the CloudEvents headers, or 415 for a CloudEvents
// format the route does not take), 503 (Config.Accepting), 429 (the app's
// rate: a token is taken from its bucket here); then the body is read (413
// when it grows over the limit; 400 for a structured CloudEvent that does
// not validate) and published with the request's context.
func NewHandler(cfg Config) *Handler {
	if cfg.Sender == nil {
		panic("httpapi: Config.Sender is nil")
	}
	h := &Handler{
		send:       cfg.Sender,
		maxBody:    cfg.MaxBodyBytes,
		maxHeader:  cfg.MaxHeaderBytes,
		accepting:  cfg.Accepting,
		log:        cfg.Logger,
		onResponse: cfg.OnResponse,
		now:        time.Now,
		rateNow:    time.Now,
		appSet:     cfg.Apps,

		confirmTimeout: cmp.Or(cfg.ConfirmTimeout, publisher.DefaultConfirmTimeout),
		maxBatchMsgs:   cmp.Or(cfg.MaxBatchMessages, DefaultMaxBatchMessages),
		maxBatchBytes:  cmp.Or(cfg.MaxBatchBytes, DefaultMaxBatchBytes),
		streamWindow:   cmp.Or(cfg.StreamWindow, DefaultStreamWindow),
		onBatch:        cfg.OnBatch,
		onStream:       cfg.OnStream,
		onMessage:      cfg.OnMessage,
		onRateWait:     cfg.OnRateWait,
		tracer:         cfg.Tracer,
		ce:             cfg.CloudEvents,
		keys:           cfg.Idempotency,
	}
	if h.keys == nil {
		h.keys = idempotency.NewStore(idempotency.Config{})
	}
	if h.onBatch == nil {
		h.onBatch = func(int) {}
	}
	if h.onStream == nil {
		h.onStream = func(int) {}
	}
	if h.onResponse == nil {
		h.onResponse = func(int) {}
	}
	if h.onMessage == nil {
		h.onMessage = func(string, int) {}
	}
	if h.onRateWait == nil {
		h.onRateWait = func(string, time.Duration) {}
	}
	if h.appSet == nil {
		set := apps.Open()
		if cfg.AuthToken != "" {
			set = apps.Single(cfg.AuthToken)
		}
		h.appSet = func() *apps.Set { return set }
	}
	if len(cfg.AllowedExchanges) > 0 {
		h.allowed = make(map[string]struct{}, len(cfg.AllowedExchanges))
		for _, e := range cfg.AllowedExchanges {
			h.allowed[exchangeFromPath(e)] = struct{}{}
		}
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	h.retryAfter = retryAfterSeconds(cfg.RetryAfter)
	if h.log == nil {
		h.log = slog.Default()
	}
	return h
}

// InFlight is the number of requests taken (past the accepting check) and
// not answered yet: publishes waiting for the broker, batches, open streams.
// A shutdown waits for it to reach zero.
func (h *Handler) InFlight() int64 { return h.inFlight.Load() }

// retryAfterSeconds formats d as whole seconds, rounded up; d <= 0 means 1s.
func retryAfterSeconds(d time.Duration) string {
	if d <= 0 {
		return "1"
	}
	s := (d + time.Second - 1) / time.Second
	return strconv.FormatInt(int64(s), 10)
}

// ServeHTTP routes the requests itself: it answers non-canonical paths with
// 400 (a ServeMux would redirect them, and a redirect could move a POST to
// another exchange), and it splits the path without the allocations of
// ServeMux's pattern matching, which ran on every request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.maxHeader > 0 && headerBytes(r) > h.maxHeader {
		h.fail(w, refuse(http.StatusRequestHeaderFieldsTooLarge, "request headers larger than "+strconv.Itoa(h.maxHeader)+" bytes"), "")
		return
	}
	p := r.URL.EscapedPath()
	switch p {
	case batchPath, streamPath:
		th := tracing.FromRequest(r.Header)
		route := tracing.RouteBatch
		if p == streamPath {
			route = tracing.RouteStream
		}
		w, r, end := h.traced(w, r, route, th)
		defer end()
		if p == batchPath {
			h.serveBatch(w, r, th)
		} else {
			h.serveStream(w, r, th)
		}
		return
	}
	if r.Method != http.MethodConnect && cleanPath(p) != p {
		if strings.HasPrefix(p, publishPrefix) {
			h.fail(w, refuse(http.StatusBadRequest, "malformed path: percent-encode empty, '.' and '..' segments of the routing key"), "")
			return
		}
		notFound(w)
		return
	}
	exchange, key, ok, err := splitPublishPath(p)
	switch {
	case !ok:
		notFound(w)
	case err != nil:
		h.fail(w, refuse(http.StatusBadRequest, "malformed path: invalid percent-encoding"), "")
	default:
		th := tracing.FromRequest(r.Header)
		w, r, end := h.traced(w, r, tracing.RoutePublish, th)
		defer end()
		h.serve(w, r, exchange, key, th)
	}
}

const publishPrefix = "/v1/publish/"

// headerBytes is the size of r's request line and headers as sent on the
// wire in HTTP/1.1: "METHOD URI PROTO\r\n", then "Name: value\r\n" per
// value.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4
	if r.Host != "" {
		n += len("Host: \r\n") + len(r.Host)
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// splitPublishPath matches the escaped path p against
// /v1/publish/{exchange} and /v1/publish/{exchange}/{routing_key...}: the
// exchange is the first segment after the prefix (not empty), the routing key
// the rest after its '/', possibly empty or holding more '/'; both are
// percent-decoded ("%2F" decodes to a '/' that does not split). ok is false
// when p is not a publish path; err is set when it is one with an invalid
// percent-encoding.
func splitPublishPath(p string) (exchange, key string, ok bool, err error) {
	rest, found := strings.CutPrefix(p, publishPrefix)
	if !found {
		return "", "", false, nil
	}
	seg, tail, _ := strings.Cut(rest, "/")
	if seg == "" {
		return "", "", false, nil
	}
	if exchange, err = unescape(seg); err == nil {
		key, err = unescape(tail)
	}
	return exchange, key, true, err
}

// unescape percent-decodes a path (or part of one) without allocating when
// there is nothing to decode.
func unescape(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	return url.PathUnescape(s)
}

// cleanPath is net/http's canonical form of a request path: what ServeMux
// would redirect to.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		if len(p) == len(np)+1 && strings.HasPrefix(p, np) {
			return p
		}
		np += "/"
	}
	return np
}

// notFound answers a path that is not a route. It is not passed to
// OnResponse: only the publish routes are counted.
func notFound(w http.ResponseWriter) {
	writeJSONError(w, http.StatusNotFound, "not found: use POST /v1/publish/{exchange}/{routing_key}, /v1/batch or /v1/stream", "")
}

// exchangeFromPath maps the path's exchange name to the AMQP one.
func exchangeFromPath(e string) string {
	if e == DefaultExchangeName {
		return ""
	}
	return e
}

// serve answers one request on a publish path; pathExchange is the exchange
// as named in the path ("amq.default" for the default exchange) and key the
// routing key, both decoded.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, pathExchange, key string, th tracing.Headers) {
	app, err := h.admitMethodAndToken(w, r)
	if err != nil {
		h.fail(w, err, clientID(r))
		return
	}
	h.onMessage(app.Name(), h.serveApp(w, r, app, pathExchange, key, th))
}

// serveApp answers a publish of app (its token accepted) and returns the
// status it answered.
func (h *Handler) serveApp(w http.ResponseWriter, r *http.Request, app *apps.App, pathExchange, key string, th tracing.Headers) int {
	if err := h.admitPublish(r, app, pathExchange, key); err != nil {
		return h.fail(w, err, clientID(r))
	}
	msg, err := h.parse(r, exchangeFromPath(pathExchange), key)
	if err != nil {
		return h.fail(w, err, msg.MessageID)
	}
	idemKey, err := idempotency.ParseHeader(r.Header[idempotencyKeyHeader])
	if err != nil {
		return h.fail(w, badRequest(err.Error()), msg.MessageID)
	}
	ce, err := h.cloudEventOf(r, msg)
	if err != nil {
		return h.fail(w, err, msg.MessageID)
	}
	if err := h.acceptingNow(); err != nil {
		return h.fail(w, err, msg.MessageID)
	}
	if p := h.takeRate(app, 1, "publish"); p != nil {
		return h.fail(w, p, msg.MessageID)
	}
	h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	body, err := readBody(w, r, h.maxBody)
	if err != nil {
		return h.fail(w, err, msg.MessageID)
	}
	msg.Body = body
	idGiven := msg.MessageID != "" // by X-Message-Id, or a binary event's ce-id
	var fp idempotency.Fingerprint
	if idemKey != "" {
		fp = singleFingerprint(r, msg, idGiven, &ce)
	}
	if !idGiven && !ce.binary && ce.mode != cloudevents.ModeStructured {
		msg.MessageID = publisher.NewMessageID()
	}
	msg.Timestamp = h.now()
	if err := h.applyCloudEvent(&ce, msg, body, idGiven); err != nil {
		return h.fail(w, err, msg.MessageID)
	}
	if ce.preference {
		w.Header()["Preference-Applied"] = []string{"cloudevents"}
	}
	async := prefersAsync(r.Header)
	opts := relay.SendOptions{Async: async, Deadline: time.Now().Add(h.confirmTimeout)}
	send := h.send
	var claim idempotency.Claim
	if idemKey != "" {
		k := idempotency.Key{Scope: app.Name(), Name: idemKey}
		c, res, ans := h.keys.Begin(k, fp, msg.MessageID)
		if res != idempotency.New {
			return h.writeLookup(w, r, res, ans, idemKey)
		}
		claim = c
		opts.Keys = []relay.KeyRef{{Key: k, Fingerprint: fp}}
		send = tapSender{Sender: h.send, tap: func(_ int, d relay.Delivery, err error) { keyOutcome(claim, d, err, true) }}
	}
	h.startSpan(r.Context(), th, msg, app.Name())

	d, err := relay.Publish(r.Context(), send, msg, opts)
	keyOutcome(claim, d, err, false)
	switch {
	case err != nil:
		return h.publishFailed(w, r, err, msg.MessageID)
	case d == relay.Spooled:
		// RFC 7240: Preference-Applied only when the preference was applied,
		// that is when the answer did not wait for the broker.
		writeSpooled(w, msg.MessageID, async)
		h.onResponse(http.StatusAccepted)
		return http.StatusAccepted
	default:
		writeConfirmed(w, msg.MessageID)
		h.onResponse(http.StatusOK)
		return http.StatusOK
	}
}

// admitPublish runs the checks of a single publish of app that need
// neither its headers nor its body: the allow-list, then the app's scope
// (403), the announced size (413).
func (h *Handler) admitPublish(r *http.Request, app *apps.App, pathExchange, key string) error {
	exchange := exchangeFromPath(pathExchange)
	if h.allowed != nil {
		if _, ok := h.allowed[exchange]; !ok {
			return refuse(http.StatusForbidden, "exchange not allowed")
		}
	}
	if p := scopeRefusal(app, exchange, key); p != nil {
		return p
	}
	if r.ContentLength > h.maxBody {
		return refuse(http.StatusRequestEntityTooLarge, "body larger than "+strconv.FormatInt(h.maxBody, 10)+" bytes")
	}
	return nil
}

// admitMethodAndToken: POST only (405 with Allow), and the request's app
// in the apps in force: its bearer token's (401 with WWW-Authenticate when
// there is none), or the anonymous app without authentication. The app is
// recorded on the request's span.
func (h *Handler) admitMethodAndToken(w http.ResponseWriter, r *http.Request) (*apps.App, error) {
	if r.Method != http.MethodPost {
		w.Header()["Allow"] = []string{http.MethodPost}
		return nil, refuse(http.StatusMethodNotAllowed, "method not allowed: use POST")
	}
	app := appOf(h.appSet(), r)
	if app == nil {
		w.Header()["Www-Authenticate"] = []string{"Bearer"}
		return nil, refuse(http.StatusUnauthorized, "missing or wrong bearer token")
	}
	h.tracer.SetApp(r.Context(), app.Name())
	return app, nil
}

// acceptingNow is Config.Accepting's refusal as an answer (503 with
// Retry-After), or nil.
func (h *Handler) acceptingNow() error {
	if h.accepting == nil {
		return nil
	}
	err := h.accepting()
	if err == nil {
		return nil
	}
	text := "service unavailable: cannot take messages now"
	if errors.Is(err, publisher.ErrClosed) {
		text = "service unavailable: shutting down"
	}
	return &problem{code: http.StatusServiceUnavailable, text: text, retry: true, cause: err}
}

// clientID is the request's own X-Message-Id when it gave exactly one of at
// most 255 bytes, else "". The rejections that come before parse echo it, so
// every answer to a request with an X-Message-Id names it.
func clientID(r *http.Request) string {
	id, ok := single(r.Header, "X-Message-Id")
	if !ok || len(id) > maxShortStr || !utf8.ValidString(id) {
		return ""
	}
	return id
}

// prefersAsync reports "Prefer: respond-async" (RFC 7240), among other
// preferences, in any of the Prefer lines.
func prefersAsync(hdr http.Header) bool {
	for _, line := range hdr["Prefer"] {
		for _, pref := range strings.Split(line, ",") {
			name, _, _ := strings.Cut(pref, ";")
			if strings.EqualFold(strings.TrimSpace(name), "respond-async") {
				return true
			}
		}
	}
	return false
}

// single returns the only value of the canonical header key, "" when absent,
// and ok=false when the header was given more than once.
func single(hdr http.Header, key string) (v string, ok bool) {
	vs := hdr[key]
	switch len(vs) {
	case 0:
		return "", true
	case 1:
		return vs[0], true
	default:
		return "", false
	}
}

// stringHeaders are the request headers copied to string properties (all AMQP
// short strings), in the order they are checked.
var stringHeaders = [...]struct {
	key   string
	field func(*publisher.Message) *string
}{
	{"X-Message-Id", func(m *publisher.Message) *string { return &m.MessageID }},
	{"Content-Type", func(m *publisher.Message) *string { return &m.ContentType }},
	{"Content-Encoding", func(m *publisher.Message) *string { return &m.ContentEncoding }},
	{"X-Correlation-Id", func(m *publisher.Message) *string { return &m.CorrelationID }},
	{"X-Reply-To", func(m *publisher.Message) *string { return &m.ReplyTo }},
	{"X-Type", func(m *publisher.Message) *string { return &m.Type }},
}

// parse builds the message from the path and headers (not the body). An
// error is the 400 answer; msg.MessageID is the client's id when it was
// valid, even then.
func (h *Handler) parse(r *http.Request, exchange, key string) (msg *publisher.Message, err error) {
	msg = &publisher.Message{Exchange: exchange, Persistent: true, Mandatory: true}
	hdr := r.Header

	// The message id first, so that later errors can echo it.
	for _, sh := range stringHeaders {
		v, ok := single(hdr, sh.key)
		if !ok {
			return msg, badRequest(sh.key + " given more than once")
		}
		if len(v) > maxShortStr {
			return msg, badRequest(sh.key + " longer than 255 bytes")
		}
		if sh.key == "X-Message-Id" && !utf8.ValidString(v) {
			// The answer is JSON, which can only echo valid UTF-8: an id the
			// broker stores as other bytes than the caller is told could not be
			// used to deduplicate.
			return msg, badRequest("X-Message-Id must be valid UTF-8")
		}
		*sh.field(msg) = v
	}

	if !amqpname.ValidExchange(exchange) {
		return msg, badRequest("invalid exchange name: use letters, digits, '-', '_', '.', ':' (at most 255 bytes)")
	}
	msg.RoutingKey = key
	if len(msg.RoutingKey) > maxShortStr {
		return msg, badRequest("routing key longer than 255 bytes")
	}

	v, ok := single(hdr, "X-Expiration")
	if !ok {
		return msg, badRequest("X-Expiration given more than once")
	}
	if v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > maxExpiration {
			return msg, badRequest("X-Expiration must be a whole number of milliseconds from 0 to 2147483647")
		}
		if v[0] == '0' && len(v) > 1 { // normalize leading zeros
			v = strconv.FormatUint(n, 10)
		}
		msg.Expiration = v
	}

	if v, ok = single(hdr, "X-Priority"); !ok {
		return msg, badRequest("X-Priority given more than once")
	}
	if v != "" {
		n, err := strconv.ParseUint(v, 10, 8)
		if err != nil {
			return msg, badRequest("X-Priority must be a whole number from 0 to 255")
		}
		msg.Priority = uint8(n)
	}

	if msg.Persistent, err = parseBool(hdr, "X-Persistent"); err != nil {
		return msg, err
	}
	if msg.Mandatory, err = parseBool(hdr, "X-Mandatory"); err != nil {
		return msg, err
	}

	for k, vs := range hdr {
		const prefix = "X-Header-"
		if len(k) < len(prefix) || !strings.EqualFold(k[:len(prefix)], prefix) {
			continue
		}
		name := strings.ToLower(k[len(prefix):])
		if name == "" {
			return msg, badRequest("X-Header- needs a header name after the prefix")
		}
		if len(name) > maxShortStr {
			return msg, badRequest("X-Header- name longer than 255 bytes")
		}
		if msg.Headers == nil {
			msg.Headers = make(map[string]any)
		}
		var val string
		if len(vs) == 1 {
			val = vs[0]
		} else {
			val = strings.Join(vs, ", ")
		}
		if prev, ok := msg.Headers[name].(string); ok { // same name in another case
			val = prev + ", " + val
		}
		msg.Headers[name] = val
	}
	return msg, nil
}

// parseBool reads an optional "true"/"false" header (any case); absent means
// true.
func parseBool(hdr http.Header, key string) (bool, error) {
	v, ok := single(hdr, key)
	switch {
	case !ok:
		return true, badRequest(key + " given more than once")
	case v == "" || strings.EqualFold(v, "true"):
		return true, nil
	case strings.EqualFold(v, "false"):
		return false, nil
	default:
		return true, badRequest(key + " must be true or false")
	}
}

// readBody reads the whole body, at most limit bytes; an error is the
// answer to give (413 beyond the limit, 400 when reading fails).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	rd := http.MaxBytesReader(w, r.Body, limit)
	size := r.ContentLength
	if size < 0 || size > limit {
		size = min(512, limit)
	}
	// One byte more than announced, so EOF is seen without growing.
	buf := make([]byte, 0, size+1)
	for {
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if err == io.EOF {
				if len(buf) == 0 {
					return nil, nil
				}
				return buf, nil
			}
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, refuse(http.StatusRequestEntityTooLarge, "body larger than "+strconv.FormatInt(limit, 10)+" bytes")
			}
			return nil, badRequest("reading the body failed")
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
}

// publishFailed answers a publish that did not succeed and returns the
// status it reported.
func (h *Handler) publishFailed(w http.ResponseWriter, r *http.Request, err error, id string) int {
	ctx := r.Context()
	if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) && errors.Is(err, context.Canceled) {
		// The client went away (net/http cancels the request's context with
		// no other cause). Write a 503 in case someone still listens; never a
		// 2xx. A server shutting down cancels with a cause of its own instead,
		// and its answer is the error's own.
		h.log.LogAttrs(ctx, slog.LevelDebug, "httpapi: request cancelled before the confirm",
			slog.String("message_id", id), slog.String("error", err.Error()))
		w.Header()["Retry-After"] = []string{h.retryAfter}
		writeJSONError(w, http.StatusServiceUnavailable, "request cancelled", id)
		h.onResponse(StatusClientClosedRequest)
		return StatusClientClosedRequest
	}
	level := slog.LevelDebug
	if publisher.Classify(err) == publisher.Unknown {
		level = slog.LevelWarn
	}
	p := answerFor(err)
	h.log.LogAttrs(ctx, level, "httpapi: publish failed",
		slog.String("message_id", id), slog.Int("status", p.code), slog.String("error", err.Error()))
	return h.fail(w, p, id)
}

// fail writes the answer of a refusal (a *problem, or any error: its
// answerFor), reports it and returns its status. id, when not empty, is
// echoed.
func (h *Handler) fail(w http.ResponseWriter, err error, id string) int {
	var p *problem
	if !errors.As(err, &p) {
		p = answerFor(err)
	}
	if p.retry {
		w.Header()["Retry-After"] = []string{cmp.Or(p.retryAfter, h.retryAfter)}
	}
	writeJSONError(w, p.code, p.text, id)
	h.onResponse(p.code)
	return p.code
}

var (
	// Header values are shared read-only slices: net/http never writes into them
	// and Header.Set/Add replace or reallocate (cap is 1).
	jsonContentType = []string{"application/json"}
	noSniff         = []string{"nosniff"}
)

// writeConfirmed writes 200 {"message_id":"...","status":"confirmed"} without
// reflection.
func writeConfirmed(w http.ResponseWriter, id string) {
	writeStatus(w, http.StatusOK, id, `,"status":"confirmed"}`+"\n")
}

// writeSpooled answers 202: durably held in the spool, not yet confirmed.
func writeSpooled(w http.ResponseWriter, id string, async bool) {
	if async {
		w.Header()["Preference-Applied"] = []string{"respond-async"}
	}
	writeStatus(w, http.StatusAccepted, id, `,"status":"spooled"}`+"\n")
}

func writeStatus(w http.ResponseWriter, code int, id, tail string) {
	hdr := w.Header()
	hdr["Content-Type"] = jsonContentType[:1:1]
	hdr["X-Content-Type-Options"] = noSniff[:1:1]
	hdr["X-Message-Id"] = []string{id}
	var arr [128]byte
	b := append(arr[:0], `{"message_id":`...)
	b = appendJSONString(b, id)
	b = append(b, tail...)
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// writeJSONError writes {"error":"...","message_id":"..."}; message_id is left
// out when id is empty.
func writeJSONError(w http.ResponseWriter, code int, text, id string) {
	hdr := w.Header()
	hdr["Content-Type"] = jsonContentType[:1:1]
	hdr["X-Content-Type-Options"] = noSniff[:1:1]
	b := make([]byte, 0, 48+len(text)+len(id))
	b = append(b, `{"error":`...)
	b = appendJSONString(b, text)
	if id != "" {
		hdr["X-Message-Id"] = []string{id}
		b = append(b, `,"message_id":`...)
		b = appendJSONString(b, id)
	}
	b = append(b, "}\n"...)
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
