package tracing

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Route templates for the SERVER span's http.route (and name).
const (
	RoutePublish = "/v1/publish/{exchange}/{routing_key}"
	RouteBatch   = "/v1/batch"
	RouteStream  = "/v1/stream"
)

// Messaging conventions, semantic conventions v1.43.0 (RabbitMQ page).
const (
	// OperationPublish is messaging.operation.name: AMQP's basic.publish, as
	// RabbitMQ's own .NET client names it; the operation type is "send".
	OperationPublish = "publish"
	// DefaultExchangeName names the default exchange ("") in span names and
	// messaging.destination.name, as the conventions and RabbitMQ's
	// management API do.
	DefaultExchangeName = "amq.default"
)

// Span events on PRODUCER spans, and their attributes (the publisher.
// namespace: the conventions define none for these).
const (
	EventRepublish = "publisher.republish"
	EventNackRetry = "publisher.nack_retry"
	EventSpooled   = "publisher.spooled"

	attrAttempt = attribute.Key("publisher.attempt")
	// attrApp is the app of the request's token (PUBLISHER_AUTH_FILE's name,
	// "anonymous" or "default"), on the SERVER span and every PRODUCER span:
	// a configured name, never a value of the request.
	attrApp               = attribute.Key("publisher.app")
	attrNacks             = attribute.Key("publisher.nack.count")
	attrRetryDelaySeconds = attribute.Key("publisher.retry.delay")
)

// RequestSpan is the SERVER span of one HTTP request. A nil *RequestSpan
// (tracing off) is valid and does nothing.
type RequestSpan struct {
	span trace.Span
}

// StartRequest starts the SERVER span of r, a child of the context h
// carries (a malformed traceparent was already dropped by FromRequest, and
// then the span is a new root), named "{method} {route}" with the HTTP
// semantic conventions' attributes. route is the route template (RoutePublish,
// RouteBatch, RouteStream), never the raw path. The returned context holds
// the span and h's baggage; pass it to StartMessage. With tracing off it
// returns r.Context() and nil without allocating.
func (t *Tracer) StartRequest(r *http.Request, route string, h Headers) (context.Context, *RequestSpan) {
	if !t.Enabled() {
		return r.Context(), nil
	}
	parent := h // only this copy escapes, and only with tracing on
	ctx := t.prop.Extract(r.Context(), headersCarrier{&parent})

	method, known := normalMethod(r.Method)
	name := method
	if !known {
		name = "HTTP"
	}
	if route != "" {
		name += " " + route
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	attrs := make([]attribute.KeyValue, 0, 12)
	attrs = append(attrs,
		semconv.HTTPRequestMethodKey.String(method),
		semconv.URLScheme(scheme),
		semconv.URLPath(r.URL.Path),
	)
	if !known {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(r.Method))
	}
	if route != "" {
		attrs = append(attrs, semconv.HTTPRoute(route))
	}
	if host, port := hostPort(r.Host, scheme); host != "" {
		attrs = append(attrs, semconv.ServerAddress(host))
		if port > 0 {
			attrs = append(attrs, semconv.ServerPort(port))
		}
	}
	if r.ProtoMajor == 2 {
		attrs = append(attrs, semconv.NetworkProtocolVersion("2"))
	} else if r.ProtoMajor == 1 {
		attrs = append(attrs, semconv.NetworkProtocolVersion("1."+strconv.Itoa(r.ProtoMinor)))
	}
	if host, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		attrs = append(attrs, semconv.ClientAddress(host), semconv.NetworkPeerAddress(host))
		if p, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, semconv.NetworkPeerPort(p))
		}
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(ua))
	}
	ctx, span := t.tracer.Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attrs...))
	return ctx, &RequestSpan{span: span}
}

// End ends the span with the answer's status code. 5xx marks it an error
// (error.type = the code), as the HTTP conventions ask of SERVER spans;
// 4xx does not.
func (s *RequestSpan) End(status int) {
	if s == nil {
		return
	}
	s.span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	if status >= 500 {
		code := strconv.Itoa(status)
		s.span.SetAttributes(semconv.ErrorTypeKey.String(code))
		s.span.SetStatus(codes.Error, code)
	}
	s.span.End()
}

// SetApp records on ctx's SERVER span (from StartRequest) the app of the
// request's token (publisher.app). With tracing off it does nothing.
func (t *Tracer) SetApp(ctx context.Context, app string) {
	if !t.Enabled() {
		return
	}
	trace.SpanFromContext(ctx).SetAttributes(attrApp.String(app))
}

// Message describes one message for its PRODUCER span.
type Message struct {
	// App is the app of the request's token (publisher.app; "" for none).
	App           string
	Exchange      string // "" is the default exchange
	RoutingKey    string
	MessageID     string
	CorrelationID string
	BodySize      int
	// Headers are the message's own AMQP headers (nil for none). A valid
	// "traceparent" among them is the message's own creation context, which
	// wins over the request's.
	Headers map[string]any
}

// MessageSpan is the PRODUCER span of one message, from the request to the
// broker's confirm. A nil *MessageSpan (tracing off) is valid and does
// nothing. Its methods may be called from any goroutine.
type MessageSpan struct {
	span   trace.Span
	t      *Tracer
	broker atomic.Pointer[brokerAddr] // the one last recorded on the span
}

// StartMessage carries the trace context into one message's AMQP headers and
// returns them, with the message's PRODUCER span (nil when tracing is off).
//
// With tracing off it is h.Apply(m.Headers): the request's (or the message's
// own) traceparent, tracestate and baggage go into the headers as they came.
//
// With tracing on it starts the PRODUCER span "publish {exchange}" (the
// default exchange is "amq.default"), a child of ctx's span (the SERVER
// span), or, when m.Headers carry a valid traceparent of their own, a child
// of that context with a link to the SERVER span. The span's own
// traceparent (with the parent's tracestate) and the baggage then replace
// any in the headers, so a consumer's span links to this PRODUCER span. A
// ctx without a span (not from StartRequest) makes h's context the parent.
func (t *Tracer) StartMessage(ctx context.Context, h Headers, m Message) (map[string]any, *MessageSpan) {
	if !t.Enabled() {
		return h.Apply(m.Headers), nil
	}
	opts := make([]trace.SpanStartOption, 0, 3)
	opts = append(opts, trace.WithSpanKind(trace.SpanKindProducer))
	if !h.IsZero() && !trace.SpanContextFromContext(ctx).IsValid() {
		// ctx did not come from StartRequest: the request's context is the
		// parent.
		parent := h
		ctx = t.prop.Extract(ctx, headersCarrier{&parent})
	}
	own := FromTable(m.Headers)
	if own.Traceparent != "" {
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	if !own.IsZero() {
		// The message's own context replaces the SERVER span as the parent,
		// its own baggage the request's.
		ctx = t.prop.Extract(ctx, headersCarrier{&own})
	}

	exchange := m.Exchange
	if exchange == "" {
		exchange = DefaultExchangeName
	}
	attrs := make([]attribute.KeyValue, 0, 13)
	attrs = append(attrs,
		semconv.MessagingSystemRabbitMQ,
		semconv.MessagingOperationName(OperationPublish),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingDestinationName(destinationName(m.Exchange, m.RoutingKey)),
		semconv.NetworkProtocolName("amqp"),
		semconv.NetworkProtocolVersion("0.9.1"),
		semconv.MessagingMessageBodySize(m.BodySize),
	)
	if m.RoutingKey != "" {
		attrs = append(attrs, semconv.MessagingRabbitMQDestinationRoutingKey(m.RoutingKey))
	}
	if m.MessageID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(m.MessageID))
	}
	if m.CorrelationID != "" {
		attrs = append(attrs, semconv.MessagingMessageConversationID(m.CorrelationID))
	}
	if m.App != "" {
		attrs = append(attrs, attrApp.String(m.App))
	}
	b := t.broker.Load()
	attrs = appendBroker(attrs, b)
	opts = append(opts, trace.WithAttributes(attrs...))

	ctx, span := t.tracer.Start(ctx, "publish "+exchange, opts...)

	headers := m.Headers
	if headers == nil {
		headers = make(map[string]any, 3)
	}
	delete(headers, HeaderTraceparent)
	delete(headers, HeaderTracestate)
	delete(headers, HeaderBaggage)
	t.prop.Inject(ctx, tableCarrier(headers))
	ms := &MessageSpan{span: span, t: t}
	ms.broker.Store(b)
	return headers, ms
}

// destinationName is messaging.destination.name on the producer side by the
// RabbitMQ conventions: "{exchange}:{routing key}" when both are non-empty,
// else whichever is, else "amq.default".
func destinationName(exchange, key string) string {
	switch {
	case exchange != "" && key != "":
		return exchange + ":" + key
	case exchange != "":
		return exchange
	case key != "":
		return key
	default:
		return DefaultExchangeName
	}
}

func appendBroker(attrs []attribute.KeyValue, b *brokerAddr) []attribute.KeyValue {
	if b == nil {
		return attrs
	}
	attrs = append(attrs, semconv.ServerAddress(b.host))
	if b.port > 0 {
		attrs = append(attrs, semconv.ServerPort(b.port))
	}
	return attrs
}

// Republished records that the message is published again after a
// connection loss: event "publisher.republish" with publisher.attempt (the
// attempt number about to be made, 2 for the first republish). The span's
// server.address and server.port follow the broker now in use (the
// conventions want the last node contacted).
func (s *MessageSpan) Republished(attempt int) {
	if s == nil {
		return
	}
	s.span.AddEvent(EventRepublish, trace.WithAttributes(attrAttempt.Int(attempt)))
	if b := s.t.broker.Load(); b != nil && s.broker.Swap(b) != b {
		s.span.SetAttributes(appendBroker(nil, b)...)
	}
}

// NackRetry records that the broker nacked the message and it will be
// published again after delay: event "publisher.nack_retry" with
// publisher.nack.count (nacks so far) and publisher.retry.delay (seconds).
func (s *MessageSpan) NackRetry(nacks int, delay time.Duration) {
	if s == nil {
		return
	}
	s.span.AddEvent(EventNackRetry, trace.WithAttributes(
		attrNacks.Int(nacks), attrRetryDelaySeconds.Float64(delay.Seconds())))
}

// Spooled records that the message is durably held in the spool (and the
// caller may already have been answered 202): event "publisher.spooled".
// The span goes on until the broker confirms.
func (s *MessageSpan) Spooled() {
	if s == nil {
		return
	}
	s.span.AddEvent(EventSpooled)
}

// End ends the span: errorType "" means the broker confirmed the message;
// anything else (the publisher's publisher.Kind.ErrorType: "nacked",
// "unroutable", "timeout", ...) is set as error.type and
// the span's status is Error with it as description. Only the first End
// counts.
func (s *MessageSpan) End(errorType string) {
	if s == nil {
		return
	}
	if errorType != "" {
		s.span.SetAttributes(semconv.ErrorTypeKey.String(errorType))
		s.span.SetStatus(codes.Error, errorType)
	}
	s.span.End()
}

// Traceparent is the span's W3C traceparent, "" for a nil span.
func (s *MessageSpan) Traceparent() string {
	if s == nil {
		return ""
	}
	var h Headers
	s.t.prop.Inject(trace.ContextWithSpan(context.Background(), s.span), headersCarrier{&h})
	return h.Traceparent
}

// normalMethod is http.request.method: the method when it is one of RFC
// 9110's (and PATCH), else "_OTHER".
func normalMethod(m string) (string, bool) {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m, true
	}
	return "_OTHER", false
}

// hostPort splits a Host header; the port defaults by scheme.
func hostPort(hostport, scheme string) (string, int) {
	if hostport == "" {
		return "", 0
	}
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
		if scheme == "https" {
			return host, 443
		}
		return host, 80
	}
	port, _ := strconv.Atoi(p)
	return host, port
}

// headersCarrier is a TextMapCarrier over Headers (lowercase W3C names).
type headersCarrier struct{ h *Headers }

func (c headersCarrier) Get(key string) string {
	switch key {
	case HeaderTraceparent:
		return c.h.Traceparent
	case HeaderTracestate:
		return c.h.Tracestate
	case HeaderBaggage:
		return c.h.Baggage
	}
	return ""
}

func (c headersCarrier) Set(key, value string) {
	switch key {
	case HeaderTraceparent:
		c.h.Traceparent = value
	case HeaderTracestate:
		c.h.Tracestate = value
	case HeaderBaggage:
		c.h.Baggage = value
	}
}

func (c headersCarrier) Keys() []string {
	return []string{HeaderTraceparent, HeaderTracestate, HeaderBaggage}
}

// tableCarrier is a TextMapCarrier over AMQP headers: values are written as
// strings; non-string values read as absent.
type tableCarrier map[string]any

func (c tableCarrier) Get(key string) string {
	s, _ := c[key].(string)
	return s
}

func (c tableCarrier) Set(key, value string) { c[key] = value }

func (c tableCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
