package main

import (
	"os"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
)

// The seed's flaky load balancer: every broker connection is cut every 3 s
// under load, working in between, for longer than the default restart
// intensities took to give up before progress counted (12 cuts a minute
// escalated the broker supervisor within a minute; the third escalation in
// five minutes exhausted the root and the process exited after 100-150 s).
// With the defaults and PUBLISHER_ON_GIVE_UP=exit, the process must stay
// up: every cut is a restart, none an escalation, at least 99 % of the
// answers are 2xx and every 2xx message reaches the queue.
//
// PUBLISHER_TEST_FLAP_DURATION (a Go duration, default 150s) sets how long.
func TestFlappingConnectionNeverGivesUp(t *testing.T) {
	duration := 150 * time.Second
	if v := os.Getenv("PUBLISHER_TEST_FLAP_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("PUBLISHER_TEST_FLAP_DURATION: %v", err)
		}
		duration = d
	}
	node := brokertest.Start(t, brokertest.Options{})
	q := brokertest.TempQueue(t, node.URL(), "svc-flap")
	proxy := faultproxy.ForURL(t, node.URL())
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":  proxy.AMQPURL(),
		"PUBLISHER_ON_GIVE_UP": "exit", // the old default: giving up would end the process
		"PUBLISHER_LOG_LEVEL":  "info",
	})
	p.waitReady()

	stop := make(chan struct{})
	load := httpLoad(p, q, 16, nil, stop)
	cuts := 0
	tick := time.NewTicker(3 * time.Second)
	end := time.After(duration)
cutting:
	for {
		select {
		case <-tick.C:
			if proxy.Connections() > 0 {
				cuts++
			}
			proxy.CutAll()
			if !p.Running() {
				break cutting
			}
		case <-end:
			break cutting
		}
	}
	tick.Stop()
	time.Sleep(3 * time.Second) // the last cut's restart, under load
	close(stop)
	res := <-load
	if !p.Running() {
		t.Fatalf("the process exited (status %d) after %d cuts; last logs:\n%s", p.ExitCode(), cuts, p.LogTail(30))
	}
	t.Logf("%d cuts in %v; answers: %v", cuts, duration, res.Outcomes)
	if ok := float64(len(res.Acked)) / float64(res.Total); ok < 0.99 {
		t.Errorf("%d of %d answers were 2xx (%.2f %%), want at least 99 %%", len(res.Acked), res.Total, 100*ok)
	}
	restarts := p.metric("publisher_supervision_restarts_total", `child="publisher"`)
	if restarts < float64(cuts) {
		t.Errorf("publisher_supervision_restarts_total{child=\"publisher\"} = %v for %d cuts: every cut must be a restart", restarts, cuts)
	}
	if esc := p.metric("publisher_supervision_escalations_total", `supervisor="broker"`); esc != 0 {
		t.Errorf("publisher_supervision_escalations_total{supervisor=\"broker\"} = %v, want 0: a connection that worked never counts toward escalation", esc)
	}
	brokertest.CheckDelivered(t, node.URL(), q, res.Acked, res.Total)
	t.Logf("restarts %v, escalations 0, %d confirmed and delivered", restarts, len(res.Acked))
}
