// Package metrics holds the service's Prometheus collectors. They are
// registered once, on a registry the caller owns (never the global default),
// outside anything that restarts, and fed from the publisher (an Observer) and
// from the supervision event stream (an EventHook), so neither of those
// packages knows about Prometheus.
package metrics

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/spool"
	"github.com/publisher-dev/publisher/supervision"
)

// Source is read at scrape time for the gauges.
type Source interface {
	State() publisher.State
}

// Metrics implements publisher.Observer and consumes supervision events.
type Metrics struct {
	reg         prometheus.Registerer
	outcomes    map[publisher.Outcome]prometheus.Counter
	duration    prometheus.Histogram
	republished prometheus.Counter
	restarts    *prometheus.CounterVec
	failures    *prometheus.CounterVec
	escalations *prometheus.CounterVec
	requests    *prometheus.CounterVec
	batch       prometheus.Histogram
	streams     prometheus.Gauge
	// byCode holds the requests counter of each answer docs/http-api.md
	// section lists, resolved
	// once: HTTPResponse runs for every request, and WithLabelValues would
	// hash the label and take the vector's lock each time. Read-only after New.
	byCode map[int]prometheus.Counter

	appMessages  *prometheus.CounterVec // {app, code}
	appRateWait  *prometheus.CounterVec // {app}
	reloads      *prometheus.CounterVec // {result}
	lastReloadOK prometheus.Gauge
	// idemReplays holds publisher_idempotency_replays_total by result
	// (replayed, conflict, mismatch), resolved once; read-only after New.
	idemReplays map[string]prometheus.Counter
	idemEvicted prometheus.Counter
	// apps holds the app-labelled series of the configured apps, resolved
	// by Apps (for the same reason as byCode); replaced whole, never
	// changed in place.
	apps atomic.Pointer[map[string]*appSeries]
}

// appSeries are one app's series, resolved.
type appSeries struct {
	byCode   map[int]prometheus.Counter
	rateWait prometheus.Counter
}

// appCodes are the answers each configured app's
// publisher_app_messages_total has from the first scrape (at 0), so a
// dashboard's rate() over them shows 0 rather than no data: published,
// spooled, refused by scope, over the rate.
var appCodes = []int{200, 202, 403, 429}

// New creates and registers on reg the counters, the histogram and the Go and
// process collectors. The gauges that read the publisher's state come with
// WatchState, once the publisher exists: the publisher takes the Metrics as its
// Observer when it is created, so the two are made in that order.
func New(reg prometheus.Registerer) (*Metrics, error) {
	messages := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "publisher_messages_total",
		Help: "Publish requests by how they ended: confirmed, nacked, returned (unroutable), rejected (by the broker or as invalid), failed, timeout.",
	}, []string{"outcome"})
	m := &Metrics{
		outcomes: map[publisher.Outcome]prometheus.Counter{},
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "publisher_publish_duration_seconds",
			Help:    "Time from a publish request being received to its answer (the broker's confirm, or the failure).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5ms .. ~16s
		}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "publisher_republished_total",
			Help: "Messages published again because the connection or channel they were in flight on failed.",
		}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_supervision_restarts_total",
			Help: "Restarts of a supervised child, by supervisor and child.",
		}, []string{"supervisor", "child"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_supervision_failures_total",
			Help: "Failures (errors and panics) of a supervised child, by supervisor and child.",
		}, []string{"supervisor", "child"}),
		escalations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_supervision_escalations_total",
			Help: "Failures a supervisor escalated to its parent because its restart intensity was exhausted.",
		}, []string{"supervisor"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_http_requests_total",
			Help: "Publish requests answered over HTTP, by status code.",
		}, []string{"code"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "publisher_batch_messages",
			Help:    "Messages per /v1/batch request (well-formed ones).",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000},
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "publisher_streams_open",
			Help: "/v1/stream requests open now.",
		}),
		appMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_app_messages_total",
			Help: "Messages (a single publish, each entry of a batch or a stream) by the app of their token and the status they were answered; app is a configured name (anonymous without authentication, default for PUBLISHER_AUTH_TOKEN).",
		}, []string{"app", "code"}),
		appRateWait: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_app_rate_wait_seconds_total",
			Help: "Time the streams of an app waited for its rate before publishing a line (streams slow down instead of answering 429).",
		}, []string{"app"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_config_reloads_total",
			Help: "Reloads of PUBLISHER_AUTH_FILE (on a change or SIGHUP), by result: success, or error (the previous apps stay in force).",
		}, []string{"result"}),
		lastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "publisher_config_last_reload_successful",
			Help: "0 while the last reload of PUBLISHER_AUTH_FILE failed (the previous apps are in force), else 1.",
		}),
		idemEvicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "publisher_idempotency_evictions_total",
			Help: "Idempotency keys removed before their window ran out because PUBLISHER_IDEMPOTENCY_MAX_KEYS were kept (the oldest first); a retry of such a key is published again.",
		}),
		reg: reg,
	}
	replays := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "publisher_idempotency_replays_total",
		Help: "Requests (or batch and stream messages) whose idempotency key was known, by result: replayed (the first answer given again, nothing published), conflict (409: the first still waits for the broker), mismatch (422: the key was used for a different request).",
	}, []string{"result"})
	m.idemReplays = map[string]prometheus.Counter{}
	for _, r := range []string{"replayed", "conflict", "mismatch"} {
		m.idemReplays[r] = replays.WithLabelValues(r)
	}
	for _, o := range []publisher.Outcome{publisher.OutcomeConfirmed, publisher.OutcomeNacked, publisher.OutcomeReturned,
		publisher.OutcomeRejected, publisher.OutcomeFailed, publisher.OutcomeTimeout} {
		m.outcomes[o] = messages.WithLabelValues(string(o))
	}
	// The answers the README lists exist from the first scrape (at 0).
	m.byCode = map[int]prometheus.Counter{}
	for _, code := range []int{200, 202, 207, 400, 401, 403, 404, 409, 413, 415, 422, 429, 431, 502, 503, 504} {
		m.byCode[code] = m.requests.WithLabelValues(strconv.Itoa(code))
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("error")
	m.lastReloadOK.Set(1)
	m.apps.Store(&map[string]*appSeries{})
	cs := []prometheus.Collector{
		messages, m.duration, m.republished, m.restarts, m.failures, m.escalations, m.requests, m.batch, m.streams,
		m.appMessages, m.appRateWait, m.reloads, m.lastReloadOK, replays, m.idemEvicted,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	if err := register(reg, cs); err != nil {
		return nil, err
	}
	return m, nil
}

// WatchState registers the gauges read at scrape time: the connection and
// buffer gauges from src, publisher_ready from ready (the same answer as
// /readyz) and publisher_given_up from givenUp (1 while the supervision tree
// has given up on the broker and keeps retrying at the slowest backoff). Call
// it once.
//
// One scrape reads src.State() once and computes every gauge, ready and
// givenUp included, from that one snapshot, so a scrape never shows, say,
// publisher_connection_up 0 beside publisher_ready 1 because the connection
// came up between two reads.
func (m *Metrics) WatchState(src Source, ready, givenUp func(publisher.State) bool) error {
	return m.reg.Register(&stateCollector{src: src, ready: ready, givenUp: givenUp})
}

// WatchClientCert registers publisher_tls_client_cert_expiry_timestamp_seconds,
// read at scrape time from expiry: the expiry of the client certificate the
// publisher presents to the broker (PUBLISHER_AMQP_TLS_CERT_FILE, read again
// at each scrape as at each connection attempt, so a certificate renewed on
// disk shows at once). A scrape when expiry reports false (the file cannot be
// read now) has no sample: the connection attempts log why. Call it once, and
// only with a client certificate configured.
func (m *Metrics) WatchClientCert(expiry func() (time.Time, bool)) error {
	return m.reg.Register(&certCollector{expiry: expiry})
}

var certExpiryDesc = prometheus.NewDesc("publisher_tls_client_cert_expiry_timestamp_seconds",
	"When the client certificate presented to the broker expires (its notAfter), in seconds since the Unix epoch.", nil, nil)

// certCollector is the client certificate's expiry gauge.
type certCollector struct {
	expiry func() (time.Time, bool)
}

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- certExpiryDesc }

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	if t, ok := c.expiry(); ok {
		gauge(ch, certExpiryDesc, float64(t.Unix()))
	}
}

// The state gauges, in the order Collect emits them.
var (
	inflightDesc = prometheus.NewDesc("publisher_inflight_messages", "Messages published and not yet confirmed.", nil, nil)
	bufferedDesc = prometheus.NewDesc("publisher_buffered_messages", "Messages taken and waiting to be published (mailbox and carried over a restart).", nil, nil)
	upDesc       = prometheus.NewDesc("publisher_connection_up", "1 when the AMQP connection is open with its confirm channels, else 0.", nil, nil)
	blockedDesc  = prometheus.NewDesc("publisher_connection_blocked", "1 while the broker blocks publishing (connection.blocked: memory or disk alarm), else 0.", nil, nil)
	readyDesc    = prometheus.NewDesc("publisher_ready", "1 when /readyz answers 200, else 0.", nil, nil)
	givenUpDesc  = prometheus.NewDesc("publisher_given_up", "1 while the supervision tree has given up on the broker and keeps retrying at the slowest backoff (PUBLISHER_ON_GIVE_UP=degrade, or a spool that accepts), else 0.", nil, nil)
)

// stateCollector is the publisher's state gauges, all from one State() per
// scrape (see WatchState).
type stateCollector struct {
	src            Source
	ready, givenUp func(publisher.State) bool
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{inflightDesc, bufferedDesc, upDesc, blockedDesc, readyDesc, givenUpDesc} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.State()
	gauge(ch, inflightDesc, float64(st.Inflight))
	gauge(ch, bufferedDesc, float64(st.Buffered))
	gauge(ch, upDesc, b2f(st.Connected))
	gauge(ch, blockedDesc, b2f(st.Blocked))
	gauge(ch, readyDesc, b2f(c.ready(st)))
	gauge(ch, givenUpDesc, b2f(c.givenUp(st)))
}

// gauge sends one unlabelled gauge sample (the descriptors are fixed and
// label-free, so MustNewConstMetric cannot fail).
func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
}

func register(reg prometheus.Registerer, cs []prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Published implements publisher.Observer.
func (m *Metrics) Published(o publisher.Outcome, d time.Duration) {
	if c, ok := m.outcomes[o]; ok {
		c.Inc()
	}
	m.duration.Observe(d.Seconds())
}

// Republished implements publisher.Observer.
func (m *Metrics) Republished(n int) { m.republished.Add(float64(n)) }

// HTTPResponse counts one answered publish request.
func (m *Metrics) HTTPResponse(code int) {
	if c, ok := m.byCode[code]; ok {
		c.Inc()
		return
	}
	m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
}

// Apps makes the series of the apps called names exist (at 0) and resolves
// them for AppMessage and AppRateWait. It is called with the apps in force
// at start and after each reload, from one goroutine at a time. The series
// of an app no longer configured stay (counters do not go back): the label's
// values are the names ever configured, never a value from a request.
func (m *Metrics) Apps(names []string) {
	old := *m.apps.Load()
	next := make(map[string]*appSeries, len(old)+len(names))
	for k, v := range old {
		next[k] = v
	}
	for _, name := range names {
		if next[name] != nil {
			continue
		}
		s := &appSeries{byCode: make(map[int]prometheus.Counter, len(appCodes)), rateWait: m.appRateWait.WithLabelValues(name)}
		for _, code := range appCodes {
			s.byCode[code] = m.appMessages.WithLabelValues(name, strconv.Itoa(code))
		}
		next[name] = s
	}
	m.apps.Store(&next)
}

// AppMessage counts one message of app answered code (a single publish's
// answer, or one result of a batch or a stream). app must be a configured
// name (see Apps).
func (m *Metrics) AppMessage(app string, code int) {
	if s := (*m.apps.Load())[app]; s != nil {
		if c := s.byCode[code]; c != nil {
			c.Inc()
			return
		}
	}
	m.appMessages.WithLabelValues(app, strconv.Itoa(code)).Inc()
}

// AppRateWait adds d to the time the streams of app waited for its rate.
func (m *Metrics) AppRateWait(app string, d time.Duration) {
	if s := (*m.apps.Load())[app]; s != nil {
		s.rateWait.Add(d.Seconds())
		return
	}
	m.appRateWait.WithLabelValues(app).Add(d.Seconds())
}

// ConfigReload counts one reload of the auth file: success when err is
// nil, else error (and publisher_config_last_reload_successful goes to 0
// until a reload succeeds).
func (m *Metrics) ConfigReload(err error) {
	if err != nil {
		m.reloads.WithLabelValues("error").Inc()
		m.lastReloadOK.Set(0)
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.lastReloadOK.Set(1)
}

// WatchIdempotency registers publisher_idempotency_keys, read at scrape
// time from keys (the idempotency keys kept now). Call it once.
func (m *Metrics) WatchIdempotency(keys func() int) error {
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "publisher_idempotency_keys",
		Help: "Idempotency keys kept now: waiting for their message's outcome, or answered and within PUBLISHER_IDEMPOTENCY_WINDOW.",
	}, func() float64 { return float64(keys()) }))
}

// IdempotencyLookup counts a request whose key was known, by result:
// "replayed", "conflict" or "mismatch" (idempotency.Result's names); any
// other is ignored.
func (m *Metrics) IdempotencyLookup(result string) {
	if c := m.idemReplays[result]; c != nil {
		c.Inc()
	}
}

// IdempotencyEvicted counts n keys removed at the bound.
func (m *Metrics) IdempotencyEvicted(n int) { m.idemEvicted.Add(float64(n)) }

// Batch observes the number of messages of one /v1/batch request.
func (m *Metrics) Batch(n int) { m.batch.Observe(float64(n)) }

// Stream counts /v1/stream requests opening (+1) and ending (-1).
func (m *Metrics) Stream(delta int) { m.streams.Add(float64(delta)) }

// Event consumes the supervision event stream (use as supervision.Spec.EventHook).
func (m *Metrics) Event(ev supervision.Event) {
	switch ev.Kind {
	case supervision.EventFailure:
		m.failures.WithLabelValues(ev.Supervisor, ev.Child).Inc()
	case supervision.EventRestart:
		m.restarts.WithLabelValues(ev.Supervisor, ev.Child).Inc()
	case supervision.EventEscalation:
		m.escalations.WithLabelValues(ev.Supervisor).Inc()
	}
}

// Declare makes the supervision series exist at 0 before anything fails, so
// dashboards and rate() see them from the first scrape.
func (m *Metrics) Declare(supervisor string, children ...string) {
	m.escalations.WithLabelValues(supervisor)
	for _, c := range children {
		m.restarts.WithLabelValues(supervisor, c)
		m.failures.WithLabelValues(supervisor, c)
	}
}

// Spool holds the durable spool's collectors.
type Spool struct {
	fsync   prometheus.Histogram
	corrupt prometheus.Counter
	lost    prometheus.Counter
	dead    prometheus.Counter
}

// NewSpool registers the spool's collectors on reg; status is read at scrape
// time (live messages and bytes, whether it accepts, its segment size), once
// per scrape, every spool gauge coming from that one snapshot.
func NewSpool(reg prometheus.Registerer, maxBytes int64, status func() spool.Status) (*Spool, error) {
	s := &Spool{
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "publisher_spool_fsync_duration_seconds",
			Help:    "Duration of one group-commit fdatasync of the spool (shared by every append in the batch).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 0.1ms .. ~3.3s
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "publisher_spool_corrupt_segments_total",
			Help: "Spool segments found corrupt and set aside (renamed *.corrupt) after salvaging their readable records.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "publisher_spool_lost_records_total",
			Help: "Spooled messages lost to corruption: records of a corrupt segment that could not be read back (their ids, where readable, are in the log).",
		}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "publisher_spool_dead_lettered_total",
			Help: "Spooled messages the broker refused for good, moved to the spool's dead-letter file.",
		}),
	}
	cs := []prometheus.Collector{s.fsync, s.corrupt, s.lost, s.dead,
		&spoolCollector{status: status, maxBytes: maxBytes}}
	if err := register(reg, cs); err != nil {
		return nil, err
	}
	return s, nil
}

// The spool's gauges, in the order Collect emits them.
var (
	spoolMessagesDesc = prometheus.NewDesc("publisher_spool_messages", "Messages held in the spool, not yet confirmed by the broker.", nil, nil)
	spoolBytesDesc    = prometheus.NewDesc("publisher_spool_bytes", "Bytes of the messages held in the spool, framing included.", nil, nil)
	spoolAcceptDesc   = prometheus.NewDesc("publisher_spool_accepting", "1 when the spool takes messages, 0 while it is full (its bound or its volume) or failing (being retried).", nil, nil)
	spoolSegmentDesc  = prometheus.NewDesc("publisher_spool_segment_bytes", "Size of the spool's segment files, as chosen from PUBLISHER_SPOOL_MAX_BYTES and the volume's free space.", nil, nil)
	spoolMaxDesc      = prometheus.NewDesc("publisher_spool_max_bytes", "The spool's bound (PUBLISHER_SPOOL_MAX_BYTES); publishes get 503 beyond it.", nil, nil)
)

// spoolCollector is the spool's gauges, all from one status() per scrape.
type spoolCollector struct {
	status   func() spool.Status
	maxBytes int64
}

func (c *spoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{spoolMessagesDesc, spoolBytesDesc, spoolAcceptDesc, spoolSegmentDesc, spoolMaxDesc} {
		ch <- d
	}
}

func (c *spoolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	gauge(ch, spoolMessagesDesc, float64(st.Messages))
	gauge(ch, spoolBytesDesc, float64(st.Bytes))
	gauge(ch, spoolAcceptDesc, b2f(st.Accepting))
	gauge(ch, spoolSegmentDesc, float64(st.SegmentBytes))
	gauge(ch, spoolMaxDesc, float64(c.maxBytes))
}

// Fsync observes one spool fsync (spool.Options.OnFsync).
func (s *Spool) Fsync(d time.Duration) { s.fsync.Observe(d.Seconds()) }

// Corrupt counts a segment set aside (spool.Options.OnCorrupt).
func (s *Spool) Corrupt(string, error) { s.corrupt.Inc() }

// Lost counts records lost to corruption (spool.Options.OnLost).
func (s *Spool) Lost(_ string, n int, _ []string) { s.lost.Add(float64(n)) }

// DeadLettered counts a dead-lettered message.
func (s *Spool) DeadLettered() { s.dead.Inc() }
