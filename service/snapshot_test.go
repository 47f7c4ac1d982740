package service

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/fakeamqp"
	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/internal/promtext"
)

// /readyz and one scrape of /metrics each derive readiness from the one state
// they report, however the state flaps between reads: here the broker blocks
// and unblocks publishing as fast as it can while both are read, and every
// answer must be ready exactly when it says the broker does not block.
func TestReadinessAndGaugesFromOneSnapshot(t *testing.T) {
	checkLeaks(t)
	b := &fakeamqp.Broker{}
	r := start(t, testConfig(), b)
	poll.Within(t, 10*time.Second, "ready", func() bool { c, _ := r.get("/readyz"); return c == 200 })
	ctx, cancel := context.WithCancel(context.Background())
	flapped := make(chan struct{})
	go func() {
		defer close(flapped)
		conn := b.Conn()
		for on := true; ctx.Err() == nil; on = !on {
			conn.Block(on, "flapping")
		}
		conn.Block(false, "")
	}()
	defer func() { cancel(); <-flapped }()
	const reads = 200
	for i := range reads {
		code, body := r.get("/readyz")
		if blocked := body["blocked"] == true; blocked == (code == 200) {
			t.Fatalf("read %d: /readyz %d with blocked=%v", i, code, body["blocked"])
		}
		samples, err := promtext.Parse(strings.NewReader(r.metricsText()))
		if err != nil {
			t.Fatal(err)
		}
		blocked, ok1 := samples.Sum("publisher_connection_blocked")
		ready, ok2 := samples.Sum("publisher_ready")
		if !ok1 || !ok2 {
			t.Fatalf("scrape %d lacks publisher_connection_blocked or publisher_ready", i)
		}
		if blocked+ready != 1 {
			t.Fatalf("scrape %d: publisher_connection_blocked %v beside publisher_ready %v", i, blocked, ready)
		}
	}
}
