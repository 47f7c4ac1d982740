package tracing

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

const (
	validTP  = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	validTP2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	validTS  = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
)

// malformedTraceparents are dropped by FromRequest (and by the propagator).
var malformedTraceparents = map[string]string{
	"too short":              "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
	"too long (version 00)":  validTP + "0",
	"extra field in 00":      validTP + "-extra",
	"trace id short":         "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
	"span id long":           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7a-01",
	"version ff":             "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	"version not hex":        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	"all-zero trace id":      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
	"all-zero span id":       "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
	"uppercase trace id":     "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
	"uppercase span id":      "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
	"uppercase flags":        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
	"reserved flags in 00":   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
	"underscores":            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
	"missing flags":          "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
	"spaces":                 " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	"empty":                  "",
	"garbage":                "hello",
	"future version no sep":  "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
	"non-hex in trace id":    "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
	"utf-8 in span id":       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902é-01",
	"dashes only":            "00---",
	"version 00 flags blank": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-",
}

// validTraceparents are kept.
var validTraceparents = []string{
	validTP,
	validTP2,
	"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", // random flag (Trace Context level 2)
	"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // a future version
	"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-brings",
}

func TestFromRequestTraceparent(t *testing.T) {
	checkLeaks(t)
	for name, tp := range malformedTraceparents {
		t.Run(name, func(t *testing.T) {
			got := FromRequest(http.Header{"Traceparent": {tp}, "Tracestate": {validTS}, "Baggage": {"k=v"}})
			if want := (Headers{Baggage: "k=v"}); got != want {
				t.Fatalf("FromRequest(%q) = %+v, want %+v (traceparent and tracestate dropped, baggage kept)", tp, got, want)
			}
		})
	}
	for _, tp := range validTraceparents {
		got := FromRequest(http.Header{"Traceparent": {tp}, "Tracestate": {validTS}})
		if want := (Headers{Traceparent: tp, Tracestate: validTS}); got != want {
			t.Errorf("FromRequest(%q) = %+v, want %+v", tp, got, want)
		}
	}
}

func TestFromRequest(t *testing.T) {
	checkLeaks(t)
	long := strings.Repeat("k=v,", maxBaggageBytes/4) + "k=v"
	for name, tc := range map[string]struct {
		hdr  http.Header
		want Headers
	}{
		"nothing":             {http.Header{}, Headers{}},
		"traceparent only":    {http.Header{"Traceparent": {validTP}}, Headers{Traceparent: validTP}},
		"two traceparents":    {http.Header{"Traceparent": {validTP, validTP2}, "Tracestate": {validTS}}, Headers{}},
		"tracestate lines":    {http.Header{"Traceparent": {validTP}, "Tracestate": {"rojo=1", "congo=2"}}, Headers{Traceparent: validTP, Tracestate: "rojo=1,congo=2"}},
		"tracestate alone":    {http.Header{"Tracestate": {validTS}}, Headers{}},
		"tracestate invalid":  {http.Header{"Traceparent": {validTP}, "Tracestate": {"Rojo=1"}}, Headers{Traceparent: validTP}},
		"tracestate dup keys": {http.Header{"Traceparent": {validTP}, "Tracestate": {"a=1", "a=2"}}, Headers{Traceparent: validTP}},
		"tracestate 33":       {http.Header{"Traceparent": {validTP}, "Tracestate": {members(33)}}, Headers{Traceparent: validTP}},
		"tracestate 32":       {http.Header{"Traceparent": {validTP}, "Tracestate": {members(32)}}, Headers{Traceparent: validTP, Tracestate: members(32)}},
		"baggage lines":       {http.Header{"Baggage": {"a=1", "b=2"}}, Headers{Baggage: "a=1,b=2"}},
		"baggage non-ascii":   {http.Header{"Baggage": {"a=é"}}, Headers{}},
		"baggage control":     {http.Header{"Baggage": {"a=1\x00"}}, Headers{}},
		"baggage too long":    {http.Header{"Baggage": {long}}, Headers{}},
	} {
		if got := FromRequest(tc.hdr); got != tc.want {
			t.Errorf("%s: FromRequest = %+v, want %+v", name, got, tc.want)
		}
	}
}

func members(n int) string {
	m := make([]string, n)
	for i := range m {
		m[i] = fmt.Sprintf("k%d=v", i)
	}
	return strings.Join(m, ",")
}

// TestTraceparentMatchesPropagator holds validTraceparent to the
// OpenTelemetry propagator it mirrors, so that the same traceparent is kept
// with tracing off as is used as the parent with tracing on.
func TestTraceparentMatchesPropagator(t *testing.T) {
	checkLeaks(t)
	cases := append([]string(nil), validTraceparents...)
	for _, tp := range malformedTraceparents {
		cases = append(cases, tp)
	}
	// Every single-character change of a valid traceparent.
	for i := range len(validTP) {
		for _, c := range "0af-Fz " {
			cases = append(cases, validTP[:i]+string(c)+validTP[i+1:])
		}
	}
	for _, tp := range cases {
		if got, want := validTraceparent(tp), propagatorAccepts(tp); got != want {
			t.Errorf("validTraceparent(%q) = %v, the propagator says %v", tp, got, want)
		}
	}
}

func FuzzTraceparent(f *testing.F) {
	for _, tp := range validTraceparents {
		f.Add(tp)
	}
	for _, tp := range malformedTraceparents {
		f.Add(tp)
	}
	f.Fuzz(func(t *testing.T, tp string) {
		if got, want := validTraceparent(tp), propagatorAccepts(tp); got != want {
			t.Fatalf("validTraceparent(%q) = %v, the propagator says %v", tp, got, want)
		}
	})
}

func propagatorAccepts(tp string) bool {
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": tp})
	return trace.SpanContextFromContext(ctx).IsValid()
}

func TestTracestateMatchesParser(t *testing.T) {
	checkLeaks(t)
	cases := []string{
		validTS, "a=1", " a=1 ", "a=1,,b=2", ",", ",,,", "a", "a=", "=1", "a= 1", "a=1 ", "a=1\t",
		"A=1", "1a=1", "a@b=1", "1@b=1", "a@1=1", "a@=1", "@b=1", "a@b@c=1", "a/b*c-d_e=1",
		"a=,", "a=x=y", "a=\x7f", "a=~", "a=é", "a=1,a=2", members(32), members(33),
		"t" + strings.Repeat("x", 240) + "@s" + strings.Repeat("y", 13) + "=1",
		"t" + strings.Repeat("x", 241) + "@s=1",
		"t@s" + strings.Repeat("y", 14) + "=1",
		"k" + strings.Repeat("x", 255) + "=1",
		"k" + strings.Repeat("x", 256) + "=1",
		"k=" + strings.Repeat("v", 256),
		"k=" + strings.Repeat("v", 257),
	}
	for _, ts := range cases {
		if got, want := validTracestate(ts), parserAccepts(ts); got != want {
			t.Errorf("validTracestate(%.40q) = %v, trace.ParseTraceState says %v", ts, got, want)
		}
	}
}

func FuzzTracestate(f *testing.F) {
	for _, s := range []string{validTS, "a=1,,b=2", "a@b=1", members(33), "a=1,a=2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ts string) {
		if got, want := validTracestate(ts), parserAccepts(ts); got != want {
			t.Fatalf("validTracestate(%q) = %v, trace.ParseTraceState says %v", ts, got, want)
		}
	})
}

func parserAccepts(ts string) bool {
	s, err := trace.ParseTraceState(ts)
	return err == nil && s.Len() > 0
}

func TestApply(t *testing.T) {
	checkLeaks(t)
	req := Headers{Traceparent: validTP, Tracestate: validTS, Baggage: "k=v"}
	for name, tc := range map[string]struct {
		h    Headers
		own  map[string]any
		want map[string]any
	}{
		"nothing, nil map": {Headers{}, nil, nil},
		"into nil map": {req, nil, map[string]any{
			"traceparent": validTP, "tracestate": validTS, "baggage": "k=v"}},
		"beside other headers": {Headers{Traceparent: validTP}, map[string]any{"x": "y"}, map[string]any{
			"x": "y", "traceparent": validTP}},
		"own traceparent wins": {req, map[string]any{"traceparent": validTP2}, map[string]any{
			"traceparent": validTP2, "baggage": "k=v"}},
		"own traceparent and tracestate": {req, map[string]any{"traceparent": validTP2, "tracestate": "own=1"}, map[string]any{
			"traceparent": validTP2, "tracestate": "own=1", "baggage": "k=v"}},
		"own invalid tracestate dropped": {req, map[string]any{"traceparent": validTP2, "tracestate": "Own=1"}, map[string]any{
			"traceparent": validTP2, "baggage": "k=v"}},
		"own malformed traceparent replaced": {req, map[string]any{"traceparent": "00-zz", "tracestate": "own=1"}, map[string]any{
			"traceparent": validTP, "tracestate": validTS, "baggage": "k=v"}},
		"own malformed traceparent, nothing to carry": {Headers{}, map[string]any{"traceparent": "00-zz", "x": "y"}, map[string]any{
			"x": "y"}},
		"own non-string traceparent": {req, map[string]any{"traceparent": []byte(validTP2)}, map[string]any{
			"traceparent": validTP, "tracestate": validTS, "baggage": "k=v"}},
		"own baggage wins": {req, map[string]any{"baggage": "own=1"}, map[string]any{
			"traceparent": validTP, "tracestate": validTS, "baggage": "own=1"}},
		"own stray tracestate dropped": {Headers{Traceparent: validTP}, map[string]any{"tracestate": "own=1"}, map[string]any{
			"traceparent": validTP}},
	} {
		got := tc.h.Apply(maps.Clone(tc.own))
		if !maps.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%s: Apply = %v, want %v", name, got, tc.want)
		}
		if tc.want == nil && got != nil {
			t.Errorf("%s: Apply allocated a map for nothing: %v", name, got)
		}
	}
}

func TestFromTable(t *testing.T) {
	checkLeaks(t)
	got := FromTable(map[string]any{"traceparent": validTP, "tracestate": validTS, "baggage": "a=1"})
	if want := (Headers{validTP, validTS, "a=1"}); got != want {
		t.Fatalf("FromTable = %+v, want %+v", got, want)
	}
	if got := FromTable(map[string]any{"traceparent": "bad", "tracestate": validTS}); !got.IsZero() {
		t.Fatalf("FromTable kept %+v", got)
	}
	if got := FromTable(nil); !got.IsZero() {
		t.Fatalf("FromTable(nil) = %+v", got)
	}
}
