// Package otlptest is an OTLP trace receiver for tests: New starts an
// httptest server that accepts POST /v1/traces (binary protobuf,
// gzip-compressed or not), NewGRPC a gRPC server with the OTLP TraceService;
// both decode each ExportTraceServiceRequest with the official
// go.opentelemetry.io/proto/otlp types and keep the spans in arrival order.
//
// Point an exporter at it with OTEL_EXPORTER_OTLP_ENDPOINT=Receiver.URL()
// (the OTLP/HTTP exporter appends /v1/traces; for gRPC, add
// OTEL_EXPORTER_OTLP_PROTOCOL=grpc) or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=Receiver.TracesURL(), and wait for what
// was exported with WaitSpans, which blocks on arrivals rather than sleeping.
//
// Only the binary protobuf encoding is accepted (Content-Type
// application/x-protobuf, what the Go exporters send); OTLP/JSON is answered
// 415. Every accepted request is answered 200 with an empty
// ExportTraceServiceResponse.
package otlptest

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// TracesPath is the OTLP/HTTP path for traces.
const TracesPath = "/v1/traces"

// maxRequestBytes bounds one (decompressed) export request.
const maxRequestBytes = 64 << 20

// Span is one received span, flattened for assertions. IDs are lowercase hex
// ("" when absent), as they appear in a W3C traceparent.
type Span struct {
	Name         string
	Kind         string // "internal", "server", "client", "producer", "consumer" or "unspecified"
	TraceID      string
	SpanID       string
	ParentSpanID string
	TraceState   string
	Attributes   map[string]any
	Events       []Event
	Links        []Link
	Status       Status
	Start, End   time.Time
	// Resource holds the attributes of the span's resource (service.name, ...).
	Resource map[string]any
	// Scope is the name of the instrumentation scope (the tracer's name).
	Scope string
}

// Event is one span event.
type Event struct {
	Name       string
	Time       time.Time
	Attributes map[string]any
}

// Link is one span link.
type Link struct {
	TraceID, SpanID string
	Attributes      map[string]any
}

// Status is a span's status: Code is "unset", "ok" or "error".
type Status struct {
	Code    string
	Message string
}

// Event returns the span's first event named name, and whether there is one.
func (s Span) Event(name string) (Event, bool) {
	for _, e := range s.Events {
		if e.Name == name {
			return e, true
		}
	}
	return Event{}, false
}

// Receiver collects the spans exported to it. Its methods are safe for
// concurrent use.
type Receiver struct {
	srv  *httptest.Server // nil for a gRPC receiver
	grpc *grpc.Server     // nil for an HTTP receiver
	lis  net.Listener     // the gRPC listener

	mu       sync.Mutex
	spans    []Span
	requests int
	arrived  chan struct{} // closed and replaced whenever spans arrive; guarded by mu
}

// New starts a Receiver on a loopback address; it is closed when the test
// ends.
func New(tb testing.TB) *Receiver {
	tb.Helper()
	r := &Receiver{arrived: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	tb.Cleanup(r.Close)
	return r
}

// NewGRPC starts a Receiver serving the OTLP/gRPC TraceService (plaintext)
// on a loopback address; it is closed when the test ends.
func NewGRPC(tb testing.TB) *Receiver {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &Receiver{arrived: make(chan struct{}), grpc: grpc.NewServer(), lis: lis}
	coltracepb.RegisterTraceServiceServer(r.grpc, traceService{r: r})
	go func() { _ = r.grpc.Serve(lis) }()
	tb.Cleanup(r.Close)
	return r
}

// URL is the receiver's base URL ("http://127.0.0.1:port"), the value for
// OTEL_EXPORTER_OTLP_ENDPOINT.
func (r *Receiver) URL() string {
	if r.grpc != nil {
		return "http://" + r.lis.Addr().String()
	}
	return r.srv.URL
}

// TracesURL is the full traces URL, the value for
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (for gRPC, the same as URL).
func (r *Receiver) TracesURL() string {
	if r.grpc != nil {
		return r.URL()
	}
	return r.srv.URL + TracesPath
}

// Close stops the server. It is safe to call more than once.
func (r *Receiver) Close() {
	if r.grpc != nil {
		r.grpc.Stop()
		return
	}
	r.srv.Close()
}

type traceService struct {
	coltracepb.UnimplementedTraceServiceServer
	r *Receiver
}

func (s traceService) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	s.r.add(Decode(req))
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// add records one accepted request's spans and wakes the waiters.
func (r *Receiver) add(spans []Span) {
	r.mu.Lock()
	r.requests++
	r.spans = append(r.spans, spans...)
	close(r.arrived)
	r.arrived = make(chan struct{})
	r.mu.Unlock()
}

// Requests is the number of export requests accepted so far.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// Spans returns a copy of the spans received so far, in arrival order.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Wait blocks until at least n spans have arrived and returns them all, or
// returns an error once timeout has passed.
func (r *Receiver) Wait(n int, timeout time.Duration) ([]Span, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		if len(r.spans) >= n {
			s := append([]Span(nil), r.spans...)
			r.mu.Unlock()
			return s, nil
		}
		got, arrived := len(r.spans), r.arrived
		r.mu.Unlock()
		select {
		case <-arrived:
		case <-deadline.C:
			return r.Spans(), fmt.Errorf("otlptest: %d of %d spans after %v", got, n, timeout)
		}
	}
}

// WaitSpans is Wait that fails the test on timeout.
func (r *Receiver) WaitSpans(tb testing.TB, n int, timeout time.Duration) []Span {
	tb.Helper()
	s, err := r.Wait(n, timeout)
	if err != nil {
		tb.Fatalf("%v; received: %s", err, Names(s))
	}
	return s
}

// Names lists the spans' names, for failure messages.
func Names(spans []Span) string {
	names := make([]string, len(spans))
	for i, s := range spans {
		names[i] = fmt.Sprintf("%q (%s)", s.Name, s.Kind)
	}
	return "[" + strings.Join(names, ", ") + "]"
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != TracesPath {
		http.NotFound(w, req)
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	if ct := req.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-protobuf") {
		http.Error(w, "otlptest accepts only application/x-protobuf, not "+ct, http.StatusUnsupportedMediaType)
		return
	}
	var body io.Reader = req.Body
	switch enc := strings.ToLower(req.Header.Get("Content-Encoding")); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, "bad gzip: "+err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	default:
		http.Error(w, "unsupported Content-Encoding "+enc, http.StatusUnsupportedMediaType)
		return
	}
	raw, err := io.ReadAll(io.LimitReader(body, maxRequestBytes+1))
	if err != nil || len(raw) > maxRequestBytes {
		http.Error(w, "cannot read the request", http.StatusBadRequest)
		return
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &export); err != nil {
		http.Error(w, "bad protobuf: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.add(Decode(&export))

	resp, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(resp)
}

// Decode flattens an export request into Spans.
func Decode(export *coltracepb.ExportTraceServiceRequest) []Span {
	var out []Span
	for _, rs := range export.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			scope := ss.GetScope().GetName()
			for _, sp := range ss.GetSpans() {
				out = append(out, decodeSpan(sp, res, scope))
			}
		}
	}
	return out
}

func decodeSpan(sp *tracepb.Span, res map[string]any, scope string) Span {
	s := Span{
		Name:         sp.GetName(),
		Kind:         kindName(sp.GetKind()),
		TraceID:      hexID(sp.GetTraceId()),
		SpanID:       hexID(sp.GetSpanId()),
		ParentSpanID: hexID(sp.GetParentSpanId()),
		TraceState:   sp.GetTraceState(),
		Attributes:   attrs(sp.GetAttributes()),
		Status:       Status{Code: statusName(sp.GetStatus().GetCode()), Message: sp.GetStatus().GetMessage()},
		Start:        unixNano(sp.GetStartTimeUnixNano()),
		End:          unixNano(sp.GetEndTimeUnixNano()),
		Resource:     res,
		Scope:        scope,
	}
	for _, e := range sp.GetEvents() {
		s.Events = append(s.Events, Event{Name: e.GetName(), Time: unixNano(e.GetTimeUnixNano()), Attributes: attrs(e.GetAttributes())})
	}
	for _, l := range sp.GetLinks() {
		s.Links = append(s.Links, Link{TraceID: hexID(l.GetTraceId()), SpanID: hexID(l.GetSpanId()), Attributes: attrs(l.GetAttributes())})
	}
	return s
}

func hexID(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return hex.EncodeToString(b)
}

func unixNano(n uint64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(n))
}

func kindName(k tracepb.Span_SpanKind) string {
	switch k {
	case tracepb.Span_SPAN_KIND_INTERNAL:
		return "internal"
	case tracepb.Span_SPAN_KIND_SERVER:
		return "server"
	case tracepb.Span_SPAN_KIND_CLIENT:
		return "client"
	case tracepb.Span_SPAN_KIND_PRODUCER:
		return "producer"
	case tracepb.Span_SPAN_KIND_CONSUMER:
		return "consumer"
	default:
		return "unspecified"
	}
}

func statusName(c tracepb.Status_StatusCode) string {
	switch c {
	case tracepb.Status_STATUS_CODE_OK:
		return "ok"
	case tracepb.Status_STATUS_CODE_ERROR:
		return "error"
	default:
		return "unset"
	}
}

// attrs converts OTLP key-values: strings, bools, int64s, float64s, []byte,
// []any (arrays) and map[string]any (kvlists).
func attrs(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = value(kv.GetValue())
	}
	return m
}

func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue
	case *commonpb.AnyValue_ArrayValue:
		vals := x.ArrayValue.GetValues()
		out := make([]any, len(vals))
		for i, e := range vals {
			out[i] = value(e)
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		return attrs(x.KvlistValue.GetValues())
	default:
		return nil
	}
}
