package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
	"github.com/publisher-dev/publisher/internal/poll"
)

var async = map[string]string{"Prefer": "respond-async"}

// The real binary with a spool under concurrent respond-async load, killed
// with SIGKILL at random moments and started again on the same directory, the
// broker unreachable part of the time: every message answered 2xx reaches the
// queue.
func TestSpoolSurvivesSIGKILL(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-spool-kill")
	proxy := faultproxy.ForURL(t, amqpURL)
	dir := t.TempDir()
	env := map[string]string{
		"PUBLISHER_AMQP_URLS":    proxy.AMQPURL(),
		"PUBLISHER_SPOOL_DIR":    dir,
		"PUBLISHER_MAX_RESTARTS": "1000",
		"PUBLISHER_BACKOFF_MIN":  "10ms",
		"PUBLISHER_BACKOFF_MAX":  "200ms",
	}
	var acked []string
	codes := map[string]int{}
	rng := newRand(t) // the moments of the kills; logged, -seed replays them
	for round := range 4 {
		// Round 1 runs with the broker unreachable: only the spool takes them.
		proxy.SetRefuse(round == 1)
		if round == 1 {
			proxy.CutAll()
		}
		p := startService(t, env)
		poll.Within(t, waitLimit, "service ready", func() bool { return p.answers("/readyz", 200) })
		stop := make(chan struct{})
		res := httpLoad(p, q, 16, async, stop)
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		if err := p.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p.wait(30 * time.Second)
		close(stop)
		r := <-res
		acked = append(acked, r.Acked...)
		for c, n := range r.Outcomes {
			codes[c] += n
		}
		t.Logf("round %d: killed", round)
	}
	proxy.SetRefuse(false)
	p := startService(t, env)
	p.waitReady()
	poll.Within(t, waitLimit, "spool drained", func() bool { return p.metric("publisher_spool_messages") == 0 })
	t.Logf("status codes over the rounds: %v", codes)
	brokertest.CheckDelivered(t, amqpURL, q, acked, 0)
}

// A full spool answers 503 at once (nothing old is dropped) and accepts again
// once the broker drained it.
func TestSpoolFullThenAcceptsAgain(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-spool-full")
	proxy := faultproxy.ForURL(t, amqpURL)
	proxy.SetRefuse(true)
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":       proxy.AMQPURL(),
		"PUBLISHER_SPOOL_DIR":       t.TempDir(),
		"PUBLISHER_SPOOL_MAX_BYTES": "65536",
		"PUBLISHER_ON_GIVE_UP":      "degrade",
		"PUBLISHER_BACKOFF_MIN":     "10ms",
		"PUBLISHER_BACKOFF_MAX":     "200ms",
	})
	poll.Within(t, waitLimit, "ready with the broker away", func() bool { return p.answers("/readyz", 200) })
	var acked []string
	body := make([]byte, 1024)
	full := false
	for i := range 200 {
		r, err := p.publish("amq.default", q, body, async)
		if err != nil {
			t.Fatal(err)
		}
		if r.code == 202 {
			acked = append(acked, r.id)
			continue
		}
		if r.code != 503 || r.retryAfter == "" {
			t.Fatalf("publish %d: %+v, want 202 or 503 with Retry-After", i, r)
		}
		full = true
		break
	}
	if !full {
		t.Fatal("a 64 KiB spool took 200 KiB")
	}
	if c, _ := p.mustGet("/readyz"); c != 503 {
		t.Fatalf("/readyz = %d with a full spool, want 503", c)
	}
	proxy.SetRefuse(false)
	poll.Within(t, waitLimit, "spool drained", func() bool { return p.metric("publisher_spool_messages") == 0 })
	r, err := p.publish("amq.default", q, body, async)
	if err != nil || r.code != 202 {
		t.Fatalf("publish after the drain: %+v %v", r, err)
	}
	acked = append(acked, r.id)
	poll.Within(t, waitLimit, "spool drained again", func() bool { return p.metric("publisher_spool_messages") == 0 })
	brokertest.CheckDelivered(t, amqpURL, q, acked, 0)
}

// A broker outage of a minute: the service keeps answering 202, the spool
// grows, then drains when the broker returns; the metrics show it.
func TestSpoolBrokerOutageOfAMinute(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute-long outage")
	}
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-spool-outage")
	proxy := faultproxy.ForURL(t, amqpURL)
	// Default restart intensity and backoff: a one-minute outage is ridden out.
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":       proxy.AMQPURL(),
		"PUBLISHER_SPOOL_DIR":       t.TempDir(),
		"PUBLISHER_CONFIRM_TIMEOUT": "1s",
	})
	p.waitReady()
	var acked []string
	proxy.SetRefuse(true)
	proxy.CutAll()
	poll.Within(t, waitLimit, "broker down", func() bool { return p.metric("publisher_connection_up") == 0 })
	start := time.Now()
	sent, peak := 0, 0.0
	for time.Since(start) < time.Minute {
		h := async
		if sent%10 == 0 {
			h = nil // a synchronous request: 202 after the confirm timeout
		}
		r, err := p.publish("amq.default", q, []byte(fmt.Sprint("outage-", sent)), h)
		if err != nil {
			t.Fatal(err)
		}
		if r.code != 202 {
			t.Fatalf("during the outage: %+v, want 202", r)
		}
		acked = append(acked, r.id)
		sent++
		if c, body := p.mustGet("/readyz"); c != 200 {
			t.Fatalf("/readyz %d during the outage with a spool: %s", c, body)
		}
		peak = max(peak, p.metric("publisher_spool_messages"))
		time.Sleep(20 * time.Millisecond)
	}
	if !p.Running() {
		t.Fatal("the service exited during a one-minute outage")
	}
	if peak < float64(sent)/2 {
		t.Fatalf("spool_messages peaked at %v for %d messages sent during the outage", peak, sent)
	}
	proxy.SetRefuse(false)
	poll.Within(t, waitLimit, "spool drained", func() bool { return p.metric("publisher_spool_messages") == 0 })
	t.Logf("%d messages during the outage, spool peaked at %v, drained %s after the broker returned", sent, peak, time.Since(start.Add(time.Minute)).Round(time.Millisecond))
	brokertest.CheckDelivered(t, amqpURL, q, acked, 0)
}

// With a spool that accepts, giving up on the broker never stops the process,
// even with PUBLISHER_ON_GIVE_UP=exit (the default): the tree gives up over
// and over here (small intensities), the service stays ready answering 202,
// /readyz and the metrics say the broker is down and the tree gave up, and the
// spool drains once the broker is back.
func TestSpoolOutlivesGivingUp(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-spool-giveup")
	proxy := faultproxy.ForURL(t, amqpURL)
	proxy.SetRefuse(true)
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":         proxy.AMQPURL(),
		"PUBLISHER_SPOOL_DIR":         t.TempDir(),
		"PUBLISHER_MAX_RESTARTS":      "2",
		"PUBLISHER_ROOT_MAX_RESTARTS": "1",
		"PUBLISHER_BACKOFF_MIN":       "10ms",
		"PUBLISHER_BACKOFF_MAX":       "200ms",
	})
	poll.Within(t, waitLimit, "ready with the broker away", func() bool { return p.answers("/readyz", 200) })
	poll.Within(t, waitLimit, "given up", func() bool { return p.metric("publisher_given_up") == 1 })
	escalations := p.metric("publisher_supervision_escalations_total", `supervisor="broker"`)
	var acked []string
	// Publish until the tree has given up five times more and 50 messages
	// went in (counts of events, not a fixed time): the process must answer
	// 202 and stay ready throughout.
	start := time.Now()
	for i := 0; i < 50 || p.metric("publisher_supervision_escalations_total", `supervisor="broker"`) < escalations+5; i++ {
		if time.Since(start) > waitLimit {
			t.Fatalf("the tree did not give up five more times within %v", waitLimit)
		}
		r, err := p.publish("amq.default", q, []byte(fmt.Sprint("given-up-", i)), async)
		if err != nil || r.code != 202 {
			t.Fatalf("publish %d after giving up: %+v %v, want 202", i, r, err)
		}
		acked = append(acked, r.id)
		code, body := p.mustGet("/readyz")
		if code != 200 || !strings.Contains(body, `"broker_up":false`) || !strings.Contains(body, `"given_up":true`) {
			t.Fatalf("/readyz %d %s, want ready, broker down, given up", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !p.Running() {
		t.Fatalf("the service exited (status %d) while its spool accepted", p.ExitCode())
	}
	if p.metric("publisher_connection_up") != 0 {
		t.Fatal("publisher_connection_up is not 0 with the broker away")
	}
	proxy.SetRefuse(false)
	poll.Within(t, waitLimit, "spool drained", func() bool { return p.metric("publisher_spool_messages") == 0 })
	if p.metric("publisher_given_up") != 0 {
		t.Fatal("publisher_given_up is still 1 after the broker came back")
	}
	brokertest.CheckDelivered(t, amqpURL, q, acked, 0)
}

// Bytes flipped in an older spool segment while the service was stopped: the
// next start salvages the rest and reports the loss, with the count and the
// ids it could read, in its log and in publisher_spool_lost_records_total;
// everything else is delivered once the broker is back.
func TestSpoolCorruptionReported(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-spool-corrupt")
	proxy := faultproxy.ForURL(t, amqpURL)
	proxy.SetRefuse(true)
	dir := t.TempDir()
	env := map[string]string{
		"PUBLISHER_AMQP_URLS":       proxy.AMQPURL(),
		"PUBLISHER_SPOOL_DIR":       dir,
		"PUBLISHER_SPOOL_MAX_BYTES": "2097152", // 256 KiB segments
	}
	p := startService(t, env)
	poll.Within(t, waitLimit, "ready with the broker away", func() bool { return p.answers("/readyz", 200) })
	var acked []string
	for i := range 300 {
		r, err := p.publish("amq.default", q, bytes.Repeat([]byte{'x'}, 2048), map[string]string{"Prefer": "respond-async", "X-Message-Id": fmt.Sprint("c-", i)})
		if err != nil || r.code != 202 {
			t.Fatalf("publish %d: %+v %v", i, r, err)
		}
		acked = append(acked, r.id)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.wait(30 * time.Second)
	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(segs)
	if len(segs) < 2 {
		t.Fatalf("segments %v: want an older one to damage", segs)
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	for i := 100 << 10; i < 100<<10+16; i++ { // inside a record in the middle
		b[i] ^= 0xff
	}
	if err := os.WriteFile(segs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}

	p = startService(t, env)
	poll.Within(t, waitLimit, "restarted", func() bool { return p.answers("/readyz", 200) })
	var report struct {
		Lost int      `json:"lost_records"`
		IDs  []string `json:"lost_ids"`
	}
	for _, line := range strings.Split(p.Logs(), "\n") {
		if strings.Contains(line, "corrupt segment set aside") {
			if err := json.Unmarshal([]byte(line), &report); err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
		}
	}
	if report.Lost < 1 || len(report.IDs) < 1 {
		t.Fatalf("the loss report says %+v, want a count and the ids it could read:\n%s", report, p.Logs())
	}
	if n := p.metric("publisher_spool_lost_records_total"); n != float64(report.Lost) {
		t.Fatalf("publisher_spool_lost_records_total = %v, the log says %d", n, report.Lost)
	}
	if p.metric("publisher_spool_corrupt_segments_total") != 1 {
		t.Fatal("publisher_spool_corrupt_segments_total is not 1")
	}
	t.Logf("lost %d records: %v", report.Lost, report.IDs)
	lost := map[string]bool{}
	for _, id := range report.IDs {
		lost[id] = true
	}
	var kept []string
	for _, id := range acked {
		if !lost[id] {
			kept = append(kept, id)
		}
	}
	proxy.SetRefuse(false)
	poll.Within(t, waitLimit, "spool drained", func() bool { return p.metric("publisher_spool_messages") == 0 })
	if len(report.IDs) == report.Lost { // every lost record was named: the rest must all arrive
		brokertest.CheckDelivered(t, amqpURL, q, kept, 0)
	}
}
