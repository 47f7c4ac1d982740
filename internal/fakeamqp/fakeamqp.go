// Package fakeamqp is an in-memory AMQP broker for unit tests of the
// publisher: Broker.Dial is a publisher.Config.Dial whose connections and
// channels behave, for what the publisher uses of them, as amqp091-go's do
// against RabbitMQ (confirms in order, a return before the ack of the same
// message, a 404 channel close for a missing exchange, notification
// channels closed at shutdown), without a socket. It has no sleeps and no
// timers: it works inside testing/synctest bubbles, where its goroutines
// (one per channel, delivering notifications in order) are durably blocked
// when idle.
//
// It is a test double, never the only test of broker behaviour: the
// publisher's real-broker tests run beside the unit tests that use it.
package fakeamqp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/publisher-dev/publisher/publisher"
)

// Reply is what the broker does with a published message.
type Reply int

// The replies.
const (
	Ack    Reply = iota // basic.ack
	Nack                // basic.nack
	Return              // basic.return (NO_ROUTE) then basic.ack, for a mandatory message
	Hold                // nothing yet: the test settles it later (Broker.Settle)
)

// Publishing is a message the broker received.
type Publishing struct {
	amqp.Publishing
	Exchange, RoutingKey string
	Mandatory            bool
	Conn, Channel        int    // which connection (from 1) and channel (from 1)
	Tag                  uint64 // its delivery tag on the channel
}

// Broker is the fake broker. Its zero value acks every message to an
// existing exchange; set its fields before the first Dial.
type Broker struct {
	// Handle decides the reply to each message (nil: Ack). It runs on the
	// publishing goroutine with the broker's lock held: it must not call
	// the Broker.
	Handle func(p Publishing) Reply
	// OnClose, if set, is called with a connection's number (from 1) when
	// it closes, on the closing goroutine, without the broker's lock.
	OnClose func(conn int)

	mu        sync.Mutex
	refuse    error // Dial fails with it while set
	exchanges map[string]bool
	conns     []*Conn
	published []Publishing
	dials     int
}

// Dial is a publisher.Config.Dial: a new connection, or the error set by
// Refuse. It honours ctx like the real dialer.
func (b *Broker) Dial(ctx context.Context, url string) (publisher.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dials++
	if b.refuse != nil {
		return nil, b.refuse
	}
	c := &Conn{b: b, id: len(b.conns) + 1}
	b.conns = append(b.conns, c)
	return c, nil
}

// Refuse makes every Dial fail with err (nil: dial again).
func (b *Broker) Refuse(err error) {
	b.mu.Lock()
	b.refuse = err
	b.mu.Unlock()
}

// Dials is the number of Dial calls so far.
func (b *Broker) Dials() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dials
}

// DeclareExchange makes an exchange exist (the default exchange and amq.*
// always do).
func (b *Broker) DeclareExchange(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.declareLocked(name)
}

func (b *Broker) declareLocked(name string) {
	if b.exchanges == nil {
		b.exchanges = map[string]bool{}
	}
	b.exchanges[name] = true
}

func (b *Broker) exists(name string) bool {
	return name == "" || strings.HasPrefix(name, "amq.") || b.exchanges[name]
}

// Published is every message received so far, in order (republished ones
// again).
func (b *Broker) Published() []Publishing {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Publishing(nil), b.published...)
}

// Conn is the current (last dialled) connection, nil before the first.
func (b *Broker) Conn() *Conn {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.conns) == 0 {
		return nil
	}
	return b.conns[len(b.conns)-1]
}

// Settle answers a held message: ack or nack (a Return is not possible
// later, as with RabbitMQ). It reports whether the message was held on a
// channel still open.
func (b *Broker) Settle(p Publishing, ack bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := b.openChannelLocked(p)
	if ch != nil {
		ch.queue(event{conf: &amqp.Confirmation{DeliveryTag: p.Tag, Ack: ack}})
	}
	return ch != nil
}

// CloseChannel closes the channel p was published on with err, as the
// broker does for a channel-level error. It reports whether that channel
// was open.
func (b *Broker) CloseChannel(p Publishing, err *amqp.Error) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := b.openChannelLocked(p)
	if ch != nil {
		ch.closeLocked(err)
	}
	return ch != nil
}

// openChannelLocked is the channel p was published on, if it is still
// open; b.mu held.
func (b *Broker) openChannelLocked(p Publishing) *Channel {
	for _, c := range b.conns {
		if c.id != p.Conn {
			continue
		}
		for _, ch := range c.chans {
			if ch.id == p.Channel && !ch.closed {
				return ch
			}
		}
	}
	return nil
}

// Conn is a fake connection.
type Conn struct {
	b  *Broker
	id int

	// guarded by b.mu
	chans   []*Channel
	closes  []chan *amqp.Error
	blocks  []chan amqp.Blocking
	closed  bool
	nextCh  int
	blocked bool
}

// NotifyClose registers c for the connection's close, as amqp091-go does:
// it gets the error (none for a clean close) and is closed.
func (c *Conn) NotifyClose(ch chan *amqp.Error) chan *amqp.Error {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	if c.closed {
		close(ch)
		return ch
	}
	c.closes = append(c.closes, ch)
	return ch
}

// NotifyBlocked registers ch for connection.blocked and unblocked.
func (c *Conn) NotifyBlocked(ch chan amqp.Blocking) chan amqp.Blocking {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.blocks = append(c.blocks, ch)
	return ch
}

// Channel opens a channel.
func (c *Conn) Channel() (publisher.Channel, error) {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	if c.closed {
		return nil, amqp.ErrClosed
	}
	c.nextCh++
	ch := &Channel{c: c, id: c.nextCh, wake: make(chan struct{}, 1), done: make(chan struct{})}
	c.chans = append(c.chans, ch)
	go ch.deliver()
	return ch, nil
}

// IsClosed reports whether the connection is closed.
func (c *Conn) IsClosed() bool {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	return c.closed
}

// CloseDeadline closes the connection cleanly.
func (c *Conn) CloseDeadline(time.Time) error {
	c.shut(nil)
	return nil
}

// Cut closes the connection as a cut socket does.
func (c *Conn) Cut() { c.shut(&amqp.Error{Code: amqp.FrameError, Reason: "cut"}) }

// Lose ends the connection with err, as a broker or network failure does
// (connection-level: every channel closes with it).
func (c *Conn) Lose(err *amqp.Error) { c.shut(err) }

// Block sends connection.blocked (active) or connection.unblocked.
func (c *Conn) Block(active bool, reason string) {
	c.b.mu.Lock()
	blocks := append([]chan amqp.Blocking(nil), c.blocks...)
	c.blocked = active
	c.b.mu.Unlock()
	for _, ch := range blocks {
		ch <- amqp.Blocking{Active: active, Reason: reason}
	}
}

func (c *Conn) shut(err *amqp.Error) {
	c.b.mu.Lock()
	if c.closed {
		c.b.mu.Unlock()
		return
	}
	c.closed = true
	chans, closes := c.chans, c.closes
	c.closes = nil
	for _, ch := range chans {
		ch.closeLocked(err)
	}
	c.b.mu.Unlock()
	for _, ch := range chans {
		<-ch.done
	}
	for _, ch := range closes {
		if err != nil {
			ch <- err
		}
		close(ch)
	}
	if c.b.OnClose != nil {
		c.b.OnClose(c.id)
	}
}

// Channel is a fake channel.
type Channel struct {
	c  *Conn
	id int

	// guarded by c.b.mu
	confirm  bool
	seq      uint64
	confirms []chan amqp.Confirmation
	returns  []chan amqp.Return
	closes   []chan *amqp.Error
	closed   bool
	closeErr *amqp.Error
	events   []event // to deliver, in order

	wake chan struct{} // capacity 1: events or closed changed
	done chan struct{} // closed when deliver returns
}

type event struct {
	conf *amqp.Confirmation
	ret  *amqp.Return
}

// queue appends an event for the delivery goroutine; b.mu held.
func (ch *Channel) queue(e event) {
	ch.events = append(ch.events, e)
	select {
	case ch.wake <- struct{}{}:
	default:
	}
}

// deliver writes the channel's notifications in order, as amqp091-go's
// reader goroutine does; at the close it closes the listeners.
func (ch *Channel) deliver() {
	defer close(ch.done)
	b := ch.c.b
	for {
		b.mu.Lock()
		events := ch.events
		ch.events = nil
		closed, confirms, returns := ch.closed, ch.confirms, ch.returns
		b.mu.Unlock()
		for _, e := range events {
			switch {
			case e.ret != nil:
				for _, l := range returns {
					l <- *e.ret
				}
			case e.conf != nil:
				for _, l := range confirms {
					l <- *e.conf
				}
			}
		}
		if len(events) > 0 {
			continue
		}
		if closed {
			b.mu.Lock()
			err, closes := ch.closeErr, ch.closes
			ch.closes, ch.confirms, ch.returns = nil, nil, nil
			b.mu.Unlock()
			for _, l := range closes {
				if err != nil {
					l <- err
				}
				close(l)
			}
			for _, l := range confirms {
				close(l)
			}
			for _, l := range returns {
				close(l)
			}
			return
		}
		<-ch.wake
	}
}

// closeLocked closes the channel with err (nil: cleanly); b.mu held.
func (ch *Channel) closeLocked(err *amqp.Error) {
	if ch.closed {
		return
	}
	ch.closed, ch.closeErr = true, err
	select {
	case ch.wake <- struct{}{}:
	default:
	}
}

// CloseWith closes the channel as the broker does for a channel-level
// error.
func (ch *Channel) CloseWith(err *amqp.Error) {
	ch.c.b.mu.Lock()
	ch.closeLocked(err)
	ch.c.b.mu.Unlock()
}

// Confirm puts the channel in confirm mode.
func (ch *Channel) Confirm(noWait bool) error {
	ch.c.b.mu.Lock()
	defer ch.c.b.mu.Unlock()
	if ch.closed {
		return amqp.ErrClosed
	}
	ch.confirm = true
	return nil
}

// NotifyPublish registers c for confirms.
func (ch *Channel) NotifyPublish(c chan amqp.Confirmation) chan amqp.Confirmation {
	ch.c.b.mu.Lock()
	defer ch.c.b.mu.Unlock()
	ch.confirms = append(ch.confirms, c)
	return c
}

// NotifyReturn registers c for returns.
func (ch *Channel) NotifyReturn(c chan amqp.Return) chan amqp.Return {
	ch.c.b.mu.Lock()
	defer ch.c.b.mu.Unlock()
	ch.returns = append(ch.returns, c)
	return c
}

// NotifyClose registers c for the channel's close.
func (ch *Channel) NotifyClose(c chan *amqp.Error) chan *amqp.Error {
	ch.c.b.mu.Lock()
	defer ch.c.b.mu.Unlock()
	ch.closes = append(ch.closes, c)
	return c
}

// PublishWithContext publishes msg. A missing exchange closes the channel
// with 404 after the publish, as RabbitMQ does.
func (ch *Channel) PublishWithContext(ctx context.Context, exchange, key string, mandatory, immediate bool, msg amqp.Publishing) error {
	b := ch.c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if ch.closed {
		return amqp.ErrClosed
	}
	if err := msg.Headers.Validate(); err != nil {
		return err
	}
	ch.seq++
	p := Publishing{Publishing: msg, Exchange: exchange, RoutingKey: key, Mandatory: mandatory,
		Conn: ch.c.id, Channel: ch.id, Tag: ch.seq}
	b.published = append(b.published, p)
	if !b.exists(exchange) {
		ch.closeLocked(&amqp.Error{Code: amqp.NotFound, Reason: fmt.Sprintf("NOT_FOUND - no exchange '%s' in vhost '/'", exchange)})
		return nil
	}
	reply := Ack
	if b.Handle != nil {
		reply = b.Handle(p)
	}
	if !ch.confirm {
		return nil
	}
	switch reply {
	case Ack:
		ch.queue(event{conf: &amqp.Confirmation{DeliveryTag: p.Tag, Ack: true}})
	case Nack:
		ch.queue(event{conf: &amqp.Confirmation{DeliveryTag: p.Tag, Ack: false}})
	case Return:
		if mandatory {
			ch.queue(event{ret: &amqp.Return{ReplyCode: amqp.NoRoute, ReplyText: "NO_ROUTE", Exchange: exchange,
				RoutingKey: key, MessageId: msg.MessageId}})
		}
		ch.queue(event{conf: &amqp.Confirmation{DeliveryTag: p.Tag, Ack: true}})
	case Hold:
	}
	return nil
}

// ExchangeDeclarePassive answers whether the exchange exists; a missing
// one closes the channel with 404, as RabbitMQ does.
func (ch *Channel) ExchangeDeclarePassive(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error {
	b := ch.c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if ch.closed {
		return amqp.ErrClosed
	}
	if b.exists(name) {
		return nil
	}
	err := &amqp.Error{Code: amqp.NotFound, Reason: fmt.Sprintf("NOT_FOUND - no exchange '%s' in vhost '/'", name)}
	ch.closeLocked(err)
	return err
}

// ExchangeDeclare declares an exchange.
func (ch *Channel) ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error {
	b := ch.c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if ch.closed {
		return amqp.ErrClosed
	}
	b.declareLocked(name)
	return nil
}

// QueueDeclare declares a queue (nothing is kept).
func (ch *Channel) QueueDeclare(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error) {
	if ch.IsClosed() {
		return amqp.Queue{}, amqp.ErrClosed
	}
	return amqp.Queue{Name: name}, nil
}

// QueueBind binds (nothing is kept).
func (ch *Channel) QueueBind(name, key, exchange string, noWait bool, args amqp.Table) error {
	if ch.IsClosed() {
		return amqp.ErrClosed
	}
	return nil
}

// Close closes the channel cleanly.
func (ch *Channel) Close() error {
	ch.CloseWith(nil)
	<-ch.done
	return nil
}

// IsClosed reports whether the channel is closed.
func (ch *Channel) IsClosed() bool {
	ch.c.b.mu.Lock()
	defer ch.c.b.mu.Unlock()
	return ch.closed
}

// ErrRefused is a dial error like a refused TCP connection.
var ErrRefused = errors.New("fakeamqp: connection refused")
