// Package cloudevents reads and validates CloudEvents 1.0 arriving over
// HTTP, in the binary (FromBinary), structured (FromStructured) and batched
// (FromBatch) content modes of the CloudEvents HTTP binding, wraps plain
// messages as events (Wrap), and maps events to AMQP 0-9-1 headers
// (Event.AMQPHeaders). It holds no HTTP server and knows nothing of AMQP
// connections.
//
// # Validation
//
// specversion must be "1.0" (0.3 and other versions are refused, not
// converted); id, source and type must be present and non-empty; source is a
// URI-reference and dataschema an absolute URI (RFC 3986, checked by its
// grammar, not only by net/url, which accepts nearly anything); time is RFC
// 3339; datacontenttype is a type/subtype media type (RFC 2046); subject, if
// given, is not empty; every string is valid UTF-8 without control
// characters or noncharacters; extension names are lowercase ASCII letters
// and digits and not "data". The spec's 20-character limit on names is a
// SHOULD and is not enforced. Because id becomes the AMQP message_id and type
// the AMQP type property, both short strings, each is limited to 255 bytes.
// Errors name the attribute as the request spells it (ce-time, time,
// Content-Type, X-Type) with a message meant for the 400 answer:
//
//	ce-time: "yesterday" is not an RFC 3339 timestamp
//
// The validation is written here rather than taken from
// github.com/cloudevents/sdk-go/v2: that module is served, but it brings
// json-iterator, zap and bytebufferpool, its HTTP decoding reports errors
// that do not name the header, its URI check is net/url's (any string
// parses), and the batch mode's per-event errors and whole-body offsets
// would be wrapped around it anyway. What it validates is small and the
// spec's text is followed point by point.
//
// # AMQP headers: which convention
//
// There is no CloudEvents binding for AMQP 0-9-1; consumers read one of
// three namings, all offered as a Convention (a setting), with ConventionCE,
// the ce- prefix, the default:
//
//   - ce-id, ce-type, ... (ConventionCE): Knative eventing-rabbitmq, the
//     main consumer of CloudEvents on RabbitMQ, reads these. Its
//     RabbitmqSource adapter and broker dispatcher turn deliveries into
//     events with NewMessageFromDelivery (pkg/rabbit/message.go), which
//     lowercases header names and strips a "ce-" prefix; datacontenttype
//     comes from a "content-type" header. A cloudEvents_-prefixed message
//     is not recognised there: it is taken for a plain message and wrapped
//     in a new event of Knative's own type and source. It is also the HTTP
//     binding's naming, which callers of this service already use.
//   - cloudEvents_id, ... (ConventionAMQP): the CloudEvents AMQP binding
//     (AMQP 1.0 application-properties), whose preferred separator has been
//     "_" since spec PR #1050 (JMS selectors reject ':'); the Java SDK's
//     Spring AMQP binding (io.cloudevents.spring.amqp, CloudEventsHeaders)
//     reads and writes it over RabbitMQ, and RabbitMQ passes AMQP 0-9-1
//     headers to AMQP 1.0 consumers as application-properties. The Go SDK
//     has no AMQP 0-9-1 binding; its AMQP 1.0 one reads only "cloudEvents:"
//     (ConventionAMQPColon).
//   - id, type, ... unprefixed (ConventionBare): what Knative's broker
//     ingress itself publishes (CloudEventToRabbitMQMessage), and what its
//     Triggers' headers-exchange bindings match, for publishing straight
//     into a Knative broker's exchange.
//
// Dapr's RabbitMQ pub/sub reads neither: it carries structured events in
// the body. Attribute values are written as strings, the canonical form
// every binding must accept.
//
// # Binary-mode values
//
// DecodeHeaderValue decodes ce- header values as the HTTP binding (1.0.2,
// section 3.1.3.2) tells receivers to, robustly: a whole quoted-string is
// unquoted, each %XY escape is decoded, a '%' that starts no escape is kept
// literally (cloudevents/sdk-go v2 sends values unencoded: "100%" is not
// refused), and only a result that is not UTF-8 is an error.
//
// # Mapping to the message
//
// For the publisher: message_id = id, type = type; binary mode: content_type
// = the request's Content-Type, the body is the data; structured mode and
// each event of a batch: the event's JSON as the body, content_type kept
// (application/cloudevents+json for batch entries). Both modes get the same
// attribute headers (Event.AMQPHeaders), datacontenttype's "content-type"
// header included with the ce- and bare conventions, so that headers
// exchanges and consumers can route and filter without parsing the body.
package cloudevents
