package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseResult(t *testing.T) {
	cases := []struct {
		in      string
		index   int
		status  int
		errText string
	}{
		{`{"index":0,"message_id":"5RG2RZP4XQ7D3UHE4QWS2TT7BC","status":200,"outcome":"confirmed"}` + "\n", 0, 200, "status 200"},
		{` { "status" : 503 , "index" : 17, "message_id": "a\"}b", "error": "service unavailable: \"full\"" } `, 17, 503, `status 503: service unavailable: "full"`},
		{`{"message_id":"x","status":202,"outcome":"spooled","index":123456789}`, 123456789, 202, "status 202"},
		{`{"status":400,"extra":null,"ok":true,"n":-1.5e3,"error":"malformed line: not a JSON object"}`, -1, 400, "status 400: malformed line: not a JSON object"},
		{`{}`, -1, -1, "status -1"},
	}
	for _, c := range cases {
		r, err := parseResult([]byte(c.in))
		if err != nil {
			t.Errorf("parseResult(%q): %v", c.in, err)
			continue
		}
		if r.index != c.index || r.status != c.status || r.errText() != c.errText {
			t.Errorf("parseResult(%q) = index %d, status %d, %q; want %d, %d, %q", c.in, r.index, r.status, r.errText(), c.index, c.status, c.errText)
		}
	}
	for _, bad := range []string{
		``, `[]`, `{"index":1`, `{"index":1,}`, `{"index" 1}`, `{"index":"1"}`, `{"status":20x}`, `{"status":1234567890}`,
		`{"status":200} {}`, `{"status":{"code":200}}`, `{"message_id":"unterminated}`, `{index:1}`,
	} {
		if _, err := parseResult([]byte(bad)); !errors.Is(err, errResultSyntax) {
			t.Errorf("parseResult(%q): err %v, want errResultSyntax", bad, err)
		}
	}
}

// TestCountBatch counts the answers the service gives to /v1/batch: all
// confirmed, some failed (207), refused whole, and answers that do not match
// the request.
func TestCountBatch(t *testing.T) {
	ok := `{"message_id":"A","status":200,"outcome":"confirmed"}`
	full := `{"message_id":"B","status":503,"error":"service unavailable: buffer full"}`
	body := func(rs ...string) []byte { return []byte(`{"results":[` + strings.Join(rs, ",") + "]}\n") }
	cases := []struct {
		name         string
		code         int
		body         []byte
		n            int
		ok, failed   int
		errSubstring string // "" : no error
	}{
		{"all confirmed", 200, body(ok, ok, ok), 3, 3, 0, ""},
		{"one failed", 207, body(ok, full, ok), 3, 2, 1, "status 503: service unavailable: buffer full"},
		{"spooled is not confirmed", 202, body(ok, `{"message_id":"C","status":202,"outcome":"spooled"}`), 2, 1, 1, "status 202"},
		{"refused whole", 413, []byte(`{"error":"batch of 3 messages, more than 2"}`), 3, 0, 3, "HTTP 413"},
		{"empty batch", 200, []byte(` {"results":[ ]} `), 0, 0, 0, ""},
		{"results missing", 200, body(ok), 3, 1, 2, "1 results for 3 messages"},
		{"results too many", 200, body(ok, ok, ok), 2, 2, 0, "3 results for 2 messages"},
		{"not the envelope", 200, []byte(`{"error":"x"}`), 2, 0, 2, "malformed result"},
		{"broken after one", 207, []byte(`{"results":[` + ok + `,{"status":`), 2, 1, 1, "malformed result"},
	}
	for _, c := range cases {
		gotOK, gotFailed, err := countBatch(c.code, c.body, c.n)
		if gotOK != c.ok || gotFailed != c.failed {
			t.Errorf("%s: ok %d, failed %d; want %d, %d", c.name, gotOK, gotFailed, c.ok, c.failed)
		}
		switch {
		case c.errSubstring == "" && err != nil:
			t.Errorf("%s: error %v", c.name, err)
		case c.errSubstring != "" && (err == nil || !strings.Contains(err.Error(), c.errSubstring)):
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.errSubstring)
		}
	}
}

// TestBatchBody checks mode batch's request: n message objects that decode
// as the service's entries do, to the queue, persistent unless told.
func TestBatchBody(t *testing.T) {
	for _, persistent := range []bool{true, false} {
		b := &bench{cfg: &config{queue: "q/1", persistent: persistent}, body: makeBody(300)}
		obj, err := b.messageObject()
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			Messages []map[string]any `json:"messages"`
		}
		if err := json.Unmarshal(batchBody(obj, 3), &env); err != nil {
			t.Fatal(err)
		}
		if len(env.Messages) != 3 {
			t.Fatalf("%d messages, want 3", len(env.Messages))
		}
		m := env.Messages[2]
		if m["exchange"] != "amq.default" || m["routing_key"] != "q/1" || m["body"] != string(b.body) {
			t.Errorf("message object %v", m)
		}
		if _, ok := m["message_id"]; ok {
			t.Errorf("a message_id in %v: the service should generate it, as in mode service", m)
		}
		if p, ok := m["persistent"]; persistent == ok || (ok && p != false) {
			t.Errorf("persistent %v: message object %v", persistent, m)
		}
	}
}

// TestRecorderN counts operations of several messages: messages in the
// rate, one latency sample per operation, only inside the window.
func TestRecorderN(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	w := window{start: t0, measureStart: t0.Add(time.Second), measureEnd: t0.Add(3 * time.Second)}
	r := newRecorder(w)
	r.recordN(t0, t0.Add(1500*time.Millisecond), 100)                            // began in the warm-up
	r.recordN(t0.Add(time.Second), t0.Add(1200*time.Millisecond), 100)           // inside
	r.recordN(t0.Add(2*time.Second), t0.Add(2100*time.Millisecond), 40)          // inside, part of a batch
	r.recordN(t0.Add(2900*time.Millisecond), t0.Add(3100*time.Millisecond), 100) // ended after the window
	r.recordN(t0.Add(2*time.Second), t0.Add(2*time.Second), 0)                   // nothing confirmed: no sample
	r.fail(60, errors.New("status 503"))
	r.fail(0, errors.New("not counted"))
	r.record(t0.Add(2*time.Second), t0.Add(2500*time.Millisecond), nil)
	r.record(t0.Add(2*time.Second), t0.Add(2500*time.Millisecond), errors.New("nacked"))
	if r.measured != 141 || len(r.lat) != 3 || r.okTotal != 341 || r.errs != 61 || r.lastError != "nacked" {
		t.Errorf("measured %d, %d samples, ok %d, errors %d, last %q; want 141, 3, 341, 61, nacked",
			r.measured, len(r.lat), r.okTotal, r.errs, r.lastError)
	}
	m := merge([]*recorder{r, newRecorder(w)})
	if m.measured != 141 || len(m.lat) != 3 || m.okTotal != 341 || m.errs != 61 {
		t.Errorf("merged %+v", m)
	}
}
