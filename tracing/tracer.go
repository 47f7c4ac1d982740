package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// DefaultServiceName is service.name when neither OTEL_SERVICE_NAME nor
// OTEL_RESOURCE_ATTRIBUTES names the service.
const DefaultServiceName = "publisher"

// ScopeName is the instrumentation scope of the spans this package makes.
const ScopeName = "github.com/publisher-dev/publisher/tracing"

// Options configures Setup. The zero value means the documented defaults.
type Options struct {
	// ServiceVersion becomes the resource's service.version and the
	// instrumentation scope's version; "" leaves both out.
	ServiceVersion string
	// Logger receives the SDK's export errors (warn level). OpenTelemetry has
	// one error handler per process, so Setup installs it with
	// otel.SetErrorHandler; nil leaves the SDK's default handler (the
	// standard library logger) alone.
	Logger *slog.Logger
}

// Tracer makes the service's spans. A nil *Tracer, or one Setup returned
// with tracing off, is valid: every method is then a no-op that does not
// allocate, and the always-on header carrying (Headers.Apply) still happens.
// Its methods are safe for concurrent use.
type Tracer struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	// broker is the broker connection in use, for server.address and
	// server.port; nil until SetBroker.
	broker atomic.Pointer[brokerAddr]
}

type brokerAddr struct {
	host string
	port int
}

// ErrConfig is matched (errors.Is) by Setup's configuration errors, which
// name the variable at fault.
var ErrConfig = errors.New("tracing: invalid configuration")

// Setup reads the OpenTelemetry environment and returns the Tracer; tracing
// is off (and the Tracer a no-op) unless the environment configures an
// exporter:
//
//   - OTEL_SDK_DISABLED=true, or OTEL_TRACES_EXPORTER=none: off.
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT set,
//     or OTEL_TRACES_EXPORTER=otlp: on, exporting over OTLP. Any other
//     OTEL_TRACES_EXPORTER value is an error.
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL:
//     "http/protobuf" (the default) or "http/json" use the OTLP/HTTP exporter,
//     "grpc" the OTLP/gRPC one; anything else is an error. The exporters read
//     the rest of OTEL_EXPORTER_OTLP_* themselves (endpoint, headers, timeout,
//     compression, TLS).
//   - OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG: read by the SDK itself
//     (default parentbased_always_on); Setup checks them first so that a bad
//     value is an error naming the variable instead of a logged fallback.
//   - OTEL_BSP_*: read by the SDK's batch span processor.
//   - OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES: the resource, over the
//     defaults service.name=publisher and service.version.
//
// The propagator is W3C Trace Context plus W3C Baggage, kept in the Tracer
// (no global is set). Setup makes no connection; the exporter connects when
// it first exports.
func Setup(ctx context.Context, opts Options) (*Tracer, error) {
	on, grpc, err := fromEnv(os.Getenv)
	if err != nil || !on {
		return &Tracer{}, err
	}
	if err := checkSampler(os.Getenv); err != nil {
		return &Tracer{}, err
	}

	var exp sdktrace.SpanExporter
	if grpc {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return &Tracer{}, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}

	attrs := []attribute.KeyValue{semconv.ServiceName(DefaultServiceName)}
	if opts.ServiceVersion != "" {
		attrs = append(attrs, semconv.ServiceVersion(opts.ServiceVersion))
	}
	// Later options override earlier ones: the environment wins over the
	// defaults.
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(attrs...),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithFromEnv(),
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return &Tracer{}, fmt.Errorf("%w: OTEL_RESOURCE_ATTRIBUTES: %w", ErrConfig, err)
	}

	if opts.Logger != nil {
		log := opts.Logger
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("tracing: OpenTelemetry error", slog.String("error", err.Error()))
		}))
	}

	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
	)
	return &Tracer{
		tp: tp,
		tracer: tp.Tracer(ScopeName,
			trace.WithInstrumentationVersion(opts.ServiceVersion),
			trace.WithSchemaURL(semconv.SchemaURL)),
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}, nil
}

// fromEnv decides from the environment whether tracing is on and whether it
// exports over gRPC.
func fromEnv(getenv func(string) string) (on, grpc bool, err error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, false, nil
	}
	otlp := false
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "":
	case "none":
		return false, false, nil
	case "otlp":
		otlp = true
	default:
		return false, false, fmt.Errorf("%w: OTEL_TRACES_EXPORTER=%q: only otlp and none are supported", ErrConfig, exp)
	}
	endpoint := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) != "" ||
		strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")) != ""
	if !otlp && !endpoint {
		return false, false, nil
	}
	name, proto := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if proto == "" {
		name, proto = "OTEL_EXPORTER_OTLP_PROTOCOL", strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	switch proto {
	case "", "http/protobuf", "http/json":
		return true, false, nil
	case "grpc":
		return true, true, nil
	default:
		return false, false, fmt.Errorf("%w: %s=%q: use http/protobuf, http/json or grpc", ErrConfig, name, proto)
	}
}

// checkSampler accepts what the SDK's sampler_env.go accepts.
func checkSampler(getenv func(string) string) error {
	s := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")))
	arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG"))
	switch s {
	case "", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
		return nil
	case "traceidratio", "parentbased_traceidratio":
		if arg == "" {
			return nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return fmt.Errorf("%w: OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1", ErrConfig, arg)
		}
		return nil
	default:
		return fmt.Errorf("%w: OTEL_TRACES_SAMPLER=%q: use always_on, always_off, traceidratio or their parentbased_ forms", ErrConfig, s)
	}
}

// Enabled reports whether spans are made and exported.
func (t *Tracer) Enabled() bool { return t != nil && t.tp != nil }

// Shutdown flushes the spans not yet exported and stops the exporter, within
// ctx. Spans still open are not exported. It is a no-op when tracing is off.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// ForceFlush exports the ended spans now, within ctx.
func (t *Tracer) ForceFlush(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	return t.tp.ForceFlush(ctx)
}

// SetBroker records the broker connection in use (its host, as written in
// the broker URL, and port), which the PRODUCER spans started from now on
// carry as server.address and server.port. Call it on every (re)connect:
// after a failover to the next URL, later spans and republish events name
// the new broker. port <= 0 leaves server.port out.
func (t *Tracer) SetBroker(host string, port int) {
	if !t.Enabled() {
		return
	}
	if host == "" {
		t.broker.Store(nil)
		return
	}
	t.broker.Store(&brokerAddr{host: host, port: port})
}

// SetBrokerURL is SetBroker(BrokerFromURL(u)): for the publisher actor,
// which knows the URL it dialled. Credentials in u are not kept.
func (t *Tracer) SetBrokerURL(u string) {
	if !t.Enabled() {
		return
	}
	t.SetBroker(BrokerFromURL(u))
}

// BrokerFromURL splits an amqp:// or amqps:// URL into the host and port for
// SetBroker (the port defaults to 5672 or 5671 by scheme). It returns "", 0
// when u cannot be parsed.
func BrokerFromURL(u string) (host string, port int) {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return "", 0
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	port = 5672
	if strings.EqualFold(scheme, "amqps") {
		port = 5671
	}
	h, p, err := net.SplitHostPort(rest)
	if err != nil {
		// No port given.
		return strings.Trim(rest, "[]"), port
	}
	if n, err := strconv.Atoi(p); err == nil {
		port = n
	}
	return h, port
}
