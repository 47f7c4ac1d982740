package cloudevents

import (
	"errors"
	"slices"
	"strings"
)

// Convention is how attributes are named as AMQP 0-9-1 headers. The zero
// value is ConventionCE, the default.
type Convention int

const (
	// ConventionCE prefixes attribute names with "ce-" (ce-id, ce-type, ...)
	// and, in binary mode, writes datacontenttype as a "content-type" header
	// besides the content_type property. Knative eventing-rabbitmq reads
	// these: its RabbitmqSource adapter and its broker dispatcher
	// (pkg/rabbit/message.go, NewMessageFromDelivery) strip a "ce-" prefix
	// from header names and take datacontenttype from the "content-type"
	// header. It is the HTTP binding's naming, which is what users of this
	// HTTP service already send.
	ConventionCE Convention = iota
	// ConventionAMQP prefixes with "cloudEvents_", the separator the
	// CloudEvents AMQP binding prefers (since spec PR #1050, for JMS
	// compatibility); datacontenttype is the content_type property only. The
	// CloudEvents Java SDK's Spring AMQP binding (io.cloudevents.spring.amqp)
	// reads and writes these, and RabbitMQ hands AMQP 0-9-1 headers to AMQP
	// 1.0 consumers as application-properties, where the binding puts them.
	ConventionAMQP
	// ConventionAMQPColon prefixes with "cloudEvents:", the AMQP binding's
	// original separator, the only one the Go SDK's AMQP 1.0 binding reads.
	ConventionAMQPColon
	// ConventionBare writes unprefixed names (id, type, source, ...), as
	// Knative eventing-rabbitmq's broker ingress does itself
	// (CloudEventToRabbitMQMessage): its Triggers filter with a headers
	// exchange on unprefixed attribute names. Unprefixed names may collide
	// with the application's own headers; the event's attributes win.
	ConventionBare
)

// ParseConvention reads a setting: "ce" or "ce-" (and "", the default),
// "cloudEvents_", "cloudEvents:", or "none" (ConventionBare); names are
// case-insensitive.
func ParseConvention(s string) (Convention, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "ce", "ce-":
		return ConventionCE, nil
	case "cloudevents_":
		return ConventionAMQP, nil
	case "cloudevents:":
		return ConventionAMQPColon, nil
	case "none":
		return ConventionBare, nil
	}
	return 0, errors.New(`cloudevents: unknown header convention ` + quote(s) + `: use ce, cloudEvents_, cloudEvents: or none`)
}

// Prefix is the header-name prefix of attributes.
func (c Convention) Prefix() string {
	switch c {
	case ConventionAMQP:
		return "cloudEvents_"
	case ConventionAMQPColon:
		return "cloudEvents:"
	case ConventionBare:
		return ""
	default:
		return "ce-"
	}
}

// String is the setting's spelling, as ParseConvention reads it.
func (c Convention) String() string {
	switch c {
	case ConventionBare:
		return "none"
	case ConventionCE:
		return "ce"
	default:
		return c.Prefix()
	}
}

// traceHeaders are the W3C Trace Context and Baggage header names, which
// the tracing package writes (the request's context, or the PRODUCER
// span's).
var traceHeaders = [...]string{"traceparent", "tracestate", "baggage"}

// AMQPHeaders writes e's attributes into AMQP headers, creating dst when nil,
// and returns it: specversion, id, source, type, and subject, time,
// dataschema and the extensions when present, all as strings (the canonical
// form, which every binding accepts), named by c. Attributes overwrite
// headers of the same name already in dst, with one exception below.
//
// The headers are the same in the binary and the structured modes, so that
// a consumer, or a headers exchange's binding, reads both alike (both
// bindings allow a structured event to carry the binary mode's headers).
//
// datacontenttype is never a prefixed header. With ConventionCE and
// ConventionBare it is the "content-type" header, in both modes: that is
// where Knative eventing-rabbitmq reads it, and a ce-datacontenttype header
// beside it would be read there as a second datacontenttype (its binary
// reader turns both into Content-Type lines of the HTTP request it sends on).
// With ConventionAMQP and ConventionAMQPColon it is not a header at all: the
// AMQP binding maps it to the content_type property, and only to that. In
// binary mode the caller sets the message's content_type to it; in
// structured mode content_type is the event format's and the attribute is
// in the body (and, with ConventionCE and ConventionBare, the header).
//
// With ConventionBare the extensions named traceparent, tracestate and
// baggage are not written: those unprefixed names are W3C Trace Context's
// and Baggage's, and the headers of those names carry the publish's own
// trace context (the request's, or the PRODUCER span's), as in every other
// convention. The distributed-tracing extension is not meant to replace the
// protocol's trace headers (its text in the CloudEvents spec says so), and
// Knative's dispatcher, which reads this convention, takes those headers
// for trace context and never for attributes. A structured event keeps them
// in its body; in binary mode they are lost with this convention only.
func (e Event) AMQPHeaders(c Convention, dst map[string]any) map[string]any {
	if dst == nil {
		dst = make(map[string]any, 9+len(e.Extensions))
	}
	p := c.Prefix()
	set := func(name, v string) {
		if v != "" {
			dst[p+name] = v
		}
	}
	set("specversion", e.SpecVersion)
	set("id", e.ID)
	set("source", e.Source)
	set("type", e.Type)
	set("subject", e.Subject)
	set("time", e.Time)
	set("dataschema", e.DataSchema)
	for name, v := range e.Extensions {
		if c == ConventionBare && slices.Contains(traceHeaders[:], name) {
			continue
		}
		set(name, v)
	}
	if e.DataContentType != "" && (c == ConventionCE || c == ConventionBare) {
		dst["content-type"] = e.DataContentType
	}
	return dst
}
