package cloudevents

import (
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Mode is a request's CloudEvents content mode, by its Content-Type (HTTP
// binding section 3).
type Mode int

const (
	// ModeBinary: any other Content-Type; the request is a CloudEvent only if
	// it has ce- headers (FromBinary decides).
	ModeBinary Mode = iota
	// ModeStructured: application/cloudevents+json.
	ModeStructured
	// ModeBatch: application/cloudevents-batch+json.
	ModeBatch
	// ModeUnsupported: another application/cloudevents format (+avro,
	// +protobuf, ...), which this service cannot read: a 415.
	ModeUnsupported
)

// ContentMode maps a Content-Type value to its content mode; the media type
// is matched case-insensitively and parameters (charset) are ignored.
func ContentMode(contentType string) Mode {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	switch {
	case mt == MediaTypeStructured:
		return ModeStructured
	case mt == MediaTypeBatch:
		return ModeBatch
	case strings.HasPrefix(mt, "application/cloudevents"):
		return ModeUnsupported
	default:
		return ModeBinary
	}
}

// FromBinary reads a binary-mode CloudEvent from request headers (HTTP
// binding section 3.1): the attributes are the ce- headers (names
// case-insensitive, values percent-decoded, and unquoted when sent as an
// RFC 9110 quoted-string), datacontenttype is the Content-Type header, and
// the body, not read here, is the data.
//
// isEvent is true when the request has a ce-specversion header, or any of
// ce-id, ce-source and ce-type (so that a forgotten ce-specversion is a 400
// naming it rather than a plain publish that drops the attributes). The
// event is then validated; err, an *AttributeError, names the first header
// at fault. Other ce- headers become extensions, which must have valid
// names.
func FromBinary(h http.Header) (e Event, isEvent bool, err error) {
	_, sv := h["Ce-Specversion"]
	_, id := h["Ce-Id"]
	_, src := h["Ce-Source"]
	_, typ := h["Ce-Type"]
	if !sv && !id && !src && !typ {
		return Event{}, false, nil
	}
	present := map[string]bool{}
	for key, vals := range h {
		if len(key) < 3 || !strings.EqualFold(key[:3], "ce-") {
			continue
		}
		attr := strings.ToLower(key[3:])
		shown := "ce-" + attr
		if len(vals) != 1 {
			return e, true, &AttributeError{Name: shown, Reason: "given more than once"}
		}
		v, ok := decodeHeaderValue(vals[0])
		if !ok {
			return e, true, &AttributeError{Name: shown, Reason: "invalid percent-encoding or quoting (HTTP binding 3.1.3.2)"}
		}
		present[attr] = true
		switch attr {
		case "specversion":
			e.SpecVersion = v
		case "id":
			e.ID = v
		case "source":
			e.Source = v
		case "type":
			e.Type = v
		case "subject":
			e.Subject = v
		case "time":
			e.Time = v
		case "dataschema":
			e.DataSchema = v
		case "datacontenttype":
			return e, true, &AttributeError{Name: shown, Reason: "not allowed in binary mode (the Content-Type header is the datacontenttype)"}
		default:
			if e.Extensions == nil {
				e.Extensions = make(map[string]string)
			}
			e.Extensions[attr] = v
		}
	}
	if cts := h["Content-Type"]; len(cts) > 1 {
		return e, true, &AttributeError{Name: "Content-Type", Reason: "given more than once"}
	} else if len(cts) == 1 {
		e.DataContentType = cts[0]
		present["datacontenttype"] = true
	}
	err = e.validate(binaryName, func(attr string) bool { return present[attr] })
	return e, true, err
}

func binaryName(attr string) string {
	if attr == "datacontenttype" {
		return "Content-Type"
	}
	return "ce-" + attr
}

// decodeHeaderValue undoes the HTTP binding's encoding: a quoted-string is
// unquoted first (older senders used them), then one round of
// percent-decoding, whose result must be valid UTF-8 (so overlong forms
// such as %C0%A0 are rejected).
func decodeHeaderValue(v string) (string, bool) {
	if strings.HasPrefix(v, `"`) {
		var ok bool
		if v, ok = unquote(v); !ok {
			return "", false
		}
	}
	if strings.IndexByte(v, '%') < 0 {
		return v, true
	}
	d, err := url.PathUnescape(v)
	if err != nil || !utf8.ValidString(d) {
		return "", false
	}
	return d, true
}

// unquote decodes an RFC 9110 quoted-string: '"' *( qdtext / quoted-pair )
// '"', with quoted-pair = "\" any character.
func unquote(v string) (string, bool) {
	if len(v) < 2 || v[len(v)-1] != '"' {
		return "", false
	}
	in := v[1 : len(v)-1]
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		switch c := in[i]; c {
		case '\\':
			if i+1 == len(in) {
				return "", false
			}
			i++
			b.WriteByte(in[i])
		case '"':
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}
