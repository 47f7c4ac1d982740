package cloudevents

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// binaryHeaders is a valid binary-mode request's headers, with overrides
// (a "" value deletes the header; "\x00multi" sends two lines).
func binaryHeaders(over map[string]string) http.Header {
	h := http.Header{}
	base := map[string]string{
		"ce-specversion": "1.0",
		"ce-id":          "A234-1234-1234",
		"ce-source":      "https://example.com/orders",
		"ce-type":        "com.example.order.created",
		"Content-Type":   "application/json",
	}
	maps.Copy(base, over)
	for k, v := range base {
		switch v {
		case "":
		case "\x00multi":
			h.Add(k, "a")
			h.Add(k, "b")
		default:
			h.Set(k, v)
		}
	}
	return h
}

func TestFromBinaryValid(t *testing.T) {
	checkLeaks(t)
	h := binaryHeaders(map[string]string{
		"CE-Subject":    "orders/42",
		"ce-time":       "2018-04-05T17:31:00.123+02:00",
		"ce-dataschema": "https://example.com/schemas/order.json#v1",
		"ce-Tenant":     "acme",           // names are case-insensitive
		"ce-comexample": "x%20y%E2%82%AC", // percent-encoded
		"ce-quoted":     `"a \"b\" c"`,    // an RFC 9110 quoted-string
		"ce-n":          "123",
		// A '%' that starts no escape is literal (issue 26: sdk-go sends
		// values raw); escapes are still decoded, lower-case hex included.
		"ce-pct":   "100%",
		"ce-pcts":  "50%off %% %4 %%41 a%2",
		"ce-lower": "x%e2%82%ac",
		"ce-raw":   "café € \"hi\"", // raw UTF-8 and inner quotes, as sdk-go sends them
		"ce-open":  `"abc`,          // not a whole quoted-string: as it is
		"ce-ends":  `"a" and "b"`,   // neither
	})
	e, ok, err := FromBinary(h)
	if !ok || err != nil {
		t.Fatalf("FromBinary = %v, %v", ok, err)
	}
	want := Event{
		SpecVersion: "1.0", ID: "A234-1234-1234", Source: "https://example.com/orders",
		Type: "com.example.order.created", DataContentType: "application/json",
		Subject: "orders/42", Time: "2018-04-05T17:31:00.123+02:00",
		DataSchema: "https://example.com/schemas/order.json#v1",
		Extensions: map[string]string{"tenant": "acme", "comexample": "x y€", "quoted": `a "b" c`, "n": "123",
			"pct": "100%", "pcts": "50%off %% %4 %A a%2", "lower": "x€", "raw": `café € "hi"`, "open": `"abc`, "ends": `"a" and "b"`},
	}
	if e.SpecVersion != want.SpecVersion || e.ID != want.ID || e.Source != want.Source || e.Type != want.Type ||
		e.DataContentType != want.DataContentType || e.Subject != want.Subject || e.Time != want.Time ||
		e.DataSchema != want.DataSchema || !maps.Equal(e.Extensions, want.Extensions) || e.Structured != nil {
		t.Fatalf("FromBinary =\n%+v\nwant\n%+v", e, want)
	}
}

// On an error in another header, the event still holds its id, read first,
// so that the 400 can name it (issue 26).
func TestFromBinaryKeepsIDOnError(t *testing.T) {
	checkLeaks(t)
	for _, over := range []map[string]string{
		{"ce-aaa": "%C0%A0"},      // sorts before ce-id
		{"ce-specversion": "0.3"}, // fails validation
		{"ce-Bad_Name": "v"},      // an invalid extension name
		{"ce-aaa": "\x00multi"},   // given twice
		{"Content-Type": "json"},  // not a media type
	} {
		e, ok, err := FromBinary(binaryHeaders(over))
		if !ok || err == nil || e.ID != "A234-1234-1234" || !ValidID(e.ID) {
			t.Errorf("%v: FromBinary = id %q, %v, %v; want an error and the id", over, e.ID, ok, err)
		}
	}
	for id, want := range map[string]bool{
		"A234-1234-1234": true, "é": true, strings.Repeat("i", 255): true,
		"": false, strings.Repeat("i", 256): false, "a\nb": false, "\xff": false, "a\ufffeb": false,
	} {
		if ValidID(id) != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, !want, want)
		}
	}
}

func TestFromBinaryNotAnEvent(t *testing.T) {
	checkLeaks(t)
	for name, h := range map[string]http.Header{
		"no ce headers":         {"Content-Type": {"application/json"}, "X-Type": {"t"}},
		"only an extension":     {"Ce-Tenant": {"acme"}},
		"a lookalike header":    {"Cert-Id": {"x"}},
		"subject without event": {"Ce-Subject": {"s"}},
	} {
		if _, ok, err := FromBinary(h); ok || err != nil {
			t.Errorf("%s: FromBinary = %v, %v; want not an event", name, ok, err)
		}
	}
}

func TestFromBinaryErrors(t *testing.T) {
	checkLeaks(t)
	for name, tc := range map[string]struct {
		over map[string]string
		want string // the whole error message
	}{
		"missing specversion":    {map[string]string{"ce-specversion": ""}, "ce-specversion: missing (a CloudEvent needs specversion, id, source and type)"},
		"missing id":             {map[string]string{"ce-id": ""}, "ce-id: missing (a CloudEvent needs specversion, id, source and type)"},
		"missing source":         {map[string]string{"ce-source": ""}, "ce-source: missing (a CloudEvent needs specversion, id, source and type)"},
		"missing type":           {map[string]string{"ce-type": ""}, "ce-type: missing (a CloudEvent needs specversion, id, source and type)"},
		"specversion 0.3":        {map[string]string{"ce-specversion": "0.3"}, `ce-specversion: "0.3" is not supported (only "1.0")`},
		"specversion 1.0.2":      {map[string]string{"ce-specversion": "1.0.2"}, `ce-specversion: "1.0.2" is not supported (only "1.0")`},
		"empty id":               {map[string]string{"ce-id": `""`}, "ce-id: empty"},
		"id twice":               {map[string]string{"ce-id": "\x00multi"}, "ce-id: given more than once"},
		"id too long":            {map[string]string{"ce-id": strings.Repeat("i", 256)}, "ce-id: longer than 255 bytes (it becomes the AMQP message_id)"},
		"type too long":          {map[string]string{"ce-type": strings.Repeat("t", 256)}, "ce-type: longer than 255 bytes (it becomes the AMQP type property)"},
		"source with space":      {map[string]string{"ce-source": "my%20source"}, `ce-source: "my source" is not a URI-reference`},
		"source bad scheme":      {map[string]string{"ce-source": "1http://x"}, `ce-source: "1http://x" is not a URI-reference`},
		"source bad escape":      {map[string]string{"ce-source": "/a%zz"}, `ce-source: "/a%zz" is not a URI-reference`},
		"source bracket in path": {map[string]string{"ce-source": "/a[1]"}, `ce-source: "/a[1]" is not a URI-reference`},
		"time yesterday":         {map[string]string{"ce-time": "yesterday"}, `ce-time: "yesterday" is not an RFC 3339 timestamp`},
		"time without zone":      {map[string]string{"ce-time": "2018-04-05T17:31:00"}, `ce-time: "2018-04-05T17:31:00" is not an RFC 3339 timestamp`},
		"time empty":             {map[string]string{"ce-time": `""`}, `ce-time: "" is not an RFC 3339 timestamp`},
		"dataschema relative":    {map[string]string{"ce-dataschema": "/schemas/order.json"}, `ce-dataschema: "/schemas/order.json" is not an absolute URI`},
		"dataschema empty":       {map[string]string{"ce-dataschema": `""`}, `ce-dataschema: "" is not an absolute URI`},
		"subject empty":          {map[string]string{"ce-subject": `""`}, "ce-subject: empty"},
		"datacontenttype header": {map[string]string{"ce-datacontenttype": "text/plain"}, "ce-datacontenttype: not allowed in binary mode (the Content-Type header is the datacontenttype)"},
		"content type malformed": {map[string]string{"Content-Type": "json"}, `Content-Type: "json" is not a media type (RFC 2046)`},
		"content type twice":     {map[string]string{"Content-Type": "\x00multi"}, "Content-Type: given more than once"},
		"extension with dash":    {map[string]string{"ce-my-ext": "v"}, `ce-my-ext: "my-ext" is not a valid attribute name (lowercase letters a-z and digits only)`},
		"extension with _":       {map[string]string{"ce-my_ext": "v"}, `ce-my_ext: "my_ext" is not a valid attribute name (lowercase letters a-z and digits only)`},
		"extension data":         {map[string]string{"ce-data": "v"}, `ce-data: "data" is reserved and cannot be an attribute`},
		"extension empty name":   {map[string]string{"ce-": "v"}, "ce-: empty attribute name"},
		"control character":      {map[string]string{"ce-subject": "a%0Ab"}, "ce-subject: contains a control character"},
		"C1 control character":   {map[string]string{"ce-tenant": "a%C2%85b"}, "ce-tenant: contains a control character"},
		"noncharacter":           {map[string]string{"ce-tenant": "a%EF%BF%BEb"}, "ce-tenant: contains a Unicode noncharacter"},
		"overlong utf-8":         {map[string]string{"ce-subject": "%C0%A0"}, "ce-subject: not valid UTF-8 once percent-decoded (HTTP binding 3.1.3.2)"},
		"escape not utf-8":       {map[string]string{"ce-tenant": "100%FF"}, "ce-tenant: not valid UTF-8 once percent-decoded (HTTP binding 3.1.3.2)"},
		"truncated utf-8":        {map[string]string{"ce-tenant": "%E2%82"}, "ce-tenant: not valid UTF-8 once percent-decoded (HTTP binding 3.1.3.2)"},
		"raw bytes not utf-8":    {map[string]string{"ce-subject": "a\xffb"}, "ce-subject: not valid UTF-8 once percent-decoded (HTTP binding 3.1.3.2)"},
		"long value shortened":   {map[string]string{"ce-time": strings.Repeat("y", 100)}, `ce-time: "` + strings.Repeat("y", 64) + `"... is not an RFC 3339 timestamp`},
	} {
		t.Run(name, func(t *testing.T) {
			_, ok, err := FromBinary(binaryHeaders(tc.over))
			if !ok {
				t.Fatal("not taken for an event")
			}
			var ae *AttributeError
			if !errors.As(err, &ae) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v (%T), want an *AttributeError matching ErrInvalid", err, err)
			}
			if err.Error() != tc.want {
				t.Fatalf("err = %q\nwant  %q", err, tc.want)
			}
		})
	}
}

func TestContentMode(t *testing.T) {
	checkLeaks(t)
	for ct, want := range map[string]Mode{
		"":                             ModeBinary,
		"application/json":             ModeBinary,
		"application/cloudevents+json": ModeStructured,
		"Application/CloudEvents+JSON; charset=utf-8":      ModeStructured,
		"application/cloudevents-batch+json":               ModeBatch,
		"application/cloudevents-batch+json;charset=UTF-8": ModeBatch,
		"application/cloudevents+avro":                     ModeUnsupported,
		"application/cloudevents-batch+xml":                ModeUnsupported,
	} {
		if got := ContentMode(ct); got != want {
			t.Errorf("ContentMode(%q) = %v, want %v", ct, got, want)
		}
	}
}

func TestURIs(t *testing.T) {
	checkLeaks(t)
	refs := map[string]bool{
		"https://github.com/cloudevents":                true,
		"mailto:cncf-wg-serverless@lists.cncf.io":       true,
		"urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66": true,
		"/cloudevents/spec/pull/123":                    true,
		"/sensors/tn-1234567/alerts":                    true,
		"1-555-123-4567":                                true,
		"http://[::1]:8080/x":                           true,
		"http://user@[fe80::1]/":                        true,
		"a/b?c=d#e":                                     true,
		"%41bc":                                         true,
		"":                                              false,
		"has space":                                     false,
		"1a:b":                                          false, // a first segment with ':' and no valid scheme
		"a#b#c":                                         false,
		"/a%2":                                          false,
		"http://exa mple.com":                           false,
		"http://[::1/x":                                 false,
		"/path/[x]":                                     false,
		"é":                                             false,
		"http://host:port/":                             false,
	}
	for s, want := range refs {
		if got := validURIRef(s); got != want {
			t.Errorf("validURIRef(%q) = %v, want %v", s, got, want)
		}
	}
	for s, want := range map[string]bool{
		"https://example.com/schema": true,
		"urn:example:schema":         true,
		"https://x/s.json#/defs/a":   true,
		"/schema":                    false,
		"schema.json":                false,
		"":                           false,
	} {
		if got := validAbsoluteURI(s); got != want {
			t.Errorf("validAbsoluteURI(%q) = %v, want %v", s, got, want)
		}
	}
}

// percentEncode is the HTTP binding's encoding (section 3.1.3.2), as a
// conforming sender does it: space, '"', '%' and every byte outside
// printable ASCII as %XY.
func percentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == '"' || c == '%' || c >= 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// hasEscape reports whether v has a '%' followed by two hex digits.
func hasEscape(v string) bool {
	for i := 0; i+2 < len(v); i++ {
		if v[i] == '%' && isHex(v[i+1]) && isHex(v[i+2]) {
			return true
		}
	}
	return false
}

// FuzzDecodeHeaderValue holds DecodeHeaderValue to url.PathUnescape where
// every '%' starts an escape, to the binding's encoding (what a conforming
// sender writes decodes to the value), and to the robustness rule: a value
// without escapes, not a whole quoted-string, is taken as it is, and only
// invalid UTF-8 is refused.
func FuzzDecodeHeaderValue(f *testing.F) {
	for _, s := range []string{"", "100%", "a%20b", "%C0%A0", "%e2%82%ac", `"a \"b\""`, `"abc`, "%%41", "a%2", "café", "\xff", "%", `""`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, ok := DecodeHeaderValue(v)
		quoted := len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"'
		if !quoted {
			if u, err := url.PathUnescape(v); err == nil && (got != u || ok != utf8.ValidString(u)) {
				t.Fatalf("DecodeHeaderValue(%q) = %q, %v; url.PathUnescape: %q (valid UTF-8: %v)", v, got, ok, u, utf8.ValidString(u))
			}
			if !hasEscape(v) && (got != v || ok != utf8.ValidString(v)) {
				t.Fatalf("DecodeHeaderValue(%q) = %q, %v; want it as it is", v, got, ok)
			}
		}
		if ok && !utf8.ValidString(got) {
			t.Fatalf("DecodeHeaderValue(%q) = %q: ok but not UTF-8", v, got)
		}
		if utf8.ValidString(v) {
			if back, ok := DecodeHeaderValue(percentEncode(v)); !ok || back != v {
				t.Fatalf("the encoding of %q decodes to %q, %v", v, back, ok)
			}
		}
	})
}
