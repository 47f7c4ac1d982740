package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/publisher-dev/publisher/publisher"
)

// problem is an answer other than 2xx, as an error value: refusals of the
// request itself (refuse, badRequest) and the outcomes of publishes
// (answerFor) travel as problems until they are written.
type problem struct {
	code  int
	text  string
	retry bool // answer with Retry-After
	// retryAfter is the Retry-After value when retry is set; "" means the
	// handler's (Config.RetryAfter).
	retryAfter string
	cause      error // what it answers, when it answers an error
}

func (p *problem) Error() string { return p.text }
func (p *problem) Unwrap() error { return p.cause }

// refuse is a refusal of the request with code.
func refuse(code int, text string) *problem { return &problem{code: code, text: text} }

// badRequest is a 400 refusal.
func badRequest(text string) *problem { return refuse(http.StatusBadRequest, text) }

// badRequestf is a 400 refusal, formatted.
func badRequestf(format string, args ...any) *problem {
	return badRequest(fmt.Sprintf(format, args...))
}

// statuses is the HTTP answer of each publisher.Kind but Confirmed: the
// status, the words and whether Retry-After goes with it. answerFor adds
// the broker's reason for the kinds that have one. A test checks that every
// Kind has its row.
var statuses = map[publisher.Kind]struct {
	code  int
	text  string
	retry bool
}{
	// Taken back before it was sent: it will not arrive, a retry makes no
	// duplicate.
	publisher.NotSent:   {http.StatusGatewayTimeout, "not confirmed in time; the message was not published (safe to retry)", false},
	publisher.Withdrawn: {http.StatusServiceUnavailable, "service unavailable: shutting down; the message was not published", true},
	// Sent, no confirm yet: it may still arrive.
	publisher.TimedOut:        {http.StatusGatewayTimeout, "not confirmed in time; the message may still reach the broker", false},
	publisher.Interrupted:     {http.StatusGatewayTimeout, "shutting down before the broker confirmed; the message may still reach the broker", false},
	publisher.TooManyAttempts: {http.StatusBadGateway, "not published: failed through too many connection failures", false},
	publisher.NotFound:        {http.StatusNotFound, "exchange not found", false},
	publisher.Unroutable:      {http.StatusUnprocessableEntity, "unroutable: returned by the broker", false},
	publisher.Nacked:          {http.StatusBadGateway, "nacked by the broker", false},
	publisher.AccessRefused:   {http.StatusForbidden, "refused by the broker", false},
	publisher.Rejected:        {http.StatusBadRequest, "rejected by the broker", false},
	publisher.Invalid:         {http.StatusBadRequest, "invalid message: it cannot be encoded as AMQP", false},
	// Not taken now: retry later. The words after "service unavailable: "
	// are publisher.Reason's (buffer full, spool full, shutting down, ...).
	publisher.Full:        {http.StatusServiceUnavailable, "service unavailable: ", true},
	publisher.Unavailable: {http.StatusServiceUnavailable, "service unavailable: ", true},
	publisher.Closed:      {http.StatusServiceUnavailable, "service unavailable: ", true},
	publisher.Canceled:    {http.StatusServiceUnavailable, "request cancelled", true},
	publisher.Unknown:     {http.StatusServiceUnavailable, "service unavailable: cannot take messages now", true},
}

// answerFor is the answer for a publish that failed with err, read from
// its publisher.Kind. The broker's reason texts (of *ChannelError and
// *ReturnError) are passed on: they concern this message and carry no
// secrets.
func answerFor(err error) *problem {
	kind := publisher.Classify(err)
	row, ok := statuses[kind]
	if !ok { // Confirmed: not an error; answered as Unknown rather than as a success
		row = statuses[publisher.Unknown]
	}
	p := &problem{code: row.code, text: row.text, retry: row.retry, cause: err}
	var ce *publisher.ChannelError
	var re *publisher.ReturnError
	switch kind {
	case publisher.Full, publisher.Unavailable, publisher.Closed:
		p.text += publisher.Reason(err)
	case publisher.NotFound:
		if errors.As(err, &ce) && ce.Reason != "" {
			p.text += ": " + ce.Reason
		}
	case publisher.Unroutable:
		if errors.As(err, &re) && re.Text != "" {
			p.text += ": " + re.Text
		}
	case publisher.AccessRefused:
		if errors.As(err, &ce) {
			p.text += ": " + ce.Reason
		}
	case publisher.Rejected:
		if errors.As(err, &ce) {
			p.text += ": " + strconv.Itoa(ce.Code) + " " + ce.Reason
		}
	}
	return p
}
