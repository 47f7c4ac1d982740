package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
	"github.com/publisher-dev/publisher/internal/poll"
)

// SIGTERM while the publisher redials into a stalled path (TCP accepted, the
// AMQP handshake never answered: a load balancer in front of a dead broker).
// The dial and its handshake must end with the shutdown: the process, built
// with the race detector, exits 0 (66 would be a data race, as the shutdown
// used to terminate the publisher while its abandoned incarnation still saved
// its carry) within PUBLISHER_SHUTDOWN_TIMEOUT plus two seconds (it used to
// wait out the handshake's 5 s), and every publish waiting is answered 503
// "not published". At several delays into the redial and shutdown timeouts.
func TestShutdownDuringAStalledRedial(t *testing.T) {
	t.Parallel()
	amqpURL := brokertest.SharedURL(t)
	for _, c := range []struct {
		delay, timeout time.Duration
	}{
		{100 * time.Millisecond, time.Second},
		{100 * time.Millisecond, 3 * time.Second},
		{2 * time.Second, time.Second},
		{4 * time.Second, 3 * time.Second},
	} {
		t.Run(fmt.Sprintf("sigterm %v into the redial, shutdown timeout %v", c.delay, c.timeout), func(t *testing.T) {
			t.Parallel()
			proxy := faultproxy.ForURL(t, amqpURL)
			q := brokertest.TempQueue(t, amqpURL, "svc-stalled-redial")
			p := startService(t, map[string]string{
				"PUBLISHER_AMQP_URLS":        proxy.AMQPURL(),
				"PUBLISHER_SHUTDOWN_TIMEOUT": c.timeout.String(),
				"PUBLISHER_CONFIRM_TIMEOUT":  "30s", // longer than the shutdown: the shutdown must answer
			})
			p.waitReady()
			if r, err := p.publish("amq.default", q, []byte("before"), nil); err != nil || r.code != 200 {
				t.Fatalf("publish before the stall: %+v %v", r, err)
			}
			proxy.SetStall(true)
			proxy.CutAll()
			poll.Within(t, waitLimit, "the redial stalled", func() bool { return proxy.Stalled() > 0 })
			time.Sleep(c.delay) // into the stalled handshake (the dial allows 5 s)
			const n = 8
			answers := shutdownUnderStall(t, p, n, q, c.timeout, func() bool {
				return p.metric("publisher_buffered_messages") == n
			})
			for i, a := range answers {
				if a.code != 503 || !strings.Contains(a.errText, "not published") {
					t.Errorf("publish %d, waiting for the connection: %+v, want 503 \"not published\"", i, a)
				}
			}
		})
	}
}
