package publisher

import (
	"crypto/rand"
	"time"
)

// Message is one publish request. The zero value publishes an empty, transient,
// non-mandatory message to the default exchange; the HTTP layer fills in the
// service's defaults (persistent, mandatory) before calling Publish.
type Message struct {
	// Exchange is the exchange name; "" is the default exchange.
	Exchange   string
	RoutingKey string
	Body       []byte

	// MessageID identifies the message end to end. Publish generates one when it
	// is empty. A message published again after a crash keeps its id, so consumers
	// can deduplicate (delivery is at-least-once).
	MessageID       string
	ContentType     string
	ContentEncoding string
	CorrelationID   string
	ReplyTo         string
	Type            string
	// Expiration is the per-message TTL in milliseconds, as a decimal string.
	Expiration string
	Priority   uint8
	// Persistent sets delivery mode 2 (the broker writes the message to disk).
	Persistent bool
	// Mandatory asks the broker to return the message when no queue is bound to
	// take it; Publish then fails with ErrUnroutable.
	Mandatory bool
	// Headers become AMQP headers. Values must be AMQP table types (string,
	// bool, numbers, []byte, time.Time, nested tables and arrays).
	Headers   map[string]any
	Timestamp time.Time

	// Trace, when set, receives the events of the message's life for its
	// tracing span (package tracing's *MessageSpan is one): the publisher
	// calls Republished and NackRetry, and End once the message is settled
	// (or refused by Send). It is not part of the message sent, and not kept
	// in the spool.
	Trace Trace
}

// Trace receives the events of one message's life (see Message.Trace). Its
// methods are called from the publisher's goroutine and must be cheap.
type Trace interface {
	// Republished: published again after a connection or channel loss;
	// attempt is the number of the attempt about to be made (2 for the
	// first republish).
	Republished(attempt int)
	// NackRetry: nacked by the broker (the nacks-th time), published again
	// after delay.
	NackRetry(nacks int, delay time.Duration)
	// End: settled; errorType is "" when the broker confirmed it, else a
	// short class of the failure (Kind.ErrorType).
	End(errorType string)
}

// NewMessageID returns a random identifier with 130 bits of entropy.
func NewMessageID() string { return rand.Text() }
