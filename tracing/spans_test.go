package tracing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/otlptest"
)

const (
	incomingTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	incomingSpanID  = "00f067aa0ba902b7"
)

// setupExporting returns a Tracer exporting to a fresh receiver, configured
// through the environment as the service will be.
func setupExporting(t *testing.T, receiver *otlptest.Receiver, extra ...string) *Tracer {
	t.Helper()
	clearOTELEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.URL())
	t.Setenv("OTEL_SERVICE_NAME", "publisher-test")
	for i := 0; i+1 < len(extra); i += 2 {
		t.Setenv(extra[i], extra[i+1])
	}
	tr, err := Setup(context.Background(), Options{ServiceVersion: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Fatal("Setup with an endpoint returned a disabled Tracer")
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr
}

func publishRequest(hdr map[string]string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "http://publisher.local:8080/v1/publish/orders/eu.created", strings.NewReader("{}"))
	r.RemoteAddr = "10.1.2.3:40000"
	r.Header.Set("User-Agent", "test-agent")
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	return r
}

func byKind(t *testing.T, spans []otlptest.Span, kind string) []otlptest.Span {
	t.Helper()
	var out []otlptest.Span
	for _, s := range spans {
		if s.Kind == kind {
			out = append(out, s)
		}
	}
	return out
}

func wantAttrs(t *testing.T, s otlptest.Span, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got, ok := s.Attributes[k]; !ok || got != v {
			t.Errorf("span %q: %s = %#v (present %v), want %#v", s.Name, k, got, ok, v)
		}
	}
}

// TestSpansExported runs one publish through the real SDK and its OTLP/HTTP
// exporter to the test receiver.
func TestSpansExported(t *testing.T) {
	checkLeaks(t)
	rcv := otlptest.New(t)
	tr := setupExporting(t, rcv)
	tr.SetBrokerURL("amqp://guest:guest@rabbit-0.rabbit:5672/")

	req := publishRequest(map[string]string{
		"Traceparent": "00-" + incomingTraceID + "-" + incomingSpanID + "-01",
		"Tracestate":  "rojo=00f067aa0ba902b7",
		"Baggage":     "tenant=acme",
	})
	h := FromRequest(req.Header)
	ctx, rs := tr.StartRequest(req, RoutePublish, h)
	tr.SetApp(ctx, "orders-app")
	headers, ms := tr.StartMessage(ctx, h, Message{
		Exchange: "orders", RoutingKey: "eu.created", MessageID: "m-1", CorrelationID: "c-1", BodySize: 2,
		Headers: map[string]any{"x-app": "a"}, App: "orders-app",
	})
	tr.SetBroker("rabbit-1.rabbit", 5672) // a failover before the republish
	ms.Republished(2)
	ms.NackRetry(1, 50*time.Millisecond)
	ms.Spooled()
	ms.End("")
	rs.End(http.StatusOK)
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	spans := rcv.WaitSpans(t, 2, 10*time.Second)
	servers, producers := byKind(t, spans, "server"), byKind(t, spans, "producer")
	if len(servers) != 1 || len(producers) != 1 {
		t.Fatalf("spans = %s, want one server and one producer", otlptest.Names(spans))
	}
	srv, prod := servers[0], producers[0]

	// The SERVER span continues the incoming trace.
	if srv.Name != "POST "+RoutePublish {
		t.Errorf("server span name = %q", srv.Name)
	}
	if srv.TraceID != incomingTraceID || srv.ParentSpanID != incomingSpanID {
		t.Errorf("server span trace/parent = %s/%s, want %s/%s", srv.TraceID, srv.ParentSpanID, incomingTraceID, incomingSpanID)
	}
	if srv.TraceState != "rojo=00f067aa0ba902b7" {
		t.Errorf("server span tracestate = %q", srv.TraceState)
	}
	wantAttrs(t, srv, map[string]any{
		"http.request.method":       "POST",
		"http.route":                RoutePublish,
		"http.response.status_code": int64(200),
		"url.path":                  "/v1/publish/orders/eu.created",
		"url.scheme":                "http",
		"server.address":            "publisher.local",
		"server.port":               int64(8080),
		"client.address":            "10.1.2.3",
		"network.peer.port":         int64(40000),
		"network.protocol.version":  "1.1",
		"user_agent.original":       "test-agent",
		"publisher.app":             "orders-app",
	})
	if _, ok := srv.Attributes["error.type"]; ok || srv.Status.Code == "error" {
		t.Errorf("server span of a 200 marked failed: %v %+v", srv.Attributes, srv.Status)
	}

	// The PRODUCER span is the SERVER span's child, named and attributed by
	// the messaging conventions.
	if prod.Name != "publish orders" {
		t.Errorf("producer span name = %q", prod.Name)
	}
	if prod.TraceID != incomingTraceID || prod.ParentSpanID != srv.SpanID {
		t.Errorf("producer span trace/parent = %s/%s, want %s/%s", prod.TraceID, prod.ParentSpanID, incomingTraceID, srv.SpanID)
	}
	wantAttrs(t, prod, map[string]any{
		"messaging.system":                           "rabbitmq",
		"messaging.operation.name":                   "publish",
		"messaging.operation.type":                   "send",
		"messaging.destination.name":                 "orders:eu.created",
		"messaging.rabbitmq.destination.routing_key": "eu.created",
		"messaging.message.id":                       "m-1",
		"messaging.message.conversation_id":          "c-1",
		"messaging.message.body.size":                int64(2),
		"network.protocol.name":                      "amqp",
		"network.protocol.version":                   "0.9.1",
		"server.address":                             "rabbit-1.rabbit", // the broker of the last attempt
		"server.port":                                int64(5672),
		"publisher.app":                              "orders-app",
	})
	if prod.Status.Code == "error" {
		t.Errorf("confirmed message's span has status %+v", prod.Status)
	}
	if e, ok := prod.Event(EventRepublish); !ok || e.Attributes["publisher.attempt"] != int64(2) {
		t.Errorf("republish event = %+v (%v)", e, ok)
	}
	if e, ok := prod.Event(EventNackRetry); !ok || e.Attributes["publisher.nack.count"] != int64(1) || e.Attributes["publisher.retry.delay"] != 0.05 {
		t.Errorf("nack retry event = %+v (%v)", e, ok)
	}
	if _, ok := prod.Event(EventSpooled); !ok {
		t.Errorf("no spooled event in %+v", prod.Events)
	}
	if prod.Resource["service.name"] != "publisher-test" || prod.Resource["service.version"] != "1.2.3" || prod.Scope != ScopeName {
		t.Errorf("resource %v, scope %q", prod.Resource, prod.Scope)
	}

	// The message carries the PRODUCER span's traceparent, the incoming
	// tracestate and baggage, beside its own headers.
	wantTP := "00-" + incomingTraceID + "-" + prod.SpanID + "-01"
	if headers["traceparent"] != wantTP {
		t.Errorf("traceparent header = %v, want the producer span's %s", headers["traceparent"], wantTP)
	}
	if headers["tracestate"] != "rojo=00f067aa0ba902b7" || headers["baggage"] != "tenant=acme" || headers["x-app"] != "a" {
		t.Errorf("headers = %v", headers)
	}
	if ms.Traceparent() != wantTP {
		t.Errorf("MessageSpan.Traceparent() = %q, want %q", ms.Traceparent(), wantTP)
	}
}

// TestOwnTraceparent: a batch entry's own traceparent is the PRODUCER span's
// parent; the span links to the request's SERVER span.
func TestOwnTraceparent(t *testing.T) {
	checkLeaks(t)
	rcv := otlptest.New(t)
	tr := setupExporting(t, rcv)
	req := publishRequest(map[string]string{"Traceparent": "00-" + incomingTraceID + "-" + incomingSpanID + "-01"})
	req.URL.Path = RouteBatch
	h := FromRequest(req.Header)
	ctx, rs := tr.StartRequest(req, RouteBatch, h)
	const ownTrace, ownSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	headers, ms := tr.StartMessage(ctx, h, Message{
		RoutingKey: "q", Headers: map[string]any{"traceparent": "00-" + ownTrace + "-" + ownSpan + "-01", "baggage": "own=1"},
	})
	// Without a SERVER span in ctx, the request's context is the parent.
	_, ms2 := tr.StartMessage(context.Background(), h, Message{Exchange: "e"})
	ms2.End("")
	ms.End("unroutable")
	rs.End(207)
	_ = tr.Shutdown(context.Background())

	spans := rcv.WaitSpans(t, 3, 10*time.Second)
	srv := byKind(t, spans, "server")[0]
	var prod, noServer otlptest.Span
	for _, s := range byKind(t, spans, "producer") {
		if s.Name == "publish e" {
			noServer = s
		} else {
			prod = s
		}
	}
	if noServer.TraceID != incomingTraceID || noServer.ParentSpanID != incomingSpanID {
		t.Errorf("producer span without a server span: trace/parent = %s/%s, want the request's", noServer.TraceID, noServer.ParentSpanID)
	}
	if headers["baggage"] != "own=1" {
		t.Errorf("own baggage replaced: %v", headers["baggage"])
	}
	if srv.Name != "POST /v1/batch" {
		t.Errorf("server span name = %q", srv.Name)
	}
	if prod.Name != "publish amq.default" || prod.Attributes["messaging.destination.name"] != "q" {
		t.Errorf("default-exchange producer span = %q, destination %v", prod.Name, prod.Attributes["messaging.destination.name"])
	}
	if prod.TraceID != ownTrace || prod.ParentSpanID != ownSpan {
		t.Errorf("producer span trace/parent = %s/%s, want the entry's own %s/%s", prod.TraceID, prod.ParentSpanID, ownTrace, ownSpan)
	}
	if len(prod.Links) != 1 || prod.Links[0].SpanID != srv.SpanID || prod.Links[0].TraceID != incomingTraceID {
		t.Errorf("producer links = %+v, want the server span %s", prod.Links, srv.SpanID)
	}
	if prod.Status.Code != "error" || prod.Status.Message != "unroutable" || prod.Attributes["error.type"] != "unroutable" {
		t.Errorf("unroutable span: status %+v, error.type %v", prod.Status, prod.Attributes["error.type"])
	}
	if want := "00-" + ownTrace + "-" + prod.SpanID + "-01"; headers["traceparent"] != want {
		t.Errorf("traceparent header = %v, want %s", headers["traceparent"], want)
	}
	if _, ok := prod.Attributes["messaging.rabbitmq.destination.routing_key"]; !ok {
		t.Errorf("routing key attribute missing: %v", prod.Attributes)
	}
}

// TestMalformedTraceparentStartsATrace: the SERVER span of a request with a
// malformed traceparent is a root; the publish still carries a context.
func TestMalformedTraceparentStartsATrace(t *testing.T) {
	checkLeaks(t)
	rcv := otlptest.New(t)
	tr := setupExporting(t, rcv)
	req := publishRequest(map[string]string{"Traceparent": "00-" + strings.ToUpper(incomingTraceID) + "-" + incomingSpanID + "-01", "Tracestate": "a=1"})
	h := FromRequest(req.Header)
	ctx, rs := tr.StartRequest(req, RoutePublish, h)
	headers, ms := tr.StartMessage(ctx, h, Message{Exchange: "orders"})
	ms.End("timeout")
	rs.End(http.StatusGatewayTimeout)
	_ = tr.Shutdown(context.Background())

	spans := rcv.WaitSpans(t, 2, 10*time.Second)
	srv, prod := byKind(t, spans, "server")[0], byKind(t, spans, "producer")[0]
	if srv.ParentSpanID != "" || srv.TraceID == incomingTraceID {
		t.Errorf("server span continued a malformed traceparent: %+v", srv)
	}
	if srv.Status.Code != "error" || srv.Attributes["error.type"] != "504" {
		t.Errorf("504 server span: status %+v, error.type %v", srv.Status, srv.Attributes["error.type"])
	}
	if prod.ParentSpanID != srv.SpanID || prod.Attributes["error.type"] != "timeout" {
		t.Errorf("producer %+v", prod)
	}
	if _, ok := prod.Attributes["server.address"]; ok {
		t.Errorf("server.address without SetBroker: %v", prod.Attributes)
	}
	if _, ok := headers["tracestate"]; ok {
		t.Errorf("tracestate of a malformed traceparent carried: %v", headers)
	}
	if headers["traceparent"] != "00-"+srv.TraceID+"-"+prod.SpanID+"-01" {
		t.Errorf("traceparent header = %v", headers["traceparent"])
	}
}

// TestGRPCExport: OTEL_EXPORTER_OTLP_PROTOCOL=grpc exports over OTLP/gRPC.
func TestGRPCExport(t *testing.T) {
	checkLeaks(t)
	rcv := otlptest.NewGRPC(t)
	tr := setupExporting(t, rcv, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTEL_EXPORTER_OTLP_INSECURE", "true")
	_, ms := tr.StartMessage(context.Background(), Headers{}, Message{Exchange: "e"})
	ms.End("")
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := rcv.WaitSpans(t, 1, 10*time.Second)
	if spans[0].Name != "publish e" || spans[0].Kind != "producer" || spans[0].ParentSpanID != "" {
		t.Fatalf("spans = %s", otlptest.Names(spans))
	}
}

// TestSamplerFromEnv: the SDK applies OTEL_TRACES_SAMPLER itself; with
// always_off nothing is exported, and the message still gets a (not
// sampled) traceparent.
func TestSamplerFromEnv(t *testing.T) {
	checkLeaks(t)
	rcv := otlptest.New(t)
	tr := setupExporting(t, rcv, "OTEL_TRACES_SAMPLER", "always_off")
	headers, ms := tr.StartMessage(context.Background(), Headers{}, Message{Exchange: "e"})
	ms.End("")
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(rcv.Spans()); n != 0 {
		t.Fatalf("%d spans exported with always_off", n)
	}
	tp, _ := headers["traceparent"].(string)
	if !validTraceparent(tp) || !strings.HasSuffix(tp, "-00") {
		t.Fatalf("traceparent %q, want a valid, unsampled one", tp)
	}
}

// TestMethodAndHost covers the SERVER span's method normalisation and the
// Host header without a port.
func TestMethodAndHost(t *testing.T) {
	checkLeaks(t)
	rcv := otlptest.New(t)
	tr := setupExporting(t, rcv)
	req := httptest.NewRequest("BREW", "https://publisher.example/v1/stream", nil)
	_, rs := tr.StartRequest(req, RouteStream, Headers{})
	rs.End(http.StatusMethodNotAllowed)
	_ = tr.Shutdown(context.Background())
	s := rcv.WaitSpans(t, 1, 10*time.Second)[0]
	if s.Name != "HTTP "+RouteStream {
		t.Errorf("name = %q", s.Name)
	}
	wantAttrs(t, s, map[string]any{
		"http.request.method":          "_OTHER",
		"http.request.method_original": "BREW",
		"url.scheme":                   "https",
		"server.address":               "publisher.example",
		"server.port":                  int64(443),
		"http.response.status_code":    int64(405),
	})
	if s.Status.Code == "error" {
		t.Errorf("a 4xx marked the server span failed")
	}
}
