package cloudevents

import (
	"net/http"
	"strings"
	"time"
)

// Wrapping is what a plain (non-CloudEvents) request asked for.
type Wrapping int

const (
	// WrapNone: publish the message as it is.
	WrapNone Wrapping = iota
	// WrapPreferred: "Prefer: cloudevents" (RFC 7240). A preference may be
	// ignored: without a configured source the message is published plain,
	// and no Preference-Applied is answered.
	WrapPreferred
	// WrapRequired: "X-CloudEvents: binary". Without a configured source it
	// is a 400: the caller demanded an event it cannot get.
	WrapRequired
)

// WrapRequested reads a plain request's ask to be wrapped as a binary-mode
// CloudEvent: "X-CloudEvents: binary" (case-insensitive; any other value, or
// the header twice, is an *AttributeError naming it) or a "cloudevents"
// preference among the Prefer headers.
func WrapRequested(h http.Header) (Wrapping, error) {
	switch v := h["X-Cloudevents"]; {
	case len(v) > 1:
		return WrapNone, &AttributeError{Name: "X-CloudEvents", Reason: "given more than once"}
	case len(v) == 1:
		if !strings.EqualFold(strings.TrimSpace(v[0]), "binary") {
			return WrapNone, &AttributeError{Name: "X-CloudEvents", Reason: quote(v[0]) + " is not supported (only binary)"}
		}
		return WrapRequired, nil
	}
	for _, line := range h["Prefer"] {
		for _, pref := range strings.Split(line, ",") {
			name, _, _ := strings.Cut(pref, ";")
			name, _, _ = strings.Cut(name, "=")
			if strings.EqualFold(strings.TrimSpace(name), "cloudevents") {
				return WrapPreferred, nil
			}
		}
	}
	return WrapNone, nil
}

// CheckSource validates a configured source (PUBLISHER_CLOUDEVENTS_SOURCE):
// a non-empty URI-reference (an absolute URI is recommended).
func CheckSource(source string) error {
	if source == "" {
		return &AttributeError{Name: "source", Reason: "empty"}
	}
	if err := checkString("source", source); err != nil {
		return err
	}
	if !validURIRef(source) {
		return &AttributeError{Name: "source", Reason: quote(source) + " is not a URI-reference"}
	}
	return nil
}

// Wrap makes the binary-mode CloudEvent of a plain message: specversion
// 1.0, id = the message id, source = the configured source, type = the
// request's X-Type, time = t (the message's timestamp, so the event and the
// AMQP timestamp agree) in RFC 3339 UTC, datacontenttype = the request's
// Content-Type when given. X-Type is required: the event type is REQUIRED
// and what consumers route on, so no default is made up, and its absence is
// an *AttributeError naming X-Type (a 400). The result is validated like a
// received event.
func Wrap(source, id, typ, contentType string, t time.Time) (Event, error) {
	e := Event{
		SpecVersion:     SpecVersion,
		ID:              id,
		Source:          source,
		Type:            typ,
		DataContentType: contentType,
		Time:            t.UTC().Format(time.RFC3339Nano),
	}
	if typ == "" {
		return e, &AttributeError{Name: "X-Type", Reason: "required to wrap the message as a CloudEvent (it becomes the event type)"}
	}
	err := e.validate(wrapName, func(attr string) bool { return attr == "datacontenttype" && contentType != "" })
	return e, err
}

func wrapName(attr string) string {
	switch attr {
	case "type":
		return "X-Type"
	case "id":
		return "X-Message-Id"
	case "datacontenttype":
		return "Content-Type"
	case "source":
		return "PUBLISHER_CLOUDEVENTS_SOURCE"
	}
	return attr
}
