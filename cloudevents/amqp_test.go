package cloudevents

import (
	"errors"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestAMQPHeaders(t *testing.T) {
	checkLeaks(t)
	bin := Event{
		SpecVersion: "1.0", ID: "id-1", Source: "/src", Type: "com.example.t", DataContentType: "application/json",
		Subject: "s", Time: "2018-04-05T17:31:00Z", DataSchema: "https://example.com/s",
		Extensions: map[string]string{"tenant": "acme"},
	}
	attrs := func(prefix string) map[string]any {
		return map[string]any{
			prefix + "specversion": "1.0", prefix + "id": "id-1", prefix + "source": "/src", prefix + "type": "com.example.t",
			prefix + "subject": "s", prefix + "time": "2018-04-05T17:31:00Z", prefix + "dataschema": "https://example.com/s",
			prefix + "tenant": "acme",
		}
	}
	with := func(m map[string]any, k string, v any) map[string]any { m[k] = v; return m }

	structured := bin
	structured.Structured = []byte("{}")
	for name, tc := range map[string]struct {
		c    Convention
		want map[string]any
	}{
		"ce":           {ConventionCE, with(attrs("ce-"), "content-type", "application/json")},
		"cloudEvents_": {ConventionAMQP, attrs("cloudEvents_")},
		"cloudEvents:": {ConventionAMQPColon, attrs("cloudEvents:")},
		"none":         {ConventionBare, with(attrs(""), "content-type", "application/json")},
	} {
		// The same headers in both modes (issue 26: structured events lacked
		// the datacontenttype's).
		for mode, e := range map[string]Event{"binary": bin, "structured": structured} {
			if got := e.AMQPHeaders(tc.c, nil); !maps.Equal(got, tc.want) {
				t.Errorf("%s, %s:\n got %v\nwant %v", name, mode, got, tc.want)
			}
		}
	}
	minimal := Event{SpecVersion: "1.0", ID: "i", Source: "/s", Type: "t"}
	if got, want := minimal.AMQPHeaders(ConventionCE, nil), (map[string]any{"ce-specversion": "1.0", "ce-id": "i", "ce-source": "/s", "ce-type": "t"}); !maps.Equal(got, want) {
		t.Errorf("minimal:\n got %v\nwant %v", got, want)
	}

	// Into existing headers: kept, and overwritten by attributes of the same name.
	dst := map[string]any{"traceparent": "tp", "ce-id": "stale"}
	got := bin.AMQPHeaders(ConventionCE, dst)
	if got["traceparent"] != "tp" || got["ce-id"] != "id-1" || len(got) != 10 {
		t.Errorf("merged headers = %v", got)
	}
}

// The distributed-tracing extension (traceparent, tracestate) and a baggage
// extension are attribute headers like any other, except with the bare
// convention, where their names are the W3C trace context's: there the
// request's context (already in dst) is kept and the extensions are not
// written (issue 26).
func TestAMQPHeadersTraceExtensions(t *testing.T) {
	checkLeaks(t)
	const (
		eventTP   = "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-aaaaaaaaaaaaaaaa-01"
		requestTP = "00-11111111111111111111111111111111-1111111111111111-01"
	)
	e := Event{SpecVersion: "1.0", ID: "i", Source: "/s", Type: "t", Extensions: map[string]string{
		"traceparent": eventTP, "tracestate": "ev=1", "baggage": "ev=1", "tenant": "acme"}}
	for _, c := range []Convention{ConventionCE, ConventionAMQP, ConventionAMQPColon, ConventionBare} {
		for _, request := range []map[string]any{nil, {"traceparent": requestTP, "tracestate": "rq=1", "baggage": "rq=1"}} {
			dst := maps.Clone(request)
			got := e.AMQPHeaders(c, dst)
			for _, name := range []string{"traceparent", "tracestate", "baggage"} {
				if got[name] != request[name] {
					t.Errorf("%v, request context %v: header %s = %v, want the request's %v", c, request != nil, name, got[name], request[name])
				}
				if c == ConventionBare {
					continue
				}
				if got[c.Prefix()+name] != e.Extensions[name] {
					t.Errorf("%v: header %s = %v, want the extension's %q", c, c.Prefix()+name, got[c.Prefix()+name], e.Extensions[name])
				}
			}
			if got[c.Prefix()+"tenant"] != "acme" {
				t.Errorf("%v: other extensions lost: %v", c, got)
			}
		}
	}
}

func TestParseConvention(t *testing.T) {
	checkLeaks(t)
	for s, want := range map[string]Convention{
		"": ConventionCE, "ce": ConventionCE, "CE-": ConventionCE,
		"cloudEvents_": ConventionAMQP, "cloudevents_": ConventionAMQP,
		"cloudEvents:": ConventionAMQPColon, "none": ConventionBare,
	} {
		got, err := ParseConvention(s)
		if err != nil || got != want {
			t.Errorf("ParseConvention(%q) = %v, %v; want %v", s, got, err, want)
		}
		if back, err := ParseConvention(got.String()); err != nil || back != got {
			t.Errorf("ParseConvention(%v.String()) = %v, %v", got, back, err)
		}
	}
	if _, err := ParseConvention("cloudEvents-"); err == nil {
		t.Error("ParseConvention accepted an unknown convention")
	}
}

func TestWrapRequested(t *testing.T) {
	checkLeaks(t)
	for name, tc := range map[string]struct {
		h    http.Header
		want Wrapping
		err  string
	}{
		"nothing":              {http.Header{}, WrapNone, ""},
		"prefer":               {http.Header{"Prefer": {"cloudevents"}}, WrapPreferred, ""},
		"prefer among others":  {http.Header{"Prefer": {"respond-async, CloudEvents; x=1"}}, WrapPreferred, ""},
		"prefer on a 2nd line": {http.Header{"Prefer": {"respond-async", "cloudevents"}}, WrapPreferred, ""},
		"other preference":     {http.Header{"Prefer": {"respond-async", "cloudeventsx"}}, WrapNone, ""},
		"x-cloudevents":        {http.Header{"X-Cloudevents": {"Binary"}}, WrapRequired, ""},
		"x-cloudevents wins":   {http.Header{"X-Cloudevents": {"binary"}, "Prefer": {"cloudevents"}}, WrapRequired, ""},
		"structured":           {http.Header{"X-Cloudevents": {"structured"}}, WrapNone, `X-CloudEvents: "structured" is not supported (only binary)`},
		"twice":                {http.Header{"X-Cloudevents": {"binary", "binary"}}, WrapNone, "X-CloudEvents: given more than once"},
	} {
		got, err := WrapRequested(tc.h)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && err.Error() != tc.err) {
			t.Errorf("%s: WrapRequested = %v, %v; want %v, %q", name, got, err, tc.want, tc.err)
		}
	}
}

func TestWrap(t *testing.T) {
	checkLeaks(t)
	at := time.Date(2026, 3, 4, 5, 6, 7, 890_000_000, time.FixedZone("CET", 3600))
	e, err := Wrap("https://publisher.example/orders", "msg-1", "com.example.order.created", "application/json", at)
	if err != nil {
		t.Fatal(err)
	}
	want := Event{SpecVersion: "1.0", ID: "msg-1", Source: "https://publisher.example/orders", Type: "com.example.order.created",
		DataContentType: "application/json", Time: "2026-03-04T04:06:07.89Z"}
	if e.SpecVersion != want.SpecVersion || e.ID != want.ID || e.Source != want.Source || e.Type != want.Type ||
		e.DataContentType != want.DataContentType || e.Time != want.Time || e.Extensions != nil || e.Structured != nil {
		t.Fatalf("Wrap = %+v\nwant %+v", e, want)
	}
	h := e.AMQPHeaders(ConventionCE, nil)
	if h["ce-id"] != "msg-1" || h["ce-time"] != "2026-03-04T04:06:07.89Z" || h["content-type"] != "application/json" {
		t.Fatalf("headers = %v", h)
	}
	if e, err := Wrap("/src", "m", "t", "", at); err != nil || e.DataContentType != "" {
		t.Fatalf("Wrap without a content type = %+v, %v", e, err)
	}

	for name, tc := range map[string]struct {
		source, id, typ, ct string
		want                string
	}{
		"no X-Type":     {"/src", "m", "", "", "X-Type: required to wrap the message as a CloudEvent (it becomes the event type)"},
		"long X-Type":   {"/src", "m", strings.Repeat("t", 256), "", "X-Type: longer than 255 bytes (it becomes the AMQP type property)"},
		"bad type char": {"/src", "m", "a\x01", "", "X-Type: contains a control character"},
		"bad ct":        {"/src", "m", "t", "nonsense", `Content-Type: "nonsense" is not a media type (RFC 2046)`},
		"no id":         {"/src", "", "t", "", "X-Message-Id: missing (a CloudEvent needs specversion, id, source and type)"},
	} {
		_, err := Wrap(tc.source, tc.id, tc.typ, tc.ct, at)
		if !errors.Is(err, ErrInvalid) || err.Error() != tc.want {
			t.Errorf("%s: err = %v\nwant        %s", name, err, tc.want)
		}
	}
}

func TestCheckSource(t *testing.T) {
	checkLeaks(t)
	for s, ok := range map[string]bool{
		"https://publisher.example/orders": true,
		"/publisher":                       true,
		"urn:publisher:orders":             true,
		"":                                 false,
		"not a uri":                        false,
		"a\nb":                             false,
	} {
		if err := CheckSource(s); (err == nil) != ok {
			t.Errorf("CheckSource(%q) = %v, want ok=%v", s, err, ok)
		}
	}
}
