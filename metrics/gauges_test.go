package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/publisher-dev/publisher/metrics"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/spool"
)

const stateExposition = `
# HELP publisher_buffered_messages Messages taken and waiting to be published (mailbox and carried over a restart).
# TYPE publisher_buffered_messages gauge
publisher_buffered_messages 4
# HELP publisher_connection_blocked 1 while the broker blocks publishing (connection.blocked: memory or disk alarm), else 0.
# TYPE publisher_connection_blocked gauge
publisher_connection_blocked 1
# HELP publisher_connection_up 1 when the AMQP connection is open with its confirm channels, else 0.
# TYPE publisher_connection_up gauge
publisher_connection_up 1
# HELP publisher_given_up 1 while the supervision tree has given up on the broker and keeps retrying at the slowest backoff (PUBLISHER_ON_GIVE_UP=degrade, or a spool that accepts), else 0.
# TYPE publisher_given_up gauge
publisher_given_up 0
# HELP publisher_inflight_messages Messages published and not yet confirmed.
# TYPE publisher_inflight_messages gauge
publisher_inflight_messages 3
# HELP publisher_ready 1 when /readyz answers 200, else 0.
# TYPE publisher_ready gauge
publisher_ready 1
`

var stateNames = []string{"publisher_buffered_messages", "publisher_connection_blocked", "publisher_connection_up",
	"publisher_given_up", "publisher_inflight_messages", "publisher_ready"}

// The state gauges keep the names, help texts and (absent) labels the README's
// metrics section and the dashboards use.
func TestStateGaugesExposition(t *testing.T) {
	checkLeaks(t)
	reg := prometheus.NewPedanticRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	src := &fakeSource{st: publisher.State{Connected: true, Blocked: true, Inflight: 3, Buffered: 4}}
	if err := m.WatchState(src, func(publisher.State) bool { return true }, func(publisher.State) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(stateExposition), stateNames...); err != nil {
		t.Fatal(err)
	}
}

const spoolExposition = `
# HELP publisher_spool_accepting 1 when the spool takes messages, 0 while it is full (its bound or its volume) or failing (being retried).
# TYPE publisher_spool_accepting gauge
publisher_spool_accepting 1
# HELP publisher_spool_bytes Bytes of the messages held in the spool, framing included.
# TYPE publisher_spool_bytes gauge
publisher_spool_bytes 2048
# HELP publisher_spool_max_bytes The spool's bound (PUBLISHER_SPOOL_MAX_BYTES); publishes get 503 beyond it.
# TYPE publisher_spool_max_bytes gauge
publisher_spool_max_bytes 1e+06
# HELP publisher_spool_messages Messages held in the spool, not yet confirmed by the broker.
# TYPE publisher_spool_messages gauge
publisher_spool_messages 7
# HELP publisher_spool_segment_bytes Size of the spool's segment files, as chosen from PUBLISHER_SPOOL_MAX_BYTES and the volume's free space.
# TYPE publisher_spool_segment_bytes gauge
publisher_spool_segment_bytes 65536
`

var spoolNames = []string{"publisher_spool_accepting", "publisher_spool_bytes", "publisher_spool_max_bytes",
	"publisher_spool_messages", "publisher_spool_segment_bytes"}

func TestSpoolGaugesExposition(t *testing.T) {
	checkLeaks(t)
	reg := prometheus.NewPedanticRegistry()
	st := spool.Status{Accepting: true, Messages: 7, Bytes: 2048, SegmentBytes: 64 << 10}
	if _, err := metrics.NewSpool(reg, 1e6, func() spool.Status { return st }); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(spoolExposition), spoolNames...); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// changingSource returns a different state at each call (call n: n in flight,
// n buffered, connected and blocked when n is odd), as a busy publisher does
// between two reads, and counts the calls.
type changingSource struct{ calls int }

func (c *changingSource) State() publisher.State {
	c.calls++
	n := c.calls
	return publisher.State{Inflight: n, Buffered: n, Connected: n%2 == 1, Blocked: n%2 == 1, Connects: uint64(n)}
}

// One scrape reads the state once and every state gauge, ready and given_up
// included, comes from that snapshot (with one GaugeFunc per gauge, each
// reading State(), a scrape read it four times and mixed the four).
func TestStateGaugesOneSnapshotPerScrape(t *testing.T) {
	checkLeaks(t)
	reg := prometheus.NewPedanticRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	src := &changingSource{}
	var readyFrom, givenUpFrom []publisher.State
	ready := func(st publisher.State) bool { readyFrom = append(readyFrom, st); return st.Connected }
	givenUp := func(st publisher.State) bool { givenUpFrom = append(givenUpFrom, st); return !st.Connected }
	if err := m.WatchState(src, ready, givenUp); err != nil {
		t.Fatal(err)
	}
	for scrape := 1; scrape <= 3; scrape++ {
		got := gatherValues(t, reg, stateNames)
		if src.calls != scrape {
			t.Fatalf("after %d scrapes State() was called %d times, want once per scrape", scrape, src.calls)
		}
		snap := publisher.State{Inflight: scrape, Buffered: scrape, Connected: scrape%2 == 1, Blocked: scrape%2 == 1, Connects: uint64(scrape)}
		up := b2f(snap.Connected)
		want := map[string]float64{
			"publisher_inflight_messages": float64(scrape), "publisher_buffered_messages": float64(scrape),
			"publisher_connection_up": up, "publisher_connection_blocked": up,
			"publisher_ready": up, "publisher_given_up": 1 - up,
		}
		for name, v := range want {
			if got[name] != v {
				t.Errorf("scrape %d: %s = %v, want %v (all from one snapshot: %+v)", scrape, name, got[name], v, snap)
			}
		}
		if len(readyFrom) != scrape || readyFrom[scrape-1] != snap || len(givenUpFrom) != scrape || givenUpFrom[scrape-1] != snap {
			t.Errorf("scrape %d: ready and given_up were computed from %v and %v, want the scrape's snapshot %+v",
				scrape, readyFrom, givenUpFrom, snap)
		}
	}
}

// One scrape reads the spool's status once.
func TestSpoolGaugesOneSnapshotPerScrape(t *testing.T) {
	checkLeaks(t)
	reg := prometheus.NewPedanticRegistry()
	calls := 0
	status := func() spool.Status {
		calls++
		return spool.Status{Accepting: calls%2 == 1, Messages: calls, Bytes: int64(calls) * 100, SegmentBytes: int64(calls) * 1000}
	}
	if _, err := metrics.NewSpool(reg, 5000, status); err != nil {
		t.Fatal(err)
	}
	for scrape := 1; scrape <= 3; scrape++ {
		got := gatherValues(t, reg, spoolNames)
		if calls != scrape {
			t.Fatalf("after %d scrapes the status was read %d times, want once per scrape", scrape, calls)
		}
		want := map[string]float64{
			"publisher_spool_messages": float64(scrape), "publisher_spool_bytes": float64(scrape * 100),
			"publisher_spool_segment_bytes": float64(scrape * 1000), "publisher_spool_accepting": b2f(scrape%2 == 1),
			"publisher_spool_max_bytes": 5000,
		}
		for name, v := range want {
			if got[name] != v {
				t.Errorf("scrape %d: %s = %v, want %v", scrape, name, got[name], v)
			}
		}
	}
}

// gatherValues is one scrape of reg: the value of each of the unlabelled
// gauges names; a name missing from the scrape fails the test.
func gatherValues(t *testing.T, reg *prometheus.Registry, names []string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if ms := mf.GetMetric(); len(ms) == 1 && ms[0].GetGauge() != nil {
			got[mf.GetName()] = ms[0].GetGauge().GetValue()
		}
	}
	for _, n := range names {
		if _, ok := got[n]; !ok {
			t.Fatalf("the scrape has no gauge %s", n)
		}
	}
	return got
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
