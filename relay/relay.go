// Package relay puts the durable spool between the HTTP API and the
// publisher: a message is accepted once it is on disk (fsync'ed), and a
// supervised forwarder publishes spooled messages to the broker with confirms,
// deleting them only after the broker's ack.
//
// The state that must survive a crash is kept outside the process
// altogether: after a crash, even SIGKILL, the next start publishes again
// whatever was not confirmed (at-least-once, same message id).
//
// Answers (Send, and Publish, which waits for one): Confirmed when the broker
// confirmed while the caller waited; Spooled when the message is durably
// held but not confirmed yet (at once when the caller asked not to wait); a
// broker's permanent refusal (publisher.Kind.Permanent: not found,
// unroutable, rejected, nacked) when it came while the caller waited — the
// message is then moved to the spool's dead-letter file, not retried
// forever; ErrFull or ErrDisk when it could not be made durable.
//
// Direct is the same Send without a spool, straight to the publisher.
package relay

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/publisher-dev/publisher/idempotency"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/spool"
)

// ErrFull means the spool cannot take the message now: it holds
// PUBLISHER_SPOOL_MAX_BYTES already, or its volume is full (HTTP 503);
// nothing old is dropped to make room. Its Kind is publisher.Full.
var ErrFull error = &publisher.KindError{Kind: publisher.Full, Text: "relay: spool full", Reason: "spool full"}

// ErrDisk means the message could not be made durable (HTTP 503). Its Kind
// is publisher.Unavailable.
var ErrDisk error = &publisher.KindError{Kind: publisher.Unavailable, Text: "relay: spool disk failure",
	Reason: "the spool cannot write to its disk"}

// Delivery is how far a message got when taking it succeeded.
type Delivery uint8

// The deliveries.
const (
	// Confirmed: the broker confirmed the message (basic.ack); it is the
	// broker's responsibility now.
	Confirmed Delivery = iota + 1
	// Spooled: the message is durably held on local disk (written and
	// fsync'ed) but not confirmed by the broker yet; it will be published, at
	// least once, with its message id.
	Spooled
)

func (d Delivery) String() string {
	switch d {
	case Confirmed:
		return "confirmed"
	case Spooled:
		return "spooled"
	}
	return fmt.Sprintf("Delivery(%d)", uint8(d))
}

// SendOptions are the options of a Send.
type SendOptions struct {
	// Async is the request's "Prefer: respond-async" (RFC 7240): answer
	// Spooled once a message is durable, without waiting for the broker.
	// Direct, which has no spool, ignores it.
	Async bool
	// Deadline bounds each message as PUBLISHER_CONFIRM_TIMEOUT bounds a
	// single publish: Direct passes it to publisher.Send (a message not sent
	// by then never is); the Relay's messages are durable, so it bounds only
	// the caller's wait. Zero: none.
	Deadline time.Time
	// Keys are the messages' idempotency keys, by index in msgs (nil, or a
	// zero KeyRef, for none). The Relay writes them into the spooled
	// records, so that after a restart a retry is answered from the record
	// (see Relay.RestoreKeys); Direct has nothing to write them to.
	Keys []KeyRef
}

// KeyRef is a message's idempotency key and its request's fingerprint.
type KeyRef struct {
	Key         idempotency.Key
	Fingerprint idempotency.Fingerprint
}

// Publisher is what the relay needs of publisher.Publisher.
type Publisher interface {
	Send(ctx context.Context, msg *publisher.Message, deadline time.Time, done func(error)) (publisher.Ticket, error)
	CheckExchange(ctx context.Context, exchange string) error
}

// Config configures a Relay; zero values mean the defaults.
type Config struct {
	Spool     *spool.Spool
	Publisher Publisher
	// ConfirmTimeout is how long Publish waits for the broker before answering
	// Spooled. Default publisher.DefaultConfirmTimeout.
	ConfirmTimeout time.Duration
	// Window bounds the spooled messages handed to the publisher and not yet
	// settled. Default 2048.
	Window int
	// MaxAttempts is how many transient failures (connection lost while in
	// flight, timeouts) one record may see before it is dead-lettered. Default 10.
	MaxAttempts int
	// ForwardTimeout bounds one publish attempt of a spooled message (nacks are
	// retried within it). Default 5m.
	ForwardTimeout time.Duration
	Logger         *slog.Logger
	// OnDeadLetter is called for every dead-lettered message.
	OnDeadLetter func()
	// Keys, if set, is told the outcome of every spooled message that has
	// an idempotency key (Confirm on the broker's confirm, Drop when it is
	// dead-lettered), also for the records of an earlier process, and gets
	// the keys an earlier process left (RestoreKeys).
	Keys *idempotency.Store
	// KeysFile, with Keys, is the path of the keys' journal (keys.go): the
	// confirmed keys, kept beside the spool for Keys' window. Empty: none
	// (a confirmed key is then forgotten by a restart).
	KeysFile string
}

// checkTimeout bounds the exchange check before a message is spooled: long
// enough for a passive declare round trip to a busy broker, short enough that
// a broker that does not answer delays the caller only a little (the message
// is then spooled unchecked and a missing exchange dead-letters it later).
const checkTimeout = 2 * time.Second

// submitBackoffMin and submitBackoffMax bound the forwarder's wait while the
// publisher's buffer is full: the n-th consecutive wait is
// min(submitBackoffMax, submitBackoffMin·2ⁿ⁻¹). A full buffer drains at the
// broker's pace (thousands a second), so a millisecond is enough at first,
// and 100 ms keeps a stalled publisher from being polled in a tight loop.
const (
	submitBackoffMin = time.Millisecond
	submitBackoffMax = 100 * time.Millisecond
)

// Relay accepts into the spool (Publish) and forwards from it
// (Serve, a supervision child).
type Relay struct {
	cfg   Config
	sp    *spool.Spool
	pub   Publisher
	log   *slog.Logger
	nonce uint64 // this process: a waiter matches only records written by it
	rid   atomic.Uint64

	// waiters are the callers of this process waiting for a record's outcome,
	// by request id: each is called at most once, then removed.
	mu      sync.Mutex
	waiters map[uint64]func(error)
	// traces are the tracing spans of this process's spooled records, by
	// request id, until the broker's final answer ends them: a record read
	// back from the spool is a new publisher.Message, which gets its span
	// from here. A record replayed after a restart has none.
	traces map[uint64]publisher.Trace

	// The forwarding window, shared by the forwarder's incarnations: a token
	// of sem per record handed to the publisher and not settled; pending holds
	// their sequence numbers; settled carries their failures to the forwarder.
	sem     chan struct{}
	settled chan settlement
	pendMu  sync.Mutex
	pending map[uint64]bool

	journal *journal // nil without Config.KeysFile
}

// New returns a Relay over an opened spool.
func New(cfg Config) *Relay {
	if cfg.ConfirmTimeout <= 0 {
		cfg.ConfirmTimeout = publisher.DefaultConfirmTimeout
	}
	if cfg.Window <= 0 {
		cfg.Window = 2048
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 10
	}
	if cfg.ForwardTimeout <= 0 {
		cfg.ForwardTimeout = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OnDeadLetter == nil {
		cfg.OnDeadLetter = func() {}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	r := &Relay{cfg: cfg, sp: cfg.Spool, pub: cfg.Publisher, log: cfg.Logger,
		nonce: binary.LittleEndian.Uint64(b[:]), waiters: map[uint64]func(error){}, traces: map[uint64]publisher.Trace{},
		sem: make(chan struct{}, cfg.Window), settled: make(chan settlement, cfg.Window), pending: map[uint64]bool{}}
	if cfg.Keys != nil && cfg.KeysFile != "" {
		r.journal = &journal{path: cfg.KeysFile, window: cfg.Keys.Window(), maxLines: max(1, cfg.Keys.MaxKeys()/2), log: cfg.Logger}
	}
	return r
}

// Accepting reports whether the spool takes messages now (spool.Status): not
// at its bound, its volume not full, no disk failure being retried.
func (r *Relay) Accepting() bool { return r.sp.Status().Accepting }

// Sender takes messages and answers how far each got: a *Relay (through
// the spool) and Direct (straight to the publisher). The HTTP layer
// publishes through one.
//
// Send hands msgs over and returns once each is taken or refused, without
// waiting for the broker. done(i, delivery, err) is called at most once per
// message, from any goroutine, and must not block: for a refusal possibly
// before Send returns. A caller that stops waiting (its deadline, a
// shutdown: cause) calls giveUp for each message still without an answer,
// and gets the answer to give for it (not published, may still arrive,
// spooled); a done that comes after is ignored. Messages to one exchange and
// routing key are published in the order of msgs.
type Sender interface {
	Send(ctx context.Context, msgs []*publisher.Message, opts SendOptions, done func(i int, d Delivery, err error)) (giveUp func(i int, cause error) (Delivery, error))
}

// Publish is s.Send of one message and a wait for its answer until
// opts.Deadline (zero: until ctx ends): the blocking call, a thin wrapper
// over Send. Its answer when the wait ends first is giveUp's, with cause
// publisher.ErrConfirmTimeout for the deadline, else context.Cause(ctx).
func Publish(ctx context.Context, s Sender, msg *publisher.Message, opts SendOptions) (Delivery, error) {
	type answer struct {
		d   Delivery
		err error
	}
	answers := make(chan answer, 1)
	giveUp := s.Send(ctx, []*publisher.Message{msg}, opts, func(_ int, d Delivery, err error) {
		answers <- answer{d, err}
	})
	var timeout <-chan time.Time
	if !opts.Deadline.IsZero() {
		t := time.NewTimer(time.Until(opts.Deadline))
		defer t.Stop()
		timeout = t.C
	}
	var cause error
	select {
	case a := <-answers:
		return a.d, a.err
	case <-timeout:
		cause = publisher.ErrConfirmTimeout
	case <-ctx.Done():
		cause = context.Cause(ctx)
	}
	d, err := giveUp(0, cause)
	if d == 0 && !errors.Is(err, publisher.ErrNotPublished) {
		select {
		case a := <-answers: // the answer came after all
			return a.d, a.err
		default:
		}
	}
	return d, err
}

// Publish is Publish(ctx, r, msg, ...) waiting at most Config.ConfirmTimeout.
func (r *Relay) Publish(ctx context.Context, msg *publisher.Message, async bool) (Delivery, error) {
	return Publish(ctx, r, msg, SendOptions{Async: async, Deadline: time.Now().Add(r.cfg.ConfirmTimeout)})
}

// Send spools msgs together (they share the spool's group commits) and
// returns once each is on disk or refused. done(i, delivery, err) is called
// at most once per message, from any goroutine, and must not block: before
// Send returns for a message refused (invalid, missing exchange, spool full or
// failing) or, with opts.Async, spooled; later, from the forwarder, when the
// broker confirmed it (Confirmed) or refused it for good. A caller that stops
// waiting (its deadline, a shutdown) calls the returned giveUp for each
// message still without an answer: it is Spooled, on disk and to be
// delivered, and done is not called for it any more. Messages to one
// exchange and routing key are spooled, and so forwarded, in the order of
// msgs.
func (r *Relay) Send(ctx context.Context, msgs []*publisher.Message, opts SendOptions, done func(i int, d Delivery, err error)) (giveUp func(i int, cause error) (Delivery, error)) {
	async := opts.Async
	rids := make([]uint64, len(msgs))
	data := make([][]byte, 0, len(msgs))
	index := make([]int, 0, len(msgs)) // data[k] is msgs[index[k]]
	for i, msg := range msgs {
		if err := r.check(ctx, msg); err != nil {
			endTrace(msg.Trace, err)
			done(i, 0, err)
			continue
		}
		rids[i] = r.rid.Add(1)
		var ref KeyRef
		if i < len(opts.Keys) {
			ref = opts.Keys[i]
		}
		b, err := encodeRecord(r.nonce, rids[i], msg, ref)
		if err != nil {
			err = fmt.Errorf("%w: %w", publisher.ErrInvalidMessage, err)
			endTrace(msg.Trace, err)
			done(i, 0, err)
			continue
		}
		if !async {
			r.wait(rids[i], func(err error) {
				if err != nil {
					done(i, 0, err)
					return
				}
				done(i, Confirmed, nil)
			})
		}
		data = append(data, b)
		index = append(index, i)
	}
	_, errs := r.sp.AppendBatch(ctx, data)
	for k, err := range errs {
		i := index[k]
		if err != nil {
			r.unwait(rids[i])
			err = appendError(err)
			endTrace(msgs[i].Trace, err)
			done(i, 0, err)
			continue
		}
		r.spooled(rids[i], msgs[i].Trace)
		if async {
			done(i, Spooled, nil)
		}
	}
	return func(i int, _ error) (Delivery, error) {
		r.unwait(rids[i])
		return Spooled, nil
	}
}

// check validates msg (setting its id when empty) and refuses a missing
// exchange when the broker can tell, so nothing invalid is spooled; when it
// cannot tell, the forwarder dead-letters such a message later.
func (r *Relay) check(ctx context.Context, msg *publisher.Message) error {
	if msg.MessageID == "" {
		msg.MessageID = publisher.NewMessageID()
	}
	if err := publisher.Validate(msg); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	err := r.pub.CheckExchange(cctx, msg.Exchange)
	cancel()
	if err != nil && !errors.Is(err, publisher.ErrCannotCheck) {
		return err
	}
	return nil
}

// appendError is the answer for a failed spool.Append. Refusals are not
// logged here: the spool logs each change of its state once (full, failing,
// accepting again), not every request.
func appendError(err error) error {
	switch {
	case errors.Is(err, spool.ErrFull):
		return fmt.Errorf("%w: %w", ErrFull, err)
	case errors.Is(err, spool.ErrDisk):
		return fmt.Errorf("%w: %w", ErrDisk, err)
	case errors.Is(err, spool.ErrClosed):
		return publisher.ErrClosed
	case errors.Is(err, spool.ErrTooLarge):
		return fmt.Errorf("%w: %w", publisher.ErrInvalidMessage, err)
	}
	// ctx ended: the record may still become durable and be delivered.
	return err
}

// spooled records the spool hand-off on a durable record's span and keeps
// the span for the record's forwarding.
func (r *Relay) spooled(rid uint64, t publisher.Trace) {
	if t == nil {
		return
	}
	if s, ok := t.(interface{ Spooled() }); ok {
		s.Spooled()
	}
	r.mu.Lock()
	r.traces[rid] = t
	r.mu.Unlock()
}

// traceOf is the span of the record (nonce, rid), if it is one of this
// process's and not ended.
func (r *Relay) traceOf(nonce, rid uint64) publisher.Trace {
	if nonce != r.nonce {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.traces[rid]
}

// EndTraces ends the spans of the records not forwarded yet (the service is
// stopping; they stay spooled for the next start, which has no span for
// them).
func (r *Relay) EndTraces() {
	r.mu.Lock()
	traces := r.traces
	r.traces = map[uint64]publisher.Trace{}
	r.mu.Unlock()
	for _, t := range traces {
		t.End(publisher.Closed.ErrorType())
	}
}

func endTrace(t publisher.Trace, err error) {
	if t != nil {
		t.End(publisher.Classify(err).ErrorType())
	}
}

func (r *Relay) wait(rid uint64, f func(error)) {
	r.mu.Lock()
	r.waiters[rid] = f
	r.mu.Unlock()
}

func (r *Relay) unwait(rid uint64) {
	r.mu.Lock()
	delete(r.waiters, rid)
	r.mu.Unlock()
}

// resolve is the final outcome of the record (nonce, rid): it answers the
// caller waiting for it and ends its span, if it is one of this process's
// and they are still there.
func (r *Relay) resolve(nonce, rid uint64, err error) {
	if nonce != r.nonce {
		return
	}
	r.mu.Lock()
	f, t := r.waiters[rid], r.traces[rid]
	delete(r.waiters, rid)
	delete(r.traces, rid)
	r.mu.Unlock()
	if f != nil {
		f(err)
	}
	endTrace(t, err)
}

// settlement is a forwarded record's outcome, for the forwarder goroutine.
type settlement struct {
	rec      spool.Record
	nonce    uint64 // of the record's writer
	rid      uint64
	msg      *publisher.Message
	ref      KeyRef // the record's idempotency key, if any
	err      error
	attempts int
}

// permanent reports whether the broker refused the message for good.
func permanent(err error) bool { return err != nil && publisher.Classify(err).Permanent() }

// Serve is the forwarder, a child of the broker supervisor: it publishes
// spooled records in order, pipelined (up to Window unsettled), acks each one
// in the spool after the broker's confirm, dead-letters the ones the broker
// refuses for good, and submits again the ones that failed transiently.
//
// On every start it rewinds to the oldest unacknowledged record, so a record
// an earlier incarnation read but never handed over is not forgotten. The
// records handed to the publisher and not settled yet belong to the Relay, not
// to an incarnation (state kept outside what crashes): a restarted forwarder
// skips them instead of publishing them a second time, and their settlements
// reach whichever incarnation runs.
//
// Serve returns only once its reader goroutine has ended, its window token
// given back and any record it held dropped (not acknowledged: the next
// Rewind finds it again). So two incarnations never share the spool's
// cursor: a reader that outlived its Serve could take a record after the next
// incarnation's Rewind and drop it, moving the cursor past it, and the record
// would wait for another restart.
func (r *Relay) Serve(ctx context.Context) error {
	r.sp.Rewind()
	ctx, cancel := context.WithCancel(ctx)
	records := make(chan spool.Record)
	readErr := make(chan error, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		r.read(ctx, records, readErr)
	}()
	// The reader ends before the next incarnation's Rewind (see above).
	defer func() {
		cancel()
		<-readerDone
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("relay: read spool: %w", err)
		case rec := <-records:
			nonce, rid, msg, ref, err := decodeKeyedRecord(rec.Data)
			if err != nil {
				<-r.sem
				if err := r.deadLetter(rec, err.Error()); err != nil {
					return err
				}
				continue
			}
			msg.Trace = r.traceOf(nonce, rid)
			r.setPending(rec.Seq, true)
			r.submit(ctx, settlement{rec: rec, nonce: nonce, rid: rid, msg: msg, ref: ref})
		case s := <-r.settled:
			switch {
			case permanent(s.err): // resolved already, by the callback or by submit
				r.keyDropped(s.ref, s.msg.MessageID)
				r.done(s.rec.Seq)
				if err := r.deadLetter(s.rec, s.err.Error()); err != nil {
					return err
				}
			case s.attempts >= r.cfg.MaxAttempts:
				r.resolve(s.nonce, s.rid, s.err)
				r.keyDropped(s.ref, s.msg.MessageID)
				r.done(s.rec.Seq)
				if err := r.deadLetter(s.rec, fmt.Sprintf("gave up after %d attempts: %v", s.attempts, s.err)); err != nil {
					return err
				}
			default:
				r.log.Debug("relay: publishing a spooled message again", "seq", s.rec.Seq, "error", s.err)
				r.submit(ctx, s)
			}
		}
	}
}

// read is Serve's reader: it takes a window token, then the next record
// from the spool, and hands it to Serve through records, skipping the records
// an earlier incarnation handed to the publisher and not settled yet. Every
// token it takes goes either with a record to Serve or back to r.sem. It
// returns once ctx ends (then a record in hand is dropped: not acknowledged,
// it comes again after the next Rewind), or after sending Next's error on
// readErr.
func (r *Relay) read(ctx context.Context, records chan<- spool.Record, readErr chan<- error) {
	for {
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		rec, err := r.sp.Next(ctx)
		if err != nil {
			<-r.sem
			readErr <- err
			return
		}
		if r.isPending(rec.Seq) {
			<-r.sem // still with the publisher since an earlier incarnation
			continue
		}
		select {
		case records <- rec:
		case <-ctx.Done():
			<-r.sem
			return
		}
	}
}

func (r *Relay) isPending(seq uint64) bool {
	r.pendMu.Lock()
	defer r.pendMu.Unlock()
	return r.pending[seq]
}

func (r *Relay) setPending(seq uint64, on bool) {
	r.pendMu.Lock()
	if on {
		r.pending[seq] = true
	} else {
		delete(r.pending, seq)
	}
	r.pendMu.Unlock()
}

// done ends a record's time with the publisher: it frees its place in the
// window.
func (r *Relay) done(seq uint64) {
	r.setPending(seq, false)
	<-r.sem
}

// submit hands one record to the publisher. The callback (on the publisher's
// goroutine) acks at once on success and passes anything else to the
// forwarder through r.settled, whose capacity (Window) covers every pending
// record, so it never blocks.
func (r *Relay) submit(ctx context.Context, s settlement) {
	s.attempts++
	// A fresh copy: the publisher may set fields, and a retry must not share.
	// The span (when this process spooled the record) lives across attempts:
	// the relay ends it with the final outcome, the publisher only adds events.
	msg := *s.msg
	if msg.Trace != nil {
		msg.Trace = attemptTrace{msg.Trace}
	}
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ForwardTimeout)
	cb := func(err error) {
		pcancel()
		if err == nil {
			// The key's journal line before the ack: once the record is
			// acked it may be gone after a restart, and then the line is
			// what keeps its key.
			r.keyConfirmed(s.ref, msg.MessageID)
			r.sp.Ack(s.rec.Seq)
			r.resolve(s.nonce, s.rid, nil)
			r.done(s.rec.Seq)
			return
		}
		if permanent(err) {
			r.resolve(s.nonce, s.rid, err)
		}
		s.err = err
		r.settled <- s
	}
	backoff := submitBackoffMin
	for {
		_, err := r.pub.Send(pctx, &msg, time.Time{}, cb)
		if err == nil {
			return
		}
		switch {
		case errors.Is(err, publisher.ErrBufferFull):
			// Wait for room, as a slow consumer would.
		case errors.Is(err, publisher.ErrClosed):
			// Shutting down: the record stays spooled for the next start.
			pcancel()
			r.done(s.rec.Seq)
			return
		default:
			pcancel()
			if permanent(err) { // refused by Send itself: no callback will resolve it
				r.resolve(s.nonce, s.rid, err)
			}
			s.err = err
			r.settled <- s
			return
		}
		select {
		case <-ctx.Done():
			pcancel()
			r.done(s.rec.Seq)
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, submitBackoffMax)
	}
}

// deadLetter moves a record the broker refused for good to the dead-letter
// file. When that fails (a disk error) the record stays spooled, unacked,
// and the error is returned for Serve to return: the forwarder fails, and
// its next incarnation rewinds to the record and tries again, rather than
// leaving it in the spool until some later restart.
func (r *Relay) deadLetter(rec spool.Record, reason string) error {
	if err := r.sp.DeadLetter(rec.Seq, rec.Data, reason); err != nil {
		return fmt.Errorf("relay: dead-letter record %d (it stays spooled): %w", rec.Seq, err)
	}
	r.cfg.OnDeadLetter()
	r.log.Warn("relay: message moved to the dead-letter file", "seq", rec.Seq, "reason", reason)
	return nil
}

// attemptTrace is a record's span as one publish attempt sees it: the
// publisher's events reach the span, its End does not (the relay ends the
// span once the record's outcome is final, across attempts).
type attemptTrace struct{ publisher.Trace }

func (attemptTrace) End(string) {}

// Direct is Send without a spool: each message goes straight to the
// publisher (publisher.Send, no goroutine per message), and every answer
// waits for the broker: Confirmed or why not. SendOptions.Async is ignored.
type Direct struct{ Publisher Publisher }

// Send is Relay.Send's contract without a spool: giveUp answers what
// publisher.Ticket.GiveUp says (not published, or may still arrive).
func (d Direct) Send(ctx context.Context, msgs []*publisher.Message, opts SendOptions, done func(i int, d Delivery, err error)) (giveUp func(i int, cause error) (Delivery, error)) {
	tickets := make([]publisher.Ticket, len(msgs))
	for i, msg := range msgs {
		t, err := d.Publisher.Send(ctx, msg, opts.Deadline, func(err error) {
			if err != nil {
				done(i, 0, err)
				return
			}
			done(i, Confirmed, nil)
		})
		if err != nil {
			done(i, 0, err)
			continue
		}
		tickets[i] = t
	}
	return func(i int, cause error) (Delivery, error) { return 0, tickets[i].GiveUp(cause) }
}
