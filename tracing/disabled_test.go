package tracing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// MessageTrace is what the publisher actor and the relay need of a
// message's span. package publisher can declare the same interface and keep
// a value of it on the Message, without importing this package or the SDK.
type MessageTrace interface {
	Republished(attempt int)
	NackRetry(nacks int, delay time.Duration)
	Spooled()
	End(errorType string)
}

var _ MessageTrace = (*MessageSpan)(nil)

func disabledTracers(t *testing.T) map[string]*Tracer {
	clearOTELEnv(t)
	off, err := Setup(context.Background(), Options{})
	if err != nil || off.Enabled() {
		t.Fatalf("Setup without an endpoint = %v, %v", off, err)
	}
	return map[string]*Tracer{"nil": nil, "from Setup": off}
}

// TestDisabledAllocs: with tracing off, the hot path allocates nothing but
// the boxing of the carried strings into the message's headers.
func TestDisabledAllocs(t *testing.T) {
	checkLeaks(t)
	req := httptest.NewRequest(http.MethodPost, "/v1/publish/orders/key", nil)
	req.Header.Set("Traceparent", validTP)
	req.Header.Set("Tracestate", validTS)
	req.Header.Set("Baggage", "k=v")
	plain := httptest.NewRequest(http.MethodPost, "/v1/publish/orders/key", nil)
	headers := make(map[string]any, 8)

	for name, tr := range disabledTracers(t) {
		t.Run(name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, func() {
				h := FromRequest(plain.Header)
				ctx, rs := tr.StartRequest(plain, RoutePublish, h)
				hs, ms := tr.StartMessage(ctx, h, Message{Exchange: "orders", RoutingKey: "key", MessageID: "id"})
				if hs != nil || ms != nil {
					t.Fatal("something to carry without trace headers")
				}
				ms.Republished(2)
				ms.NackRetry(1, time.Millisecond)
				ms.Spooled()
				ms.End("nacked")
				var mt MessageTrace = ms
				mt.End("")
				rs.End(200)
				tr.SetBroker("h", 1)
				tr.SetBrokerURL("amqp://h:1/")
			}); n != 0 {
				t.Errorf("a request without trace headers: %v allocations, want 0", n)
			}
			if n := testing.AllocsPerRun(100, func() {
				h := FromRequest(req.Header)
				ctx, rs := tr.StartRequest(req, RoutePublish, h)
				clear(headers)
				hs, ms := tr.StartMessage(ctx, h, Message{Exchange: "orders", Headers: headers})
				if len(hs) != 3 {
					t.Fatalf("headers = %v", hs)
				}
				ms.End("")
				rs.End(200)
			}); n > 3 {
				t.Errorf("carrying traceparent, tracestate and baggage: %v allocations, want at most 3 (boxing the strings)", n)
			}
		})
	}
}

func BenchmarkDisabled(b *testing.B) {
	req := httptest.NewRequest(http.MethodPost, "/v1/publish/orders/key", nil)
	req.Header.Set("Traceparent", validTP)
	req.Header.Set("Tracestate", validTS)
	plain := httptest.NewRequest(http.MethodPost, "/v1/publish/orders/key", nil)
	var tr *Tracer
	b.Run("no trace headers", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := FromRequest(plain.Header)
			ctx, rs := tr.StartRequest(plain, RoutePublish, h)
			_, ms := tr.StartMessage(ctx, h, Message{Exchange: "orders"})
			ms.End("")
			rs.End(200)
		}
	})
	b.Run("traceparent and tracestate", func(b *testing.B) {
		headers := make(map[string]any, 4)
		b.ReportAllocs()
		for b.Loop() {
			h := FromRequest(req.Header)
			ctx, rs := tr.StartRequest(req, RoutePublish, h)
			clear(headers)
			_, ms := tr.StartMessage(ctx, h, Message{Exchange: "orders", Headers: headers})
			ms.End("")
			rs.End(200)
		}
	})
}

// BenchmarkEnabled is the cost per message with tracing on, exporting to a
// receiver that is never reached within the benchmark (the batch processor
// queues; spans are dropped when its queue is full).
func BenchmarkEnabled(b *testing.B) {
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
	b.Setenv("OTEL_SDK_DISABLED", "")
	b.Setenv("OTEL_TRACES_EXPORTER", "")
	tr, err := Setup(context.Background(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = tr.Shutdown(ctx)
	}()
	req := httptest.NewRequest(http.MethodPost, "/v1/publish/orders/key", nil)
	req.Header.Set("Traceparent", validTP)
	b.ReportAllocs()
	for b.Loop() {
		h := FromRequest(req.Header)
		ctx, rs := tr.StartRequest(req, RoutePublish, h)
		_, ms := tr.StartMessage(ctx, h, Message{Exchange: "orders", RoutingKey: "key", MessageID: "id"})
		ms.End("")
		rs.End(200)
	}
}
