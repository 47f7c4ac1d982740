package publisher

import (
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Sentinel errors returned by Publish, to be matched with errors.Is. Each one is a
// distinct outcome the HTTP layer maps to its own status code.
var (
	// ErrNacked: the broker answered basic.nack (it could not take responsibility
	// for the message: a quorum queue without a leader during a failover, a queue
	// length limit with overflow=reject-publish, an internal error). Nacked
	// messages are published again with backoff while their deadline allows;
	// ErrNacked is the answer only when the last attempt before the deadline was
	// nacked too.
	ErrNacked = errors.New("publisher: message nacked by the broker")
	// ErrUnroutable: the message was mandatory and the broker returned it because
	// no queue was bound to take it. A *ReturnError carries the broker's reason.
	ErrUnroutable = errors.New("publisher: message returned unroutable")
	// ErrExchangeNotFound: the exchange does not exist (AMQP 404 NOT_FOUND).
	ErrExchangeNotFound = errors.New("publisher: exchange not found")
	// ErrRejected: the broker refused this one message with a channel-level error
	// (e.g. 406 PRECONDITION_FAILED, 403 ACCESS_REFUSED). A *ChannelError carries
	// the code and text. Other messages are not affected.
	ErrRejected = errors.New("publisher: message rejected by the broker")
	// ErrAccessRefused: the broker refused the message because the user may not
	// publish to the exchange (AMQP 403 ACCESS_REFUSED). It is a kind of
	// ErrRejected: a *ChannelError with that code matches both.
	ErrAccessRefused = errors.New("publisher: access refused by the broker")
	// ErrInvalidMessage: the message cannot be encoded (e.g. a header of a type
	// AMQP tables cannot carry). Nothing was sent.
	ErrInvalidMessage = errors.New("publisher: invalid message")
	// ErrBufferFull: the mailbox holds Config.BufferSize messages already; the
	// message was not taken. Retry later.
	ErrBufferFull = errors.New("publisher: buffer full")
	// ErrClosed: the publisher is shutting down or has stopped; the message was not
	// taken (or, if it was queued, it was failed back before being published).
	ErrClosed = errors.New("publisher: shutting down")
	// ErrConfirmTimeout: no confirm arrived within Config.ConfirmTimeout (or the
	// caller's deadline). The message may still reach the broker later, unless
	// the error matches ErrNotPublished too.
	ErrConfirmTimeout = errors.New("publisher: not confirmed in time")
	// ErrNotPublished: Publish stopped waiting (its timeout, its caller's
	// context, a shutdown) before the message was ever written to the broker,
	// and took it back: it will not be published, so the caller may retry
	// without making a duplicate. It is wrapped together with the reason
	// (ErrConfirmTimeout, or the context's cause, e.g. ErrClosed at shutdown).
	ErrNotPublished = errors.New("publisher: message not published")
	// ErrTooManyAttempts: the message was in flight through
	// Config.MaxPublishAttempts connection or channel failures; it is failed back so
	// a poison message cannot crash-loop the publisher. It wraps the last failure.
	ErrTooManyAttempts = errors.New("publisher: too many publish attempts")
)

// ReturnError is the failure of a mandatory message the broker returned.
type ReturnError struct {
	Code uint16
	Text string
}

func (e *ReturnError) Error() string {
	return fmt.Sprintf("publisher: message returned unroutable: %d %s", e.Code, e.Text)
}

// Is makes errors.Is(err, ErrUnroutable) true.
func (e *ReturnError) Is(target error) bool { return target == ErrUnroutable }

// ChannelError is a channel-level error the broker raised for one message.
type ChannelError struct {
	Code   int
	Reason string
}

func (e *ChannelError) Error() string {
	return fmt.Sprintf("publisher: broker refused the message: %d %s", e.Code, e.Reason)
}

// Is makes errors.Is match ErrExchangeNotFound for 404 NOT_FOUND, ErrRejected
// otherwise, and also ErrAccessRefused for 403 ACCESS_REFUSED.
func (e *ChannelError) Is(target error) bool {
	switch e.Code {
	case amqp.NotFound:
		return target == ErrExchangeNotFound
	case amqp.AccessRefused:
		return target == ErrAccessRefused || target == ErrRejected
	}
	return target == ErrRejected
}
