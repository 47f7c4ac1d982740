package main

// CloudEvents sent by github.com/cloudevents/sdk-go/v2 itself, the most used
// Go SDK, which nobody here wrote, through the real binary to a real broker
// (issue 26). sdk-go v2.16.2 writes binary-mode values unencoded (no
// percent-encoding), so these tests hold the service to the robust decoding
// docs/http-api.md states.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/extensions"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/otlptest"
)

// eventTP is the traceparent of the events' distributed-tracing extension,
// another trace than the request's incomingTP.
const eventTP = "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-aaaaaaaaaaaaaaaa-01"

// answer is the service's JSON answer to one request.
type answer struct {
	code int
	body []byte
}

// recorder is an http.RoundTripper that keeps the answers sdk-go receives
// (its client reports only the status), in order.
type recorder struct {
	base *http.Transport
	mu   sync.Mutex
	got  []answer
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	r.mu.Lock()
	r.got = append(r.got, answer{code: resp.StatusCode, body: body})
	r.mu.Unlock()
	return resp, nil
}

// lastAnswer is the last answer received.
func (r *recorder) lastAnswer(t *testing.T) answer {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		t.Fatal("no answer recorded")
	}
	return r.got[len(r.got)-1]
}

// last is the last answer received, decoded.
func (r *recorder) last(t *testing.T) (code int, messageID, errText string) {
	t.Helper()
	a := r.lastAnswer(t)
	var v struct {
		MessageID string `json:"message_id"`
		Error     string `json:"error"`
	}
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("answer %d is not JSON: %q", a.code, a.body)
	}
	return a.code, v.MessageID, v.Error
}

// sdkClient is an sdk-go HTTP client posting to target, whose connections
// are closed when the test ends (goleak), and the recorder of its answers.
func sdkClient(t *testing.T, target string) (cloudevents.Client, *recorder) {
	t.Helper()
	rec := &recorder{base: &http.Transport{}}
	t.Cleanup(rec.base.CloseIdleConnections)
	p, err := cloudevents.NewHTTP(cehttp.WithTarget(target), cehttp.WithClient(http.Client{Transport: rec, Timeout: 60 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	c, err := cloudevents.NewClient(p)
	if err != nil {
		t.Fatal(err)
	}
	return c, rec
}

// sdkEvent is an event with the values sdk-go sends raw: '%' with and
// without a following escape, spaces, quotes, non-ASCII; extensions of
// every type; the distributed-tracing extension; JSON data.
func sdkEvent(t *testing.T, id string) cloudevents.Event {
	t.Helper()
	e := cloudevents.NewEvent()
	e.SetID(id)
	e.SetSource("https://orders.example.com/eu")
	e.SetType("com.example.order.created")
	e.SetSubject("100% sure")
	e.SetTime(time.Date(2026, 12, 1, 10, 0, 0, 123000000, time.FixedZone("", 2*3600)))
	e.SetDataSchema("https://schemas.example.com/order.json#v1")
	for k, v := range map[string]any{
		"share":    "50%",
		"spaced":   "a b  c",
		"quoted":   `say "hi"`,
		"whole":    `"whole"`, // one whole quoted-string: unquoted in binary mode, as the binding says
		"nonascii": "café € 😀",
		"escape":   "a%20b", // an escape, decoded in binary mode: the sdk-go caveat
		"count":    int32(42),
		"flag":     true,
		"ref":      "https://example.com/x?y=1",
	} {
		e.SetExtension(k, v)
	}
	extensions.DistributedTracingExtension{TraceParent: eventTP, TraceState: "ev=1"}.AddTracingAttributes(&e)
	if err := e.SetData(cloudevents.ApplicationJSON, map[string]any{"order": 42, "note": "50% off"}); err != nil {
		t.Fatal(err)
	}
	return e
}

// wantAttrs are the attribute values of sdkEvent as the service must write
// them in every mode (sdk-go writes the time in UTC).
var wantAttrs = map[string]string{
	"specversion": "1.0",
	"source":      "https://orders.example.com/eu",
	"type":        "com.example.order.created",
	"subject":     "100% sure",
	"time":        "2026-12-01T08:00:00.123Z",
	"dataschema":  "https://schemas.example.com/order.json#v1",
	"share":       "50%",
	"spaced":      "a b  c",
	"quoted":      `say "hi"`,
	"nonascii":    "café € 😀",
	"count":       "42",
	"flag":        "true",
	"ref":         "https://example.com/x?y=1",
}

// The values that differ by mode, as docs/http-api.md says: sdk-go writes a
// binary-mode value raw, and the binding's decoding unquotes a whole
// quoted-string and decodes an escape; JSON strings are taken as they are.
var (
	wantBinaryOnly     = map[string]string{"whole": "whole", "escape": "a b"}
	wantStructuredOnly = map[string]string{"whole": `"whole"`, "escape": "a%20b"}
)

// Every PUBLISHER_CLOUDEVENTS_HEADERS setting: sdk-go's binary (with and
// without a request traceparent), structured and batched sends arrive with
// the attributes decoded, the same headers in both modes, datacontenttype's
// content-type header where the convention has one, the trace precedence
// of docs/http-api.md, an AMQP timestamp; a 0.3 event is a 400 that names
// its id.
func TestSDKGoCloudEventsEverySetting(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	for _, setting := range []string{"ce-", "cloudEvents_", "cloudEvents:", "none"} {
		t.Run(setting, func(t *testing.T) {
			prefix := setting
			if setting == "none" {
				prefix = ""
			}
			q := brokertest.TempQueue(t, amqpURL, "svc-sdkgo")
			p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL, "PUBLISHER_CLOUDEVENTS_HEADERS": setting})
			p.waitReady()
			client, rec := sdkClient(t, p.api+"/v1/publish/amq.default/"+q)
			ctx := context.Background()
			send := func(ctx context.Context, e cloudevents.Event) {
				t.Helper()
				if res := client.Send(ctx, e); !cloudevents.IsACK(res) {
					code, _, text := rec.last(t)
					t.Fatalf("send %s: %v (%d %s)", e.ID(), res, code, text)
				}
				if code, id, _ := rec.last(t); code != 200 || id != e.ID() {
					t.Fatalf("send %s: answer %d naming %q", e.ID(), code, id)
				}
			}
			start := time.Now().Truncate(time.Second)
			send(cloudevents.WithEncodingBinary(ctx), sdkEvent(t, "bin-no-tp"))
			withTP := cehttp.WithCustomHeader(cloudevents.WithEncodingBinary(ctx),
				http.Header{"Traceparent": {incomingTP}, "Tracestate": {"rq=1"}})
			send(withTP, sdkEvent(t, "bin-tp"))
			structured := sdkEvent(t, "str-tp")
			send(cehttp.WithCustomHeader(cloudevents.WithEncodingStructured(ctx), http.Header{"Traceparent": {incomingTP}}), structured)

			// A batch, as sdk-go makes it.
			batch := []cloudevents.Event{sdkEvent(t, "batch-1"), sdkEvent(t, "batch-2")}
			req, err := cehttp.NewHTTPRequestFromEvents(ctx, p.api+"/v1/batch?exchange=amq.default&routing_key="+q, batch)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := (&http.Client{Transport: rec, Timeout: 60 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if a := rec.lastAnswer(t); a.code != 200 || !bytes.Contains(a.body, []byte(`"message_id":"batch-2","status":200`)) {
				t.Fatalf("batch: %d %s", a.code, a.body)
			}

			// A 0.3 event is refused, naming its id.
			old := sdkEvent(t, "v03")
			old.SetSpecVersion("0.3")
			if res := client.Send(cloudevents.WithEncodingBinary(ctx), old); cloudevents.IsACK(res) {
				t.Fatal("a 0.3 event was accepted")
			}
			if code, id, text := rec.last(t); code != 400 || id != "v03" || !strings.Contains(text, `"0.3" is not supported`) {
				t.Fatalf("0.3 event: %d naming %q: %s", code, id, text)
			}

			got := consumeAll(t, amqpURL, q, 5)
			end := time.Now()
			for id, d := range got {
				if d.Type != "com.example.order.created" || d.Timestamp.Before(start) || d.Timestamp.After(end) {
					t.Errorf("%s: type %q, timestamp %v (want within %v..%v)", id, d.Type, d.Timestamp, start, end)
				}
				only := wantStructuredOnly
				if strings.HasPrefix(id, "bin-") {
					only = wantBinaryOnly
				}
				for _, want := range []map[string]string{wantAttrs, only} {
					for attr, want := range want {
						if v := d.Headers[prefix+attr]; v != want {
							t.Errorf("%s: header %q = %#v, want %q", id, prefix+attr, v, want)
						}
					}
				}
				if d.Headers[prefix+"id"] != id {
					t.Errorf("%s: header %sid = %v", id, prefix, d.Headers[prefix+"id"])
				}
				// datacontenttype: content-type with ce- and none, only the
				// property (binary) or the body (structured) otherwise.
				ct, hasCT := d.Headers["content-type"]
				if wantCT := setting == "ce-" || setting == "none"; hasCT != wantCT || (hasCT && ct != "application/json") {
					t.Errorf("%s: content-type header %v (present %v)", id, ct, hasCT)
				}
				if _, ok := d.Headers[prefix+"datacontenttype"]; ok {
					t.Errorf("%s: a %sdatacontenttype header", id, prefix)
				}
				// The trace context: the request's, never the event's; the
				// extension under its own name except with none.
				wantTP := any(incomingTP)
				if id == "bin-no-tp" || strings.HasPrefix(id, "batch-") {
					wantTP = nil
				}
				if d.Headers["traceparent"] != wantTP {
					t.Errorf("%s: traceparent %v, want the request's %v", id, d.Headers["traceparent"], wantTP)
				}
				if setting == "none" {
					for k, v := range d.Headers {
						if v == eventTP || v == "ev=1" {
							t.Errorf("%s: the event's trace context in header %s", id, k)
						}
					}
				} else if d.Headers[prefix+"traceparent"] != eventTP || d.Headers[prefix+"tracestate"] != "ev=1" {
					t.Errorf("%s: extension headers %v, %v", id, d.Headers[prefix+"traceparent"], d.Headers[prefix+"tracestate"])
				}
			}
			checkSDKBodies(t, got)
			// The same attribute headers in both modes (but the trace context
			// and the values that differ by mode).
			bin, str := strip(got["bin-tp"].Headers, prefix), strip(got["str-tp"].Headers, prefix)
			if len(bin) != len(str) {
				t.Errorf("binary headers %v\nstructured headers %v", bin, str)
			}
			for k, v := range bin {
				if str[k] != v {
					t.Errorf("header %s: binary %v, structured %v", k, v, str[k])
				}
			}
		})
	}
}

// checkSDKBodies checks the bodies and content types: the data in binary
// mode, the event as sdk-go wrote it in the structured and batched modes.
func checkSDKBodies(t *testing.T, got map[string]amqp.Delivery) {
	t.Helper()
	for id, d := range got {
		switch {
		case strings.HasPrefix(id, "bin-"):
			if d.ContentType != "application/json" || string(d.Body) != `{"note":"50% off","order":42}` {
				t.Errorf("%s: content type %q body %s", id, d.ContentType, d.Body)
			}
		default:
			var e cloudevents.Event
			if err := json.Unmarshal(d.Body, &e); err != nil || e.ID() != id || e.Subject() != "100% sure" ||
				!strings.HasPrefix(d.ContentType, "application/cloudevents+json") {
				t.Errorf("%s: content type %q body %s: %v", id, d.ContentType, d.Body, err)
			}
			if tp, _ := e.Extensions()["traceparent"].(string); tp != eventTP {
				t.Errorf("%s: the body lost the tracing extension: %s", id, d.Body)
			}
		}
	}
}

// strip is headers without the W3C trace context (which differs per
// request), the id and the attributes whose values differ by mode.
func strip(h amqp.Table, prefix string) amqp.Table {
	out := amqp.Table{}
	for k, v := range h {
		switch k {
		case "traceparent", "tracestate", "baggage", prefix + "id", prefix + "whole", prefix + "escape":
		default:
			out[k] = v
		}
	}
	return out
}

// With tracing on and PUBLISHER_CLOUDEVENTS_HEADERS=none, an sdk-go event
// carrying the distributed-tracing extension: the PRODUCER span is a child
// of the SERVER span, in the request's trace (or the SERVER span's new one
// when the request has none), never the event's, and the message's
// traceparent is the PRODUCER span's, as in the other settings.
func TestSDKGoTraceExtensionWithSpans(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-sdkgo-otlp")
	rcv := otlptest.New(t)
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":           amqpURL,
		"PUBLISHER_CLOUDEVENTS_HEADERS": "none",
		"OTEL_EXPORTER_OTLP_ENDPOINT":   rcv.URL(),
		"OTEL_BSP_SCHEDULE_DELAY":       "100",
	})
	p.waitReady()
	client, rec := sdkClient(t, p.api+"/v1/publish/amq.default/"+q)
	ctx := cloudevents.WithEncodingBinary(context.Background())
	for _, tc := range []struct {
		id  string
		ctx context.Context
	}{
		{"span-tp", cehttp.WithCustomHeader(ctx, http.Header{"Traceparent": {incomingTP}})},
		{"span-no-tp", ctx},
	} {
		if res := client.Send(tc.ctx, sdkEvent(t, tc.id)); !cloudevents.IsACK(res) {
			code, _, text := rec.last(t)
			t.Fatalf("send %s: %v (%d %s)", tc.id, res, code, text)
		}
	}
	spans := rcv.WaitSpans(t, 4, 30*time.Second)
	got := consumeAll(t, amqpURL, q, 2)
	for _, id := range []string{"span-tp", "span-no-tp"} {
		var producer *otlptest.Span
		for i := range spans {
			if spans[i].Kind == "producer" && spans[i].Attributes["messaging.message.id"] == id {
				producer = &spans[i]
			}
		}
		if producer == nil {
			t.Fatalf("%s: no producer span among %s", id, otlptest.Names(spans))
		}
		var server *otlptest.Span
		for i := range spans {
			if spans[i].Kind == "server" && spans[i].SpanID == producer.ParentSpanID {
				server = &spans[i]
			}
		}
		if server == nil || producer.TraceID != server.TraceID || len(producer.Links) != 0 {
			t.Errorf("%s: producer span %+v is not a plain child of a server span", id, *producer)
		}
		if id == "span-tp" && producer.TraceID != incomingTraceID {
			t.Errorf("%s: producer in trace %s, want the request's %s", id, producer.TraceID, incomingTraceID)
		}
		if producer.TraceID == strings.Repeat("a", 32) {
			t.Errorf("%s: producer span in the event's trace", id)
		}
		if tp, want := got[id].Headers["traceparent"], "00-"+producer.TraceID+"-"+producer.SpanID+"-01"; tp != want {
			t.Errorf("%s: the message's traceparent %v, want the producer span's %s", id, tp, want)
		}
		if got[id].Headers["tracestate"] != nil {
			t.Errorf("%s: tracestate %v, want none (the request gave none)", id, got[id].Headers["tracestate"])
		}
	}
}
