package tracing

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestFromEnv(t *testing.T) {
	checkLeaks(t)
	const ep = "http://collector:4318"
	for name, tc := range map[string]struct {
		env      map[string]string
		on, grpc bool
		errName  string // the variable the error must name; "" for no error
	}{
		"nothing: off":                {env: nil},
		"endpoint: on":                {env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep}, on: true},
		"traces endpoint: on":         {env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ep + "/v1/traces"}, on: true},
		"blank endpoint: off":         {env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}},
		"exporter otlp: on":           {env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		"exporter none wins":          {env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ep}},
		"sdk disabled wins":           {env: map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": ep}},
		"sdk disabled=false":          {env: map[string]string{"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": ep}, on: true},
		"sdk disabled=1 is not true":  {env: map[string]string{"OTEL_SDK_DISABLED": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": ep}, on: true},
		"grpc":                        {env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, on: true, grpc: true},
		"traces protocol wins":        {env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, on: true},
		"http/json":                   {env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, on: true},
		"bad protocol":                {env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, errName: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		"bad traces protocol":         {env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, errName: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		"bad protocol while off":      {env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}},
		"unsupported exporter":        {env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, errName: "OTEL_TRACES_EXPORTER"},
		"exporter list not supported": {env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp,console"}, errName: "OTEL_TRACES_EXPORTER"},
	} {
		on, grpc, err := fromEnv(env(tc.env))
		switch {
		case tc.errName != "":
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.errName) {
				t.Errorf("%s: err = %v, want an ErrConfig naming %s", name, err, tc.errName)
			}
		case err != nil:
			t.Errorf("%s: err = %v", name, err)
		case on != tc.on || grpc != tc.grpc:
			t.Errorf("%s: on, grpc = %v, %v; want %v, %v", name, on, grpc, tc.on, tc.grpc)
		}
	}
}

func TestCheckSampler(t *testing.T) {
	checkLeaks(t)
	for _, ok := range []map[string]string{
		nil,
		{"OTEL_TRACES_SAMPLER": "always_on"},
		{"OTEL_TRACES_SAMPLER": "ALWAYS_OFF"},
		{"OTEL_TRACES_SAMPLER": "parentbased_always_off"},
		{"OTEL_TRACES_SAMPLER": "traceidratio"},
		{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
		{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1"},
		{"OTEL_TRACES_SAMPLER_ARG": "ignored without a ratio sampler"},
	} {
		if err := checkSampler(env(ok)); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range []map[string]string{
		{"OTEL_TRACES_SAMPLER": "jaeger_remote"},
		{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
		{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
		{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "-0.1"},
	} {
		if err := checkSampler(env(bad)); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "OTEL_TRACES_SAMPLER") {
			t.Errorf("%v: err = %v, want an ErrConfig naming the variable", bad, err)
		}
	}
}

func TestSetupOff(t *testing.T) {
	checkLeaks(t)
	for name, vars := range map[string]map[string]string{
		"no endpoint":   {},
		"sdk disabled":  {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
		"exporter none": {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
	} {
		t.Run(name, func(t *testing.T) {
			clearOTELEnv(t)
			for k, v := range vars {
				t.Setenv(k, v)
			}
			tr, err := Setup(context.Background(), Options{})
			if err != nil || tr == nil || tr.Enabled() {
				t.Fatalf("Setup = %v, %v; want a disabled Tracer", tr, err)
			}
			if err := tr.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSetupErrors(t *testing.T) {
	checkLeaks(t)
	clearOTELEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_TRACES_SAMPLER", "sometimes")
	tr, err := Setup(context.Background(), Options{})
	if !errors.Is(err, ErrConfig) || tr.Enabled() {
		t.Fatalf("Setup = %v, %v; want a disabled Tracer and an ErrConfig", tr, err)
	}
}

// clearOTELEnv unsets (for the test) the variables Setup and the SDK read,
// so that the environment the tests run in cannot change their outcome.
func clearOTELEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{
		"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_EXPORTER_OTLP_HEADERS",
		"OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_PROPAGATORS",
	} {
		t.Setenv(k, "")
	}
}

func TestBrokerFromURL(t *testing.T) {
	checkLeaks(t)
	for u, want := range map[string]struct {
		host string
		port int
	}{
		"amqp://guest:guest@localhost:5672/":      {"localhost", 5672},
		"amqp://rabbit.internal/vhost":            {"rabbit.internal", 5672},
		"amqps://u:p@rabbit.example.com/":         {"rabbit.example.com", 5671},
		"amqps://rabbit.example.com:15671":        {"rabbit.example.com", 15671},
		"amqp://u:p%40ss@[::1]:5673/%2f":          {"::1", 5673},
		"amqp://[fe80::1]/":                       {"fe80::1", 5672},
		"amqp://user:pa:ss@host:1234?heartbeat=5": {"host", 1234},
		"not a url": {"", 0},
	} {
		host, port := BrokerFromURL(u)
		if host != want.host || port != want.port {
			t.Errorf("BrokerFromURL(%q) = %q, %d; want %q, %d", u, host, port, want.host, want.port)
		}
	}
}
