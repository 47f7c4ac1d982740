package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/idempotency"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/relay"
)

// keySender is a Sender for the idempotency tests: it records what it was
// handed and answers each message with answer's outcome, or holds its
// callback (hold) for the test to settle later; giveUp answers giveUpErr.
type keySender struct {
	mu        sync.Mutex
	sent      []*publisher.Message
	keys      []relay.KeyRef
	held      []func(relay.Delivery, error)
	hold      bool
	answer    func(*publisher.Message) (relay.Delivery, error)
	giveUpErr error
}

func (s *keySender) Send(_ context.Context, msgs []*publisher.Message, opts relay.SendOptions, done func(int, relay.Delivery, error)) func(int, error) (relay.Delivery, error) {
	for i, m := range msgs {
		s.mu.Lock()
		s.sent = append(s.sent, m)
		var ref relay.KeyRef
		if i < len(opts.Keys) {
			ref = opts.Keys[i]
		}
		s.keys = append(s.keys, ref)
		if s.hold {
			s.held = append(s.held, func(d relay.Delivery, err error) { done(i, d, err) })
			s.mu.Unlock()
			continue
		}
		answer := s.answer
		s.mu.Unlock()
		d, err := relay.Confirmed, error(nil)
		if answer != nil {
			d, err = answer(m)
		}
		done(i, d, err)
	}
	return func(int, error) (relay.Delivery, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return 0, s.giveUpErr
	}
}

func (s *keySender) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent)
}

// settle answers the held callbacks.
func (s *keySender) settle(d relay.Delivery, err error) {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	for _, f := range held {
		f(d, err)
	}
}

type answer struct {
	code     int
	id       string
	status   string
	errText  string
	replayed string
	retry    string
	raw      string
}

func post(t *testing.T, h http.Handler, path, body string, hdr map[string]string) answer {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out struct {
		MessageID string `json:"message_id"`
		Status    string `json:"status"`
		Error     string `json:"error"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	return answer{code: rec.Code, id: out.MessageID, status: out.Status, errText: out.Error,
		replayed: rec.Header().Get("Idempotent-Replayed"), retry: rec.Header().Get("Retry-After"), raw: rec.Body.String()}
}

func keyHandler(s relay.Sender, edit func(*Config)) (http.Handler, *idempotency.Store) {
	keys := idempotency.NewStore(idempotency.Config{})
	return testHandler(s, nil, func(c *Config) {
		c.Idempotency = keys
		c.MaxBodyBytes = 1024
		if edit != nil {
			edit(c)
		}
	}), keys
}

// The replay: the first answer again, with the same (generated) message
// id and Idempotent-Replayed: true, nothing published again, whatever
// trace context the retry carries (the quoted form of the key is the
// same key); a different body with the key is 422 naming it; another app
// (scope) does not see the key.
func TestIdempotentReplayAndMismatch(t *testing.T) {
	s := &keySender{}
	h, _ := keyHandler(s, nil)
	first := post(t, h, "/v1/publish/ex/rk", "body", map[string]string{"Idempotency-Key": "k-1",
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	if first.code != 200 || first.replayed != "" || first.id == "" {
		t.Fatalf("first: %+v", first)
	}
	again := post(t, h, "/v1/publish/ex/rk", "body", map[string]string{"Idempotency-Key": `"k-1"`,
		"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
	if again.code != 200 || again.replayed != "true" || again.id != first.id || again.status != "confirmed" {
		t.Errorf("retry: %+v, want the first answer again (id %s) with Idempotent-Replayed", again, first.id)
	}
	other := post(t, h, "/v1/publish/ex/rk", "another body", map[string]string{"Idempotency-Key": "k-1"})
	if other.code != 422 || !strings.Contains(other.errText, `"k-1"`) || other.replayed != "" {
		t.Errorf("another body with the key: %+v, want 422 naming it", other)
	}
	if n := s.count(); n != 1 {
		t.Errorf("%d messages published, want 1", n)
	}
	if k := s.keys[0]; k.Key != (idempotency.Key{Scope: "default", Name: "k-1"}) {
		t.Errorf("the Sender got the key %+v", k)
	}
	for _, bad := range []map[string]string{{"Idempotency-Key": ""}, {"Idempotency-Key": `"k";p=1`}, {"Idempotency-Key": strings.Repeat("k", 256)}} {
		if a := post(t, h, "/v1/publish/ex/rk", "body", bad); a.code != 400 {
			t.Errorf("key %q: %d, want 400", bad["Idempotency-Key"], a.code)
		}
	}
}

// A request refused before it was taken is not remembered, nor is one
// whose message was not published: the retry is processed as new.
func TestRefusedAndNotPublishedAreForgotten(t *testing.T) {
	var refuse error = errors.New("draining")
	var mu sync.Mutex
	s := &keySender{answer: func(*publisher.Message) (relay.Delivery, error) {
		return 0, fmt.Errorf("%w: %w", publisher.ErrNotPublished, publisher.ErrConfirmTimeout)
	}}
	h, keys := keyHandler(s, func(c *Config) {
		c.AllowedExchanges = []string{"ex"}
		c.Accepting = func() error { mu.Lock(); defer mu.Unlock(); return refuse }
	})
	hdr := map[string]string{"Idempotency-Key": "k"}
	if a := post(t, h, "/v1/publish/ex/rk", "body", hdr); a.code != 503 {
		t.Fatalf("not accepting: %+v", a)
	}
	if a := post(t, h, "/v1/publish/forbidden/rk", "body", hdr); a.code != 403 {
		t.Fatalf("forbidden: %+v", a)
	}
	mu.Lock()
	refuse = nil
	mu.Unlock()
	if a := post(t, h, "/v1/publish/ex/rk", "body", hdr); a.code != 504 || !strings.Contains(a.errText, "not published") {
		t.Fatalf("not published: %+v", a)
	}
	s.mu.Lock()
	s.answer = nil
	s.mu.Unlock()
	if a := post(t, h, "/v1/publish/ex/rk", "body", hdr); a.code != 200 || a.replayed != "" {
		t.Errorf("retry after not published: %+v, want it processed as new", a)
	}
	if n := s.count(); n != 2 {
		t.Errorf("%d sent, want 2", n)
	}
	if keys.Len() != 1 {
		t.Errorf("%d keys kept, want 1", keys.Len())
	}
}

// While the first request waits, a retry is 409 with Retry-After; the
// first answered "may still reach the broker" (504) keeps the key open
// (409) until the late confirm, after which the retry is 200, replayed.
func TestConflictThenLateConfirm(t *testing.T) {
	s := &keySender{hold: true, giveUpErr: fmt.Errorf("%w (message x)", publisher.ErrConfirmTimeout)}
	h, _ := keyHandler(s, func(c *Config) { c.ConfirmTimeout = 300 * time.Millisecond })
	hdr := map[string]string{"Idempotency-Key": "slow", "X-Message-Id": "m-slow"}
	firstDone := make(chan answer, 1)
	go func() { firstDone <- post(t, h, "/v1/publish/ex/rk", "body", hdr) }()
	for s.count() == 0 {
		time.Sleep(time.Millisecond)
	}
	if a := post(t, h, "/v1/publish/ex/rk", "body", hdr); a.code != 409 || a.retry == "" || a.id != "m-slow" {
		t.Errorf("retry while the first waits: %+v, want 409 with Retry-After naming m-slow", a)
	}
	first := <-firstDone
	if first.code != 504 || !strings.Contains(first.errText, "may still reach") {
		t.Fatalf("first: %+v, want 504", first)
	}
	if a := post(t, h, "/v1/publish/ex/rk", "body", hdr); a.code != 409 {
		t.Errorf("retry after the 504, before the confirm: %+v, want 409", a)
	}
	s.settle(relay.Confirmed, nil) // the broker's confirm, late
	if a := post(t, h, "/v1/publish/ex/rk", "body", hdr); a.code != 200 || a.replayed != "true" || a.id != "m-slow" {
		t.Errorf("retry after the late confirm: %+v, want 200 replayed", a)
	}
	if n := s.count(); n != 1 {
		t.Errorf("%d sent, want 1", n)
	}
}

// With a spool: 202 is replayed, and becomes 200 once the forwarder
// confirms the key.
func TestSpooledReplayBecomesConfirmed(t *testing.T) {
	s := &keySender{answer: func(*publisher.Message) (relay.Delivery, error) { return relay.Spooled, nil }}
	h, keys := keyHandler(s, nil)
	hdr := map[string]string{"Idempotency-Key": "sp", "Prefer": "respond-async"}
	first := post(t, h, "/v1/publish/ex/rk", "body", hdr)
	if a := post(t, h, "/v1/publish/ex/rk", "body", hdr); a.code != 202 || a.replayed != "true" || a.id != first.id {
		t.Errorf("replay of a spooled message: %+v", a)
	}
	keys.Confirm(idempotency.Key{Scope: "default", Name: "sp"}, first.id)
	if a := post(t, h, "/v1/publish/ex/rk", "body", hdr); a.code != 200 || a.id != first.id {
		t.Errorf("replay once confirmed: %+v", a)
	}
}

type keyBatchAnswer struct {
	code     int
	replayed string
	Results  []struct {
		MessageID string `json:"message_id"`
		Status    int    `json:"status"`
		Error     string `json:"error"`
		Replayed  bool   `json:"replayed"`
	} `json:"results"`
}

func postKeyBatch(t *testing.T, h http.Handler, body string, hdr map[string]string) keyBatchAnswer {
	t.Helper()
	rec := serveBatchRequest(h, body, hdr)
	out := keyBatchAnswer{code: rec.Code, replayed: rec.Header().Get("Idempotent-Replayed")}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil && rec.Code < 300 {
		t.Fatalf("answer %d: %q", rec.Code, rec.Body)
	}
	return out
}

// A batch with a key repeated: published once, the repeat answered with
// the first's result as a replay; a repeat with other content 422; the
// whole batch sent again: every result replayed, and the header says so.
// The header on a batch is refused (keys are per message).
func TestBatchRepeatedKeys(t *testing.T) {
	s := &keySender{}
	h, _ := keyHandler(s, nil)
	body := `{"messages":[
		{"exchange":"ex","routing_key":"a","body":"one","idempotency_key":"k1"},
		{"exchange":"ex","routing_key":"a","body":"one","idempotency_key":"k1"},
		{"exchange":"ex","routing_key":"b","body":"two","idempotency_key":"k2"},
		{"exchange":"ex","routing_key":"b","body":"other","idempotency_key":"k2"},
		{"exchange":"ex","routing_key":"c","body":"plain"}]}`
	a := postKeyBatch(t, h, body, nil)
	if len(a.Results) != 5 {
		t.Fatalf("%+v", a)
	}
	r := a.Results
	if r[0].Status != 200 || r[0].Replayed || r[1].Status != 200 || !r[1].Replayed || r[1].MessageID != r[0].MessageID ||
		r[2].Status != 200 || r[3].Status != 422 || !strings.Contains(r[3].Error, `"k2"`) || r[4].Status != 200 {
		t.Errorf("results %+v", r)
	}
	if n := s.count(); n != 3 {
		t.Errorf("%d sent, want 3 (k1, k2, the keyless one)", n)
	}
	keyed := `{"messages":[{"exchange":"ex","routing_key":"a","body":"one","idempotency_key":"k1"},
		{"exchange":"ex","routing_key":"b","body":"two","idempotency_key":"k2"}]}`
	again := postKeyBatch(t, h, keyed, nil)
	if again.code != 200 || again.replayed != "true" || !again.Results[0].Replayed || !again.Results[1].Replayed ||
		again.Results[0].MessageID != r[0].MessageID {
		t.Errorf("the batch again: %+v", again)
	}
	if n := s.count(); n != 3 {
		t.Errorf("%d sent after the replay, want still 3", n)
	}
	if a := postKeyBatch(t, h, keyed, map[string]string{"Idempotency-Key": "whole"}); a.code != 400 {
		t.Errorf("Idempotency-Key on a batch: %d, want 400", a.code)
	}
	if a := postKeyBatch(t, h, `{"messages":[{"exchange":"ex","idempotency_key":""}]}`, nil); a.code != 207 || a.Results[0].Status != 400 {
		t.Errorf("an empty idempotency_key: %+v, want its own 400", a)
	}
}

// A stream line whose key an earlier line used is answered from it once
// that line is answered (replayed: true), and published once.
func TestStreamRepeatedKey(t *testing.T) {
	s := &keySender{}
	h, _ := keyHandler(s, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/stream", pr)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := srv.Client().Do(func() *http.Request {
		go fmt.Fprintln(pw, `{"exchange":"ex","routing_key":"a","body":"one","idempotency_key":"s1"}`)
		return req
	}())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	type line struct {
		Index     int    `json:"index"`
		MessageID string `json:"message_id"`
		Status    int    `json:"status"`
		Replayed  bool   `json:"replayed"`
	}
	var l0, l1 line
	if err := dec.Decode(&l0); err != nil || l0.Status != 200 || l0.Replayed {
		t.Fatalf("line 0: %+v %v", l0, err)
	}
	fmt.Fprintln(pw, `{"exchange":"ex","routing_key":"a","body":"one","idempotency_key":"s1"}`)
	pw.Close()
	if err := dec.Decode(&l1); err != nil || l1.Index != 1 || l1.Status != 200 || !l1.Replayed || l1.MessageID != l0.MessageID {
		t.Fatalf("line 1: %+v %v, want line 0's answer replayed", l1, err)
	}
	if n := s.count(); n != 1 {
		t.Errorf("%d sent, want 1", n)
	}
}

// BenchmarkHandlerKeyed is BenchmarkHandler with a new Idempotency-Key on
// every request (a different message id too, which the fingerprint
// includes): what a key costs the handler, against a Sender that confirms
// at once. The keys stay within the store's default bound of 100000 only
// for short runs; beyond it each request also evicts one.
func BenchmarkHandlerKeyed(b *testing.B) {
	req, serve := benchPublish(b)
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = fmt.Sprintf("%08x-1b4e-4c3a-9d2f-%012x", i, i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := keys[i%len(keys)] + strconv.Itoa(i/len(keys))
		req.Header["Idempotency-Key"] = []string{k}
		req.Header["X-Message-Id"] = []string{k}
		serve()
		i++
	}
}
