package tracing_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/publisher-dev/publisher/tracing"
)

// With tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT), the request's trace
// context still reaches the message's AMQP headers.
func Example() {
	tr, err := tracing.Setup(context.Background(), tracing.Options{ServiceVersion: "dev"})
	if err != nil {
		panic(err)
	}
	defer tr.Shutdown(context.Background())

	req := httptest.NewRequest(http.MethodPost, "/v1/publish/orders/created", nil)
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	req.Header.Set("Tracestate", "rojo=00f067aa0ba902b7")

	h := tracing.FromRequest(req.Header)
	ctx, reqSpan := tr.StartRequest(req, tracing.RoutePublish, h)
	headers, msgSpan := tr.StartMessage(ctx, h, tracing.Message{
		Exchange: "orders", RoutingKey: "created", MessageID: "m-1",
		Headers: map[string]any{"app": "shop"},
	})
	msgSpan.Republished(2) // no-ops with tracing off
	msgSpan.End("")
	reqSpan.End(http.StatusOK)

	fmt.Println(tr.Enabled())
	fmt.Println(headers["traceparent"])
	fmt.Println(headers["tracestate"])
	fmt.Println(headers["app"])
	// Output:
	// false
	// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// rojo=00f067aa0ba902b7
	// shop
}
