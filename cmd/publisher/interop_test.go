package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/otlptest"
)

const (
	incomingTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	incomingSpanID  = "00f067aa0ba902b7"
	incomingTP      = "00-" + incomingTraceID + "-" + incomingSpanID + "-01"
	entryTP         = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
)

// consumeAll reads n messages of queue (by message id), failing after 30 s.
func consumeAll(t *testing.T, amqpURL, queue string, n int) map[string]amqp.Delivery {
	t.Helper()
	ch := brokertest.Channel(t, amqpURL)
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]amqp.Delivery{}
	timeout := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case d := <-deliveries:
			got[d.MessageId] = d
		case <-timeout:
			t.Fatalf("%d of %d messages consumed: %v", len(got), n, got)
		}
	}
	return got
}

// Consumed from a real broker: the request's trace context is in the message
// (single publish, batch, stream; an entry's own traceparent wins; a
// malformed one is dropped), and CloudEvents in binary, structured and
// batched mode are mapped to the message's properties and ce- headers; an
// invalid event is a 400.
func TestTraceContextAndCloudEventsAgainstABroker(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-interop")
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL})
	p.waitReady()
	mustPublish := func(id string, body string, hdr map[string]string) {
		t.Helper()
		if hdr["X-Message-Id"] == "" && hdr["Ce-Id"] == "" && !strings.Contains(hdr["Content-Type"], "cloudevents") {
			hdr["X-Message-Id"] = id
		}
		r, err := p.publish("amq.default", q, []byte(body), hdr)
		if err != nil || r.code != 200 || r.id != id {
			t.Fatalf("publish %s: %+v %v", id, r, err)
		}
	}
	mustPublish("single", "x", map[string]string{"Traceparent": incomingTP, "Tracestate": "congo=t61rcWkgMzE", "Baggage": "tenant=acme"})
	mustPublish("malformed", "x", map[string]string{"Traceparent": "00-not-a-traceparent-01", "Tracestate": "congo=t61rcWkgMzE"})
	// The binding's own example of a percent-encoded value, as a conforming
	// sender writes it.
	mustPublish("ce-binary", `{"n":1}`, map[string]string{"Content-Type": "application/json", "Ce-Specversion": "1.0",
		"Ce-Id": "ce-binary", "Ce-Source": "/orders", "Ce-Type": "order.created", "Ce-Subject": "42",
		"Ce-Note": "Euro%20%E2%82%AC%20%F0%9F%98%80"})
	structured := `{"specversion":"1.0","id":"ce-structured","source":"/orders","type":"order.paid","datacontenttype":"application/json","data":{"n":2}}`
	mustPublish("ce-structured", structured, map[string]string{"Content-Type": "application/cloudevents+json"})
	// An invalid event is a 400 naming the attribute and echoing the id.
	if r, err := p.publish("amq.default", q, []byte("x"), map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "bad", "Ce-Type": "t"}); err != nil || r.code != 400 || !strings.Contains(r.errText, "ce-source") || r.id != "bad" {
		t.Fatalf("an event without ce-source: %+v %v, want 400 naming it and the id", r, err)
	}
	if r, err := p.publish("amq.default", q, []byte(`{"specversion":"0.3","id":"old","source":"/s","type":"t"}`), map[string]string{"Content-Type": "application/cloudevents+json"}); err != nil || r.code != 400 || !strings.Contains(r.errText, `"0.3" is not supported (only "1.0")`) || r.id != "old" {
		t.Fatalf("a 0.3 event: %+v %v, want 400 saying only 1.0 and naming the id", r, err)
	}

	code, results, err := p.postBatch(fmt.Sprintf(`{"messages": [
		{"exchange": "amq.default", "routing_key": %[1]q, "message_id": "batch-request-tp"},
		{"exchange": "amq.default", "routing_key": %[1]q, "message_id": "batch-own-tp", "headers": {"traceparent": %[2]q}}]}`, q, entryTP))
	if err != nil || code != 200 || len(results) != 2 {
		t.Fatalf("batch: %d %+v %v", code, results, err)
	}
	// A batch request with a traceparent: through the raw client for the header.
	req := fmt.Sprintf(`{"messages": [{"exchange": "amq.default", "routing_key": %q, "message_id": "batch-tp"}]}`, q)
	if code, _, err := p.postWith("/v1/batch", "application/json", req, map[string]string{"Traceparent": incomingTP}); err != nil || code != 200 {
		t.Fatalf("batch with traceparent: %d %v", code, err)
	}
	ceBatch := `[{"specversion":"1.0","id":"ce-batch-1","source":"/s","type":"t1"},{"specversion":"1.0","id":"ce-batch-2","source":"/s","type":"t2"}]`
	if code, body, err := p.postWith("/v1/batch?exchange=amq.default&routing_key="+q, "application/cloudevents-batch+json", ceBatch, nil); err != nil || code != 200 {
		t.Fatalf("CloudEvents batch: %d %s %v", code, body, err)
	}
	line := fmt.Sprintf(`{"exchange":"amq.default","routing_key":%q,"message_id":"stream-tp"}`+"\n", q)
	if code, body, err := p.postWith("/v1/stream", "application/x-ndjson", line, map[string]string{"Traceparent": incomingTP}); err != nil || code != 200 || !strings.Contains(body, `"status":200`) {
		t.Fatalf("stream: %d %s %v", code, body, err)
	}

	got := consumeAll(t, amqpURL, q, 10)
	check := func(id, header string, want any) {
		t.Helper()
		if v := got[id].Headers[header]; v != want {
			t.Errorf("%s: header %s = %v, want %v (headers %v)", id, header, v, want, got[id].Headers)
		}
	}
	check("single", "traceparent", incomingTP)
	check("single", "tracestate", "congo=t61rcWkgMzE")
	check("single", "baggage", "tenant=acme")
	check("malformed", "traceparent", nil)
	check("malformed", "tracestate", nil)
	check("batch-request-tp", "traceparent", nil)
	check("batch-own-tp", "traceparent", entryTP)
	check("batch-tp", "traceparent", incomingTP)
	check("stream-tp", "traceparent", incomingTP)
	b := got["ce-binary"]
	if b.Type != "order.created" || b.ContentType != "application/json" || string(b.Body) != `{"n":1}` {
		t.Errorf("binary event delivered as type %q content type %q body %q", b.Type, b.ContentType, b.Body)
	}
	check("ce-binary", "ce-specversion", "1.0")
	check("ce-binary", "ce-source", "/orders")
	check("ce-binary", "ce-subject", "42")
	check("ce-binary", "ce-note", "Euro € 😀")
	check("ce-binary", "content-type", "application/json")
	s := got["ce-structured"]
	if s.Type != "order.paid" || s.ContentType != "application/cloudevents+json" || string(s.Body) != structured {
		t.Errorf("structured event delivered as type %q content type %q body %q", s.Type, s.ContentType, s.Body)
	}
	check("ce-structured", "ce-id", "ce-structured")
	check("ce-structured", "content-type", "application/json")
	for id, d := range got {
		if d.Timestamp.IsZero() {
			t.Errorf("%s: no AMQP timestamp", id)
		}
	}
	if d := got["ce-batch-2"]; d.Type != "t2" || d.ContentType != "application/cloudevents+json" || d.Headers["ce-type"] != "t2" {
		t.Errorf("batched event delivered as %+v", d)
	}
}

// With tracing configured by the standard OTEL_* variables, the real binary
// exports over OTLP/HTTP a SERVER span per request, child of the incoming
// traceparent, and a PRODUCER span per message, child of the SERVER span,
// named and attributed by the messaging conventions; the traceparent in the
// consumed message names the PRODUCER span.
func TestSpansExportedOverOTLP(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-otlp")
	rcv := otlptest.New(t)
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":         amqpURL,
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.URL(),
		"OTEL_SERVICE_NAME":           "publisher-under-test",
		"OTEL_BSP_SCHEDULE_DELAY":     "100",
	})
	p.waitReady()
	r, err := p.publish("amq.default", q, []byte("traced"), map[string]string{
		"Traceparent": incomingTP, "X-Message-Id": "traced-1", "X-Correlation-Id": "conv-7"})
	if err != nil || r.code != 200 {
		t.Fatalf("publish: %+v %v", r, err)
	}
	spans := rcv.WaitSpans(t, 2, 30*time.Second)
	var server, producer *otlptest.Span
	for i := range spans {
		switch spans[i].Kind {
		case "server":
			server = &spans[i]
		case "producer":
			producer = &spans[i]
		}
	}
	if server == nil || producer == nil {
		t.Fatalf("spans %s: want a server and a producer span", otlptest.Names(spans))
	}
	if server.Name != "POST /v1/publish/{exchange}/{routing_key}" || server.TraceID != incomingTraceID || server.ParentSpanID != incomingSpanID {
		t.Errorf("server span %+v: want a child of the incoming traceparent", *server)
	}
	if server.Attributes["http.response.status_code"] != int64(200) || server.Resource["service.name"] != "publisher-under-test" {
		t.Errorf("server span attributes %v, resource %v", server.Attributes, server.Resource)
	}
	if producer.Name != "publish amq.default" || producer.TraceID != incomingTraceID || producer.ParentSpanID != server.SpanID {
		t.Errorf("producer span %+v: want \"publish amq.default\", a child of the server span", *producer)
	}
	for k, want := range map[string]any{
		"messaging.system":                           "rabbitmq",
		"messaging.operation.name":                   "publish",
		"messaging.operation.type":                   "send",
		"messaging.destination.name":                 q,
		"messaging.rabbitmq.destination.routing_key": q,
		"messaging.message.id":                       "traced-1",
		"messaging.message.conversation_id":          "conv-7",
		"server.address":                             "127.0.0.1",
		"server.port":                                int64(5672),
	} {
		if producer.Attributes[k] != want {
			t.Errorf("producer attribute %s = %v (%T), want %v", k, producer.Attributes[k], producer.Attributes[k], want)
		}
	}
	if producer.Status.Code == "error" {
		t.Errorf("producer span status %+v for a confirmed message", producer.Status)
	}
	d := consumeAll(t, amqpURL, q, 1)["traced-1"]
	tp, _ := d.Headers["traceparent"].(string)
	if want := "00-" + incomingTraceID + "-" + producer.SpanID + "-01"; tp != want {
		t.Fatalf("the message's traceparent %q, want the producer span's %q", tp, want)
	}
}
