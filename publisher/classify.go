package publisher

import (
	"context"
	"errors"
	"fmt"
)

// Kind is what the outcome of a publish means for its message. [Classify]
// is the one place where errors are classified; every layer reads the Kind
// instead of matching errors itself: the metrics' outcome label
// ([Kind.Outcome]), the span's error.type ([Kind.ErrorType]), whether the
// relay dead-letters a spooled message ([Kind.Permanent]), whether a caller
// may retry later ([Kind.Temporary]), and the HTTP status (package httpapi,
// one row per Kind).
type Kind uint8

// The kinds, one per distinct answer a caller can be given.
const (
	// Confirmed: no error; the broker confirmed the message (basic.ack).
	Confirmed Kind = iota
	// NotSent: the wait ended (the deadline, the caller's ctx) before the
	// message was written to the broker, and it was taken back: it will
	// never be published, so a retry makes no duplicate (ErrNotPublished).
	NotSent
	// Withdrawn: NotSent because the publisher is shutting down
	// (ErrNotPublished wrapping ErrClosed).
	Withdrawn
	// TimedOut: no confirm within the deadline after the message was
	// written; it may still reach the broker (ErrConfirmTimeout,
	// context.DeadlineExceeded).
	TimedOut
	// Interrupted: TimedOut because the publisher is shutting down
	// (ErrConfirmTimeout wrapping ErrClosed); it may still reach the broker.
	Interrupted
	// TooManyAttempts: in flight through Config.MaxPublishAttempts
	// connection or channel failures (ErrTooManyAttempts).
	TooManyAttempts
	// NotFound: the exchange does not exist (ErrExchangeNotFound).
	NotFound
	// Unroutable: mandatory and returned by the broker (ErrUnroutable).
	Unroutable
	// Nacked: nacked by the broker through its deadline (ErrNacked).
	Nacked
	// AccessRefused: the broker refused the user access (ErrAccessRefused).
	AccessRefused
	// Rejected: another channel-level refusal of this message (ErrRejected).
	Rejected
	// Invalid: the message cannot be encoded (ErrInvalidMessage).
	Invalid
	// Full: not taken, no room now (ErrBufferFull, or a KindError of the
	// layer in front, e.g. a full spool); retry later.
	Full
	// Unavailable: not taken, the service cannot take messages now for a
	// reason of its own (a KindError, e.g. a failing disk); retry later.
	Unavailable
	// Closed: not taken, the publisher is shutting down (ErrClosed).
	Closed
	// Canceled: the caller's ctx was cancelled without another cause
	// (context.Canceled).
	Canceled
	// Unknown: an error Classify does not know; treated as temporary.
	Unknown

	numKinds = iota
)

// kindRow is what a Kind reads as.
type kindRow struct {
	name      string  // Kind.String and the span's error.type
	outcome   Outcome // publisher_messages_total's label
	permanent bool    // refused for good: publishing it again cannot succeed
	temporary bool    // not taken or not published now: the same request may succeed later
}

// kinds are the rows of the table, by Kind.
var kinds = [numKinds]kindRow{
	Confirmed:       {"", OutcomeConfirmed, false, false},
	NotSent:         {"timeout", OutcomeTimeout, false, true},
	Withdrawn:       {"shutting_down", OutcomeFailed, false, true},
	TimedOut:        {"timeout", OutcomeTimeout, false, false},
	Interrupted:     {"shutting_down", OutcomeTimeout, false, false},
	TooManyAttempts: {"too_many_attempts", OutcomeFailed, false, false},
	NotFound:        {"not_found", OutcomeRejected, true, false},
	Unroutable:      {"unroutable", OutcomeReturned, true, false},
	Nacked:          {"nacked", OutcomeNacked, true, false},
	AccessRefused:   {"access_refused", OutcomeRejected, true, false},
	Rejected:        {"rejected", OutcomeRejected, true, false},
	Invalid:         {"invalid", OutcomeRejected, true, false},
	Full:            {"full", OutcomeFailed, false, true},
	Unavailable:     {"unavailable", OutcomeFailed, false, true},
	Closed:          {"shutting_down", OutcomeFailed, false, true},
	Canceled:        {"canceled", OutcomeFailed, false, true},
	Unknown:         {"_OTHER", OutcomeFailed, false, true},
}

// classes is the table Classify reads, in order: the first row whose errors
// all match (errors.Is) names the Kind. A wrapper comes before what it
// wraps (ErrNotPublished and ErrConfirmTimeout wrap their cause,
// ErrTooManyAttempts the last failure), and ErrAccessRefused before
// ErrRejected, which it is a kind of.
var classes = []struct {
	all  []error
	kind Kind
}{
	{[]error{ErrNotPublished, ErrClosed}, Withdrawn},
	{[]error{ErrNotPublished}, NotSent},
	{[]error{ErrConfirmTimeout, ErrClosed}, Interrupted},
	{[]error{ErrConfirmTimeout}, TimedOut},
	{[]error{context.DeadlineExceeded}, TimedOut},
	{[]error{ErrTooManyAttempts}, TooManyAttempts},
	{[]error{ErrExchangeNotFound}, NotFound},
	{[]error{ErrUnroutable}, Unroutable},
	{[]error{ErrNacked}, Nacked},
	{[]error{ErrAccessRefused}, AccessRefused},
	{[]error{ErrRejected}, Rejected},
	{[]error{ErrInvalidMessage}, Invalid},
	{[]error{ErrBufferFull}, Full},
	{[]error{ErrClosed}, Closed},
	{[]error{context.Canceled}, Canceled},
}

// Classify is the Kind of err: Confirmed for nil; the first row of the
// table whose sentinels err matches; else the Kind of a *KindError in its
// chain (the errors of the layer in front of the publisher); else Unknown.
func Classify(err error) Kind {
	if err == nil {
		return Confirmed
	}
rows:
	for _, c := range classes {
		for _, s := range c.all {
			if !errors.Is(err, s) {
				continue rows
			}
		}
		return c.kind
	}
	var ke *KindError
	if errors.As(err, &ke) {
		return ke.Kind
	}
	return Unknown
}

// String is the Kind's short name, also its ErrorType ("" for Confirmed).
func (k Kind) String() string {
	if int(k) < len(kinds) {
		return kinds[k].name
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// ErrorType is the error.type of the message's tracing span: "" when
// confirmed, else a low-cardinality class, as the OpenTelemetry conventions
// want ("_OTHER" for Unknown).
func (k Kind) ErrorType() string { return k.row().name }

// Outcome is the message's outcome as counted in publisher_messages_total.
func (k Kind) Outcome() Outcome { return k.row().outcome }

// Permanent reports whether the broker (or the message's own content)
// refused the message for good: publishing it again cannot succeed, so the
// relay dead-letters it instead of retrying.
func (k Kind) Permanent() bool { return k.row().permanent }

// Temporary reports whether the message was not taken or not published now
// and the same request may succeed later (the HTTP answer is 503 with
// Retry-After, or 504 "not published", where a retry makes no duplicate).
func (k Kind) Temporary() bool { return k.row().temporary }

func (k Kind) row() kindRow {
	if int(k) < len(kinds) {
		return kinds[k]
	}
	return kinds[Unknown]
}

// KindError is a sentinel error of a package in front of the publisher (the
// relay's spool errors) with its Kind, so that Classify knows it without
// importing that package. Reason is a short phrase for answers ("spool
// full"); Error returns Text.
type KindError struct {
	Kind   Kind
	Text   string
	Reason string
}

func (e *KindError) Error() string { return e.Text }

// Reason is a short phrase saying why a message of Kind Full, Unavailable
// or Closed was not taken, for answers: a *KindError's own Reason, else
// "buffer full" or "shutting down".
func Reason(err error) string {
	var ke *KindError
	if errors.As(err, &ke) && ke.Reason != "" {
		return ke.Reason
	}
	switch Classify(err) {
	case Full:
		return "buffer full"
	case Closed, Withdrawn, Interrupted:
		return "shutting down"
	}
	return "cannot take messages now"
}
