package main

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
	"github.com/publisher-dev/publisher/internal/poll"
)

// shutdownUnderStall sends n publishes that cannot be confirmed (stalled by
// the caller's fault), then SIGTERM: it checks that the process exits with
// status 0 within PUBLISHER_SHUTDOWN_TIMEOUT plus two seconds and that every
// publish got an HTTP answer with its message id, and returns the answers.
func shutdownUnderStall(t *testing.T, p *proc, n int, queue string, timeout time.Duration, stalled func() bool) []publishResult {
	t.Helper()
	answers := make([]publishResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], errs[i] = p.publish("amq.default", queue, []byte(fmt.Sprint("stalled-", i)), map[string]string{"X-Message-Id": fmt.Sprint("stalled-", i)})
		}()
	}
	poll.Within(t, waitLimit, "publishes stalled", stalled)
	t0 := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := p.wait(timeout + 10*time.Second)
	took := time.Since(t0)
	wg.Wait()
	if code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	if limit := timeout + 2*time.Second; took > limit {
		t.Errorf("the process took %v to exit, want at most %v (PUBLISHER_SHUTDOWN_TIMEOUT + 2s)", took.Round(time.Millisecond), limit)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("publish %d got no answer (%v): every request in flight must be answered", i, err)
		}
		if answers[i].id != fmt.Sprint("stalled-", i) {
			t.Fatalf("publish %d answered without its message id: %+v", i, answers[i])
		}
	}
	if strings.Contains(p.Logs(), "did not stop in time") {
		t.Error("a child did not stop in time")
	}
	t.Logf("exit after %v", took.Round(time.Millisecond))
	return answers
}

// SIGTERM while the broker blocks publishers (a memory alarm; RabbitMQ
// blocks a connection once it publishes during the alarm, so the first
// message is sent and the rest wait in the buffer): each publish is answered
// before the process exits within the timeout, 504 "may still reach the
// broker" for the one sent, 503 "not published" for the others, and none of
// the latter is published when the alarm clears (a caller that retries makes
// no duplicate).
func TestShutdownWhileTheBrokerBlocks(t *testing.T) {
	t.Parallel()
	node := brokertest.Start(t, brokertest.Options{})
	q := brokertest.TempQueue(t, node.URL(), "svc-shutdown-blocked")
	const timeout = 3 * time.Second
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":        node.URL(),
		"PUBLISHER_SHUTDOWN_TIMEOUT": timeout.String(),
		"PUBLISHER_CONFIRM_TIMEOUT":  "30s", // longer than the shutdown: the shutdown must answer
	})
	p.waitReady()
	// serviceConnected reports whether the broker lists the service's
	// connection (it names it "publisher").
	serviceConnected := func() bool {
		out, err := node.Ctl("list_connections", "--silent", "client_properties")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(out, `{"connection_name","publisher"}`)
	}
	if !serviceConnected() {
		t.Fatal("the broker does not list the service's connection as this test expects")
	}
	if r, err := p.publish("amq.default", q, []byte("before"), nil); err != nil || r.code != 200 {
		t.Fatalf("publish before the alarm: %+v %v", r, err)
	}
	t.Cleanup(func() { _ = node.SetMemoryAlarm(false) })
	if err := node.SetMemoryAlarm(true); err != nil {
		t.Fatal(err)
	}
	// The broker blocks the connection once it publishes: one message to
	// trigger it (sent, never confirmed), then the rest wait in the buffer.
	trigger := make(chan publishResult, 1)
	go func() {
		r, err := p.publish("amq.default", q, []byte("trigger"), map[string]string{"X-Message-Id": "trigger"})
		if err != nil {
			t.Error(err)
		}
		trigger <- r
	}()
	poll.Within(t, waitLimit, "blocked", func() bool { return p.metric("publisher_connection_blocked") == 1 })
	const n = 32
	answers := shutdownUnderStall(t, p, n, q, timeout, func() bool { return p.metric("publisher_buffered_messages") == n })
	if r := <-trigger; r.code != 504 || !strings.Contains(r.errText, "may still reach the broker") {
		t.Errorf("the message sent before the block: %+v, want 504 saying it may still arrive", r)
	}
	notPublished := map[string]bool{}
	for i, a := range answers {
		if a.code != 503 || a.retryAfter == "" || !strings.Contains(a.errText, "not published") {
			t.Errorf("publish %d, waiting in the buffer: %+v, want 503 \"not published\" with Retry-After", i, a)
		}
		notPublished[a.id] = true
	}
	if err := node.SetMemoryAlarm(false); err != nil {
		t.Fatal(err)
	}
	// Anything still on its way lands before the service's connection is
	// gone from the broker: while the alarm held the connection blocked, the
	// broker stopped reading it; once the alarm is cleared it reads (and
	// routes) what is left, then the end of the stream, and only then drops
	// the connection (the service names its connection "publisher").
	poll.Within(t, waitLimit, "the service's connection gone from the broker", func() bool { return !serviceConnected() })
	got := node.Drain(t, q)
	for id := range got {
		if notPublished[id] {
			t.Errorf("message %s was answered 503 (not published) but reached the queue", id)
		}
	}
	t.Logf("%d answered 503 not published; the queue holds %d", len(notPublished), len(got))
}

// SIGTERM with messages sent to a broker whose answers never come back in
// time (20 s of latency each way): each is answered 504 "may still reach the
// broker" before the process exits within the timeout, although the
// connection cannot close cleanly.
func TestShutdownWithMessagesUnconfirmed(t *testing.T) {
	t.Parallel()
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-shutdown-unconfirmed")
	proxy := faultproxy.ForURL(t, amqpURL)
	const timeout = 2 * time.Second
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":        proxy.AMQPURL(),
		"PUBLISHER_SHUTDOWN_TIMEOUT": timeout.String(),
		"PUBLISHER_CONFIRM_TIMEOUT":  "30s",
	})
	p.waitReady()
	proxy.SetLatency(20 * time.Second)
	const n = 16
	answers := shutdownUnderStall(t, p, n, q, timeout, func() bool { return p.metric("publisher_inflight_messages") == n })
	for i, a := range answers {
		if a.code != 504 || !strings.Contains(a.errText, "may still reach the broker") {
			t.Errorf("publish %d: %+v, want 504 saying it may still arrive", i, a)
		}
	}
	proxy.SetLatency(0)
}
