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
}

// NewMessageID returns a random identifier with 130 bits of entropy.
func NewMessageID() string { return rand.Text() }
