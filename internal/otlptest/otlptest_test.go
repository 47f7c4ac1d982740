package otlptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func sampleRequest() *coltracepb.ExportTraceServiceRequest {
	tid := bytes.Repeat([]byte{0xab}, 16)
	return &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "svc")}},
		ScopeSpans: []*tracepb.ScopeSpans{{
			Scope: &commonpb.InstrumentationScope{Name: "scope"},
			Spans: []*tracepb.Span{{
				TraceId:           tid,
				SpanId:            []byte{1, 2, 3, 4, 5, 6, 7, 8},
				ParentSpanId:      []byte{8, 7, 6, 5, 4, 3, 2, 1},
				Name:              "publish orders",
				Kind:              tracepb.Span_SPAN_KIND_PRODUCER,
				StartTimeUnixNano: 1_000_000_000,
				EndTimeUnixNano:   2_000_000_000,
				Attributes: []*commonpb.KeyValue{
					str("messaging.system", "rabbitmq"),
					{Key: "n", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 7}}},
					{Key: "b", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}},
					{Key: "f", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 0.5}}},
					{Key: "a", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{
						Values: []*commonpb.AnyValue{{Value: &commonpb.AnyValue_StringValue{StringValue: "x"}}}}}}},
				},
				Events: []*tracepb.Span_Event{{Name: "ev", TimeUnixNano: 1_500_000_000, Attributes: []*commonpb.KeyValue{str("k", "v")}}},
				Links:  []*tracepb.Span_Link{{TraceId: tid, SpanId: []byte{9, 9, 9, 9, 9, 9, 9, 9}}},
				Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "nacked"},
			}},
		}},
	}}}
}

func post(t *testing.T, url string, body []byte, header http.Header) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestDecodesPlainAndGzip(t *testing.T) {
	r := New(t)
	raw, err := proto.Marshal(sampleRequest())
	if err != nil {
		t.Fatal(err)
	}
	if code := post(t, r.TracesURL(), raw, http.Header{"Content-Type": {"application/x-protobuf"}}); code != http.StatusOK {
		t.Fatalf("plain: status %d", code)
	}
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	_, _ = zw.Write(raw)
	_ = zw.Close()
	if code := post(t, r.TracesURL(), zbuf.Bytes(), http.Header{"Content-Type": {"application/x-protobuf"}, "Content-Encoding": {"gzip"}}); code != http.StatusOK {
		t.Fatalf("gzip: status %d", code)
	}
	spans := r.WaitSpans(t, 2, 5*time.Second)
	if r.Requests() != 2 {
		t.Fatalf("requests = %d, want 2", r.Requests())
	}
	for _, s := range spans {
		if s.Name != "publish orders" || s.Kind != "producer" {
			t.Errorf("name/kind = %q/%q", s.Name, s.Kind)
		}
		if s.TraceID != strings.Repeat("ab", 16) || s.SpanID != "0102030405060708" || s.ParentSpanID != "0807060504030201" {
			t.Errorf("ids = %s %s %s", s.TraceID, s.SpanID, s.ParentSpanID)
		}
		if s.Attributes["messaging.system"] != "rabbitmq" || s.Attributes["n"] != int64(7) || s.Attributes["b"] != true || s.Attributes["f"] != 0.5 {
			t.Errorf("attributes = %v", s.Attributes)
		}
		if a, ok := s.Attributes["a"].([]any); !ok || len(a) != 1 || a[0] != "x" {
			t.Errorf("array attribute = %#v", s.Attributes["a"])
		}
		if e, ok := s.Event("ev"); !ok || e.Attributes["k"] != "v" || !e.Time.Equal(time.Unix(1, 500_000_000)) {
			t.Errorf("event = %+v, %v", e, ok)
		}
		if len(s.Links) != 1 || s.Links[0].SpanID != "0909090909090909" {
			t.Errorf("links = %+v", s.Links)
		}
		if s.Status != (Status{Code: "error", Message: "nacked"}) {
			t.Errorf("status = %+v", s.Status)
		}
		if s.Resource["service.name"] != "svc" || s.Scope != "scope" {
			t.Errorf("resource/scope = %v %q", s.Resource, s.Scope)
		}
		if !s.Start.Equal(time.Unix(1, 0)) || !s.End.Equal(time.Unix(2, 0)) {
			t.Errorf("times = %v %v", s.Start, s.End)
		}
	}
}

func TestRejects(t *testing.T) {
	r := New(t)
	raw, _ := proto.Marshal(sampleRequest())
	for name, tc := range map[string]struct {
		url    string
		header http.Header
		body   []byte
		want   int
	}{
		"json":          {r.TracesURL(), http.Header{"Content-Type": {"application/json"}}, []byte("{}"), http.StatusUnsupportedMediaType},
		"other path":    {r.URL() + "/v1/metrics", http.Header{"Content-Type": {"application/x-protobuf"}}, raw, http.StatusNotFound},
		"bad protobuf":  {r.TracesURL(), http.Header{"Content-Type": {"application/x-protobuf"}}, []byte{0xff, 0xff, 0xff}, http.StatusBadRequest},
		"bad gzip":      {r.TracesURL(), http.Header{"Content-Type": {"application/x-protobuf"}, "Content-Encoding": {"gzip"}}, raw, http.StatusBadRequest},
		"unknown codec": {r.TracesURL(), http.Header{"Content-Type": {"application/x-protobuf"}, "Content-Encoding": {"br"}}, raw, http.StatusUnsupportedMediaType},
	} {
		if code := post(t, tc.url, tc.body, tc.header); code != tc.want {
			t.Errorf("%s: status %d, want %d", name, code, tc.want)
		}
	}
	if n := len(r.Spans()); n != 0 {
		t.Fatalf("%d spans kept from rejected requests", n)
	}
}

func TestWaitTimesOut(t *testing.T) {
	r := New(t)
	if _, err := r.Wait(1, 10*time.Millisecond); err == nil {
		t.Fatal("Wait returned without spans")
	}
}

// TestRealExporter sends spans with the OpenTelemetry SDK's own OTLP/HTTP
// exporter, gzip-compressed, as the service will.
func TestRealExporter(t *testing.T) {
	r := New(t)
	ctx := context.Background()
	exp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(r.TracesURL()),
		otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tr := tp.Tracer("otlptest")
	ctx, parent := tr.Start(ctx, "parent", trace.WithSpanKind(trace.SpanKindServer))
	_, child := tr.Start(ctx, "child", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attribute.Int("n", 3)))
	child.AddEvent("e")
	child.End()
	parent.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := r.WaitSpans(t, 2, 5*time.Second)
	c, p := spans[0], spans[1]
	if c.Name != "child" || p.Name != "parent" || c.Kind != "producer" || p.Kind != "server" {
		t.Fatalf("spans = %s", Names(spans))
	}
	if c.ParentSpanID != p.SpanID || c.TraceID != p.TraceID || p.ParentSpanID != "" {
		t.Fatalf("child %+v not under parent %+v", c, p)
	}
	if c.Attributes["n"] != int64(3) || len(c.Events) != 1 || c.Scope != "otlptest" {
		t.Fatalf("child = %+v", c)
	}
}

func TestGRPCReceiver(t *testing.T) {
	r := NewGRPC(t)
	ctx := context.Background()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(r.URL()))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	_, span := tp.Tracer("otlptest").Start(ctx, "over grpc", trace.WithSpanKind(trace.SpanKindClient))
	span.End()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	spans := r.WaitSpans(t, 1, 5*time.Second)
	if spans[0].Name != "over grpc" || spans[0].Kind != "client" || r.Requests() != 1 {
		t.Fatalf("spans = %s, requests %d", Names(spans), r.Requests())
	}
}
