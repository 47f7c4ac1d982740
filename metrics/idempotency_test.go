package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The idempotency series exist from the first scrape (replays at 0 by
// result, evictions at 0), count what they are told, and the keys gauge
// reads the store at scrape time.
func TestIdempotencySeries(t *testing.T) {
	checkLeaks(t)
	m, reg, _ := newMetrics(t)
	keys := 3
	if err := m.WatchIdempotency(func() int { return keys }); err != nil {
		t.Fatal(err)
	}
	m.IdempotencyLookup("replayed")
	m.IdempotencyLookup("replayed")
	m.IdempotencyLookup("mismatch")
	m.IdempotencyLookup("new") // not a result that is counted
	m.IdempotencyEvicted(5)
	keys = 7
	want := `
# HELP publisher_idempotency_evictions_total Idempotency keys removed before their window ran out because PUBLISHER_IDEMPOTENCY_MAX_KEYS were kept (the oldest first); a retry of such a key is published again.
# TYPE publisher_idempotency_evictions_total counter
publisher_idempotency_evictions_total 5
# HELP publisher_idempotency_keys Idempotency keys kept now: waiting for their message's outcome, or answered and within PUBLISHER_IDEMPOTENCY_WINDOW.
# TYPE publisher_idempotency_keys gauge
publisher_idempotency_keys 7
# HELP publisher_idempotency_replays_total Requests (or batch and stream messages) whose idempotency key was known, by result: replayed (the first answer given again, nothing published), conflict (409: the first still waits for the broker), mismatch (422: the key was used for a different request).
# TYPE publisher_idempotency_replays_total counter
publisher_idempotency_replays_total{result="conflict"} 0
publisher_idempotency_replays_total{result="mismatch"} 1
publisher_idempotency_replays_total{result="replayed"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"publisher_idempotency_evictions_total", "publisher_idempotency_keys", "publisher_idempotency_replays_total"); err != nil {
		t.Error(err)
	}
}
