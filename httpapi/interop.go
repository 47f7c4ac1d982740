package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/publisher-dev/publisher/cloudevents"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/tracing"
)

// CloudEventsConfig configures the CloudEvents modes of the publish API.
type CloudEventsConfig struct {
	// Source, when set (PUBLISHER_CLOUDEVENTS_SOURCE), lets a plain request
	// ask to be wrapped as a binary-mode CloudEvent ("Prefer: cloudevents" or
	// "X-CloudEvents: binary"); it is the events' source.
	Source string
	// Convention names the attribute headers of published events
	// (PUBLISHER_CLOUDEVENTS_HEADERS); the zero value is cloudevents.ConventionCE
	// ("ce-" prefixed, as Knative's eventing-rabbitmq reads them).
	Convention cloudevents.Convention
}

// statusWriter records the status code written, for the SERVER span. It is
// used only with tracing on; Unwrap keeps http.ResponseController working
// (a stream's flushes and deadlines).
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// traced starts the request's SERVER span when tracing is on: it returns the
// writer and request to serve with (the span in the request's context) and
// the function that ends the span with the status written. With tracing off
// it returns w and r as they are, and a no-op, without allocating.
func (h *Handler) traced(w http.ResponseWriter, r *http.Request, route string, th tracing.Headers) (http.ResponseWriter, *http.Request, func()) {
	if !h.tracer.Enabled() {
		return w, r, func() {}
	}
	ctx, span := h.tracer.StartRequest(r, route, th)
	sw := &statusWriter{ResponseWriter: w}
	return sw, r.WithContext(ctx), func() { span.End(sw.code) }
}

// startSpan carries the request's trace context into msg's headers (an
// entry's own traceparent wins) and, with tracing on, starts its PRODUCER
// span, a child of ctx's SERVER span, with the app's name; the span's
// traceparent is the one written into the message.
func (h *Handler) startSpan(ctx context.Context, th tracing.Headers, msg *publisher.Message, app string) {
	var span *tracing.MessageSpan
	msg.Headers, span = h.tracer.StartMessage(ctx, th, tracing.Message{
		Exchange: msg.Exchange, RoutingKey: msg.RoutingKey, MessageID: msg.MessageID,
		CorrelationID: msg.CorrelationID, BodySize: len(msg.Body), Headers: msg.Headers, App: app,
	})
	if span != nil { // a nil *MessageSpan in the interface would not be nil
		msg.Trace = span
	}
}

// ceRequest is what a single publish request is, CloudEvents-wise, as far
// as its headers tell.
type ceRequest struct {
	mode       cloudevents.Mode
	binary     bool // a binary-mode event (ce- headers), in ev
	ev         cloudevents.Event
	wrap       bool // a plain request to wrap (a source is configured)
	preference bool // the wrap was asked as a preference (answer Preference-Applied)
}

// cloudEventOf reads the request's CloudEvents mode from its headers, before
// the body: an error is the answer (400 or 415).
func (h *Handler) cloudEventOf(r *http.Request, msg *publisher.Message) (ce ceRequest, err error) {
	ce.mode = cloudevents.ContentMode(msg.ContentType)
	switch ce.mode {
	case cloudevents.ModeBatch:
		return ce, refuse(http.StatusUnsupportedMediaType, "a CloudEvents batch goes to POST /v1/batch")
	case cloudevents.ModeUnsupported:
		return ce, refuse(http.StatusUnsupportedMediaType, "unsupported CloudEvents format: use application/cloudevents+json or binary mode (ce- headers)")
	case cloudevents.ModeStructured:
		return ce, nil
	}
	ev, isEvent, err := cloudevents.FromBinary(r.Header)
	if isEvent {
		echoEventID(msg, ev.ID)
	}
	if err != nil {
		return ce, badRequest("invalid CloudEvent: " + err.Error())
	}
	if isEvent {
		ce.binary, ce.ev = true, ev
		return ce, nil
	}
	wrap, err := cloudevents.WrapRequested(r.Header)
	switch {
	case err != nil:
		return ce, badRequest(err.Error())
	case wrap == cloudevents.WrapRequired && h.ce.Source == "":
		return ce, badRequest("X-CloudEvents: binary needs PUBLISHER_CLOUDEVENTS_SOURCE to be set")
	case wrap != cloudevents.WrapNone && h.ce.Source != "":
		ce.wrap, ce.preference = true, wrap == cloudevents.WrapPreferred
	}
	return ce, nil
}

// echoEventID makes an event's id the message id that every answer to the
// request echoes (the 400 for an invalid event included), when the request
// gave no X-Message-Id of its own (that one is echoed instead, and a
// different one is refused later) and the id is valid on its own
// (cloudevents.ValidID), whatever else is wrong with the event.
func echoEventID(msg *publisher.Message, id string) {
	if msg.MessageID == "" && cloudevents.ValidID(id) {
		msg.MessageID = id
	}
}

// applyCloudEvent maps the request's event (read by cloudEventOf, or from
// the body in structured mode) into msg: message_id = id, type = type, the
// attributes as headers by the configured convention. An X-Message-Id or
// X-Type that differs from the event's is a 400 (a message must not carry
// two ids). idGiven is whether msg.MessageID was set before the body was
// read: from X-Message-Id, or from a binary event's own id (echoEventID),
// which always equals the event's.
func (h *Handler) applyCloudEvent(ce *ceRequest, msg *publisher.Message, body []byte, idGiven bool) error {
	switch {
	case ce.mode == cloudevents.ModeStructured:
		ev, err := cloudevents.FromStructured(body)
		if err != nil {
			echoEventID(msg, ev.ID)
			return badRequest("invalid CloudEvent: " + err.Error())
		}
		ce.ev = ev
	case ce.wrap:
		ev, err := cloudevents.Wrap(h.ce.Source, msg.MessageID, msg.Type, msg.ContentType, msg.Timestamp)
		if err != nil {
			return badRequest("cannot wrap as a CloudEvent: " + err.Error())
		}
		ce.ev = ev
	case !ce.binary:
		return nil
	}
	if idGiven && msg.MessageID != ce.ev.ID {
		return badRequest("X-Message-Id differs from the event's id: give one or the other")
	}
	if msg.Type != "" && msg.Type != ce.ev.Type {
		return badRequest("X-Type differs from the event's type: give one or the other")
	}
	msg.MessageID, msg.Type = ce.ev.ID, ce.ev.Type
	msg.Headers = ce.ev.AMQPHeaders(h.ce.Convention, msg.Headers)
	return nil
}

// cloudEventsBatch turns a CloudEvents batch (application/cloudevents-batch+json
// to /v1/batch) into messages: each event published as is (structured,
// content_type application/cloudevents+json), to the exchange and routing
// key of the request's query (?exchange=…&routing_key=…, the routing key
// defaulting to the event's type), message_id = id, type = type, the
// attributes as headers. A bad event gets its own 400; a body that is not a
// JSON array, or no exchange, refuses the batch (errText).
func (h *Handler) cloudEventsBatch(r *http.Request, body []byte) (msgs []*publisher.Message, bad []*problem, err error) {
	q := r.URL.Query()
	exchange, ok := q["exchange"]
	if !ok || len(exchange) != 1 {
		return nil, nil, badRequest("a CloudEvents batch needs ?exchange= (amq.default for the default exchange), and ?routing_key= unless the events' types are the routing keys")
	}
	key := q.Get("routing_key")
	events, errs, err := cloudevents.FromBatch(body)
	if err != nil {
		return nil, nil, badRequest("malformed CloudEvents batch: " + err.Error())
	}
	if len(events) > h.maxBatchMsgs {
		return nil, nil, refuse(http.StatusRequestEntityTooLarge, "batch of "+strconv.Itoa(len(events))+" events, more than "+strconv.Itoa(h.maxBatchMsgs))
	}
	msgs = make([]*publisher.Message, len(events))
	bad = make([]*problem, len(events))
	for i, ev := range events {
		msg := &publisher.Message{Persistent: true, Mandatory: true, Timestamp: h.now()}
		msgs[i] = msg
		echoEventID(msg, ev.ID)
		if errs[i] != nil {
			bad[i] = badRequestf("invalid CloudEvent: %v", errs[i])
			continue
		}
		rk := key
		if rk == "" {
			rk = ev.Type
		}
		e := entry{Exchange: &exchange[0], RoutingKey: rk, MessageID: ev.ID, Type: ev.Type,
			ContentType: cloudevents.MediaTypeStructured}
		if b := h.fillEntry(msg, &e); b != nil {
			bad[i] = b
			continue
		}
		msg.Body = ev.Structured
		if int64(len(msg.Body)) > h.maxBody {
			bad[i] = refuse(http.StatusRequestEntityTooLarge, "event larger than "+strconv.FormatInt(h.maxBody, 10)+" bytes")
			continue
		}
		msg.Headers = ev.AMQPHeaders(h.ce.Convention, nil)
	}
	return msgs, bad, nil
}
