package cloudevents

import (
	"net/http"
	"slices"
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
// case-insensitive, values decoded by DecodeHeaderValue), datacontenttype is
// the Content-Type header, and the body, not read here, is the data.
//
// isEvent is true when the request has a ce-specversion header, or any of
// ce-id, ce-source and ce-type (so that a forgotten ce-specversion is a 400
// naming it rather than a plain publish that drops the attributes). The
// event is then validated; err, an *AttributeError, names the first header
// at fault. Other ce- headers become extensions, which must have valid
// names.
//
// ce-id is read first and the others in name order, so that the error is
// the same on every run and e.ID holds the id even when a later header is
// at fault (ValidID tells whether it may be echoed).
func FromBinary(h http.Header) (e Event, isEvent bool, err error) {
	_, sv := h["Ce-Specversion"]
	_, id := h["Ce-Id"]
	_, src := h["Ce-Source"]
	_, typ := h["Ce-Type"]
	if !sv && !id && !src && !typ {
		return Event{}, false, nil
	}
	keys := make([]string, 0, 8)
	for key := range h {
		if len(key) >= 3 && strings.EqualFold(key[:3], "ce-") {
			keys = append(keys, key)
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		switch a, b := strings.ToLower(a), strings.ToLower(b); {
		case a == b:
			return 0
		case a == "ce-id":
			return -1
		case b == "ce-id":
			return 1
		default:
			return strings.Compare(a, b)
		}
	})
	present := make(map[string]bool, len(keys)+1)
	for _, key := range keys {
		vals := h[key]
		attr := strings.ToLower(key[3:])
		shown := "ce-" + attr
		if len(vals) != 1 {
			return e, true, &AttributeError{Name: shown, Reason: "given more than once"}
		}
		v, ok := DecodeHeaderValue(vals[0])
		if !ok {
			return e, true, &AttributeError{Name: shown, Reason: "not valid UTF-8 once percent-decoded (HTTP binding 3.1.3.2)"}
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

// DecodeHeaderValue undoes the HTTP binding's encoding of a binary-mode
// header value (section 3.1.3.2), robustly:
//
//  1. A value that is one whole RFC 9110 quoted-string ("..." with
//     backslash escapes) is unquoted, as the binding requires for older
//     senders. Any other value, one that merely starts or ends with '"'
//     included, is taken as it is.
//  2. One round of percent-decoding: each '%' followed by two hex digits
//     (either case) is the byte they name. A '%' that does not start such
//     an escape ("100%", "50%off", "%%") is kept as a literal '%' rather
//     than refused: the binding requires senders to encode '%' as "%25",
//     but cloudevents/sdk-go v2 (up to at least v2.16.2), the most used Go
//     SDK, writes values raw, and nothing else can have been meant.
//  3. The result must be valid UTF-8 (ok is false otherwise): escapes that
//     decode to invalid or overlong UTF-8 ("%C0%A0", "%FF") are refused, as
//     the binding demands, and so are raw bytes that are not UTF-8.
//
// A raw value that happens to contain an escape ("a%20b" meaning those five
// characters) is decoded all the same ("a b"): the binding gives the
// receiver no way to tell, and senders that follow it encode such a '%' as
// "%25". Measured against the library: on every value whose each '%'
// starts an escape, url.PathUnescape gives the same answer
// (FuzzDecodeHeaderValue holds the two together); it is not used because it
// refuses a lone '%'.
func DecodeHeaderValue(v string) (string, bool) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		if u, ok := unquote(v); ok {
			v = u
		}
	}
	i := strings.IndexByte(v, '%')
	if i < 0 {
		return v, utf8.ValidString(v)
	}
	b := make([]byte, i, len(v))
	copy(b, v[:i])
	for ; i < len(v); i++ {
		if c := v[i]; c != '%' || i+2 >= len(v) || !isHex(v[i+1]) || !isHex(v[i+2]) {
			b = append(b, c)
			continue
		}
		b = append(b, unhex(v[i+1])<<4|unhex(v[i+2]))
		i += 2
	}
	return string(b), utf8.Valid(b)
}

// unhex is the value of a hex digit of either case.
func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
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
