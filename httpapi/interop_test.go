package httpapi

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/publisher-dev/publisher/cloudevents"
)

const (
	validTP  = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	validTP2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
)

func publishReq(body string, hdr map[string]string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/v1/publish/amq.default/q", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return req
}

// The request's traceparent, tracestate and baggage go into the message as
// headers of the same names; a malformed traceparent is dropped (with its
// tracestate) and never fails the publish.
func TestTraceContextCarried(t *testing.T) {
	checkLeaks(t)
	for _, tt := range []struct {
		name      string
		hdr       map[string]string
		wantTP    string
		wantState string
	}{
		{"valid", map[string]string{"Traceparent": validTP, "Tracestate": "congo=t61rcWkgMzE", "Baggage": "tenant=acme"}, validTP, "congo=t61rcWkgMzE"},
		{"malformed", map[string]string{"Traceparent": "00-zz-00f067aa0ba902b7-01", "Tracestate": "congo=t61rcWkgMzE"}, "", ""},
		{"uppercase hex", map[string]string{"Traceparent": strings.ToUpper(validTP)}, "", ""},
		{"all-zero trace id", map[string]string{"Traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, "", ""},
		{"none", nil, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pub := &fakePublisher{}
			rec := httptest.NewRecorder()
			testHandler(pub, nil, func(c *Config) { c.MaxBodyBytes = 1024 }).ServeHTTP(rec, publishReq("x", tt.hdr))
			if rec.Code != 200 {
				t.Fatalf("code %d %s", rec.Code, rec.Body)
			}
			h := pub.received()[0].Headers
			if got, _ := h["traceparent"].(string); got != tt.wantTP {
				t.Errorf("traceparent header %q, want %q", got, tt.wantTP)
			}
			if got, _ := h["tracestate"].(string); got != tt.wantState {
				t.Errorf("tracestate header %q, want %q", got, tt.wantState)
			}
			if tt.name == "valid" && h["baggage"] != "tenant=acme" {
				t.Errorf("baggage %v", h["baggage"])
			}
		})
	}
}

// In a batch, an entry's own traceparent wins over the request's.
func TestBatchEntryTraceparentWins(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	h := testHandler(pub, nil, nil)
	body := `{"messages": [{"exchange": "amq.default", "routing_key": "q"},
		{"exchange": "amq.default", "routing_key": "q", "headers": {"traceparent": "` + validTP2 + `"}}]}`
	code, _, raw := postBatch(t, h, body, map[string]string{"Traceparent": validTP})
	if code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	got := pub.received()
	if got[0].Headers["traceparent"] != validTP || got[1].Headers["traceparent"] != validTP2 {
		t.Fatalf("traceparents %v and %v", got[0].Headers["traceparent"], got[1].Headers["traceparent"])
	}
}

func TestCloudEventsBinary(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	h := testHandler(pub, nil, func(c *Config) { c.MaxBodyBytes = 1024 })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, publishReq(`{"n":1}`, map[string]string{
		"Content-Type": "application/json", "Ce-Specversion": "1.0", "Ce-Id": "evt-1", "Ce-Source": "/orders",
		"Ce-Type": "com.example.order.created", "Ce-Subject": "order-42", "Ce-Time": "2026-12-01T10:00:00Z", "Ce-Tenant": "acme",
	}))
	if rec.Code != 200 {
		t.Fatalf("code %d %s", rec.Code, rec.Body)
	}
	m := pub.received()[0]
	if m.MessageID != "evt-1" || m.Type != "com.example.order.created" || m.ContentType != "application/json" || string(m.Body) != `{"n":1}` {
		t.Fatalf("published %+v", m)
	}
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "evt-1", "ce-source": "/orders",
		"ce-type": "com.example.order.created", "ce-subject": "order-42", "ce-time": "2026-12-01T10:00:00Z", "ce-tenant": "acme"} {
		if m.Headers[k] != v {
			t.Errorf("header %s = %v, want %q (headers %v)", k, m.Headers[k], v, m.Headers)
		}
	}
	// The other convention, as a setting.
	pub = &fakePublisher{}
	h = testHandler(pub, nil, func(c *Config) { c.CloudEvents.Convention = cloudevents.ConventionAMQP })
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, publishReq("x", map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "e2", "Ce-Source": "/s", "Ce-Type": "t"}))
	if rec.Code != 200 || pub.received()[0].Headers["cloudEvents_id"] != "e2" {
		t.Fatalf("code %d, headers %v", rec.Code, pub.received())
	}
}

// An invalid CloudEvent is a 400 naming the attribute; nothing is published.
func TestCloudEventsInvalid(t *testing.T) {
	checkLeaks(t)
	base := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "e", "Ce-Source": "/s", "Ce-Type": "t"}
	with := func(k, v string) map[string]string {
		h := map[string]string{}
		for a, b := range base {
			h[a] = b
		}
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
		return h
	}
	for _, tt := range []struct {
		name string
		hdr  map[string]string
		body string
		want string
	}{
		{"no id", with("Ce-Id", ""), "x", "ce-id"},
		{"no source", with("Ce-Source", ""), "x", "ce-source"},
		{"no specversion", with("Ce-Specversion", ""), "x", "ce-specversion"},
		{"bad time", with("Ce-Time", "yesterday"), "x", "ce-time"},
		{"bad specversion", with("Ce-Specversion", "0.3"), "x", "ce-specversion"},
		{"id differs from X-Message-Id", with("X-Message-Id", "other"), "x", "X-Message-Id"},
		{"structured without type", map[string]string{"Content-Type": "application/cloudevents+json"}, `{"specversion":"1.0","id":"e","source":"/s"}`, "type"},
		{"structured not JSON", map[string]string{"Content-Type": "application/cloudevents+json"}, `{"specversion":`, "invalid CloudEvent"},
		{"batch to the single route", map[string]string{"Content-Type": "application/cloudevents-batch+json"}, `[]`, "/v1/batch"},
		{"X-CloudEvents without a source", map[string]string{"X-CloudEvents": "binary", "X-Type": "t"}, "x", "PUBLISHER_CLOUDEVENTS_SOURCE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pub := &fakePublisher{}
			rec := httptest.NewRecorder()
			testHandler(pub, nil, func(c *Config) { c.MaxBodyBytes = 1024 }).ServeHTTP(rec, publishReq(tt.body, tt.hdr))
			if rec.Code/100 != 4 || !strings.Contains(rec.Body.String(), tt.want) {
				t.Fatalf("code %d %s, want a 4xx naming %q", rec.Code, rec.Body, tt.want)
			}
			if len(pub.received()) != 0 {
				t.Fatal("an invalid event was published")
			}
		})
	}
}

// Structured mode is published as is, content type kept, message_id = id.
func TestCloudEventsStructured(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	body := `{"specversion":"1.0","id":"evt-9","source":"/orders","type":"order.paid","datacontenttype":"application/json","data":{"n":9}}`
	rec := httptest.NewRecorder()
	testHandler(pub, nil, func(c *Config) { c.MaxBodyBytes = 1024 }).ServeHTTP(rec, publishReq(body, map[string]string{"Content-Type": "application/cloudevents+json"}))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"message_id":"evt-9"`) {
		t.Fatalf("code %d %s", rec.Code, rec.Body)
	}
	m := pub.received()[0]
	if string(m.Body) != body || m.ContentType != "application/cloudevents+json" || m.MessageID != "evt-9" || m.Type != "order.paid" || m.Headers["ce-source"] != "/orders" {
		t.Fatalf("published %+v", m)
	}
}

// A CloudEvents batch to /v1/batch: one result per event, each published as
// is to the query's exchange, the routing key its type by default.
func TestCloudEventsBatch(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	h := testHandler(pub, nil, func(c *Config) { c.MaxBodyBytes = 1024 })
	body := `[{"specversion":"1.0","id":"b-1","source":"/s","type":"order.created"},
		{"specversion":"1.0","id":"b-2","source":"/s"},
		{"specversion":"1.0","id":"b-3","source":"/s","type":"order.paid","data":"x"}]`
	req := httptest.NewRequest(http.MethodPost, "/v1/batch?exchange=amq.default", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/cloudevents-batch+json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 207 {
		t.Fatalf("code %d %s", rec.Code, rec.Body)
	}
	for _, want := range []string{`"message_id":"b-1","status":200`, `"message_id":"b-2","status":400`, `"message_id":"b-3","status":200`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("answer %s lacks %s", rec.Body, want)
		}
	}
	got := pub.received()
	if len(got) != 2 || got[0].RoutingKey != "order.created" || got[1].RoutingKey != "order.paid" ||
		got[0].ContentType != "application/cloudevents+json" || !strings.HasPrefix(string(got[0].Body), `{"specversion"`) {
		t.Fatalf("published %+v", got)
	}
	// Without ?exchange= the batch is refused whole.
	req = httptest.NewRequest(http.MethodPost, "/v1/batch", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/cloudevents-batch+json")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "exchange") {
		t.Fatalf("without ?exchange=: %d %s", rec.Code, rec.Body)
	}
}

// With PUBLISHER_CLOUDEVENTS_SOURCE a plain request may ask to be wrapped:
// id = the message id, type = X-Type, source = the setting.
func TestCloudEventsWrap(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	h := testHandler(pub, nil, func(c *Config) { c.CloudEvents.Source = "https://orders.example.com" })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, publishReq("x", map[string]string{"Prefer": "cloudevents", "X-Type": "order.created", "X-Message-Id": "w-1"}))
	if rec.Code != 200 || rec.Header().Get("Preference-Applied") != "cloudevents" {
		t.Fatalf("code %d, Preference-Applied %q: %s", rec.Code, rec.Header().Get("Preference-Applied"), rec.Body)
	}
	m := pub.received()[0]
	if m.Headers["ce-id"] != "w-1" || m.Headers["ce-type"] != "order.created" || m.Headers["ce-source"] != "https://orders.example.com" ||
		m.Headers["ce-specversion"] != "1.0" || m.Headers["ce-time"] == nil {
		t.Fatalf("headers %v", m.Headers)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, publishReq("x", map[string]string{"X-CloudEvents": "binary"})) // no X-Type
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "X-Type") {
		t.Fatalf("wrapping without X-Type: %d %s", rec.Code, rec.Body)
	}
}

// A 400 for an invalid event echoes the event's id as message_id (body and
// X-Message-Id header) whenever the request named one valid on its own;
// an X-Message-Id is echoed rather than the event's (issue 26).
func TestCloudEventsInvalidEchoesID(t *testing.T) {
	checkLeaks(t)
	ce := func(over map[string]string) map[string]string {
		h := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "e-7", "Ce-Source": "/s", "Ce-Type": "t"}
		for k, v := range over {
			h[k] = v
		}
		return h
	}
	structured := map[string]string{"Content-Type": "application/cloudevents+json"}
	for _, tt := range []struct {
		name   string
		hdr    map[string]string
		body   string
		wantID string // "" for none
	}{
		{"binary, bad time", ce(map[string]string{"Ce-Time": "yesterday"}), "x", "e-7"},
		{"binary, specversion 0.3", ce(map[string]string{"Ce-Specversion": "0.3"}), "x", "e-7"},
		{"binary, bad extension name", ce(map[string]string{"Ce-Bad_name": "v"}), "x", "e-7"},
		{"binary, escape not UTF-8", ce(map[string]string{"Ce-Subject": "%C0%A0"}), "x", "e-7"},
		{"binary, percent-encoded id", ce(map[string]string{"Ce-Id": "e%207", "Ce-Source": ""}), "x", "e 7"},
		{"binary, id too long", ce(map[string]string{"Ce-Id": strings.Repeat("i", 256)}), "x", ""},
		{"binary, X-Message-Id differs", ce(map[string]string{"X-Message-Id": "mine"}), "x", "mine"},
		{"binary, X-Message-Id and a bad event", ce(map[string]string{"X-Message-Id": "mine", "Ce-Type": ""}), "x", "mine"},
		{"structured, no type", structured, `{"specversion":"1.0","id":"s-7","source":"/s"}`, "s-7"},
		{"structured, specversion 0.3", structured, `{"specversion":"0.3","id":"s-8","source":"/s","type":"t"}`, "s-8"},
		{"structured, id not a string", structured, `{"specversion":"1.0","id":7,"source":"/s","type":"t"}`, ""},
		{"structured, not JSON", structured, `{"id":"s-9",`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pub := &fakePublisher{}
			rec := httptest.NewRecorder()
			testHandler(pub, nil, func(c *Config) { c.MaxBodyBytes = 1024 }).ServeHTTP(rec, publishReq(tt.body, tt.hdr))
			var ans struct {
				Error     string  `json:"error"`
				MessageID *string `json:"message_id"`
			}
			if rec.Code != 400 || json.Unmarshal(rec.Body.Bytes(), &ans) != nil || ans.Error == "" {
				t.Fatalf("code %d %s, want a 400", rec.Code, rec.Body)
			}
			got := ""
			if ans.MessageID != nil {
				got = *ans.MessageID
				if got == "" {
					t.Fatalf("an empty message_id: %s", rec.Body)
				}
			}
			if got != tt.wantID || rec.Header().Get("X-Message-Id") != tt.wantID {
				t.Fatalf("message_id %q, X-Message-Id %q; want %q (%s)", got, rec.Header().Get("X-Message-Id"), tt.wantID, rec.Body)
			}
			if len(pub.received()) != 0 {
				t.Fatal("an invalid event was published")
			}
		})
	}
}

// In a CloudEvents batch, an invalid event's result names its id when it is
// valid on its own, and no other.
func TestCloudEventsBatchInvalidEchoesID(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	h := testHandler(pub, nil, func(c *Config) { c.MaxBodyBytes = 1024 })
	body := `[{"specversion":"0.3","id":"b-1","source":"/s","type":"t"},
		{"specversion":"1.0","id":"` + strings.Repeat("i", 256) + `","source":"/s","type":"t"}]`
	req := httptest.NewRequest(http.MethodPost, "/v1/batch?exchange=amq.default", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/cloudevents-batch+json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var ans struct {
		Results []struct {
			MessageID string `json:"message_id"`
			Status    int    `json:"status"`
			Error     string `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || len(ans.Results) != 2 {
		t.Fatalf("code %d %s: %v", rec.Code, rec.Body, err)
	}
	if r := ans.Results[0]; r.MessageID != "b-1" || r.Status != 400 || !strings.Contains(r.Error, `"0.3" is not supported`) {
		t.Errorf("result 0 %+v", r)
	}
	if r := ans.Results[1]; r.MessageID != "" || r.Status != 400 || !strings.Contains(r.Error, "longer than 255 bytes") {
		t.Errorf("result 1 %+v", r)
	}
}

// Binary-mode values are decoded by the HTTP binding's rule, robustly: a '%'
// that starts no escape is literal, escapes are decoded, raw UTF-8 is kept;
// the decoded values are the headers.
func TestCloudEventsBinaryDecoding(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	rec := httptest.NewRecorder()
	testHandler(pub, nil, func(c *Config) { c.MaxBodyBytes = 1024 }).ServeHTTP(rec, publishReq("x", map[string]string{
		"Ce-Specversion": "1.0", "Ce-Id": "d-1", "Ce-Source": "/s", "Ce-Type": "t",
		"Ce-Subject": "100%", "Ce-Share": "50%", "Ce-Spaced": "a%20b", "Ce-Raw": `café "€"`,
	}))
	if rec.Code != 200 {
		t.Fatalf("code %d %s", rec.Code, rec.Body)
	}
	m := pub.received()[0]
	for k, v := range map[string]string{"ce-subject": "100%", "ce-share": "50%", "ce-spaced": "a b", "ce-raw": `café "€"`} {
		if m.Headers[k] != v {
			t.Errorf("header %s = %q, want %q", k, m.Headers[k], v)
		}
	}
}

// Structured events carry the same attribute headers as binary ones,
// datacontenttype's content-type header included (issue 26).
func TestCloudEventsSameHeadersBothModes(t *testing.T) {
	checkLeaks(t)
	for _, c := range []cloudevents.Convention{cloudevents.ConventionCE, cloudevents.ConventionAMQP, cloudevents.ConventionAMQPColon, cloudevents.ConventionBare} {
		pub := &fakePublisher{}
		h := testHandler(pub, nil, func(cfg *Config) { cfg.MaxBodyBytes = 1024; cfg.CloudEvents.Convention = c })
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, publishReq(`{"n":1}`, map[string]string{"Content-Type": "application/json",
			"Ce-Specversion": "1.0", "Ce-Id": "m-1", "Ce-Source": "/s", "Ce-Type": "t", "Ce-Subject": "sub", "Ce-Tenant": "acme"}))
		if rec.Code != 200 {
			t.Fatalf("%v, binary: %d %s", c, rec.Code, rec.Body)
		}
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, publishReq(`{"specversion":"1.0","id":"m-1","source":"/s","type":"t","subject":"sub","tenant":"acme","datacontenttype":"application/json","data":{"n":1}}`,
			map[string]string{"Content-Type": "application/cloudevents+json"}))
		if rec.Code != 200 {
			t.Fatalf("%v, structured: %d %s", c, rec.Code, rec.Body)
		}
		got := pub.received()
		bin, str := got[0].Headers, got[1].Headers
		if !maps.Equal(bin, str) {
			t.Errorf("%v: binary headers %v, structured %v", c, bin, str)
		}
		wantCT := c == cloudevents.ConventionCE || c == cloudevents.ConventionBare
		if _, ok := str["content-type"]; ok != wantCT || str[c.Prefix()+"tenant"] != "acme" {
			t.Errorf("%v: structured headers %v", c, str)
		}
		if got[0].ContentType != "application/json" || got[1].ContentType != "application/cloudevents+json" {
			t.Errorf("%v: content types %q, %q", c, got[0].ContentType, got[1].ContentType)
		}
	}
}

// With PUBLISHER_CLOUDEVENTS_HEADERS=none an event's traceparent and
// tracestate extensions share the W3C names: the request's trace context
// wins and the extensions are not written; with ce- both are kept, under
// their own names (issue 26).
func TestCloudEventsTraceExtensionPrecedence(t *testing.T) {
	checkLeaks(t)
	const eventTP = "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-aaaaaaaaaaaaaaaa-01"
	for _, tt := range []struct {
		c                 cloudevents.Convention
		requestTP         string
		wantTP, wantState any
		wantCE            bool
	}{
		{cloudevents.ConventionBare, validTP, validTP, "rq=1", false},
		{cloudevents.ConventionBare, "", nil, nil, false},
		{cloudevents.ConventionCE, validTP, validTP, "rq=1", true},
		{cloudevents.ConventionCE, "", nil, nil, true},
	} {
		hdr := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "t-1", "Ce-Source": "/s", "Ce-Type": "t",
			"Ce-Traceparent": eventTP, "Ce-Tracestate": "ev=1"}
		if tt.requestTP != "" {
			hdr["Traceparent"], hdr["Tracestate"] = tt.requestTP, "rq=1"
		}
		pub := &fakePublisher{}
		rec := httptest.NewRecorder()
		testHandler(pub, nil, func(cfg *Config) { cfg.CloudEvents.Convention = tt.c }).ServeHTTP(rec, publishReq("x", hdr))
		if rec.Code != 200 {
			t.Fatalf("%v: %d %s", tt.c, rec.Code, rec.Body)
		}
		m := pub.received()[0].Headers
		if m["traceparent"] != tt.wantTP || m["tracestate"] != tt.wantState {
			t.Errorf("%v, request traceparent %q: traceparent %v, tracestate %v; want %v, %v", tt.c, tt.requestTP, m["traceparent"], m["tracestate"], tt.wantTP, tt.wantState)
		}
		if tt.wantCE && (m["ce-traceparent"] != eventTP || m["ce-tracestate"] != "ev=1") {
			t.Errorf("%v: the extensions are lost: %v", tt.c, m)
		}
	}
}
