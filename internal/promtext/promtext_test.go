package promtext_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/publisher-dev/publisher/internal/promtext"
)

// The cases of pubbench's former TestSumMetric, which tested the hand parser
// this package replaced.
func TestSum(t *testing.T) {
	exp := `# HELP publisher_buffered_messages x
# TYPE publisher_buffered_messages gauge
publisher_buffered_messages 9000
publisher_buffered_messages_total 5
publisher_inflight_messages{channel="0"} 600
publisher_inflight_messages{channel="1",x="a}b"} 400 1712345678
publisher_publish_duration_seconds_bucket{le="0.1"} 3
`
	s, err := promtext.Parse(strings.NewReader(exp))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		want  float64
		found bool
	}{
		{"publisher_buffered_messages", 9000, true},
		{"publisher_inflight_messages", 1000, true},
		{"publisher_publish_duration_seconds", 0, false},
		{"missing", 0, false},
	}
	for _, c := range cases {
		got, found := s.Sum(c.name)
		if got != c.want || found != c.found {
			t.Errorf("Sum(%s) = %v, %v; want %v, %v", c.name, got, found, c.want, c.found)
		}
	}
	if _, err := promtext.Parse(strings.NewReader("m nope\n")); err == nil {
		t.Error("bad value: no error")
	}
}

// TestGet pins what the tests' metric helpers rely on: the sum of the
// samples of name carrying every given label, and an error wrapping
// ErrMissing, never a 0, when there are none; an answer that is not an
// exposition does not parse.
func TestGet(t *testing.T) {
	exp := `# HELP publisher_messages_total x
# TYPE publisher_messages_total counter
publisher_messages_total{outcome="confirmed"} 7
publisher_messages_total{outcome="nacked"} 2
# TYPE publisher_supervision_restarts_total counter
publisher_supervision_restarts_total{child="publisher",supervisor="broker"} 3
publisher_supervision_restarts_total{child="relay",supervisor="broker"} 1
# TYPE publisher_spool_messages gauge
publisher_spool_messages 0
`
	s, err := promtext.Parse(strings.NewReader(exp))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"publisher_messages_total", nil, 9},
		{"publisher_messages_total", []string{`outcome="confirmed"`}, 7},
		{"publisher_supervision_restarts_total", []string{`child="publisher"`}, 3},
		{"publisher_supervision_restarts_total", []string{`supervisor="broker"`}, 4},
		{"publisher_supervision_restarts_total", []string{`supervisor="broker"`, `child="relay"`}, 1},
		{"publisher_spool_messages", nil, 0}, // a real 0
	} {
		if got, err := s.Get(c.name, c.labels...); err != nil || got != c.want {
			t.Errorf("Get(%s, %q) = %v, %v; want %v", c.name, c.labels, got, err, c.want)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"publisher_messages_total", []string{`outcome="lost"`}},
		{"publisher_messages", nil}, // a prefix is not the name
		{"publisher_spool_message", nil},
		{"publisher_supervision_restarts_total", []string{`child="publ"`}},
	} {
		got, err := s.Get(c.name, c.labels...)
		if !errors.Is(err, promtext.ErrMissing) {
			t.Errorf("Get(%s, %q) = %v, %v; want ErrMissing", c.name, c.labels, got, err)
		} else if !strings.Contains(err.Error(), c.name) {
			t.Errorf("error %q does not name %s", err, c.name)
		}
	}
	for _, body := range []string{`Get "http://127.0.0.1:1/metrics": connection refused`, "<html>502</html>"} {
		if s, err := promtext.Parse(strings.NewReader(body)); err == nil {
			if _, err := s.Get("publisher_ready"); !errors.Is(err, promtext.ErrMissing) {
				t.Errorf("%q: parsed, and Get says %v", body, err)
			}
		}
	}
}

// TestClientGolangExposition reads what client_golang writes: a histogram's
// _count and _sum, and a vector's series by label.
func TestClientGolangExposition(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "publisher_publish_duration_seconds", Help: "x", Buckets: []float64{0.1, 1}})
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "publisher_messages_total", Help: "x"}, []string{"outcome"})
	reg.MustRegister(h, c)
	h.Observe(0.05)
	h.Observe(0.5)
	h.Observe(2)
	c.WithLabelValues("confirmed").Add(5)
	c.WithLabelValues("failed").Inc()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, f := range families {
		if _, err := expfmt.MetricFamilyToText(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	s, err := promtext.Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, labels []string, want float64) {
		t.Helper()
		if got, found := s.Sum(name, labels...); !found || got != want {
			t.Errorf("Sum(%s, %q) = %v, %v; want %v, true", name, labels, got, found, want)
		}
	}
	check("publisher_publish_duration_seconds_count", nil, 3)
	check("publisher_publish_duration_seconds_sum", nil, 2.55)
	check("publisher_publish_duration_seconds_bucket", []string{`le="1"`}, 2)
	check("publisher_publish_duration_seconds_bucket", []string{`le="+Inf"`}, 3)
	check("publisher_messages_total", []string{`outcome="confirmed"`}, 5)
	check("publisher_messages_total", nil, 6)
	if _, found := s.Sum("publisher_publish_duration_seconds"); found {
		t.Error("a histogram's own name has samples")
	}
	if v, err := s.Get("publisher_messages_total", `outcome="failed"`); err != nil || v != 1 {
		t.Errorf("Get(failed) = %v, %v; want 1", v, err)
	}
	if _, err := s.Get("missing"); !errors.Is(err, promtext.ErrMissing) {
		t.Errorf("Get(missing): %v, want ErrMissing", err)
	}
}

func TestSumPanicsOnAMalformedLabel(t *testing.T) {
	for _, l := range []string{"outcome", `outcome=confirmed`, `="x"`, `outcome="x`} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("label %q: no panic", l)
				}
			}()
			promtext.Samples{}.Sum("m", l)
		}()
	}
}
