package metrics_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/publisher-dev/publisher/metrics"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/supervision"
)

type fakeSource struct{ st publisher.State }

func (f *fakeSource) State() publisher.State { return f.st }

func newMetrics(t *testing.T) (*metrics.Metrics, *prometheus.Registry, *fakeSource) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	src := &fakeSource{}
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.WatchState(src, func(st publisher.State) bool { return st.Connected }, func(publisher.State) bool { return false }); err != nil {
		t.Fatal(err)
	}
	return m, reg, src
}

func TestLint(t *testing.T) {
	checkLeaks(t)
	_, reg, _ := newMetrics(t)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "publisher_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestOutcomesAndEvents(t *testing.T) {
	checkLeaks(t)
	m, reg, src := newMetrics(t)
	m.Published(publisher.OutcomeConfirmed, 3*time.Millisecond)
	m.Published(publisher.OutcomeConfirmed, 5*time.Millisecond)
	m.Published(publisher.Classify(publisher.ErrNacked).Outcome(), time.Millisecond)
	m.Republished(7)
	cause := errors.New("EOF")
	m.Event(supervision.Event{Kind: supervision.EventFailure, Supervisor: "broker", Child: "publisher", Err: cause})
	m.Event(supervision.Event{Kind: supervision.EventRestart, Supervisor: "broker", Child: "publisher"})
	m.Event(supervision.Event{Kind: supervision.EventEscalation, Supervisor: "broker", Child: "publisher", Err: cause})
	src.st = publisher.State{Connected: true, Blocked: true, Inflight: 3, Buffered: 4}

	want := `
# HELP publisher_connection_blocked 1 while the broker blocks publishing (connection.blocked: memory or disk alarm), else 0.
# TYPE publisher_connection_blocked gauge
publisher_connection_blocked 1
# HELP publisher_connection_up 1 when the AMQP connection is open with its confirm channels, else 0.
# TYPE publisher_connection_up gauge
publisher_connection_up 1
# HELP publisher_inflight_messages Messages published and not yet confirmed.
# TYPE publisher_inflight_messages gauge
publisher_inflight_messages 3
# HELP publisher_buffered_messages Messages taken and waiting to be published (mailbox and carried over a restart).
# TYPE publisher_buffered_messages gauge
publisher_buffered_messages 4
# HELP publisher_republished_total Messages published again because the connection or channel they were in flight on failed.
# TYPE publisher_republished_total counter
publisher_republished_total 7
# HELP publisher_supervision_escalations_total Failures a supervisor escalated to its parent because its restart intensity was exhausted.
# TYPE publisher_supervision_escalations_total counter
publisher_supervision_escalations_total{supervisor="broker"} 1
# HELP publisher_supervision_failures_total Failures (errors and panics) of a supervised child, by supervisor and child.
# TYPE publisher_supervision_failures_total counter
publisher_supervision_failures_total{child="publisher",supervisor="broker"} 1
# HELP publisher_supervision_restarts_total Restarts of a supervised child, by supervisor and child.
# TYPE publisher_supervision_restarts_total counter
publisher_supervision_restarts_total{child="publisher",supervisor="broker"} 1
`
	names := []string{"publisher_connection_blocked", "publisher_connection_up", "publisher_inflight_messages",
		"publisher_buffered_messages", "publisher_republished_total", "publisher_supervision_escalations_total",
		"publisher_supervision_failures_total", "publisher_supervision_restarts_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(counterOf(t, reg, "publisher_messages_total", "confirmed")); n != 2 {
		t.Fatalf("confirmed = %v, want 2", n)
	}
	if n := testutil.ToFloat64(counterOf(t, reg, "publisher_messages_total", "nacked")); n != 1 {
		t.Fatalf("nacked = %v, want 1", n)
	}
	if c, err := testutil.GatherAndCount(reg, "publisher_publish_duration_seconds"); err != nil || c != 1 {
		t.Fatalf("duration histogram: %d series, %v", c, err)
	}
}

// counterOf finds one labelled series through a gather (the vectors are
// private to the package).
func counterOf(t *testing.T, reg *prometheus.Registry, name, outcome string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x", Help: "x"})
					c.Add(m.GetCounter().GetValue())
					return c
				}
			}
		}
	}
	t.Fatalf("no %s{outcome=%q}", name, outcome)
	return nil
}

// TestHTTPResponses counts the status codes docs/http-api.md documents
// (counters resolved once) and any other code (405, the 499 of a client that
// went away) alike.
func TestHTTPResponses(t *testing.T) {
	checkLeaks(t)
	m, reg, _ := newMetrics(t)
	for _, code := range []int{200, 200, 202, 503, 405, 499, 499} {
		m.HTTPResponse(code)
	}
	want := map[string]float64{"200": 2, "202": 1, "503": 1, "405": 1, "499": 2, "400": 0, "504": 0}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "publisher_http_requests_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "code" {
					got[l.GetValue()] = s.GetCounter().GetValue()
				}
			}
		}
	}
	for code, n := range want {
		if v, ok := got[code]; !ok || v != n {
			t.Errorf("publisher_http_requests_total{code=%q} = %v (present %v), want %v", code, v, ok, n)
		}
	}
}

// The app-labelled series: each configured app's exist at 0 from Apps on
// (its common answers and its rate wait), AppMessage counts resolved and
// other codes alike, an app no longer configured keeps its series, and the
// reload counters and gauge follow ConfigReload.
func TestAppsAndReloads(t *testing.T) {
	checkLeaks(t)
	m, reg, _ := newMetrics(t)
	m.Apps([]string{"orders", "billing"})
	m.AppMessage("orders", 200)
	m.AppMessage("orders", 200)
	m.AppMessage("orders", 429)
	m.AppMessage("billing", 400) // not resolved ahead: created
	m.AppRateWait("orders", 1500*time.Millisecond)
	m.Apps([]string{"billing"}) // orders removed: its series stay
	m.AppMessage("orders", 403)
	m.ConfigReload(nil)
	m.ConfigReload(errors.New("apps[0].rate: want a positive number"))

	want := `
# HELP publisher_app_messages_total Messages (a single publish, each entry of a batch or a stream) by the app of their token and the status they were answered; app is a configured name (anonymous without authentication, default for PUBLISHER_AUTH_TOKEN).
# TYPE publisher_app_messages_total counter
publisher_app_messages_total{app="billing",code="200"} 0
publisher_app_messages_total{app="billing",code="202"} 0
publisher_app_messages_total{app="billing",code="400"} 1
publisher_app_messages_total{app="billing",code="403"} 0
publisher_app_messages_total{app="billing",code="429"} 0
publisher_app_messages_total{app="orders",code="200"} 2
publisher_app_messages_total{app="orders",code="202"} 0
publisher_app_messages_total{app="orders",code="403"} 1
publisher_app_messages_total{app="orders",code="429"} 1
# HELP publisher_app_rate_wait_seconds_total Time the streams of an app waited for its rate before publishing a line (streams slow down instead of answering 429).
# TYPE publisher_app_rate_wait_seconds_total counter
publisher_app_rate_wait_seconds_total{app="billing"} 0
publisher_app_rate_wait_seconds_total{app="orders"} 1.5
# HELP publisher_config_reloads_total Reloads of PUBLISHER_AUTH_FILE (on a change or SIGHUP), by result: success, or error (the previous apps stay in force).
# TYPE publisher_config_reloads_total counter
publisher_config_reloads_total{result="error"} 1
publisher_config_reloads_total{result="success"} 1
# HELP publisher_config_last_reload_successful 0 while the last reload of PUBLISHER_AUTH_FILE failed (the previous apps are in force), else 1.
# TYPE publisher_config_last_reload_successful gauge
publisher_config_last_reload_successful 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "publisher_app_messages_total",
		"publisher_app_rate_wait_seconds_total", "publisher_config_reloads_total", "publisher_config_last_reload_successful"); err != nil {
		t.Fatal(err)
	}
	m.ConfigReload(nil)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP publisher_config_last_reload_successful 0 while the last reload of PUBLISHER_AUTH_FILE failed (the previous apps are in force), else 1.
# TYPE publisher_config_last_reload_successful gauge
publisher_config_last_reload_successful 1
`), "publisher_config_last_reload_successful"); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { m.AppMessage("billing", 200) }); n != 0 {
		t.Errorf("AppMessage of a resolved series allocates %v times", n)
	}
}
