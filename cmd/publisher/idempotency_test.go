package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
	"github.com/publisher-dev/publisher/internal/poll"
)

// keyed is one answered publish with an idempotency key.
type keyed struct {
	publishResult
	replayed string // the Idempotent-Replayed header
}

// publishKeyed is publish with an Idempotency-Key (and headers).
func (p *proc) publishKeyed(exchange, routingKey, key string, body []byte, headers map[string]string) keyed {
	p.t.Helper()
	h := map[string]string{"Idempotency-Key": key}
	for k, v := range headers {
		h[k] = v
	}
	req, err := http.NewRequest(http.MethodPost, p.api+"/v1/publish/"+exchange+"/"+routingKey, bytes.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		p.t.Errorf("publish with key %s: %v", key, err)
		return keyed{}
	}
	defer resp.Body.Close()
	var out struct {
		MessageID string `json:"message_id"`
		Status    string `json:"status"`
		Error     string `json:"error"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		p.t.Errorf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return keyed{publishResult: publishResult{code: resp.StatusCode, id: out.MessageID, status: out.Status, errText: out.Error,
		retryAfter: resp.Header.Get("Retry-After")}, replayed: resp.Header.Get("Idempotent-Replayed")}
}

// keyedResult is one result of a batch or a stream.
type keyedResult struct {
	Index     int    `json:"index"`
	MessageID string `json:"message_id"`
	Status    int    `json:"status"`
	Error     string `json:"error"`
	Replayed  bool   `json:"replayed"`
}

// A retry with the same key is the first answer again (same status, same
// message id, Idempotent-Replayed: true) and publishes nothing: one message
// in the queue, whatever trace context the retry carries; the key with
// another body is 422 naming it, nothing published; the metrics count both.
func TestIdempotentReplay(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-idem-replay")
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL})
	p.waitReady()
	first := p.publishKeyed("amq.default", q, "order-42", []byte(`{"order":42}`),
		map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	if first.code != 200 || first.replayed != "" {
		t.Fatalf("first: %+v", first)
	}
	retry := p.publishKeyed("amq.default", q, "order-42", []byte(`{"order":42}`),
		map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
	if retry.code != 200 || retry.status != "confirmed" || retry.id != first.id || retry.replayed != "true" {
		t.Errorf("retry: %+v, want 200 confirmed of %s with Idempotent-Replayed: true", retry, first.id)
	}
	other := p.publishKeyed("amq.default", q, "order-42", []byte(`{"order":43}`), nil)
	if other.code != 422 || !strings.Contains(other.errText, `"order-42"`) {
		t.Errorf("another body with the key: %+v, want 422 naming the key", other)
	}
	if got := brokertest.Drain(t, amqpURL, q); len(got) != 1 || got[first.id] != 1 {
		t.Errorf("the queue holds %v, want one message %s", got, first.id)
	}
	if r, m := p.metric("publisher_idempotency_replays_total", `result="replayed"`), p.metric("publisher_idempotency_replays_total", `result="mismatch"`); r != 1 || m != 1 {
		t.Errorf("replays_total replayed %v, mismatch %v; want 1 and 1", r, m)
	}
	if n := p.metric("publisher_idempotency_keys"); n != 1 {
		t.Errorf("publisher_idempotency_keys %v, want 1", n)
	}
}

// While the broker blocks publishers (a memory alarm), a retry of a request
// still waiting is 409 with Retry-After; the first is answered 504 "may
// still reach the broker", and a retry is still 409 (its outcome is not
// known); once the alarm clears, the broker confirms it and the retry is
// 200, replayed: one message in the queue.
func TestIdempotentWhileTheBrokerBlocks(t *testing.T) {
	node := brokertest.Start(t, brokertest.Options{})
	q := brokertest.TempQueue(t, node.URL(), "svc-idem-blocked")
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":       node.URL(),
		"PUBLISHER_CONFIRM_TIMEOUT": "3s",
	})
	p.waitReady()
	if r, err := p.publish("amq.default", q, []byte("before"), map[string]string{"X-Message-Id": "before"}); err != nil || r.code != 200 {
		t.Fatalf("publish before the alarm: %+v %v", r, err)
	}
	t.Cleanup(func() { _ = node.SetMemoryAlarm(false) })
	if err := node.SetMemoryAlarm(true); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"order":7}`)
	firstDone := make(chan keyed, 1)
	go func() { firstDone <- p.publishKeyed("amq.default", q, "order-7", body, nil) }()
	poll.Within(t, waitLimit, "blocked", func() bool { return p.metric("publisher_connection_blocked") == 1 })
	conflict := p.publishKeyed("amq.default", q, "order-7", body, nil)
	if conflict.code != 409 || conflict.retryAfter == "" || conflict.id == "" {
		t.Errorf("retry while the first waits: %+v, want 409 with Retry-After and the first's message id", conflict)
	}
	first := <-firstDone
	if first.code != 504 || !strings.Contains(first.errText, "may still reach the broker") || first.id != conflict.id {
		t.Fatalf("first: %+v, want 504 may still reach the broker (message %s)", first, conflict.id)
	}
	if r := p.publishKeyed("amq.default", q, "order-7", body, nil); r.code != 409 {
		t.Errorf("retry after the 504, the alarm on: %+v, want 409", r)
	}
	if err := node.SetMemoryAlarm(false); err != nil {
		t.Fatal(err)
	}
	var last keyed
	poll.Within(t, waitLimit, "the retry answered 200 once the broker confirmed", func() bool {
		last = p.publishKeyed("amq.default", q, "order-7", body, nil)
		return last.code == 200
	})
	if last.replayed != "true" || last.id != first.id {
		t.Errorf("retry after the confirm: %+v, want 200 replayed of %s", last, first.id)
	}
	if got := brokertest.Drain(t, node.URL(), q); got[first.id] != 1 || len(got) != 2 {
		t.Errorf("the queue holds %v, want before and one %s", got, first.id)
	}
	if c := p.metric("publisher_idempotency_replays_total", `result="conflict"`); c < 2 {
		t.Errorf("conflicts counted %v, want at least 2", c)
	}
}

// A batch with a key repeated publishes it once (the repeat is the first's
// result, replayed), and the same batch again is answered from memory; a
// stream line repeating an answered line's key likewise: one message per
// key in the queue.
func TestIdempotentBatchAndStream(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-idem-batch")
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL})
	p.waitReady()
	entry := func(key, body string) string {
		return fmt.Sprintf(`{"exchange":"amq.default","routing_key":%q,"body":%q,"idempotency_key":%q}`, q, body, key)
	}
	batch := `{"messages":[` + entry("b-1", "one") + "," + entry("b-1", "one") + "," + entry("b-2", "two") + `]}`
	postBatch := func() (int, string, []keyedResult) {
		resp, err := client.Post(p.api+"/v1/batch", "application/json", strings.NewReader(batch))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Results []keyedResult }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Idempotent-Replayed"), out.Results
	}
	code, _, r := postBatch()
	if code != 200 || len(r) != 3 || r[0].Replayed || !r[1].Replayed || r[1].MessageID != r[0].MessageID || r[2].Status != 200 {
		t.Fatalf("batch: %d %+v", code, r)
	}
	code, hdr, again := postBatch()
	if code != 200 || hdr != "true" || !again[0].Replayed || !again[2].Replayed || again[0].MessageID != r[0].MessageID {
		t.Errorf("the batch again: %d %q %+v, want every result replayed", code, hdr, again)
	}

	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, p.api+"/v1/stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	go fmt.Fprintln(pw, entry("s-1", "three"))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	var l0, l1 keyedResult
	if !lines.Scan() || json.Unmarshal(lines.Bytes(), &l0) != nil || l0.Status != 200 {
		t.Fatalf("stream line 0: %q", lines.Text())
	}
	fmt.Fprintln(pw, entry("s-1", "three"))
	pw.Close()
	if !lines.Scan() || json.Unmarshal(lines.Bytes(), &l1) != nil || l1.Status != 200 || !l1.Replayed || l1.MessageID != l0.MessageID {
		t.Errorf("stream line 1: %q, want line 0's answer replayed", lines.Text())
	}
	got := brokertest.Drain(t, amqpURL, q)
	if len(got) != 3 || got[r[0].MessageID] != 1 || got[r[2].MessageID] != 1 || got[l0.MessageID] != 1 {
		t.Errorf("the queue holds %v, want one message per key", got)
	}
}

// With a spool, keys survive SIGKILL: a key confirmed before (the journal)
// and a key whose message was still spooled (the record) are answered from
// memory by the next process, 200 and 202, the latter 200 once the spool
// drained, and with another body 422: no retry publishes a message again.
func TestIdempotencyKeysSurviveSIGKILL(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-idem-kill")
	proxy := faultproxy.ForURL(t, amqpURL)
	env := map[string]string{
		"PUBLISHER_AMQP_URLS":    proxy.AMQPURL(),
		"PUBLISHER_SPOOL_DIR":    t.TempDir(),
		"PUBLISHER_MAX_RESTARTS": "1000",
		"PUBLISHER_BACKOFF_MIN":  "10ms",
		"PUBLISHER_BACKOFF_MAX":  "200ms",
	}
	p := startService(t, env)
	p.waitReady()
	confirmed := p.publishKeyed("amq.default", q, "k-confirmed", []byte("one"), nil)
	if confirmed.code != 200 {
		t.Fatalf("confirmed: %+v", confirmed)
	}
	proxy.SetRefuse(true)
	proxy.CutAll()
	poll.Within(t, waitLimit, "disconnected", func() bool { return p.metric("publisher_connection_up") == 0 })
	spooled := p.publishKeyed("amq.default", q, "k-spooled", []byte("two"), map[string]string{"Prefer": "respond-async"})
	if spooled.code != 202 {
		t.Fatalf("spooled: %+v", spooled)
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(30 * time.Second)

	p = startService(t, env)
	poll.Within(t, waitLimit, "service ready", func() bool { return p.answers("/readyz", 200) })
	if r := p.publishKeyed("amq.default", q, "k-confirmed", []byte("one"), nil); r.code != 200 || r.replayed != "true" || r.id != confirmed.id {
		t.Errorf("the confirmed key after SIGKILL: %+v, want 200 replayed of %s", r, confirmed.id)
	}
	if r := p.publishKeyed("amq.default", q, "k-spooled", []byte("two"), nil); r.code != 202 || r.replayed != "true" || r.id != spooled.id {
		t.Errorf("the spooled key after SIGKILL: %+v, want 202 replayed of %s", r, spooled.id)
	}
	if r := p.publishKeyed("amq.default", q, "k-spooled", []byte("changed"), nil); r.code != 422 {
		t.Errorf("the spooled key with another body after SIGKILL: %+v, want 422 (the fingerprint survived)", r)
	}
	proxy.SetRefuse(false)
	poll.Within(t, waitLimit, "spool drained", func() bool { return p.metric("publisher_spool_messages") == 0 })
	if r := p.publishKeyed("amq.default", q, "k-spooled", []byte("two"), nil); r.code != 200 || r.id != spooled.id {
		t.Errorf("the spooled key once forwarded: %+v, want 200 of %s", r, spooled.id)
	}
	// A retry processed as new would be published under a new (generated)
	// message id. The confirmed message may be there twice with its own id:
	// the spool's at-least-once republish of a record confirmed within the
	// ack watermark's 200 ms before the SIGKILL (docs/operations.md,
	// "Duplicates"), which is no retry's doing.
	got := brokertest.Drain(t, amqpURL, q)
	if len(got) != 2 || got[confirmed.id] < 1 || got[spooled.id] != 1 {
		t.Errorf("the queue holds %v, want the two messages and no other id", got)
	}
	t.Logf("the queue held %v", got)
}

// PUBLISHER_IDEMPOTENCY_MAX_KEYS bounds the keys: beyond it the oldest is
// evicted and counted, and a retry of the evicted key is published again
// (the bound's honest cost).
func TestIdempotencyEvictionAtTheBound(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "svc-idem-evict")
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": amqpURL, "PUBLISHER_IDEMPOTENCY_MAX_KEYS": "3"})
	p.waitReady()
	ids := map[string]string{}
	for _, k := range []string{"e-1", "e-2", "e-3", "e-4"} {
		r := p.publishKeyed("amq.default", q, k, []byte(k), nil)
		if r.code != 200 {
			t.Fatalf("%s: %+v", k, r)
		}
		ids[k] = r.id
	}
	if n, e := p.metric("publisher_idempotency_keys"), p.metric("publisher_idempotency_evictions_total"); n != 3 || e != 1 {
		t.Errorf("keys %v, evictions %v; want 3 and 1", n, e)
	}
	if r := p.publishKeyed("amq.default", q, "e-4", []byte("e-4"), nil); r.replayed != "true" {
		t.Errorf("e-4, kept: %+v, want a replay", r)
	}
	again := p.publishKeyed("amq.default", q, "e-1", []byte("e-1"), nil)
	if again.code != 200 || again.replayed != "" || again.id == ids["e-1"] {
		t.Errorf("e-1, evicted: %+v, want it published again under a new id", again)
	}
	if got := brokertest.Drain(t, amqpURL, q); len(got) != 5 {
		t.Errorf("the queue holds %v, want 5 messages (e-1 twice)", got)
	}
}
