package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseRequest feeds arbitrary methods, targets, header blocks ("Name:
// value" lines) and bodies through the whole handler. It must never panic,
// must always answer JSON, and must answer 2xx only when Publish was called
// with a message that satisfies every rule of the API, checked here
// independently of the handler's own code.
func FuzzParseRequest(f *testing.F) {
	auth := "Authorization: Bearer " + testToken + "\n"
	f.Add("POST", "/v1/publish/orders/order.created", auth+"Content-Type: application/json", []byte(`{"a":1}`), true)
	f.Add("POST", "/v1/publish/amq.default/q/with/slashes", auth+"X-Message-Id: m-1\nX-Priority: 9\nX-Expiration: 0100", []byte("x"), false)
	f.Add("POST", "/v1/publish/ex", auth+"X-Persistent: False\nX-Mandatory: TRUE\nX-Header-A: 1\nx-header-a: 2", []byte{}, true)
	f.Add("POST", "/v1/publish/ex/a%2F%2Fb%2E%2E", auth+"X-Header-: v", []byte("body"), true)
	f.Add("POST", "/v1/publish/bad%24/rk", auth, []byte("x"), true)
	f.Add("POST", "/v1/publish//rk", auth, []byte(nil), true)
	f.Add("GET", "/v1/publish/ex/rk", auth, []byte(nil), true)
	f.Add("POST", "/v1/publish/ex/rk", "Authorization: bearer wrong", []byte(nil), true)
	f.Add("POST", "/v1/publish/ex/rk", auth+"X-Expiration: 2147483648\nX-Priority: 256", []byte(strings.Repeat("b", 65)), false)
	f.Add("POST", "/v1/publish/ex/rk", auth+"X-Message-Id: \xff\"<\u2028", []byte("x"), true)

	f.Fuzz(func(t *testing.T, method, target, headers string, body []byte, announce bool) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		hdr := make(http.Header)
		for line := range strings.SplitSeq(headers, "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			hdr.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		req := &http.Request{
			Method: method, URL: u, RequestURI: target, Host: "example.com",
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: hdr, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: -1,
		}
		if announce {
			req.ContentLength = int64(len(body))
		}
		pub := &fakePublisher{}
		const maxBody = 64
		h := testHandler(pub, nil, func(c *Config) { c.MaxBodyBytes = maxBody })
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)

		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("answer %d is not JSON: %q", w.Code, w.Body)
		}
		calls := pub.received()
		if (w.Code == http.StatusOK) != (len(calls) == 1) || len(calls) > 1 {
			t.Fatalf("status %d after %d Publish calls", w.Code, len(calls))
		}
		if w.Code/100 != 2 {
			return
		}
		if w.Code != http.StatusOK {
			t.Fatalf("status %d", w.Code)
		}
		m := calls[0]
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("2xx for %s %q %q: "+format, append([]any{method, target, headers}, args...)...)
		}
		if method != http.MethodPost {
			fail("method")
		}
		if a := hdr.Values("Authorization"); len(a) != 1 || len(a[0]) < 7 || !strings.EqualFold(a[0][:7], "Bearer ") || a[0][7:] != testToken {
			fail("authorization %q", a)
		}
		if !strings.HasPrefix(u.EscapedPath(), "/v1/publish/") {
			fail("path")
		}
		if len(body) > maxBody || !bytes.Equal(m.Body, body) {
			fail("body %q, published %q", body, m.Body)
		}
		if len(m.Exchange) > 255 || strings.Trim(m.Exchange, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:") != "" {
			fail("exchange %q", m.Exchange)
		}
		if m.Exchange == "amq.default" {
			fail("amq.default not mapped")
		}
		for name, v := range map[string]string{
			"routing key": m.RoutingKey, "message id": m.MessageID, "content type": m.ContentType,
			"content encoding": m.ContentEncoding, "correlation id": m.CorrelationID, "reply to": m.ReplyTo, "type": m.Type,
		} {
			if len(v) > 255 {
				fail("%s longer than 255 bytes", name)
			}
		}
		if m.MessageID == "" || w.Header().Get("X-Message-Id") != m.MessageID {
			fail("message id %q, answered %q", m.MessageID, w.Header().Get("X-Message-Id"))
		}
		if id := hdr.Values("X-Message-Id"); len(id) > 1 || (len(id) == 1 && id[0] != "" && id[0] != m.MessageID) {
			fail("message id %q from %q", m.MessageID, id)
		}
		if e := hdr.Values("X-Expiration"); len(e) > 1 {
			fail("two expirations")
		} else if len(e) == 1 && e[0] != "" {
			n, err := strconv.ParseInt(e[0], 10, 64)
			if err != nil || n < 0 || n > 1<<31-1 || m.Expiration != strconv.FormatInt(n, 10) {
				fail("expiration %q published as %q", e[0], m.Expiration)
			}
		}
		if p := hdr.Values("X-Priority"); len(p) > 1 {
			fail("two priorities")
		} else if len(p) == 1 && p[0] != "" {
			n, err := strconv.Atoi(p[0])
			if err != nil || n < 0 || n > 255 || int(m.Priority) != n {
				fail("priority %q published as %d", p[0], m.Priority)
			}
		}
		for key, got := range map[string]bool{"X-Persistent": m.Persistent, "X-Mandatory": m.Mandatory} {
			v := hdr.Values(key)
			switch {
			case len(v) > 1:
				fail("two %s", key)
			case len(v) == 0 || v[0] == "":
				if !got {
					fail("%s defaults to false", key)
				}
			case !strings.EqualFold(v[0], "true") && !strings.EqualFold(v[0], "false"):
				fail("%s %q accepted", key, v[0])
			case got != strings.EqualFold(v[0], "true"):
				fail("%s %q published as %v", key, v[0], got)
			}
		}
		for k := range hdr {
			if len(k) >= 9 && strings.EqualFold(k[:9], "X-Header-") {
				name := strings.ToLower(k[9:])
				if _, ok := m.Headers[name]; !ok || name == "" || len(name) > 255 {
					fail("header %q published as %v", k, m.Headers)
				}
			}
		}
	})
}

// FuzzAppendJSONString checks the hand-written JSON string encoder against
// encoding/json.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `"\`, "\x00\x1f\b\f\n\r\t", "<&>", "\u2028\u2029", "\xff\xfe", "héllo ☃", "a\xc3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendJSONString(%q) = %s, want %s", s, got, want)
		}
	})
}
