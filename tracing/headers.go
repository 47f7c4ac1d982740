package tracing

import (
	"net/http"
	"strings"
)

// AMQP header names of the propagated context: the W3C names, lowercase, as
// consumers' propagators look them up (W3C Trace Context: AMQP protocol uses
// the same names as application properties).
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
	HeaderBaggage     = "baggage"
)

// maxBaggageBytes is W3C Baggage's limit on the whole header value.
const maxBaggageBytes = 8192

// Headers is the trace context a request carried: the W3C traceparent,
// tracestate and baggage values, each "" when absent or dropped. It is what
// goes into the AMQP headers of every message the request publishes, with or
// without tracing. The zero value carries nothing.
type Headers struct {
	Traceparent string
	Tracestate  string
	Baggage     string
}

// IsZero reports whether h carries nothing.
func (h Headers) IsZero() bool { return h == Headers{} }

// FromRequest reads the trace context of a request's headers, validated, and
// never fails:
//
//   - traceparent is kept only when it parses exactly as the OpenTelemetry
//     W3C TraceContext propagator parses it (version 00-fe, lowercase hex,
//     non-zero trace and span ids, no extra fields or reserved flags in
//     version 00); a malformed one, or more than one, is dropped, and then
//     tracestate is dropped too (W3C Trace Context §3.3: a vendor that cannot
//     parse traceparent does not use tracestate);
//   - tracestate lines are joined with "," (RFC 9110 allows any proxy to
//     split or join them) and kept only when the whole list is valid by the
//     same rules as the propagator's (at most 32 members, valid keys and
//     values, no duplicate keys);
//   - baggage lines are joined likewise and kept when the value is printable
//     ASCII of at most 8192 bytes (W3C Baggage's limit). Its members are not
//     parsed here; with tracing on, the propagator parses them and drops
//     invalid ones.
//
// It does not allocate unless a header was given on several lines.
func FromRequest(hdr http.Header) Headers {
	var h Headers
	tp := hdr["Traceparent"]
	if len(tp) != 1 || !validTraceparent(tp[0]) {
		h.Baggage = baggage(hdr["Baggage"])
		return h
	}
	h.Traceparent = tp[0]
	if ts := joined(hdr["Tracestate"]); validTracestate(ts) {
		h.Tracestate = ts
	}
	h.Baggage = baggage(hdr["Baggage"])
	return h
}

// FromTable reads the trace context a message's own headers carry (an entry
// of a batch or stream with its own "traceparent"), by the same rules as
// FromRequest. Values that are not strings count as absent.
func FromTable(t map[string]any) Headers {
	var h Headers
	tp, _ := t[HeaderTraceparent].(string)
	if validTraceparent(tp) {
		h.Traceparent = tp
		if ts, _ := t[HeaderTracestate].(string); validTracestate(ts) {
			h.Tracestate = ts
		}
	}
	if b, _ := t[HeaderBaggage].(string); validBaggage(b) {
		h.Baggage = b
	}
	return h
}

// Apply writes h into a message's AMQP headers and returns them (headers is
// created when nil and there is something to write). The message's own
// context wins over h: a valid own traceparent keeps its tracestate and h's
// are not written; an own traceparent that is malformed is deleted with its
// tracestate, and h's are written instead; an own baggage is kept, a
// malformed one replaced. Nothing is allocated beyond headers itself and
// boxing the strings it writes.
func (h Headers) Apply(headers map[string]any) map[string]any {
	if len(headers) > 0 {
		own := FromTable(headers)
		if own.Traceparent != "" {
			if own.Tracestate == "" {
				delete(headers, HeaderTracestate)
			}
			h.Traceparent, h.Tracestate = "", ""
		} else {
			delete(headers, HeaderTraceparent)
			delete(headers, HeaderTracestate)
		}
		if own.Baggage != "" {
			h.Baggage = ""
		} else {
			delete(headers, HeaderBaggage)
		}
	}
	if h.IsZero() {
		return headers
	}
	if headers == nil {
		headers = make(map[string]any, 3)
	}
	if h.Traceparent != "" {
		headers[HeaderTraceparent] = h.Traceparent
	}
	if h.Tracestate != "" {
		headers[HeaderTracestate] = h.Tracestate
	}
	if h.Baggage != "" {
		headers[HeaderBaggage] = h.Baggage
	}
	return headers
}

// joined is the header's lines joined with ",", "" when absent.
func joined(lines []string) string {
	switch len(lines) {
	case 0:
		return ""
	case 1:
		return lines[0]
	default:
		return strings.Join(lines, ",")
	}
}

func baggage(lines []string) string {
	if b := joined(lines); validBaggage(b) {
		return b
	}
	return ""
}

// validBaggage: printable ASCII (and tabs, as OWS), at most 8192 bytes.
func validBaggage(b string) bool {
	if b == "" || len(b) > maxBaggageBytes {
		return false
	}
	for i := 0; i < len(b); i++ {
		if c := b[i]; (c < 0x20 || c > 0x7e) && c != '\t' {
			return false
		}
	}
	return true
}

// validTraceparent reports whether the OpenTelemetry TraceContext propagator
// (go.opentelemetry.io/otel/propagation, whose parser is unexported) would
// extract a valid span context from tp; it follows that parser step by step,
// and TestTraceparentMatchesPropagator holds the two together.
func validTraceparent(tp string) bool {
	if tp == "" {
		return false
	}
	h := tp
	var ver [1]byte
	if !hexPart(ver[:], &h, 2) || ver[0] == 0xff {
		return false
	}
	var tid [16]byte
	if !hexPart(tid[:], &h, 32) || tid == [16]byte{} {
		return false
	}
	var sid [8]byte
	if !hexPart(sid[:], &h, 16) || sid == [8]byte{} {
		return false
	}
	var flags [1]byte
	if !hexPart(flags[:], &h, 2) {
		return false
	}
	// Version 00 allows no further fields and only the sampled and random
	// flags; later versions may append fields after a '-'.
	return ver[0] != 0 || (h == "" && flags[0] <= 3)
}

// hexPart decodes the next '-'-separated field of *h, which must be n
// lowercase hex digits, into dst, and advances *h past it.
func hexPart(dst []byte, h *string, n int) bool {
	part, rest, _ := strings.Cut(*h, "-")
	*h = rest
	if len(part) != n {
		return false
	}
	for i := 0; i < n; i += 2 {
		hi, ok1 := unhex(part[i])
		lo, ok2 := unhex(part[i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i/2] = hi<<4 | lo
	}
	return true
}

// unhex decodes a lowercase hex digit; W3C Trace Context forbids uppercase.
func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// maxTracestateMembers is W3C Trace Context's limit on list members.
const maxTracestateMembers = 32

// validTracestate reports whether trace.ParseTraceState accepts ts without
// error and ts is not empty; it follows that parser (members split on ',',
// empty members skipped, at most 32, keys and values by the W3C grammar, no
// duplicate keys) without allocating. TestTracestateMatchesParser holds the
// two together.
func validTracestate(ts string) bool {
	if ts == "" {
		return false
	}
	var keys [maxTracestateMembers]string
	n := 0
	for rest := ts; rest != ""; {
		var m string
		m, rest, _ = strings.Cut(rest, ",")
		if m == "" {
			continue
		}
		key, val, ok := strings.Cut(m, "=")
		if !ok {
			return false
		}
		key = strings.TrimLeft(key, " \t")
		val = strings.TrimRight(val, " \t")
		if !validTracestateKey(key) || !validTracestateValue(val) {
			return false
		}
		if n == maxTracestateMembers {
			return false
		}
		for _, k := range keys[:n] {
			if k == key {
				return false
			}
		}
		keys[n] = key
		n++
	}
	return n > 0
}

// validTracestateKey: simple-key = lcalpha 0*255(keychar), or
// tenant-id "@" system-id with tenant-id = (lcalpha / DIGIT) 0*240(keychar)
// and system-id = lcalpha 0*13(keychar).
func validTracestateKey(key string) bool {
	tenant, system, multi := strings.Cut(key, "@")
	if !multi {
		return keyPart(key, 255, false)
	}
	return keyPart(tenant, 240, true) && keyPart(system, 13, false)
}

func keyPart(s string, maxRest int, digitFirst bool) bool {
	if s == "" || len(s)-1 > maxRest {
		return false
	}
	c := s[0]
	if !('a' <= c && c <= 'z') && !(digitFirst && '0' <= c && c <= '9') {
		return false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '_', c == '-', c == '*', c == '/':
		default:
			return false
		}
	}
	return true
}

// validTracestateValue: 1 to 256 printable ASCII characters other than ','
// and '=', the last one not a space.
func validTracestateValue(v string) bool {
	n := len(v)
	if n == 0 || n > 256 {
		return false
	}
	for i := 0; i < n; i++ {
		c := v[i]
		if c < 0x20 || c > 0x7e || c == ',' || c == '=' {
			return false
		}
	}
	return v[n-1] != ' '
}
