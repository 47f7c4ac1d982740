// Package publisher holds the connection-owning publisher actor: one AMQP
// connection, a set of confirm-mode channels, and the bookkeeping that turns
// broker confirms into answers for the callers of Publish.
//
// A Publisher is a supervision.Service. Each call of Serve is one incarnation:
// it dials, redoes every registration (NotifyClose, NotifyBlocked,
// NotifyPublish, NotifyReturn, confirm mode, topology) and then publishes until
// the connection dies, when it returns the error so its supervisor restarts it.
// Nothing from an earlier incarnation is assumed to be registered.
//
// The state that must survive a crash lives on the Publisher, outside the
// incarnation: the mailbox callers send to (so Publish keeps working while the
// actor restarts, bounded by Config.BufferSize) and the messages that were in
// flight when the connection died, which the next incarnation publishes again
// with the same message id (at-least-once). A message that has been in flight
// through Config.MaxPublishAttempts failures is failed back to its caller.
package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/publisher-dev/publisher/supervision"
)

// Config configures a Publisher. The zero value of every field means the
// documented default.
type Config struct {
	// URLs are the brokers (e.g. the nodes of a cluster). The first
	// incarnation dials a random one, so a fleet of publishers spreads over the
	// nodes; each incarnation after a failure dials the next one. Default
	// amqp://guest:guest@localhost:5672/.
	URLs []string
	// URLsFile, when set, wins over URLs: a file of broker URLs (with their
	// credentials, e.g. a mounted Secret), separated by commas or line
	// breaks, read again at every connection attempt (ReadURLsFile), so a
	// rotated password is used from the next connection on. A file that
	// cannot be read, or holds a URL CheckURL refuses, fails that attempt.
	URLsFile string
	// TLS is the CA bundle, client certificate and server name of amqps://
	// connections, read at every connection attempt (see TLSFiles). The
	// zero value verifies the broker against the system's roots and sends
	// no client certificate. Setting any of it with an amqp:// URL is an
	// error (CheckURL): it would not be used.
	TLS TLSFiles
	// AuthMechanism is AuthPlain (the default: the URL's user and password)
	// or AuthExternal (the client certificate's identity; needs TLS.CertFile
	// and amqps:// URLs without user info).
	AuthMechanism AuthMechanism
	// Channels is the number of confirm-mode channels on the connection.
	// Default 1: measured fastest against a broker on a small machine (one
	// channel process batches its confirms into multiple-acks); more channels
	// spread the work of a large broker over its cores.
	Channels int
	// MaxInflightPerChannel bounds the unconfirmed messages per channel; the
	// confirm listener's buffer is sized to it, as amqp091-go requires. Default 1024.
	MaxInflightPerChannel int
	// BufferSize bounds the mailbox: messages taken but not yet published,
	// including those waiting while the actor restarts. Default 10000.
	BufferSize int
	// ConfirmTimeout bounds how long Publish waits for the broker. Default
	// DefaultConfirmTimeout.
	ConfirmTimeout time.Duration
	// MaxPublishAttempts is how many connection or channel failures a message may
	// be in flight through before it is failed with ErrTooManyAttempts. Default 3.
	MaxPublishAttempts int
	// Heartbeat is the AMQP heartbeat interval. Default 10s.
	Heartbeat time.Duration
	// DialTimeout bounds the TCP connect and AMQP handshake. Default 5s.
	DialTimeout time.Duration
	// HealthyAfter is how long a connection must stay up, its channels
	// open, for its incarnation to count as having made progress even when
	// no message was confirmed (an idle sidecar). An incarnation that made
	// progress (this, or a confirm from the broker) tells its supervisor
	// with supervision.Progress, so its failure starts a fresh restart
	// intensity count: a load balancer that cuts working connections every
	// few seconds is restarted from forever, never given up on. Failures
	// before that (refused or stalled dials, handshakes, channel setup, a
	// connection closed at once) count as before. Default 2s: longer than a
	// broker takes to refuse a connection it accepted (milliseconds), far
	// shorter than a connection a network flaps every few seconds.
	HealthyAfter time.Duration
	// ConnectionName is shown in the management UI. Default "publisher".
	ConnectionName string
	// Topology is declared on every connect. Optional.
	Topology *Topology
	// Logger receives structured logs; URLs in it are redacted. Default slog.Default().
	Logger *slog.Logger
	// Observer receives outcomes for metrics. Optional.
	Observer Observer
	// Dial opens one connection to a broker URL, returning once it is open
	// (handshake done) or failed, and at once when ctx ends. nil means
	// amqp091-go over TCP (TLS for amqps), bounded by DialTimeout; tests
	// give a fake broker (internal/fakeamqp).
	Dial func(ctx context.Context, url string) (Conn, error)
	// OnConnect, if set, is called by every incarnation once it is connected,
	// with the host and port of the broker it dialled (for tracing's
	// server.address and server.port). It must not block.
	OnConnect func(host string, port int)
}

// DefaultConfirmTimeout is how long a publish waits for the broker's
// confirm when nothing else is configured (PUBLISHER_CONFIRM_TIMEOUT's
// default): the one place this default is written.
const DefaultConfirmTimeout = 10 * time.Second

func (c *Config) setDefaults() {
	if len(c.URLs) == 0 {
		c.URLs = []string{"amqp://guest:guest@localhost:5672/"}
	}
	if c.Channels <= 0 {
		c.Channels = 1
	}
	if c.MaxInflightPerChannel <= 0 {
		c.MaxInflightPerChannel = 1024
	}
	if c.BufferSize <= 0 {
		c.BufferSize = 10000
	}
	if c.ConfirmTimeout <= 0 {
		c.ConfirmTimeout = DefaultConfirmTimeout
	}
	if c.MaxPublishAttempts <= 0 {
		c.MaxPublishAttempts = 3
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 10 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.HealthyAfter <= 0 {
		c.HealthyAfter = 2 * time.Second
	}
	if c.ConnectionName == "" {
		c.ConnectionName = "publisher"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
}

// Outcome is how a publish ended, as counted in publisher_messages_total
// (Kind.Outcome).
type Outcome string

// The outcomes of a publish.
const (
	OutcomeConfirmed Outcome = "confirmed"
	OutcomeNacked    Outcome = "nacked"
	OutcomeReturned  Outcome = "returned"
	OutcomeRejected  Outcome = "rejected"
	OutcomeFailed    Outcome = "failed"
	OutcomeTimeout   Outcome = "timeout"
)

// Observer is told about every message once, when its outcome is known
// (refused by Send, or settled), and about every republish. Methods are
// called from many goroutines and must be cheap.
type Observer interface {
	// Published: the message's outcome, and the time from Send to it.
	Published(outcome Outcome, d time.Duration)
	Republished(n int)
}

type nopObserver struct{}

func (nopObserver) Published(Outcome, time.Duration) {}
func (nopObserver) Republished(int)                  {}

// Publisher publishes messages with confirms over one supervised connection.
// Create it with New, add it to a supervisor (it is a supervision.Service), and
// call Send or Publish from any goroutine.
type Publisher struct {
	cfg     Config
	log     *slog.Logger
	dial    func(ctx context.Context, url string) (Conn, error)
	mailbox *supervision.Mailbox[*request]
	checks  chan *request // CheckExchange requests, read by the running incarnation
	// exchanges caches the names seen to exist (by any incarnation), so that
	// CheckExchange answers known ones without a round trip to the actor. A
	// name is dropped when the broker says it is gone.
	exchanges sync.Map

	// serving holds a token while an incarnation runs: Serve takes it first,
	// so two incarnations never run at once, even when a supervisor gave up
	// waiting for one to stop (its shutdown timeout) and started the next.
	serving chan struct{}

	// mu guards carry and terminated, which the incarnation (taking the
	// carry at its start, saving it at its end) and Terminated share. A
	// supervisor calls Terminated only once Serve has returned for good, but
	// the publisher does not rely on it: an incarnation that ends after
	// Terminated fails what it holds with ErrClosed instead of carrying it.
	mu sync.Mutex
	// carry holds the requests that were in flight (or waiting) when the
	// last incarnation ended, oldest first.
	carry      []*request
	terminated bool
	// urlIndex is the index into cfg.URLs of the next dial; only Serve
	// touches it, holding serving.
	urlIndex int

	connected  atomic.Bool
	connects   atomic.Uint64 // connections made (an incarnation that set up its channels)
	blocked    atomic.Bool
	openChans  atomic.Int32
	inflight   atomic.Int64
	carried    atomic.Int64
	currentURL atomic.Pointer[string]
}

// New returns a Publisher; it does not connect until Serve runs.
func New(cfg Config) (*Publisher, error) {
	cfg.setDefaults()
	for _, u := range cfg.URLs {
		if _, err := amqp.ParseURI(u); err != nil {
			return nil, fmt.Errorf("publisher: invalid broker URL %s: %s", RedactURL(u), DescribeURLError(err))
		}
	}
	p := &Publisher{
		cfg:     cfg,
		log:     cfg.Logger,
		mailbox: supervision.NewMailbox[*request](cfg.BufferSize),
		checks:  make(chan *request),
		serving: make(chan struct{}, 1),
		// Start at a random broker so that many publishers spread their
		// connections over a cluster's nodes.
		urlIndex: rand.IntN(len(cfg.URLs)),
	}
	p.dial = cfg.Dial
	if p.dial == nil {
		p.dial = p.dialAMQP
	}
	return p, nil
}

// request is one message travelling through the actor.
type request struct {
	ctx context.Context
	// deadline bounds the publish beside ctx (zero: none), kept on the
	// request rather than in a derived context: a context.WithTimeout per
	// message cost the hot path nine allocations and ~600 bytes.
	deadline time.Time
	msg      *Message
	start    time.Time   // when Send took it, for the Observer
	obs      Observer    // told of the outcome (nil for CheckExchange's requests)
	done     func(error) // called once with the outcome, on the actor's goroutine
	// checkOnly asks only whether msg.Exchange exists (CheckExchange): it is
	// answered once the exchange is known, never published.
	checkOnly bool

	// state is requestQueued until the actor first writes the message to a
	// channel (requestSent) or its caller gives up on it before that
	// (requestAbandoned); the compare-and-swap between the two decides, so a
	// caller told "not published" can rely on it. Only Ticket.GiveUp abandons.
	state atomic.Uint32

	// tracedAttempts is the attempts already reported to msg.Trace.
	tracedAttempts int

	attempts int          // failures survived while in flight
	nacks    int          // basic.nacks received (retried with backoff)
	due      time.Time    // when a nacked request is published again
	returned *ReturnError // set when the broker returned the message
}

// gone reports whether the caller no longer waits: its ctx ended or the
// request's deadline passed. Publishing such a request would only make a
// message nobody is told about.
func (r *request) gone(now time.Time) bool {
	return r.ctx.Err() != nil || (!r.deadline.IsZero() && !now.Before(r.deadline))
}

// deadlineAt is the earlier of the caller's ctx deadline and the request's
// own; ok is false when there is neither.
func (r *request) deadlineAt() (d time.Time, ok bool) {
	d, ok = r.ctx.Deadline()
	if !r.deadline.IsZero() && (!ok || r.deadline.Before(d)) {
		d, ok = r.deadline, true
	}
	return d, ok
}

// The values of request.state.
const (
	requestQueued uint32 = iota
	requestSent
	requestAbandoned
)

// claim is called by the actor before it writes r to a channel: true when r
// may be published (it was sent before, or is sent now for the first time),
// false when its caller abandoned it.
func (r *request) claim() bool {
	return r.state.Load() == requestSent || r.state.CompareAndSwap(requestQueued, requestSent)
}

// abandon is called by a caller that stops waiting: true when r had never
// been written to the broker and now never will be.
func (r *request) abandon() bool {
	return r.state.CompareAndSwap(requestQueued, requestAbandoned)
}

// finish settles r: its outcome goes to its span, the Observer and its
// caller. It is called once per request.
func (r *request) finish(err error) {
	if r.obs != nil {
		settled(r.msg, r.obs, r.start, err)
	}
	r.done(err)
}

// settled reports a message's outcome to its span and the Observer.
func settled(msg *Message, obs Observer, start time.Time, err error) {
	k := Classify(err)
	if msg.Trace != nil {
		msg.Trace.End(k.ErrorType())
	}
	obs.Published(k.Outcome(), time.Since(start))
}

// Send hands msg to the publisher and returns at once, without waiting for
// the broker. done is called exactly once with the outcome — nil when the
// broker confirmed the message, else an error Classify knows — unless Send
// itself returns an error (the message was not taken: ErrInvalidMessage,
// ErrBufferFull, ErrClosed), in which case done is never called. done runs
// on the publisher's goroutine and must not block.
//
// The publish is bounded by ctx and by deadline (zero: none): a message not
// yet written to the broker when either ends is never written (done gets
// ErrConfirmTimeout), and a nacked one is retried only while they allow.
// The Ticket lets a caller that stops waiting first take the message back
// (Ticket.GiveUp). Send sets msg.MessageID when it is empty; msg.Trace, when
// set, is told of republishes and nack retries and ended with the outcome
// (at once when Send refuses the message). Batch and stream publishing call
// Send once per message: no goroutine per message.
func (p *Publisher) Send(ctx context.Context, msg *Message, deadline time.Time, done func(error)) (Ticket, error) {
	start := time.Now()
	if msg.MessageID == "" {
		msg.MessageID = NewMessageID()
	}
	if err := Validate(msg); err != nil {
		settled(msg, p.cfg.Observer, start, err)
		return Ticket{}, err
	}
	r := &request{ctx: ctx, deadline: deadline, msg: msg, start: start, obs: p.cfg.Observer, done: done}
	if err := p.send(r); err != nil {
		settled(msg, p.cfg.Observer, start, err)
		return Ticket{}, err
	}
	return Ticket{r}, nil
}

// Ticket is a message taken by Send.
type Ticket struct{ r *request }

// GiveUp is for a caller that stops waiting for the message before its done
// was called, because of cause (its deadline: ErrConfirmTimeout; a
// shutdown: ErrClosed; else its ctx's cause). It takes the message back if
// it was never written to the broker and returns the answer to give for it:
// an error matching ErrNotPublished, wrapping cause (it will never be
// published: Kind NotSent or Withdrawn), or else one matching
// ErrConfirmTimeout (it may still reach the broker: TimedOut, or
// Interrupted when cause is ErrClosed). done is still called once, later.
func (t Ticket) GiveUp(cause error) error {
	r := t.r
	if r.abandon() {
		return fmt.Errorf("%w (message %s): %w", ErrNotPublished, r.msg.MessageID, cause)
	}
	if errors.Is(cause, ErrConfirmTimeout) {
		return fmt.Errorf("%w (message %s)", ErrConfirmTimeout, r.msg.MessageID)
	}
	return fmt.Errorf("%w (message %s; it may still reach the broker): %w", ErrConfirmTimeout, r.msg.MessageID, cause)
}

// Publish is Send and a wait for the outcome, bounded by
// Config.ConfirmTimeout and ctx: nil when the broker confirmed msg, else
// its error (Classify). ErrInvalidMessage, ErrBufferFull and ErrClosed come
// back at once. When Publish stops waiting before the broker answered, it
// returns what Ticket.GiveUp says: ErrNotPublished (taken back, never
// published) or ErrConfirmTimeout (it may still arrive); a ctx that ends
// with context.DeadlineExceeded counts as the timeout, any other cause
// (a shutdown cancels with ErrClosed) is wrapped in the answer.
func (p *Publisher) Publish(ctx context.Context, msg *Message) error {
	answer := make(chan error, 1)
	t, err := p.Send(ctx, msg, time.Now().Add(p.cfg.ConfirmTimeout), func(err error) { answer <- err })
	if err != nil {
		return err
	}
	timer := time.NewTimer(p.cfg.ConfirmTimeout)
	defer timer.Stop()
	var cause error
	select {
	case err := <-answer:
		return err
	case <-timer.C:
		cause = ErrConfirmTimeout
	case <-ctx.Done():
		cause = context.Cause(ctx)
		if errors.Is(cause, context.DeadlineExceeded) {
			cause = ErrConfirmTimeout
		}
	}
	err = t.GiveUp(cause)
	if !errors.Is(err, ErrNotPublished) {
		select {
		case err := <-answer: // the answer came after all
			return err
		default:
		}
	}
	return err
}

// ErrCannotCheck is CheckExchange's answer when it cannot tell now (no
// connection, or no answer before ctx ended).
var ErrCannotCheck = errors.New("publisher: cannot check the exchange now")

// CheckExchange tells whether exchange exists, with the same cached passive
// declare the publisher uses before publishing to an exchange it has not seen:
// nil, an error matching ErrExchangeNotFound (or ErrRejected), or
// ErrCannotCheck. It does not queue behind buffered messages.
func (p *Publisher) CheckExchange(ctx context.Context, exchange string) error {
	if exchange == "" || strings.HasPrefix(exchange, "amq.") {
		return nil
	}
	if _, ok := p.exchanges.Load(exchange); ok {
		return nil
	}
	if !p.connected.Load() {
		return ErrCannotCheck
	}
	answer := make(chan error, 1)
	r := &request{ctx: ctx, msg: &Message{Exchange: exchange}, done: func(err error) { answer <- err }, checkOnly: true}
	select {
	case p.checks <- r:
	case <-ctx.Done():
		return ErrCannotCheck
	}
	select {
	case err := <-answer:
		return err
	case <-ctx.Done():
		return ErrCannotCheck
	}
}

func (p *Publisher) send(r *request) error {
	if err := p.mailbox.Send(r); err != nil {
		if errors.Is(err, supervision.ErrMailboxFull) {
			return ErrBufferFull
		}
		return ErrClosed
	}
	return nil
}

// Validate reports (as ErrInvalidMessage) what would make msg impossible to
// encode, without sending anything.
func Validate(msg *Message) error {
	if err := amqp.Table(msg.Headers).Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	return nil
}

// publishing is msg as amqp091-go sends it. It is built when the message is
// published rather than kept on the request, which would carry a second copy
// of every field for the message's whole life.
func publishing(msg *Message) amqp.Publishing {
	var mode uint8 = amqp.Transient
	if msg.Persistent {
		mode = amqp.Persistent
	}
	return amqp.Publishing{
		Headers:         amqp.Table(msg.Headers),
		ContentType:     msg.ContentType,
		ContentEncoding: msg.ContentEncoding,
		DeliveryMode:    mode,
		Priority:        msg.Priority,
		CorrelationId:   msg.CorrelationID,
		ReplyTo:         msg.ReplyTo,
		Expiration:      msg.Expiration,
		MessageId:       msg.MessageID,
		Timestamp:       msg.Timestamp,
		Type:            msg.Type,
		Body:            msg.Body,
	}
}

// State is a snapshot of the publisher for readiness and metrics.
type State struct {
	Connected bool   // a connection is open and its channels are set up
	Blocked   bool   // the broker sent connection.blocked (memory or disk alarm)
	Channels  int    // confirm channels open now
	Inflight  int    // published, not yet confirmed
	Buffered  int    // taken, waiting to be published (mailbox, carried over, nacked awaiting retry)
	URL       string // the broker URL in use, password redacted
	Connects  uint64 // connections made since New (each incarnation that got its channels up)
}

// State returns a snapshot; safe from any goroutine.
func (p *Publisher) State() State {
	s := State{
		Connected: p.connected.Load(),
		Blocked:   p.blocked.Load(),
		Channels:  int(p.openChans.Load()),
		Inflight:  int(p.inflight.Load()),
		Buffered:  p.mailbox.Len() + int(p.carried.Load()),
		Connects:  p.connects.Load(),
	}
	if u := p.currentURL.Load(); u != nil {
		s.URL = *u
	}
	return s
}

// Ready reports whether the publisher is connected, has all its confirm
// channels open and is not blocked by the broker.
func (p *Publisher) Ready() bool {
	s := p.State()
	return s.Connected && !s.Blocked && s.Channels == p.cfg.Channels
}

// Terminated is called by the supervisor when the publisher is removed for
// good (tree shutdown or a Stop decision), after its last Serve returned.
// The mailbox is closed, so later sends get ErrClosed at once, and every
// message still waiting is failed back with ErrClosed: none is dropped
// silently. Should an incarnation still be running (a supervisor that gave
// up waiting for it), it fails what it holds with ErrClosed when it ends.
func (p *Publisher) Terminated(reason error) {
	p.mu.Lock()
	p.terminated = true
	carry := p.carry
	p.carry = nil
	p.mu.Unlock()
	for _, r := range p.mailbox.Close() {
		r.finish(ErrClosed)
	}
	for _, r := range carry {
		r.finish(ErrClosed)
	}
	p.carried.Store(0)
}

// RedactURL returns u with its password replaced by "xxxxx", for logs and
// errors. It never returns any part of the password, even for a URL that does
// not parse (or parses with an '@' outside its user info): then everything
// between the user name and the last "@" is masked, and all of it when the
// user name cannot be told apart.
func RedactURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	// A URL that parses without user info but holds an '@' has its password
	// where the parser did not look (e.g. "amqp://us/er:pw@host/", whose '/'
	// made "us" the host): it is masked like one that does not parse.
	if parsed, err := url.Parse(u); err == nil && (parsed.User != nil || !strings.Contains(rest, "@")) {
		return parsed.Redacted()
	}
	if !ok {
		return "<unparseable URL>"
	}
	// The userinfo ends at the last '@' before the path: a password may hold
	// '/', '?' or '#' when it is not percent-encoded, so look for the '@' first.
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return scheme + "://" + rest // no userinfo, so no password
	}
	user, _, _ := strings.Cut(rest[:at], ":")
	if strings.ContainsAny(user, "/?#") {
		return scheme + "://xxxxx" + rest[at:]
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}

// DescribeURLError says what is wrong with a broker URL that amqp.ParseURI
// (or url.Parse) refused, in words of its own: the parsers' messages quote the
// URL or a fragment of it (the bad escape, the bad port), which may be part of
// a password, so none of their text is passed on.
func DescribeURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ee url.EscapeError
	var he url.InvalidHostError
	var ne *strconv.NumError
	msg := err.Error()
	switch {
	case errors.As(err, &ee):
		return "invalid percent-encoding ('%' must be followed by two hex digits; percent-encode reserved characters of the user name and password, e.g. '%25' for '%')"
	case errors.As(err, &he), strings.Contains(msg, "missing ']'"):
		return "invalid host (write an IPv6 address in brackets, e.g. amqp://[::1]:5672/)"
	case errors.As(err, &ne), strings.HasPrefix(msg, "invalid port"):
		return "invalid port (a number from 1 to 65535; percent-encode a '/' in the password as %2F)"
	case strings.Contains(msg, "invalid userinfo"):
		return "invalid user name or password (percent-encode reserved characters)"
	case strings.Contains(msg, "control character"):
		return "control characters are not allowed"
	case strings.Contains(msg, "whitespace"):
		return "the URL must not contain whitespace"
	case strings.Contains(msg, "scheme"):
		return "the scheme must be amqp:// or amqps://"
	}
	return "not a valid AMQP URL (amqp://user:password@host:port/vhost)"
}
