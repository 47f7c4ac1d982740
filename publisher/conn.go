package publisher

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Conn is what an incarnation uses of its AMQP connection: an
// *amqp.Connection from the default dialer (Config.Dial nil), a fake in unit
// tests (internal/fakeamqp), as the spool's FS lets its tests fake the disk.
// So the actor's logic (returns matched to messages, nack backoff, channel
// generations, the carry, the claim/abandon race) is tested without a broker
// and without sleeps, beside the real-broker tests. The methods mean what
// amqp091-go's of the same name do.
type Conn interface {
	NotifyClose(chan *amqp.Error) chan *amqp.Error
	NotifyBlocked(chan amqp.Blocking) chan amqp.Blocking
	Channel() (Channel, error)
	IsClosed() bool
	// CloseDeadline closes the connection cleanly (connection.close and its
	// close-ok), giving up at the deadline.
	CloseDeadline(deadline time.Time) error
	// Cut closes the socket under the connection at once: a write stuck on
	// a peer that stopped reading fails, so its caller returns.
	Cut()
}

// Channel is what the actor uses of an AMQP channel (*amqp.Channel).
type Channel interface {
	Confirm(noWait bool) error
	NotifyPublish(chan amqp.Confirmation) chan amqp.Confirmation
	NotifyReturn(chan amqp.Return) chan amqp.Return
	NotifyClose(chan *amqp.Error) chan *amqp.Error
	PublishWithContext(ctx context.Context, exchange, key string, mandatory, immediate bool, msg amqp.Publishing) error
	ExchangeDeclarePassive(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	QueueDeclare(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error)
	QueueBind(name, key, exchange string, noWait bool, args amqp.Table) error
	Close() error
	IsClosed() bool
}

// amqpConnection is an *amqp.Connection and the socket under it.
type amqpConnection struct {
	*amqp.Connection
	sock net.Conn
}

func (c *amqpConnection) Channel() (Channel, error) {
	ch, err := c.Connection.Channel()
	if err != nil {
		return nil, err
	}
	return ch, nil
}

func (c *amqpConnection) Cut() { c.sock.Close() }

// dialAMQP is the production dialer. The TCP connect honours ctx
// (net.Dialer.DialContext) and is bounded by DialTimeout; the handshake that
// follows (TLS when amqps, then AMQP) gets DialTimeout of its own, as
// amqp091-go's default dialer gives it, and is cut the moment ctx ends: a
// redial into a stalled path (a load balancer that accepts and never
// answers) must not hold a shutdown for the handshake's timeout.
//
// An amqps URL gets Config.TLS, its files read now (TLSFiles.clientTLS), and
// the login is Config.AuthMechanism's. A failure is explained in words
// before amqp091-go's or crypto/tls's error (explainDial): an untrusted,
// misnamed or expired broker certificate, a client certificate missing or
// refused, a port that does not speak TLS, a refused login.
func (p *Publisher) dialAMQP(ctx context.Context, url string) (Conn, error) {
	cfg := &p.cfg
	if err := cfg.checkAuth(); err != nil {
		return nil, err
	}
	if err := cfg.CheckURL(url); err != nil {
		return nil, err
	}
	uri, err := amqp.ParseURI(url)
	if err != nil { // CheckURL would have said
		return nil, errors.New(DescribeURLError(err))
	}
	var (
		tlsCfg *tls.Config
		notes  *handshakeNotes
		sasl   = []amqp.Authentication{uri.PlainAuth()}
	)
	if uri.Scheme == "amqps" {
		if tlsCfg, notes, err = cfg.TLS.clientTLS(); err != nil {
			return nil, err
		}
	}
	if cfg.AuthMechanism == AuthExternal {
		sasl = []amqp.Authentication{&amqp.ExternalAuth{}}
	}
	var (
		sock      net.Conn
		bc        *batchConn
		watching  sync.WaitGroup
		handshook = make(chan struct{})
	)
	conn, err := amqp.DialConfig(url, amqp.Config{
		Heartbeat:       cfg.Heartbeat,
		Locale:          "en_US",
		SASL:            sasl,
		TLSClientConfig: tlsCfg,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: cfg.DialTimeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if err := c.SetDeadline(time.Now().Add(cfg.DialTimeout)); err != nil {
				c.Close()
				return nil, err
			}
			sock, bc = c, newBatchConn(c)
			watching.Go(func() {
				select {
				case <-ctx.Done():
					c.Close()
				case <-handshook:
				}
			})
			return bc, nil
		},
		Properties: amqp.Table{"connection_name": cfg.ConnectionName, "product": "publisher"},
	})
	close(handshook)
	watching.Wait()
	if err != nil {
		if bc != nil {
			bc.Close() // ends its writer goroutine; amqp091-go may have closed the socket already
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%w)", context.Cause(ctx), err)
		}
		return nil, explainDial(err, uri, cfg.AuthMechanism, notes)
	}
	return &amqpConnection{Connection: conn, sock: sock}, nil
}
