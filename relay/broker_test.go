package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/spool"
	"github.com/publisher-dev/publisher/supervision"
)

// startPublisher runs a publisher.Publisher against the broker at url under a
// supervisor, as the service does, until the end of the test, and waits until
// it is connected.
func startPublisher(t *testing.T, url string) *publisher.Publisher {
	t.Helper()
	pub, err := publisher.New(publisher.Config{URLs: []string{url}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sup := supervision.New(supervision.Spec{Name: "broker", MaxRestarts: 100, Window: time.Minute,
		Backoff: supervision.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}})
	if err := sup.Add(supervision.ChildSpec{Name: "publisher", Service: pub}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("the publisher's supervisor did not stop within 30 s")
		}
	})
	poll.Within(t, 10*time.Second, "the publisher connected", pub.Ready)
	return pub
}

// The forwarder restarted hundreds of times (every 5–50 ms, at random) while
// messages are appended without pause, with the real publisher and broker:
// afterwards the spool drains to zero under one incarnation, with no restart
// of anything, and every spooled message reaches the queue at least once.
// After about one restart in eight the appends pause until the spool is
// empty: each of those checks catches a record stranded by the restart just
// before it (a later restart would rewind the cursor and hide it).
func TestForwarderRestartsUnderLoadDrain(t *testing.T) {
	noLeaks(t)
	url := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, url, "relaytest-restarts")
	rng := testRand(t)
	pub := startPublisher(t, url)
	sp, err := spool.Open(t.TempDir(), spool.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	r := New(Config{Spool: sp, Publisher: pub, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})

	app := startAppender(t, r, "m", func(id string) *publisher.Message {
		return &publisher.Message{RoutingKey: q, MessageID: id, Body: []byte(id), Persistent: true, Mandatory: true}
	})
	const restarts = 300
	checks := 0
	stop := restartForwarder(t, r, rng, restarts, 5*time.Millisecond, 50*time.Millisecond, nil, func(i int) {
		if rng.IntN(8) != 0 {
			return
		}
		checks++
		app.pause()
		defer app.resume()
		drained(t, sp, 10*time.Second, fmt.Sprintf("after restart %d (appends paused)", i+1))
	})
	ids := app.finish(t)
	// The last incarnation runs on: nothing restarts from here on.
	drained(t, sp, 30*time.Second, fmt.Sprintf("after the last of %d restarts", restarts))
	stop()
	checkWindowEmpty(t, r)
	if len(ids) == 0 {
		t.Fatal("nothing was appended")
	}
	got := brokertest.Drain(t, url, q)
	missing := 0
	for _, id := range ids {
		if got[id] == 0 {
			missing++
			if missing <= 5 {
				t.Errorf("message %s spooled, never consumed from %s", id, q)
			}
		}
	}
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("%d messages spooled across %d restarts (%d drain checks); %d consumed, %d duplicates (at-least-once)",
		len(ids), restarts, checks, len(got), dups)
	if missing > 0 {
		t.Fatalf("%d of %d spooled messages never reached the queue", missing, len(ids))
	}
}
