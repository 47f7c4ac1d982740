package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/publisher-dev/publisher/supervision"
)

// Serve runs one incarnation: dial, register, declare, publish until the
// connection dies (the error is returned so the supervisor restarts it) or ctx
// ends (nil is returned after a clean close, within about two closeTimeouts).
// Messages in flight when it ends are kept for the next incarnation. Two
// incarnations never run at once: Serve first waits (bounded by ctx) for
// the previous one to have returned.
func (p *Publisher) Serve(ctx context.Context) error {
	select {
	case p.serving <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	defer func() { <-p.serving }()
	url, err := p.brokerURL()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("publisher: the broker URLs file %w", err)
	}
	inc := &incarnation{p: p, ctx: ctx, log: p.log.With("broker", RedactURL(url))}
	err = inc.run(ctx, url)
	inc.saveCarry()
	p.connected.Store(false)
	p.blocked.Store(false)
	p.openChans.Store(0)
	if err != nil && ctx.Err() == nil {
		// The next incarnation tries the next broker.
		p.urlIndex++
		return err
	}
	return nil
}

// incarnation is the state of one Serve call; it dies with it.
type incarnation struct {
	p    *Publisher
	ctx  context.Context // Serve's
	log  *slog.Logger
	conn Conn
	// progressed: the incarnation told its supervisor it made progress
	// (supervision.Progress): a confirm, or Config.HealthyAfter connected.
	progressed bool

	chans  []*pubChannel
	events chan chanEvent
	stop   chan struct{} // closed when the incarnation ends: stops forwarders and the checker
	// goroutines are the incarnation's own (forwarders, checker, cutOnStall),
	// awaited before Serve returns.
	goroutines sync.WaitGroup
	next       int        // round-robin position over chans
	backlog    []*request // to publish before reading the mailbox, oldest first

	known    map[string]bool       // exchanges seen to exist in this incarnation
	waiting  map[string][]*request // waiting for an exchange check
	checks   chan string
	verdicts chan verdict
	inflight int

	delayed    []*request  // nacked, waiting to be published again, by due time
	retryTimer *time.Timer // fires at delayed[0].due; nil when none
}

// pubChannel is one confirm-mode channel and its unconfirmed messages by
// delivery tag.
type pubChannel struct {
	id       int
	gen      int // bumped on reopen; events of an older generation are ignored
	ch       Channel
	open     bool
	seq      uint64
	inflight map[uint64]*request
}

type eventKind int

const (
	evConfirm eventKind = iota
	evReturn
	evClosed
)

type chanEvent struct {
	id, gen int
	kind    eventKind
	conf    amqp.Confirmation
	ret     amqp.Return
	err     *amqp.Error
}

type verdict struct {
	exchange string
	err      error
}

func (inc *incarnation) run(ctx context.Context, url string) error {
	p := inc.p
	cfg := p.cfg
	redacted := RedactURL(url)
	conn, err := p.dial(ctx, url)
	if err != nil {
		return fmt.Errorf("publisher: dial %s: %w", redacted, err)
	}
	inc.conn = conn
	inc.stop = make(chan struct{})
	ended := make(chan struct{})
	defer func() {
		close(inc.stop)
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
		close(ended)
		// The channels' forwarders, the checker and cutOnStall end with the
		// incarnation (stop, ended, and the closed connection end each of
		// their waits): none outlives Serve.
		inc.goroutines.Wait()
	}()
	inc.goroutines.Go(func() { cutOnStall(ctx, ended, conn) })
	p.currentURL.Store(&redacted)

	// Every registration is made anew: nothing from an earlier incarnation is
	// assumed to exist.
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 8))

	inc.known = map[string]bool{"": true}
	inc.waiting = map[string][]*request{}
	if cfg.Topology != nil {
		if err := declareTopology(conn, cfg.Topology); err != nil {
			return fmt.Errorf("publisher: declare topology on %s: %w", redacted, err)
		}
		for _, e := range cfg.Topology.Exchanges {
			inc.known[e.Name] = true
			p.exchanges.Store(e.Name, true)
		}
	}

	inc.events = make(chan chanEvent, cfg.Channels*cfg.MaxInflightPerChannel)
	inc.chans = make([]*pubChannel, cfg.Channels)
	for i := range inc.chans {
		inc.chans[i] = &pubChannel{id: i}
		if err := inc.openChannel(inc.chans[i]); err != nil {
			return fmt.Errorf("publisher: open channel on %s: %w", redacted, err)
		}
	}
	inc.checks = make(chan string, 64)
	inc.verdicts = make(chan verdict, 64)
	inc.goroutines.Go(inc.checker)

	p.connected.Store(true)
	p.connects.Add(1)
	if cfg.OnConnect != nil {
		if uri, err := amqp.ParseURI(url); err == nil {
			cfg.OnConnect(uri.Host, uri.Port)
		}
	}
	inc.log.Info("publisher connected", "channels", cfg.Channels)
	healthy := time.NewTimer(cfg.HealthyAfter)
	defer healthy.Stop()

	// Messages carried over from the previous incarnation go first.
	p.mu.Lock()
	inc.backlog, p.carry = p.carry, nil
	p.mu.Unlock()
	if n := len(inc.backlog); n > 0 {
		p.cfg.Observer.Republished(n)
		inc.log.Info("publishing again messages in flight at the last failure", "messages", n)
	}

	for {
		inc.drainBacklog()
		var in <-chan *request
		if len(inc.backlog) == 0 && !p.blocked.Load() && inc.hasCapacity() {
			in = p.mailbox.Receive()
		}
		var retryC <-chan time.Time
		if inc.retryTimer != nil {
			retryC = inc.retryTimer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case e := <-connClosed:
			if e == nil {
				return errors.New("publisher: connection closed")
			}
			return fmt.Errorf("publisher: connection to %s lost: %w", redacted, e)
		case b := <-blocked:
			p.blocked.Store(b.Active)
			if b.Active {
				inc.log.Warn("broker blocked publishing", "reason", b.Reason)
			} else {
				inc.log.Info("broker unblocked publishing")
			}
		case r := <-in:
			inc.dispatch(r)
		case r := <-p.checks:
			inc.dispatch(r)
		case ev := <-inc.events:
			if err := inc.handle(ev); err != nil {
				return err
			}
		case v := <-inc.verdicts:
			inc.judge(v)
		case <-retryC:
			inc.retryTimer = nil
			inc.retryDue()
		case <-healthy.C:
			inc.progress()
		}
	}
}

// progress tells the supervisor, once, that this incarnation made progress
// (see Config.HealthyAfter).
func (inc *incarnation) progress() {
	if !inc.progressed {
		inc.progressed = true
		supervision.Progress(inc.ctx)
	}
}

// closeTimeout bounds the end of an incarnation: once its ctx is cancelled,
// the loop must have returned and the connection.close handshake finished
// within it, or the socket is cut. A broker that blocks publishers (a memory or
// disk alarm) stops reading the socket, so a write, and the close handshake
// behind it, could otherwise wait for as long as the alarm lasts; a shutdown
// must end within PUBLISHER_SHUTDOWN_TIMEOUT plus a second or two.
const closeTimeout = time.Second

// cutOnStall closes sock when the incarnation has not ended within
// closeTimeout of ctx being cancelled. Closing the socket fails the write the
// loop may be stuck in, so the loop sees ctx and returns.
func cutOnStall(ctx context.Context, ended <-chan struct{}, conn Conn) {
	select {
	case <-ended:
		return
	case <-ctx.Done():
	}
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case <-ended:
	case <-t.C:
		conn.Cut()
	}
}

// openChannel opens (or reopens) pc in confirm mode with fresh listeners.
func (inc *incarnation) openChannel(pc *pubChannel) error {
	ch, err := inc.conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	n := inc.p.cfg.MaxInflightPerChannel
	// The confirm and return buffers cover every outstanding publishing, so
	// amqp091-go never has to wait on (or give up on) a full listener.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, n))
	returns := ch.NotifyReturn(make(chan amqp.Return, n))
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	pc.gen++
	pc.ch = ch
	pc.open = true
	pc.seq = 0
	pc.inflight = make(map[uint64]*request, n)
	inc.p.openChans.Add(1)
	id, gen := pc.id, pc.gen
	inc.goroutines.Go(func() { inc.forward(id, gen, confirms, returns, closes) })
	return nil
}

// forward relays one channel generation's notifications to the actor loop. A
// return is always relayed before the confirm of the same message: amqp091-go
// delivers basic.return into its buffer before it dispatches the basic.ack, so
// draining returns first keeps them in order.
func (inc *incarnation) forward(id, gen int, confirms <-chan amqp.Confirmation, returns <-chan amqp.Return, closes <-chan *amqp.Error) {
	send := func(ev chanEvent) bool {
		ev.id, ev.gen = id, gen
		select {
		case inc.events <- ev:
			return true
		case <-inc.stop:
			return false
		}
	}
	drainReturns := func() bool {
		for {
			select {
			case r, ok := <-returns:
				if !ok {
					returns = nil
					return true
				}
				if !send(chanEvent{kind: evReturn, ret: r}) {
					return false
				}
			default:
				return true
			}
		}
	}
	for {
		select {
		case <-inc.stop:
			return
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			if !send(chanEvent{kind: evReturn, ret: r}) {
				return
			}
		case c, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			if !drainReturns() || !send(chanEvent{kind: evConfirm, conf: c}) {
				return
			}
		case e, ok := <-closes:
			if !ok {
				e = nil
			}
			// Relay what arrived before the close, then the close itself.
			for confirms != nil {
				select {
				case c, ok := <-confirms:
					if !ok {
						confirms = nil
						continue
					}
					if !drainReturns() || !send(chanEvent{kind: evConfirm, conf: c}) {
						return
					}
				default:
					confirms = nil
				}
			}
			if e == nil {
				e = &amqp.Error{Code: amqp.ChannelError, Reason: "channel closed"}
			}
			send(chanEvent{kind: evClosed, err: e})
			return
		}
	}
}

func (inc *incarnation) hasCapacity() bool {
	for _, pc := range inc.chans {
		if pc.open && len(pc.inflight) < inc.p.cfg.MaxInflightPerChannel {
			return true
		}
	}
	return false
}

// drainBacklog publishes from the backlog while there is channel capacity.
func (inc *incarnation) drainBacklog() {
	// At most one pass: dispatch may put a message back at the end.
	for n := len(inc.backlog); n > 0 && !inc.p.blocked.Load() && inc.hasCapacity(); n-- {
		r := inc.backlog[0]
		inc.backlog[0] = nil
		inc.backlog = inc.backlog[1:]
		inc.dispatch(r)
	}
	// Everything taken from the mailbox and not in flight counts as buffered.
	waiting := 0
	for _, w := range inc.waiting {
		waiting += len(w)
	}
	inc.p.carried.Store(int64(len(inc.backlog) + len(inc.delayed) + waiting))
}

// dispatch publishes r, or parks it until its exchange is known to exist: a
// message to a missing exchange must not close a channel other messages share.
func (inc *incarnation) dispatch(r *request) {
	if r.gone(time.Now()) {
		// The caller has its answer already; publishing now would only make a
		// message nobody waits for.
		r.finish(ErrConfirmTimeout)
		return
	}
	ex := r.msg.Exchange
	if inc.known[ex] || strings.HasPrefix(ex, "amq.") {
		if r.checkOnly {
			r.finish(nil)
			return
		}
		inc.publish(r)
		return
	}
	if w, ok := inc.waiting[ex]; ok {
		inc.waiting[ex] = append(w, r)
		return
	}
	inc.waiting[ex] = []*request{r}
	select {
	case inc.checks <- ex:
	default:
		// The checker is saturated: keep the message for later rather than block.
		delete(inc.waiting, ex)
		inc.backlog = append(inc.backlog, r)
	}
}

func (inc *incarnation) publish(r *request) {
	var pc *pubChannel
	for range inc.chans {
		c := inc.chans[inc.next]
		inc.next = (inc.next + 1) % len(inc.chans)
		if c.open && len(c.inflight) < inc.p.cfg.MaxInflightPerChannel {
			pc = c
			break
		}
	}
	if pc == nil {
		inc.backlog = append([]*request{r}, inc.backlog...)
		return
	}
	if !r.claim() {
		// Its caller gave up before it was sent and was told it never would be.
		r.finish(ErrNotPublished)
		return
	}
	if r.attempts > r.tracedAttempts && r.msg.Trace != nil {
		r.tracedAttempts = r.attempts
		r.msg.Trace.Republished(r.attempts + 1)
	}
	m := r.msg
	if err := pc.ch.PublishWithContext(r.ctx, m.Exchange, m.RoutingKey, m.Mandatory, false, publishing(m)); err != nil {
		switch {
		case r.gone(time.Now()):
			r.finish(ErrConfirmTimeout)
		default:
			// Headers were validated by Publish, so this is the channel or the
			// connection failing (closed, or a write error): its close event is
			// on its way. Keep the message for another channel or incarnation.
			inc.backlog = append([]*request{r}, inc.backlog...)
			inc.markClosed(pc)
		}
		return
	}
	pc.seq++
	pc.inflight[pc.seq] = r
	inc.inflight++
	inc.p.inflight.Add(1)
}

func (inc *incarnation) markClosed(pc *pubChannel) {
	if pc.open {
		pc.open = false
		inc.p.openChans.Add(-1)
	}
}

// handle applies one channel event. It returns an error only when the
// connection itself is unusable.
func (inc *incarnation) handle(ev chanEvent) error {
	pc := inc.chans[ev.id]
	if ev.gen != pc.gen {
		return nil
	}
	switch ev.kind {
	case evReturn:
		// The oldest unconfirmed message with this id on this channel is the one.
		var oldest uint64
		for tag, r := range pc.inflight {
			if r.returned == nil && r.msg.MessageID == ev.ret.MessageId && (oldest == 0 || tag < oldest) {
				oldest = tag
			}
		}
		if oldest != 0 {
			pc.inflight[oldest].returned = &ReturnError{Code: ev.ret.ReplyCode, Text: ev.ret.ReplyText}
		}
	case evConfirm:
		r, ok := pc.inflight[ev.conf.DeliveryTag]
		if !ok {
			return nil
		}
		delete(pc.inflight, ev.conf.DeliveryTag)
		inc.inflight--
		inc.p.inflight.Add(-1)
		switch {
		case r.returned != nil:
			r.finish(r.returned)
		case ev.conf.Ack:
			inc.progress()
			r.finish(nil)
		default:
			inc.nacked(r)
		}
	case evClosed:
		inc.channelClosed(pc, ev.err)
		if inc.conn.IsClosed() {
			return fmt.Errorf("publisher: connection lost: %w", ev.err)
		}
		if err := inc.openChannel(pc); err != nil {
			return fmt.Errorf("publisher: reopen channel: %w", err)
		}
	}
	return nil
}

// channelClosed settles the messages that were unconfirmed on a channel the
// broker closed. When the broker names a missing exchange, the messages to it
// fail with a not-found error and nobody else is charged an attempt; every other
// message is published again, charged one attempt.
func (inc *incarnation) channelClosed(pc *pubChannel, cause *amqp.Error) {
	inc.markClosed(pc)
	tags := make([]uint64, 0, len(pc.inflight))
	for tag := range pc.inflight {
		tags = append(tags, tag)
	}
	slices.Sort(tags)
	culprit, isNotFound := missingExchange(cause)
	if isNotFound {
		delete(inc.known, culprit)
		inc.p.exchanges.Delete(culprit)
	}
	connLost := inc.conn.IsClosed()
	if !connLost {
		inc.log.Warn("broker closed a publishing channel", "channel", pc.id, "code", cause.Code, "reason", cause.Reason)
	}
	again := make([]*request, 0, len(tags))
	for _, tag := range tags {
		r := pc.inflight[tag]
		switch {
		case isNotFound && r.msg.Exchange == culprit:
			r.finish(&ChannelError{Code: cause.Code, Reason: cause.Reason})
		case isNotFound:
			again = append(again, r)
		default:
			r.attempts++
			if r.attempts >= inc.p.cfg.MaxPublishAttempts {
				r.finish(fmt.Errorf("%w (%d): %w", ErrTooManyAttempts, r.attempts, cause))
				continue
			}
			again = append(again, r)
		}
	}
	inc.inflight -= len(tags)
	inc.p.inflight.Add(-int64(len(tags)))
	pc.inflight = nil
	if len(again) > 0 && !connLost {
		// With the connection lost, the next incarnation counts them instead.
		inc.p.cfg.Observer.Republished(len(again))
	}
	inc.backlog = append(again, inc.backlog...)
}

// missingExchange extracts the exchange name from a 404 channel close such as
// "NOT_FOUND - no exchange 'orders' in vhost '/'".
func missingExchange(e *amqp.Error) (string, bool) {
	if e == nil || e.Code != amqp.NotFound {
		return "", false
	}
	_, rest, ok := strings.Cut(e.Reason, "no exchange '")
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, "' in vhost")
	return name, ok
}

// checker verifies exchanges with passive declares on a channel of its own,
// so a missing exchange closes only that channel.
func (inc *incarnation) checker() {
	var ch Channel
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
	for {
		select {
		case <-inc.stop:
			return
		case ex := <-inc.checks:
			var err error
			if ch == nil || ch.IsClosed() {
				ch, err = inc.conn.Channel()
			}
			if err == nil {
				err = ch.ExchangeDeclarePassive(ex, "direct", false, false, false, false, nil)
			}
			select {
			case inc.verdicts <- verdict{exchange: ex, err: err}:
			case <-inc.stop:
				return
			}
		}
	}
}

// judge releases or fails the messages waiting for an exchange check.
func (inc *incarnation) judge(v verdict) {
	waiting := inc.waiting[v.exchange]
	delete(inc.waiting, v.exchange)
	if v.err == nil {
		inc.known[v.exchange] = true
		inc.p.exchanges.Store(v.exchange, true)
		inc.backlog = append(inc.backlog, waiting...)
		return
	}
	var ae *amqp.Error
	if errors.As(v.err, &ae) && !inc.conn.IsClosed() && ae.Code != amqp.ChannelError {
		inc.p.exchanges.Delete(v.exchange)
		for _, r := range waiting {
			r.finish(&ChannelError{Code: ae.Code, Reason: ae.Reason})
		}
		return
	}
	// The connection is going away: keep them for the next incarnation.
	inc.backlog = append(inc.backlog, waiting...)
}

// saveCarry moves everything this incarnation still holds to the Publisher,
// oldest first, so the next incarnation publishes it again. Messages that were
// in flight are charged one attempt; those charged MaxPublishAttempts fail.
func (inc *incarnation) saveCarry() {
	p := inc.p
	var carry []*request
	for _, pc := range inc.chans {
		if pc == nil || pc.inflight == nil {
			continue
		}
		tags := make([]uint64, 0, len(pc.inflight))
		for tag := range pc.inflight {
			tags = append(tags, tag)
		}
		slices.Sort(tags)
		for _, tag := range tags {
			r := pc.inflight[tag]
			r.attempts++
			if r.attempts >= p.cfg.MaxPublishAttempts {
				r.finish(fmt.Errorf("%w (%d): connection lost while in flight", ErrTooManyAttempts, r.attempts))
				continue
			}
			carry = append(carry, r)
		}
		p.inflight.Add(-int64(len(pc.inflight)))
		pc.inflight = nil
	}
	carry = append(carry, inc.backlog...)
	for _, w := range inc.waiting {
		carry = append(carry, w...)
	}
	inc.backlog, inc.waiting = nil, nil
	if inc.retryTimer != nil {
		inc.retryTimer.Stop()
	}
	carry = append(carry, inc.delayed...)
	inc.delayed = nil
	// Requests whose callers have gone need no second publish.
	live := carry[:0]
	now := time.Now()
	for _, r := range carry {
		if r.checkOnly {
			r.finish(ErrCannotCheck)
			continue
		}
		if r.gone(now) {
			r.finish(ErrConfirmTimeout)
			continue
		}
		live = append(live, r)
	}
	p.mu.Lock()
	if p.terminated {
		p.mu.Unlock()
		// Terminated ran while this incarnation was still ending: nobody will
		// publish these, so they are failed back as Terminated fails its own.
		for _, r := range live {
			r.finish(ErrClosed)
		}
		return
	}
	p.carry = append(live, p.carry...)
	p.carried.Store(int64(len(p.carry)))
	p.mu.Unlock()
}

// Nack retry backoff: the n-th nack of a message delays its next publish by
// min(nackRetryMax, nackRetryMin·2ⁿ⁻¹).
const (
	nackRetryMin = 50 * time.Millisecond
	nackRetryMax = 2 * time.Second
)

// nacked handles a basic.nack. A nack is the broker saying it could not take
// the message now — typically a quorum queue without a leader during a node
// failover, or a full queue with overflow=reject-publish — so the message is
// published again after a backoff for as long as its deadline allows; only
// then does the caller get ErrNacked.
func (inc *incarnation) nacked(r *request) {
	r.nacks++
	delay := nackRetryMin << min(r.nacks-1, 10)
	delay = min(delay, nackRetryMax)
	deadline, ok := r.deadlineAt()
	if !ok || time.Until(deadline) <= delay {
		r.finish(ErrNacked)
		return
	}
	if r.msg.Trace != nil {
		r.msg.Trace.NackRetry(r.nacks, delay)
	}
	r.due = time.Now().Add(delay)
	i, _ := slices.BinarySearchFunc(inc.delayed, r.due, func(d *request, t time.Time) int { return d.due.Compare(t) })
	inc.delayed = slices.Insert(inc.delayed, i, r)
	inc.armRetry()
}

func (inc *incarnation) armRetry() {
	if inc.retryTimer != nil {
		inc.retryTimer.Stop()
		inc.retryTimer = nil
	}
	if len(inc.delayed) > 0 {
		inc.retryTimer = time.NewTimer(time.Until(inc.delayed[0].due))
	}
}

// retryDue moves the nacked messages whose delay is over to the backlog.
func (inc *incarnation) retryDue() {
	now := time.Now()
	n := 0
	for n < len(inc.delayed) && !inc.delayed[n].due.After(now) {
		n++
	}
	inc.backlog = append(inc.backlog, inc.delayed[:n]...)
	inc.delayed = slices.Delete(inc.delayed, 0, n)
	inc.armRetry()
}
