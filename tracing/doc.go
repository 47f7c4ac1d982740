// Package tracing carries W3C trace context from HTTP requests into AMQP
// messages, always, and makes OpenTelemetry spans, exported over OTLP, when
// the standard OTEL_* environment asks for them (Setup). It holds no HTTP
// server and no AMQP connection, and does not know publisher.Message: it
// takes plain strings and header maps, so the HTTP handler, the publisher
// actor and the relay can each call it in a few lines.
//
// # Always on: carrying the context
//
// FromRequest reads traceparent, tracestate and baggage from the request
// headers, dropping a malformed traceparent (and then its tracestate) exactly
// where the OpenTelemetry W3C propagator would; Headers.Apply (or
// Tracer.StartMessage, which calls it when tracing is off) writes them into a
// message's AMQP headers under the same names, a message's own valid
// traceparent winning over the request's. Neither allocates beyond boxing the
// strings it writes.
//
// # Spans, when configured
//
// With tracing on, the HTTP request is a SERVER span ("POST
// /v1/publish/{exchange}/{routing_key}", HTTP semantic conventions), child of
// the incoming traceparent, and each message a PRODUCER span, child of the
// SERVER span, whose own traceparent is what goes into the message, so that
// a consumer's span links to it. The PRODUCER span ends at the broker's
// confirm (MessageSpan.End), with events for each republish after a
// connection loss, each nack retry and the spool hand-off.
//
// Names and attributes follow the OpenTelemetry semantic conventions
// v1.43.0, the version the Go SDK v1.47 ships as
// go.opentelemetry.io/otel/semconv/v1.43.0 (messaging conventions: status
// Development; RabbitMQ page):
//
//   - span name "publish {exchange}", "publish amq.default" for the default
//     exchange: the conventions' "{messaging.operation.name} {destination}",
//     where {destination} must be low-cardinality: the exchange, not the
//     routing key, which often holds ids;
//   - kind PRODUCER (its context is the message's creation context);
//   - messaging.system=rabbitmq, messaging.operation.name=publish (AMQP's
//     basic.publish, as RabbitMQ's .NET client names it),
//     messaging.operation.type=send, messaging.destination.name as the
//     RabbitMQ page specifies for producers ("{exchange}:{routing key}", or
//     whichever is non-empty, or "amq.default"),
//     messaging.rabbitmq.destination.routing_key (when not empty),
//     messaging.message.id, messaging.message.conversation_id (the
//     correlation id), messaging.message.body.size, server.address and
//     server.port (the broker in use, SetBroker), network.protocol.name=amqp
//     and network.protocol.version=0.9.1;
//   - error.type and status Error when not confirmed: the publisher's
//     classification of the failure (publisher.Kind.ErrorType: "nacked",
//     "unroutable", "timeout", "not_found", ...).
//
// Events use the publisher. namespace (EventRepublish, EventNackRetry,
// EventSpooled), as the conventions define none for them. OpenTelemetry is
// deprecating the span-event API in favour of log-based events (OTEP 4430);
// span events stay on PRODUCER spans because they belong to one message's
// timeline and backends show them there. The supervision tree's restarts and
// escalations belong to no message and no request (and a span open for a
// connection's whole life would be exported only when it ends), so they are
// log records, correlated with the broker connection by attributes rather
// than by a trace: supervisor, child, event kind, reason, restart count and
// delay, with messaging.system=rabbitmq, server.address and server.port of
// the broker.
//
// A disabled Tracer (nil, or from Setup without an exporter configured)
// makes every span method a no-op: StartRequest returns the request's
// context and a nil *RequestSpan, StartMessage returns Headers.Apply and a
// nil *MessageSpan, and the nil spans' methods return at once, with no
// allocation (TestDisabledAllocs).
package tracing
